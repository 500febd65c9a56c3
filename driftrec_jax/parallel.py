"""The one module that knows about devices.

Data parallelism the way JAX does it now (``jax.pmap`` compiles to jit + shard_map): a 1-D
``('data',)`` device mesh over every device of every host, parameters replicated, batches
sharded along their leading axis, and ordinary ``jax.jit`` with shardings. The same code runs on
one CPU, eight GPUs or a multi-host pod; losses are written for the global batch and XLA inserts
the gradient all-reduce.

Multi-host: launch one process per host and call :func:`initialize_distributed` first (it calls
``jax.distributed.initialize()`` when the environment describes several processes). Each process
then feeds only its own slice of the global batch (:func:`global_batch`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several".
_MULTI_PROCESS_HINTS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")


def initialize_distributed(force: bool = False) -> None:
    """Join a multi-process job when launched as one (SLURM, TPU pods, or explicit env vars).

    A single process on one machine needs nothing; calling this is then a no-op. On TPU pods and
    under SLURM, ``jax.distributed.initialize()`` finds its peers by itself.
    """
    multi = force or any(os.environ.get(k) for k in _MULTI_PROCESS_HINTS)
    multi = multi or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if multi and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A ``('data',)`` mesh over all devices (or the first ``num_devices`` of them)."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices but only {len(devices)} exist")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, RNG keys)."""
    return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Return the per-process batch size; raise a clear error when it does not divide evenly."""
    n_dev = mesh.devices.size
    if global_batch_size % n_dev:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {n_dev} devices of the mesh"
        )
    return global_batch_size // jax.process_count()


def global_batch(local: Any, mesh: Mesh) -> Any:
    """Assemble per-process numpy batches into global arrays sharded along ``'data'``.

    ``local`` is a pytree of arrays whose leading axis is this process's share of the global batch.
    """
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def is_main_process() -> bool:
    """Only process 0 writes logs, sample grids and checkpoint metadata."""
    return jax.process_index() == 0
