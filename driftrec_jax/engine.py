"""The tile engine: restore images of any size, tile by tile, on the ('data',) mesh of all devices.

`driftrec restore`, `driftrec evaluate`, the Python API (`driftrec_jax.api`) and training's sample
grids and validation all restore through `TileEngine`:

  1. every image arrives as a `Source`: an identity (`source_id`, a string), its pixels (float
     RGB (H, W, 3) in [0, 1], any size) and, for DDRM, the quantisation tables of its JPEG;
  2. it is cut into tiles (`tiling.TiledImage`: origins on a 16-pixel grid, edge padding); tile k
     (row-major) of a source gets its random key from its identity by the one rule

         key = fold_in(fold_in(PRNGKey(seed), crc32(source_id as UTF-8) & 0x7FFFFFFF), k)

     (`tile_key`), so a tile's noise depends on nothing else: not its position in a batch, its
     neighbours, the batch size, the number of devices or processes, nor what else is restored;
  3. tiles of consecutive sources fill fixed-shape batches of `batch_size` tiles per device, i.e.
     batch_size × (devices of the mesh) tiles per call; the last batch is padded with zero tiles.
     Each batch is placed sharded along 'data' (`parallel.global_batch`), the parameters
     replicated, and one compiled function `fn(params, tiles, keys, aux) -> (tiles, nfe)`
     restores it (the model's `Task.tile_restorer`, driftrec_jax.tasks);
  4. restored tiles are blended back (raised-cosine windows) and each image is yielded, in input
     order, as a `Restored` with the seconds of the calls its tiles were in (a call's time shared
     by its real tiles) and its network evaluations per tile.

Sources of the identity rule: `driftrec restore` uses the file's base name (e.g. ``photo.jpg``);
`driftrec evaluate` uses ``protocol.key + "\\x1f" + image name`` (e.g. ``"q10\\x1fkodim01.png"``).
Until the engine, restore folded in the unmasked crc32 of the name, so a file whose name's crc32 has
its top bit set (about half of all names) draws other noise than before with the same seed; every
other file, and every evaluate image, gives the same pixels as before.

Several processes (a pod, `python -m driftrec_jax.launch`): every process calls the compiled
function the same number of times, each feeding its own tiles (`parallel.global_batch`) and
reading back only its own rows (`parallel.local_rows`). `TileEngine.plan_calls` agrees on that
number with one small all-gather of each process's tile count; a process that runs out of tiles
sends padding batches until then.

Only `parallel` knows about devices; this module asks it for meshes, shardings and process facts.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import zlib
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import tiling  # parallel (JAX) is imported on use: `driftrec restore --help` stays instant

__all__ = ["Source", "Restored", "TileEngine", "tile_key", "source_hash",
           "default_batch_size", "DEFAULT_BATCH_CPU", "DEFAULT_BATCH_ACCELERATOR"]

# Tiles per device and call when no batch size is given: on the CPU a batch of one 256² tile runs at
# the highest rate (BENCHMARKS.md: 0.92 vs 0.64 network evaluations/s for 8), on accelerators 8.
DEFAULT_BATCH_ACCELERATOR = 8
DEFAULT_BATCH_CPU = 1


def default_batch_size(mesh=None) -> int:
    """Tiles per device for a mesh (default: all devices): 1 on CPUs, 8 on GPUs/TPUs."""
    from . import parallel

    return DEFAULT_BATCH_CPU if parallel.platform(mesh) == "cpu" else DEFAULT_BATCH_ACCELERATOR


def source_hash(source_id: str) -> int:
    """crc32 of the source's identity (UTF-8; undecodable file-name bytes as surrogate escapes),
    top bit cleared: the per-source part of every tile key (a non-negative int32)."""
    return zlib.crc32(str(source_id).encode("utf-8", "surrogateescape")) & 0x7FFFFFFF


def tile_key(seed, source_id: str, index: int):
    """The random key of tile `index` of source `source_id`:
    fold_in(fold_in(PRNGKey(seed), source_hash(source_id)), index). `seed` is an int or a key."""
    import jax

    base = jax.random.PRNGKey(seed) if isinstance(seed, (int, np.integer)) else seed
    return jax.random.fold_in(jax.random.fold_in(base, source_hash(source_id)), int(index))


@dataclasses.dataclass
class Source:
    """One image to restore. `image`: float (H, W, 3) in [0, 1] (gray replicated to RGB), dropped by
    the engine once its tiles are cut; `tables`: DDRM only, the (luma, chroma) (8, 8) int tables of
    its JPEG; `tag`: anything of the caller's, handed back with the result."""

    source_id: str
    image: Any
    tables: tuple | None = None
    tag: Any = None


@dataclasses.dataclass
class Restored:
    """A restored image (float32 (H, W, 3), blended, not clipped) and what it cost."""

    source: Source
    image: np.ndarray
    seconds: float  # time of the calls its tiles were in, each shared by the call's real tiles
    nfe: float  # network evaluations per tile (mean over its tiles)
    nfe_max: int
    tiles: int


# --------------------------------------------------------------------------------------------
# The engine

_COMPILED: dict = {}  # compiled calls of this process, by (fn, mesh, batch shape, params shapes)


class TileEngine:
    """Restores streams of `Source`s with one `fn` (a `Task.tile_restorer`) compiled for a mesh.

    mesh: default `parallel.make_mesh()` (every device of every process); `parallel.local_mesh()`
    for work one process does alone. batch_size: tiles per device and call (default
    `default_batch_size`); `max_tiles` (the most tiles there are to restore, over all processes)
    lowers it so that a call holds no more than needed. tables: fn takes DDRM tables (aux).
    """

    def __init__(self, fn: Callable, params, *, mesh=None, tile: int = 256, overlap: int = 32,
                 batch_size: int | None = None, max_tiles: int | None = None, tables: bool = False):
        from . import parallel

        tiling.check_tiling(tile, overlap, batch_size or 1)
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        self.devices = int(self.mesh.devices.size)
        self.local_devices = parallel.local_device_count(self.mesh)
        per_device = batch_size or default_batch_size(self.mesh)
        if max_tiles is not None:
            per_device = max(1, min(per_device, math.ceil(max_tiles / self.devices)))
        self.batch_size = per_device
        self.global_rows = per_device * self.devices
        self.rows = per_device * self.local_devices  # this process's rows of every call
        self.fn, self.tile, self.overlap, self.tables = fn, int(tile), int(overlap), bool(tables)
        self.params = parallel.replicate(params, self.mesh)
        self._compiled = None

    # -- compilation

    def _memo_key(self):
        import jax

        return (self.fn, tuple(d.id for d in self.mesh.devices.flat), self.global_rows, self.tile, self.tables,
                jax.tree.structure(self.params),
                tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(self.params)))

    def compile(self) -> float:
        """Compile the call ahead of time (memoised per process); seconds spent, 0 when found."""
        if self._compiled is not None:
            return 0.0
        key = self._memo_key()
        if key in _COMPILED:
            self._compiled = _COMPILED[key]
            return 0.0
        import jax
        import jax.numpy as jnp

        from . import parallel

        start = time.perf_counter()
        fn, tables = self.fn, self.tables

        def restore(params, base_key, tiles, ids, *aux):  # (named: JAX's cache files are jit_restore-*)
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base_key, i[0]), i[1]))(ids)
            return fn(params, tiles, keys, tuple(aux) if tables else None)

        data = parallel.data_sharding(self.mesh)
        rows = self.global_rows
        args = [self.params, jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=parallel.replicated(self.mesh)),
                jax.ShapeDtypeStruct((rows, self.tile, self.tile, 3), jnp.float32, sharding=data),
                jax.ShapeDtypeStruct((rows, 2), jnp.uint32, sharding=data)]
        if tables:
            args += [jax.ShapeDtypeStruct((rows, 8, 8), jnp.int32, sharding=data)] * 2
        self._compiled = jax.jit(restore, out_shardings=(data, data)).lower(*args).compile()
        _COMPILED[key] = self._compiled
        return time.perf_counter() - start

    # -- scheduling over processes

    def calls_for(self, tiles: int) -> int:
        """Calls this process needs for `tiles` tiles of its own."""
        return math.ceil(int(tiles) / self.rows)

    def plan_calls(self, tiles) -> np.ndarray:
        """Calls every process makes (the most any of them needs) for this process's tile counts,
        one per group (e.g. DDRM chroma layouts): one small all-gather, the same on every process."""
        from . import parallel

        return parallel.process_max([self.calls_for(t) for t in np.atleast_1d(tiles)])

    # -- restoring

    def run(self, sources: Iterable[Source], *, seed=0, progress=None, calls: int | None = None) -> Iterator[Restored]:
        """Restore `sources` (pulled only as the batches need their tiles); yield each `Restored`
        in input order as soon as its last tile is back.

        seed: an int (PRNGKey(seed)) or a PRNG key. progress: None or a tqdm-like object whose
        update(n) gets the real tiles of every call. calls: make exactly this many calls, padding
        with empty batches (several processes: `plan_calls`); more tiles than fit raise RuntimeError.
        Memory holds one batch and the accumulators of the images with tiles in it.
        """
        import jax

        from . import parallel

        self.compile()
        base = jax.random.PRNGKey(seed) if isinstance(seed, (int, np.integer)) else seed
        base_key = parallel.replicate(np.asarray(jax.device_get(base), np.uint32), self.mesh)
        rows, t = self.rows, self.tile
        tiles = np.zeros((rows, t, t, 3), np.float32)
        ids = np.zeros((rows, 2), np.uint32)
        luma = np.ones((rows, 8, 8), np.int32)
        chroma = np.ones((rows, 8, 8), np.int32)
        slots: list = []
        pending: collections.deque = collections.deque()
        made = 0

        def call() -> None:
            nonlocal made
            if calls is not None and made >= calls:
                raise RuntimeError(f"more tiles than the {calls} planned calls hold")
            start = time.perf_counter()
            local = (tiles, ids, luma, chroma) if self.tables else (tiles, ids)
            x, nfe = self._compiled(self.params, base_key, *parallel.global_batch(local, self.mesh))
            x, nfe = parallel.local_rows(x), parallel.local_rows(nfe)
            made += 1
            share = (time.perf_counter() - start) / max(len(slots), 1)
            for n, (job, i, j) in enumerate(slots):
                job.add(i, j, x[n])
                job.seconds += share
                job.nfe_sum += float(nfe[n])
                job.nfe_max = max(job.nfe_max, int(nfe[n]))
            if progress is not None and slots:
                progress.update(len(slots))
            slots.clear()
            tiles[...] = 0.0
            ids[...] = 0
            luma[...] = 1
            chroma[...] = 1

        def finished() -> Iterator[Restored]:
            while pending and pending[0].remaining == 0:
                job = pending.popleft()
                yield Restored(job.source, job.out, job.seconds, job.nfe_sum / max(job.count, 1), job.nfe_max,
                               job.count)

        for src in sources:
            job = tiling.TiledImage(src.image, t, self.overlap)
            job.source, job.seconds, job.nfe_sum, job.nfe_max, job.count = src, 0.0, 0.0, 0, job.remaining
            src.image = None  # the tiles are copied out below; the engine keeps no pixels of it
            pending.append(job)
            h = source_hash(src.source_id)
            if self.tables:
                if src.tables is None:
                    raise ValueError(f"{src.source_id}: this restorer needs the JPEG tables of every source")
                src_luma, src_chroma = (np.asarray(a, np.int32) for a in src.tables)
            for k, (i, j) in enumerate(job.tiles()):
                n = len(slots)
                job.extract(i, j, tiles[n])
                ids[n] = h, k
                if self.tables:
                    luma[n], chroma[n] = src_luma, src_chroma
                slots.append((job, i, j))
                if len(slots) == rows:
                    call()
                    yield from finished()
            job.image = None
        if slots:
            call()
        while calls is not None and made < calls:
            call()
        yield from finished()

    def restore(self, images, *, seed=0, source_ids=None) -> list[np.ndarray]:
        """Restore a list of float (H, W, 3) arrays (ids default to "0", "1", ...); the blended
        results (float32, clipped to [0, 1]) in order. One process only."""
        ids = [str(i) for i in range(len(images))] if source_ids is None else list(source_ids)
        out = self.run((Source(s, np.asarray(im, np.float32)) for s, im in zip(ids, images)), seed=seed)
        return [np.clip(r.image, 0.0, 1.0) for r in out]
