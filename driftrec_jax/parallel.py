"""The one module that knows about devices.

Data parallelism the way JAX does it now (``jax.pmap`` compiles to jit + shard_map): a 1-D
``('data',)`` device mesh over every device of every host, parameters replicated, batches
sharded along their leading axis, and ordinary ``jax.jit`` with shardings. The same code runs on
one CPU, eight GPUs or a multi-host pod; losses are written for the global batch and XLA inserts
the gradient all-reduce.

Multi-host: launch one process per host and call :func:`initialize_distributed` first (it calls
``jax.distributed.initialize()`` when the environment describes several processes; on one machine
``python -m driftrec_jax.launch`` starts such processes). Each process then feeds only its own
slice of the global batch (:func:`global_batch`).
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


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def initialize_distributed(force: bool = False) -> None:
    """Join a multi-process job when launched as one (SLURM, TPU pods, or explicit env vars).

    A single process on one machine needs nothing; calling this is then a no-op. On TPU pods and
    under SLURM, ``jax.distributed.initialize()`` finds its peers by itself. Elsewhere (and with
    ``python -m driftrec_jax.launch``) the environment describes the job:
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
    ``DRIFTREC_HEARTBEAT_TIMEOUT`` (seconds) sets how soon a silent process is declared dead, after
    which JAX stops the others (default: JAX's, 100 s). Must run before anything touches a device.
    """
    multi = force or any(os.environ.get(k) for k in _MULTI_PROCESS_HINTS)
    multi = multi or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if multi and not jax.distributed.is_initialized():
        kwargs = {}
        num, pid = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
        if num is not None:
            kwargs["num_processes"] = num
        if pid is not None:
            kwargs["process_id"] = pid
        heartbeat = _env_int("DRIFTREC_HEARTBEAT_TIMEOUT")
        if heartbeat is not None:
            kwargs["heartbeat_timeout_seconds"] = heartbeat
        jax.distributed.initialize(os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS"),
                                   **kwargs)


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A ``('data',)`` mesh over all devices (or the first ``num_devices`` of them)."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices but only {len(devices)} exist")
        devices = devices[:num_devices]
    mesh = Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))
    _connect(mesh)
    return mesh


_CONNECTED: set = set()


def _connect(mesh: Mesh) -> None:
    """Run one all-reduce over a mesh that spans several processes, the first time it is made.

    Every process makes the mesh at the same point, right after start-up, so they are in step
    here. On CPU the cross-process collectives (gloo) set up a device group on its first
    collective and give every process only 30 s to arrive; left to the first training step, one
    process compiling much longer than another (a compilation-cache hit on one, a miss on the
    other) fails the whole job. Once set up, a collective waits for slow peers as long as needed.
    """
    key = tuple(d.id for d in mesh.devices.flat)
    if jax.process_count() == 1 or key in _CONNECTED:
        return
    ones = jax.make_array_from_process_local_data(
        data_sharding(mesh), np.ones((sum(d.process_index == jax.process_index() for d in mesh.devices.flat),),
                                     np.int32))
    total = jax.jit(lambda x: x.sum(), out_shardings=replicated(mesh))(ones)
    if int(total) != mesh.devices.size:
        raise RuntimeError(f"the processes' first all-reduce gave {int(total)}, not {mesh.devices.size}")
    # And the groups of orbax's barriers (one device per process), which checkpoint restores use.
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("driftrec_jax: processes connected")
    _CONNECTED.add(key)


def local_mesh() -> Mesh:
    """A ``('data',)`` mesh over this process's own devices, for work only this process does
    (sample grids and validation on process 0 of a training job)."""
    return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def local_device_count(mesh: Mesh) -> int:
    """How many of the mesh's devices belong to this process."""
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


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


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of an array sharded along ``'data'`` (all rows in one process), in order:
    what it fed with :func:`global_batch`."""
    if x.is_fully_addressable:
        return np.asarray(x)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    parts, seen = [], set()
    for s in shards:
        start = s.index[0].start or 0
        if start not in seen:  # a row block held by several devices (replicated axes) once
            seen.add(start)
            parts.append(np.asarray(s.data))
    return np.concatenate(parts)


def values_of_processes(values) -> np.ndarray:
    """An int64 vector of every process, stacked in process order: (process_count, n). A small
    all-gather (itself with one process)."""
    values = np.asarray(values, np.int64).reshape(-1)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values)).reshape(jax.process_count(), -1)


def process_max(values) -> np.ndarray:
    """Elementwise maximum of an int64 vector over all processes: how processes agree, without
    other communication, on how often to call a sharded function."""
    return values_of_processes(values).max(0)


def gather_bytes(blob: bytes) -> list[bytes]:
    """Every process's `blob`, in process order, on every process: an all-gather of byte strings
    of any lengths (per-image result rows to process 0)."""
    if jax.process_count() == 1:
        return [bytes(blob)]
    from jax.experimental import multihost_utils

    sizes = values_of_processes([len(blob)])[:, 0]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: len(blob)] = np.frombuffer(blob, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(jax.process_count(), -1)
    return [gathered[p, : int(sizes[p])].tobytes() for p in range(jax.process_count())]


def barrier(name: str) -> None:
    """Wait until every process reaches the same point (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def local_copy(tree: Any) -> Any:
    """One local device's copy of a replicated pytree, for work only this process does (sample
    grids, validation on process 0): computing on it involves no other process, so it cannot wait
    on a peer that is not computing with it."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


def is_main_process() -> bool:
    """Only process 0 writes logs, sample grids and checkpoint metadata."""
    return jax.process_index() == 0


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def share(items, index: int | None = None, count: int | None = None) -> list:
    """This process's share of a list that every process holds in the same order: the items at
    positions index, index + count, ... (round robin, so sizes mixed through a sorted folder
    spread evenly)."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return list(items)[index::count]


def platform(mesh: Mesh | None = None) -> str:
    """'cpu', 'gpu' or 'tpu': the kind of the mesh's devices (default: JAX's default backend)."""
    return jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
