"""Train state, the sharded training step, and the pieces the training loop is built from.

One code path from a laptop CPU to a multi-host pod: the step is a pure function of
(state, global batch) jitted over the ``('data',)`` mesh of :mod:`driftrec_jax.parallel`, with the
state replicated and the batch split along its leading axis. Several steps can run per call with
``lax.scan`` (``steps_per_call``), which removes per-step dispatch overhead on fast accelerators.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from . import parallel
from .tasks import Task  # noqa: F401 - re-exported: train_lib.Task is the trained task


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. ``params`` is the network's whole variables pytree."""

    step: jnp.ndarray
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jnp.ndarray  # base key; the key of step n is fold_in(rng, n), so resuming is exact


def make_optimizer(cfg) -> optax.GradientTransformation:
    """AdamW (paper: lr 1e-4, PyTorch's default weight decay 0.01), optional warm-up and clipping.

    Only the ``'params'`` collection is trained; constant collections (the fixed Fourier
    frequencies of the σ embedding) get zero updates, so weight decay does not shrink them.
    """
    lr = cfg.lr
    if cfg.get("warmup_steps", 0):
        lr = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    adamw = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
                        weight_decay=cfg.weight_decay)
    if cfg.get("grad_clip", 0.0):
        adamw = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)

    def labels(variables):
        return {k: jax.tree.map(lambda _: "train" if k == "params" else "frozen", v) for k, v in variables.items()}

    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)


def learning_rate(cfg, step):
    """The learning rate at a step (for logging)."""
    if cfg.get("warmup_steps", 0):
        return cfg.lr * jnp.minimum(1.0, step / cfg.warmup_steps)
    return jnp.asarray(cfg.lr)


def create_train_state(task: Task, tx, key, image_size: int = 32, params=None) -> TrainState:
    """A step-0 state: random parameters, or the given ones (a warm start); EMA = parameters."""
    key_init, key_rng = jax.random.split(key)
    if params is None:
        params = task.init_params(key_init, image_size)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=key_rng,
    )


def make_init_state(task: Task, tx, image_size: int, mesh) -> Callable:
    """Jit :func:`create_train_state` with the state replicated over the mesh, as training's first
    call: ``init(key, params)``, params None for random ones. One jitted function per (task,
    optimiser, size, mesh), so a caller can build it once and reuse it (the tests share it between
    runs of one config)."""
    return jax.jit(lambda key, params: create_train_state(task, tx, key, image_size, params),
                   out_shardings=parallel.replicated(mesh))


def ema_decay_at(decay: float, num_updates):
    """EMA decay with the usual warm-up, min(decay, (1 + n)/(10 + n)) (as the
    DriftRec authors' code does; paper Sec. III-B: decay 0.999)."""
    n = jnp.asarray(num_updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def train_step(task: Task, tx, optim_cfg, state: TrainState, batch) -> tuple[TrainState, dict]:
    """One optimisation step on one global batch (pure; jitted by :func:`make_train_step`)."""
    key = jax.random.fold_in(state.rng, state.step)
    loss, grads = jax.value_and_grad(task.loss)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay_at(optim_cfg.ema_decay, state.step)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    metrics = {
        "loss": loss,
        "grad_norm": optax.tree.norm(grads["params"]),
        "lr": learning_rate(optim_cfg, state.step),
    }
    return new_state, metrics


def make_train_step(task: Task, tx, optim_cfg, mesh, steps_per_call: int = 1) -> Callable:
    """Jit the step over the mesh: state replicated, batch sharded along ``'data'``.

    With ``steps_per_call`` k > 1 the batch has a leading axis of k (k global batches) and the
    call runs k steps with ``lax.scan``; metrics come back stacked over those steps.
    """
    step = partial(train_step, task, tx, optim_cfg)
    repl = parallel.replicated(mesh)
    if steps_per_call == 1:
        fn, batch_spec = step, P(parallel.DATA_AXIS)
    else:
        def fn(state, batches):
            return jax.lax.scan(step, state, batches)
        batch_spec = P(None, parallel.DATA_AXIS)
    return jax.jit(fn, in_shardings=(repl, NamedSharding(mesh, batch_spec)), out_shardings=(repl, repl),
                   donate_argnums=0)


def stack_batches(batches: list[dict]) -> dict:
    """k per-process batches → one pytree with a leading axis of k (for ``steps_per_call``)."""
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def global_batches(local, mesh, steps_per_call: int = 1):
    """Per-process numpy batch(es) → global arrays laid out as the jitted step expects."""
    if steps_per_call == 1:
        return parallel.global_batch(local, mesh)
    sharding = NamedSharding(mesh, P(None, parallel.DATA_AXIS))
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)
