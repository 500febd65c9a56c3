"""The Python API: load a model, restore arrays or files, as short as the command line.

    import driftrec_jax

    r = driftrec_jax.load("driftrec")            # the bundled model; or a model file, or a workdir
    clean = r.restore(jpeg_pixels, sampler="sde-dpm2m:8", seed=0)   # numpy in, numpy out
    r.restore_files(["photo.jpg", "scans/"], "restored/")            # = driftrec restore ... -o restored/

`Restorer.restore` takes one image (H, W), (H, W, 1) or (H, W, 3), a batch (N, H, W, C) or a list
of images of any sizes, as numpy or JAX arrays, uint8 / uint16 (0..max) or float in [0, 1]; it
returns the same layout and dtype (gray in, gray out: the mean of the restored channels, as the
PNG writer does). It runs the tile engine of `driftrec restore` (`engine.TileEngine`, every
device), so an image restored with the name its file has (`names=["photo.jpg"]`) and the same
seed, sampler and tiling gets exactly the pixels `driftrec restore photo.jpg` writes; without
names, image i of a call is named str(i) (the key rule: `engine.tile_key`).

`Restorer.restore_files` is `driftrec restore` itself with this loaded model: both call
`restoring.restore_files`, the file pipeline (the same checks, one-line errors, no-clobber atomic
PNG writes, progress bar and summary on stderr); it returns the exit status (0 all restored, 1
some failed) and raises `restoring.UsageError`, a ValueError, for what the command calls a usage
error.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from . import sampler_settings
from .sampler_settings import SamplerSetting

__all__ = ["load", "Restorer"]


def load(model: str = "driftrec") -> "Restorer":
    """A `Restorer` for `model`: "driftrec" or "ddrm" (the models bundled with the package), a
    model file (.msgpack, from training or `driftrec import-weights`) or a training workdir."""
    from . import models

    path = os.fspath(model)
    if path in models.BUNDLED and not os.path.exists(path):
        path = models.bundled_model_path(path)
    task, params, spec = models.load_model(path)
    return Restorer(task, params, spec, path)


@dataclasses.dataclass
class Restorer:
    """A loaded model (`load`): its task (`driftrec_jax.tasks`: DriftRec, regression, DDRM ε
    prior, I²SB), weights, description and path."""

    task: Any
    params: Any
    spec: dict
    path: str

    @property
    def method(self) -> str:
        """`driftrec restore --method` of the model: 'driftrec' (DriftRec or regression), 'ddrm', 'i2sb'."""
        return self.task.method

    def setting(self, sampler: str | SamplerSetting | None = None) -> SamplerSetting | None:
        """The sampler setting of a text form ('sde-dpm2m:8', 'em:100x4', 'ddrm:20'; None: the
        model's default, `Task.default_setting`); None for a model without sampler (regression:
        one network pass). ValueError when the sampler does not apply to the model."""
        if isinstance(sampler, str):
            sampler = sampler_settings.parse_setting(sampler)
        return self.task.check_setting(sampler)

    def restore(self, images, *, sampler: str | SamplerSetting | None = None, seed: int = 0,
                names: Sequence[str] | None = None, tile: int = 256, overlap: int = 32,
                batch_size: int | None = None, eps: float = sampler_settings.DEFAULT_EPS,
                color_correction: bool = True, quality: int | None = None, devices: int | None = None):
        """Restore one image, a batch or a list of images (module docstring for the layouts);
        returns the same layout and dtype. `names`: the identity of each image for the key rule
        (default "0", "1", ...); `quality`: DDRM only, the JPEG quality whose (Pillow, 4:2:0 or
        gray) quantisation tables the images were compressed with. tile, overlap, batch_size (tiles
        per device), eps, color_correction and devices as in `driftrec restore --help`. Runs on this
        process's devices (every device of a one-process session)."""
        from . import engine, parallel
        from .tiling import count_tiles

        single = not isinstance(images, (list, tuple)) and np.ndim(images) in (2, 3)
        batch = not isinstance(images, (list, tuple)) and np.ndim(images) == 4
        items = [images] if single else list(images)
        names = [str(i) for i in range(len(items))] if names is None else [str(n) for n in names]
        if len(names) != len(items):
            raise ValueError(f"{len(names)} names for {len(items)} images")
        if tile % self.task.model.multiple:  # as `driftrec restore` refuses it
            raise ValueError(f"tile {tile} must be a multiple of {self.task.model.multiple} for this model's network")
        prepared = [_to_rgb(np.asarray(x)) for x in items]
        setting = self.setting(sampler)
        groups: dict = {}  # DDRM: chroma layout -> image numbers (gray images have their own tables)
        for i, (_, gray, _) in enumerate(prepared):
            layout = None
            if self.task.needs_tables:
                if quality is None:
                    raise ValueError("a DDRM model needs quality=: the JPEG quality of the images' tables")
                layout = "4:4:4" if gray else "4:2:0"
            groups.setdefault(layout, []).append(i)
        mesh = parallel.local_mesh() if devices is None else parallel.make_mesh(devices)
        out: list = [None] * len(items)
        for layout, numbers in groups.items():
            tables = None
            if layout is not None:
                from .ddrm import pillow_tables

                tables = pillow_tables(quality, gray=layout == "4:4:4")[0]
            fn = self.task.tile_restorer(setting, eps=eps, color_correction=color_correction, subsampling=layout)
            n_tiles = sum(count_tiles(*prepared[i][0].shape[:2], tile, overlap) for i in numbers)
            eng = engine.TileEngine(fn, self.params, mesh=mesh, tile=tile, overlap=overlap, batch_size=batch_size,
                                    max_tiles=n_tiles, tables=tables is not None)
            sources = (engine.Source(names[i], prepared[i][0], tables, i) for i in numbers)
            for r in eng.run(sources, seed=seed):
                _, gray, kind = prepared[r.source.tag]
                out[r.source.tag] = _from_rgb(r.image, gray, kind)
        if single:
            return out[0]
        return np.stack(out) if batch else out

    def restore_files(self, paths: Sequence, out_dir, *, sampler: str | SamplerSetting | None = None, seed: int = 0,
                      tile: int = 256, overlap: int = 32, batch_size: int | None = None,
                      eps: float = sampler_settings.DEFAULT_EPS, color_correction: bool = True,
                      overwrite: bool = False, skip_existing: bool = False, max_pixels: int | None = None,
                      devices: int | None = None, compile_cache: bool = True) -> int:
        """`driftrec restore PATHS... -o OUT_DIR` with this model (files or folders; module
        docstring): `restoring.restore_files` with `model=self`. Returns 0 when every image was
        restored or skipped, 1 when some failed (one line each on stderr); `restoring.UsageError`
        (a ValueError) for a usage error (bad tiling, an output folder that is a file, no images
        found, ...). In a multi-process job every process calls it with the same arguments and
        restores its share of the files, as the command does."""
        from . import restoring

        return restoring.restore_files(
            paths, out_dir, model=self, sampler=self.setting(sampler), seed=seed, batch_size=batch_size,
            devices=devices, tile=tile, overlap=overlap, eps=eps, color_correction=color_correction,
            compile_cache=compile_cache, skip_existing=skip_existing, overwrite=overwrite, max_pixels=max_pixels)


def _to_rgb(x: np.ndarray) -> tuple[np.ndarray, bool, Any]:
    """(float32 RGB (H, W, 3) in [0, 1], was gray, (dtype, gray layout)) of an input image."""
    if x.ndim == 3 and x.shape[2] not in (1, 3):
        raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3), got {x.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3), got {x.shape}")
    if x.dtype == np.uint8 or x.dtype == np.uint16:
        f = x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    elif np.issubdtype(x.dtype, np.floating):
        f = x.astype(np.float32)
    else:
        raise ValueError(f"images must be uint8, uint16 or float in [0, 1], got {x.dtype}")
    gray = f.ndim == 2 or f.shape[2] == 1
    rgb = np.repeat(f.reshape(f.shape[0], f.shape[1], 1), 3, axis=2) if gray else f
    return np.ascontiguousarray(rgb), gray, (x.dtype, x.ndim)


def _from_rgb(rgb: np.ndarray, gray: bool, kind) -> np.ndarray:
    """The restored float RGB in the input's layout and dtype (rounded like the PNG writer)."""
    from .images import _quantise

    dtype, ndim = kind
    x = rgb.mean(axis=2, dtype=np.float32)[..., None] if gray else rgb
    if dtype in (np.uint8, np.uint16):
        out = np.empty(x.shape, dtype)
        _quantise(x, 16 if dtype == np.uint16 else 8, out)
        x = out
    else:
        x = np.clip(x, 0.0, 1.0).astype(dtype)
    return x[..., 0] if ndim == 2 else x
