"""Training losses, written for the global batch (no device axis names inside).

Under ``jax.jit`` with a batch sharded over the ``'data'`` mesh axis, XLA turns the batch mean
into the cross-device reduction; nothing here knows how many devices there are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_example(x: jnp.ndarray) -> jnp.ndarray:
    """Half the sum of squares over all non-batch axes (the authors' reduction)."""
    return 0.5 * jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)))


def _draw_time_and_noise(sde, x0, key, t_eps: float | None):
    """t ~ U[t_eps, T] per example and z ~ N(0, I) shaped like x0 (the draws of both DSM losses)."""
    t_eps = sde.t_eps if t_eps is None else t_eps
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, (x0.shape[0],), minval=t_eps, maxval=sde.T)
    return t, jax.random.normal(key_z, x0.shape, x0.dtype)


def dsm_loss(score_fn, sde, params, batch, key, t_eps: float | None = None) -> jnp.ndarray:
    """Denoising score matching, paper eq. (15), for any registered SDE.

    t ~ U[t_eps, T], z ~ N(0, I), x_t = μ_t(x0, y) + σ_t z and the loss is
    ½‖σ_t S_θ(x_t, y, t) + z‖² summed over pixels and averaged over the batch: the network output
    before its division by σ_t regresses −z.
    """
    x0, y = batch["clean"], batch["jpeg"]
    b = x0.shape[0]
    t, z = _draw_time_and_noise(sde, x0, key, t_eps)
    mean, _ = sde.marginal(x0, y, t)
    std = jnp.reshape(sde.std(t), (b, 1, 1, 1))
    x_t = mean + std * z
    s = score_fn(params, x_t, y, t)
    return jnp.mean(_per_example(std * s + z))


def preconditioned_dsm_loss(apply_fn, sde, precond, params, batch, key, t_eps: float | None = None) -> jnp.ndarray:
    """Denoising score matching with EDM-style preconditioning (``model.preconditioning = "edm"``;
    docs/TRAINING.md): the same t ~ U[t_eps, T] and x_t as :func:`dsm_loss`, and the loss
    ½‖F − (u0 − c_skip u_t)/c_out‖² = ½ λ(t)‖D(u_t) − u0‖², λ = 1/c_out², summed over pixels and
    averaged over the batch (u = x − y; ``score.EDMPreconditioning``). Its target has unit variance
    per pixel when u0 has standard deviation σ_data."""
    from .score import make_raw_fn

    x0, y = batch["clean"], batch["jpeg"]
    t, z = _draw_time_and_noise(sde, x0, key, t_eps)
    mean, std = sde.marginal(x0, y, t)
    x_t = mean + std * z
    f, (_, _, _, c_skip, c_out) = make_raw_fn(apply_fn, sde, precond)(params, x_t, y, t)
    target = ((x0 - y) - c_skip * (x_t - y)) / c_out
    return jnp.mean(_per_example(f - target))


def regression_loss(predict_fn, params, batch, key=None) -> jnp.ndarray:
    """L2 regression of the clean image from the JPEG (the paper's baseline)."""
    del key
    return jnp.mean(_per_example(predict_fn(params, batch["jpeg"]) - batch["clean"]))
