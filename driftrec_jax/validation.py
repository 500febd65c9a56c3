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
    one batch) and compressed with Pillow; the task restores it with the setting of
    `config.sample` (`Task.setting_from_config`: its own sampler's default when the block names
    another method's) from a fixed key, so values are comparable across training steps. A task
    that needs the JPEG's tables (DDRM) gets those of Pillow's 4:2:0 JPEGs at `quality`.
    Compiled once per task and setting (`Task.tile_restorer`).
    """
    import jax
    import jax.numpy as jnp

    from . import metrics as M
    from .data import jpeg_roundtrip

    clean = center_crops(folder, num_images, int(config.data.crop_size))
    jpeg = np.stack([jpeg_roundtrip(c, int(quality)) for c in clean]).astype(np.float32) / 255.0
    clean = clean.astype(np.float32) / 255.0
    n = len(clean)
    aux, subsampling = None, None
    if task.needs_tables:
        from .ddrm import pillow_tables

        (luma, chroma), subsampling = pillow_tables(int(quality))
        aux = (np.broadcast_to(np.asarray(luma, np.int32), (n, 8, 8)), np.broadcast_to(np.asarray(chroma, np.int32), (n, 8, 8)))
    fn = task.tile_restorer(task.setting_from_config(config.sample), eps=float(config.sample.eps),
                            color_correction=True, subsampling=subsampling)
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    x, _ = fn(params, jnp.asarray(jpeg), keys, aux)
    x = M.quantize_uint8(x)
    return {
        "psnr": float(jnp.mean(M.psnr(x, clean))),
        "ssim": float(jnp.mean(M.ssim(x, clean, convention="driftrec"))),
        "lpips": float(jnp.mean(M.lpips(x, clean))),
    }
