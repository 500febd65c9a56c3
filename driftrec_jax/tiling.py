"""Seamless tiling of images of any size: the tile grid, blending windows and a tile-by-tile loop.

The restoration network works on fixed-size square tiles (one compiled batch shape). An image of
any size is cut into tiles whose origins are multiples of ALIGN = 16 pixels (JPEG's 8×8 blocks and
16×16 4:2:0 macroblocks keep their place inside every tile), tiles beyond the border are
edge-padded, and the restored tiles are blended back with raised-cosine windows normalised to sum
to one at every pixel. Tile number k of an image is the k-th (i, j) of `TiledImage.tiles`, row-major.

`driftrec_jax.engine` builds its sharded batches on `TiledImage`; `restore_images` /
`restore_image` are the plain loop over one ``restore_batch(tiles) -> tiles`` callable (tests,
notebooks). Only numpy is imported here; image files are `driftrec_jax.images`' business.
"""

from __future__ import annotations

import collections
from typing import Callable, Iterable, Iterator

import numpy as np

__all__ = ["ALIGN", "tile_origins", "tile_windows", "count_tiles", "TiledImage", "restore_images",
           "restore_image", "check_tiling"]

# Tile origins are multiples of this many pixels: the 16×16 MCU of 4:2:0 JPEG (which contains
# the 8×8 DCT blocks), so block boundaries sit at the same place in every tile as in the image.
ALIGN = 16



def check_tiling(tile: int, overlap: int, batch_size: int = 1) -> None:
    if int(tile) != tile or tile < ALIGN:
        raise ValueError(f"tile must be an integer ≥ {ALIGN}, got {tile}")
    if int(overlap) != overlap or overlap < 0 or tile - overlap < ALIGN:
        raise ValueError(f"overlap must be an integer in [0, tile − {ALIGN}] = [0, {tile - ALIGN}], got {overlap}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def tile_origins(length: int, tile: int = 256, overlap: int = 32) -> np.ndarray:
    """Tile start positions along one axis of `length` pixels (int64 array, increasing).

    All origins are multiples of ALIGN = 16. A length ≤ tile gives the single origin 0 (the tile
    is edge-padded beyond the image). Otherwise the last origin is the smallest multiple of 16
    ≥ length − tile (so at most 15 pixels of edge padding), the number of tiles is the least for
    which no step between origins exceeds the largest multiple of 16 ≤ tile − overlap, and the
    origins are spread evenly between 0 and the last one. Adjacent tiles therefore overlap by at
    least `overlap` (and at most tile − 16) pixels.
    """
    check_tiling(tile, overlap)
    if int(length) != length or length < 1:
        raise ValueError(f"image side must be a positive integer, got {length}")
    if length <= tile:
        return np.zeros(1, np.int64)
    last = -(-(length - tile) // ALIGN)  # in units of ALIGN
    step = (tile - overlap) // ALIGN
    gaps = -(-last // step)
    i = np.arange(gaps + 1, dtype=np.int64)
    return ALIGN * ((2 * i * last + gaps) // (2 * gaps))


def _ramp(d: int) -> np.ndarray:
    """Raised-cosine ramp sin²(π/2·(t + ½)/d), t = 0..d−1: strictly between 0 and 1, and
    ramp + reversed ramp = 1, so two tiles cross-fade with weights summing to one."""
    t = (np.arange(d, dtype=np.float64) + 0.5) / d
    return np.sin(0.5 * np.pi * t) ** 2


def tile_windows(origins: np.ndarray, tile: int) -> list[np.ndarray]:
    """Blending window (float64, length `tile`, positive everywhere) of each tile along one axis.

    The window is 1 except over the overlap with the previous tile (where it rises along a
    raised-cosine ramp as long as that overlap) and with the next tile (where it falls likewise).
    The 2-D weight of a tile is the outer product of its row and column windows.
    """
    out = []
    for i, o in enumerate(origins):
        w = np.ones(tile)
        if i > 0:
            d = int(origins[i - 1] + tile - o)
            w[:d] *= _ramp(d)
        if i < len(origins) - 1:
            d = int(o + tile - origins[i + 1])
            w[tile - d :] *= _ramp(d)[::-1]
        out.append(w)
    return out


def _normalised_windows(length: int, tile: int, overlap: int):
    """Origins and windows along one axis, the windows divided by their sum over all tiles at each
    pixel (the sum is separable because the tiles form a full grid), as float32."""
    origins = tile_origins(length, tile, overlap)
    wins = tile_windows(origins, tile)
    total = np.zeros(int(origins[-1]) + tile)
    for o, w in zip(origins, wins):
        total[o : o + tile] += w
    normed = [(w / total[o : o + tile]).astype(np.float32) for o, w in zip(origins, wins)]
    return origins, normed


def count_tiles(height: int, width: int, tile: int = 256, overlap: int = 32) -> int:
    """Number of tiles `restore_image` uses for a height × width image (symmetric in h, w, so the
    EXIF orientation does not matter; a progress bar can be sized from file headers)."""
    return len(tile_origins(height, tile, overlap)) * len(tile_origins(width, tile, overlap))


class TiledImage:
    """One image being restored: its tiles, and the accumulator of blended outputs."""

    def __init__(self, image: np.ndarray, tile: int, overlap: int):
        image = np.asarray(getattr(image, "rgb", image))
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"each image must have shape (H, W, 3), got {image.shape}")
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"images must be float arrays in [0, 1], got dtype {image.dtype}")
        h, w, _ = image.shape
        self.image = image
        self.tile = tile
        self.oy, self.wy = _normalised_windows(h, tile, overlap)
        self.ox, self.wx = _normalised_windows(w, tile, overlap)
        self.out = np.zeros((h, w, 3), np.float32)
        self.remaining = len(self.oy) * len(self.ox)

    def tiles(self) -> Iterator[tuple[int, int]]:
        for i in range(len(self.oy)):
            for j in range(len(self.ox)):
                yield i, j

    def extract(self, i: int, j: int, dest: np.ndarray) -> None:
        """Copy tile (i, j) into dest (tile, tile, 3), edge-padding beyond the image."""
        h, w, _ = self.image.shape
        y, x, t = int(self.oy[i]), int(self.ox[j]), self.tile
        if y + t <= h and x + t <= w:
            dest[...] = self.image[y : y + t, x : x + t]
        else:
            rows = np.minimum(np.arange(y, y + t), h - 1)
            cols = np.minimum(np.arange(x, x + t), w - 1)
            dest[...] = self.image[rows[:, None], cols[None, :]]

    def add(self, i: int, j: int, restored: np.ndarray) -> None:
        """Accumulate a restored tile with its normalised window (cropped to the image)."""
        h, w, _ = self.out.shape
        y, x, t = int(self.oy[i]), int(self.ox[j]), self.tile
        hv, wv = min(t, h - y), min(t, w - x)
        weight = self.wy[i][:hv, None, None] * self.wx[j][None, :wv, None]
        self.out[y : y + hv, x : x + wv] += restored[:hv, :wv] * weight
        self.remaining -= 1


def _report(progress, done: int, total: int | None, new: int) -> None:
    if progress is None:
        return
    if hasattr(progress, "update"):  # tqdm-like
        if total is not None and getattr(progress, "total", None) is None:
            progress.total = total
        progress.update(new)
    else:
        progress(done, total)


def restore_images(
    images: Iterable[np.ndarray],
    restore_batch: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    progress=None,
    total_tiles: int | None = None,
) -> Iterator[np.ndarray]:
    """Restore a stream of float RGB images (H, W, 3) of any sizes; yield the results in order.

    `images` may also hold LoadedImage objects (their .rgb is used).

    Tiles of consecutive images are packed into the same fixed-shape batches
    (batch_size, tile, tile, 3), so `restore_batch` always sees one shape (one compilation) and
    folders of many small images keep the batch full; only the very last batch is padded (with
    zero tiles, whose outputs are discarded). Tiles follow `tile_origins` on both axes; each
    restored tile is weighted by the outer product of its `tile_windows`, normalised so the
    weights at every pixel sum to one, and accumulated. Images are pulled from `images` only when
    the batch needs their tiles, and each result is yielded as soon as its last tile is back, so
    memory holds the accumulators (float32 H×W×3) of the few images that have tiles in the
    current batch, one batch of tiles and its output. Outputs are float32 and not clipped.

    progress: None, a callable progress(n_done_tiles, n_total_tiles) called after every batch
    (n_total_tiles is `total_tiles`, None if not given; see `count_tiles`), or a tqdm-like object
    whose update(n) is called with the tiles just done (its total is set from `total_tiles`).
    """
    check_tiling(tile, overlap, batch_size)
    shape = (batch_size, tile, tile, 3)
    pending: collections.deque[TiledImage] = collections.deque()
    slots: list[tuple[TiledImage, int, int]] = []
    batch = np.zeros(shape, np.float32)
    done = 0

    def run() -> None:
        nonlocal batch, done
        out = np.asarray(restore_batch(batch))
        if out.shape != shape:
            raise ValueError(f"restore_batch returned shape {out.shape}, expected {shape}")
        for n, (job, i, j) in enumerate(slots):
            job.add(i, j, out[n])
        done += len(slots)
        _report(progress, done, total_tiles, len(slots))
        slots.clear()
        batch = np.zeros(shape, np.float32)

    for image in images:
        job = TiledImage(image, tile, overlap)
        pending.append(job)
        for i, j in job.tiles():
            job.extract(i, j, batch[len(slots)])
            slots.append((job, i, j))
            if len(slots) == batch_size:
                run()
                while pending and pending[0].remaining == 0:
                    yield pending.popleft().out
        job.image = None  # every tile is copied out: the input is no longer needed here
    if slots:
        run()
    while pending:
        yield pending.popleft().out


def restore_image(
    rgb: np.ndarray,
    restore_batch: Callable[[np.ndarray], np.ndarray],
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    progress=None,
) -> np.ndarray:
    """Restore one float RGB image (H, W, 3) of any size tile by tile (see `restore_images`).

    Images smaller than a tile are edge-padded to the tile; tile origins are multiples of 16;
    overlaps are cross-faded with raised-cosine windows; the last batch is padded to batch_size.
    With an identity `restore_batch` the result equals the input up to float32 rounding.
    """
    rgb = np.asarray(getattr(rgb, "rgb", rgb))
    total = count_tiles(rgb.shape[0], rgb.shape[1], tile, overlap) if rgb.ndim == 3 else None
    (out,) = restore_images(
        [rgb], restore_batch, tile=tile, overlap=overlap, batch_size=batch_size,
        progress=progress, total_tiles=total,
    )
    return out
