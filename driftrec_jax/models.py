"""Building a model from a config, and the portable model file used for restoration.

A *model file* (``.msgpack``) is what `driftrec restore` loads: the network description, the SDE
and the (EMA) weights in one file, optionally stored as float16 to halve its size. Training writes
one into its workdir (``model.msgpack``) at every checkpoint; :func:`load_model` also reads a
training workdir or its ``checkpoints/`` folder directly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from . import tasks
from .tasks import Task

FORMAT = "driftrec_jax.model/1"
DTYPES = tasks.DTYPES


class ModelLoadError(RuntimeError):
    """A missing, unreadable or incompatible model file (one line for the command line)."""


def model_spec(config) -> dict:
    """The part of a training config that defines the model (stored with its weights): the
    network, its variant (which names the method, `tasks.TASKS`) and the method's process block
    (`sde`, `ddrm` or `i2sb`; none for regression)."""
    spec = {
        "network": config.model.network,
        "overrides": dict(config.model.overrides),
        "variant": config.model.variant,
        "dtype": config.model.dtype,
    }
    spec.update(tasks.spec_blocks(config))
    precond = config.model.get("preconditioning", "none") or "none"
    if precond != "none":  # absent = "none": files without the field (all older ones) load as before
        if config.model.variant != "score":
            raise ValueError(f"model.preconditioning={precond!r} applies to the score variant only, "
                             f"not {config.model.variant!r}")
        spec["preconditioning"] = precond
        spec["sigma_data"] = float(config.model.get("sigma_data", 0.04))
    return spec


def build_task(spec: dict) -> Task:
    """The task (network and process) of a model spec; see :func:`model_spec` and `tasks.build_task`."""
    return tasks.build_task(spec)


def task_from_config(config) -> Task:
    return build_task(model_spec(config))


def random_params(task: Task, seed: int = 0) -> Any:
    """Random weights shaped like `task.init_params`' output, drawn with numpy from the shapes
    alone (for benchmarks and tests: jitting Flax's init of a large NCSN++ compiles for tens of
    seconds on a small CPU). Kernels ~ N(0, 1/fan-in), normalisation scales 1, the Fourier
    time-embedding frequencies ~ N(0, 16²) as at initialisation, all float32."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: task.init_params(jax.random.PRNGKey(0), 32))

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if name == "['scale']":
            return np.ones(leaf.shape, np.float32)
        if name == "['fourier_W']":
            return (16.0 * rng.standard_normal(leaf.shape)).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 10 * leaf.shape[0]
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def save_model(path: str, spec: dict, params: Any, float16: bool = False) -> None:
    """Write a model file: spec + weights (float16 storage when asked; loaded back as float32)."""
    host = jax.tree.map(lambda a: np.asarray(a, np.float16 if float16 and np.issubdtype(np.asarray(a).dtype, np.floating) else None), jax.device_get(params))
    payload = {"format": FORMAT, "spec": json.dumps(spec), "params": serialization.to_state_dict(host)}
    from .images import atomic_write

    with atomic_write(path) as f:
        f.write(serialization.msgpack_serialize(payload))


def _read_model_file(path: str) -> tuple[dict, Any]:
    try:
        with open(path, "rb") as f:
            payload = serialization.msgpack_restore(f.read())
    except OSError as err:
        raise ModelLoadError(f"cannot read model file {path}: {err.strerror}") from err
    except Exception as err:  # msgpack raises several types for garbage
        raise ModelLoadError(f"{path} is not a driftrec_jax model file ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not a driftrec_jax model file")
    params = jax.tree.map(lambda a: np.asarray(a, np.float32) if a.dtype == np.float16 else a, payload["params"])
    return json.loads(payload["spec"]), params


def load_model(path: str) -> tuple[Task, Any, dict]:
    """Load (task, params, spec) from a model file or a training workdir.

    A workdir is read through its ``model.msgpack`` (written at every checkpoint).
    """
    if os.path.isdir(path):
        candidate = os.path.join(path, "model.msgpack")
        if not os.path.isfile(candidate):
            candidate = os.path.join(os.path.dirname(os.path.abspath(path)), "model.msgpack")
        if not os.path.isfile(candidate):
            raise ModelLoadError(f"no model.msgpack in {path} (is it a driftrec_jax training workdir?)")
        path = candidate
    if not os.path.exists(path):
        raise ModelLoadError(f"model file not found: {path}")
    spec, params = _read_model_file(path)
    task = build_task(spec)
    # Check the stored weights fit the network they claim to be.
    expected = jax.eval_shape(lambda: task.init_params(jax.random.PRNGKey(0), 32))
    exp_shapes = jax.tree.map(lambda a: tuple(a.shape), expected)
    got_shapes = jax.tree.map(lambda a: tuple(np.shape(a)), params)
    if jax.tree.structure(exp_shapes) != jax.tree.structure(got_shapes) or exp_shapes != got_shapes:
        raise ModelLoadError(f"{path}: weights do not match the network described in the file")
    params = jax.tree.map(jnp.asarray, params)
    return task, params, spec


BUNDLED = {"driftrec": "driftrec_small_ouve.msgpack", "ddrm": "ddrm_small_uncond.msgpack"}


def bundled_model_path(method: str = "driftrec") -> str:
    """The small default model of `method` ('driftrec' or 'ddrm') shipped inside the package
    (the file may be absent: no DDRM prior is bundled unless assets/ holds one; none is for
    other methods, whose path names a file that does not exist)."""
    name = BUNDLED.get(method, f"{method}_model.msgpack")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", name)
