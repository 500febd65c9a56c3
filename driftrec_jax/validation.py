"""Validation during training (`train.eval_every`): metrics of restorations of a few central crops.

Below both `train_cli` and `evaluate` (which re-exports these names), so that training never
imports the evaluation command.
"""

from __future__ import annotations

import numpy as np


def _center_crop(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape[:2]
    if h < size or w < size:
        raise ValueError(f"validation image of {h}x{w} is smaller than the crop size {size}")
    t, l = (h - size) // 2, (w - size) // 2
    return x[t:t + size, l:l + size]


def center_crops(folder: str, num_images: int, size: int) -> np.ndarray:
    """Central size x size crops of the first `num_images` images of `folder` (sorted, as
    `data.list_images`), as an (N, size, size, 3) uint8 batch."""
    from .data import list_images, load_rgb

    files = list_images(folder)[: int(num_images)]
    if not files:
        raise ValueError(f"no validation images in {folder}")
    return np.stack([_center_crop(load_rgb(p), int(size)) for p in files])


def quick_validation(task, params, config, folder: str, num_images: int, quality: int) -> dict[str, float]:
    """PSNR, SSIM (DriftRec convention) and LPIPS of restorations of the first `num_images`
    images of `folder` at JPEG quality `quality`, averaged (docs/EVALUATE.md).

    Each image is centre-cropped to `config.data.crop_size` (one network tile: validation costs
    one call) and compressed with Pillow; the task restores it with the setting of
    `config.sample` (`Task.setting_from_config`: its own sampler's default when the block names
    another method's). The tile engine runs on this process's devices (`parallel.local_mesh`:
    training calls this on process 0 only) with seed 0 and each file's name as its identity
    (`engine.tile_key`), so values are comparable across training steps. A task that needs the
    JPEG's tables (DDRM) gets those of Pillow's 4:2:0 JPEGs at `quality`. Compiled once per task
    and setting (`Task.tile_restorer`).
    """
    import os

    import jax.numpy as jnp

    from . import engine, parallel
    from . import metrics as M
    from .data import jpeg_roundtrip, list_images

    size = int(config.data.crop_size)
    clean = center_crops(folder, num_images, size)
    names = [os.path.basename(p) for p in list_images(folder)[: len(clean)]]
    jpeg = np.stack([jpeg_roundtrip(c, int(quality)) for c in clean]).astype(np.float32) / 255.0
    clean = clean.astype(np.float32) / 255.0
    tables, subsampling = None, None
    if task.needs_tables:
        from .ddrm import pillow_tables

        tables, subsampling = pillow_tables(int(quality))
    fn = task.tile_restorer(task.setting_from_config(config.sample), eps=float(config.sample.eps),
                            color_correction=True, subsampling=subsampling)
    eng = engine.TileEngine(fn, params, mesh=parallel.local_mesh(), tile=size, overlap=0,
                            batch_size=len(clean), max_tiles=len(clean), tables=task.needs_tables)
    results = eng.run(engine.Source(n, y, tables) for n, y in zip(names, jpeg))
    x = M.quantize_uint8(jnp.asarray(np.stack([np.clip(r.image, 0.0, 1.0) for r in results])))
    return {
        "psnr": float(jnp.mean(M.psnr(x, clean))),
        "ssim": float(jnp.mean(M.ssim(x, clean, convention="driftrec"))),
        "lpips": float(jnp.mean(M.lpips(x, clean))),
    }
