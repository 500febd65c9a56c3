"""Tests of driftrec_jax.images: reading/writing every pixel format, output names, tiling.

Every image is tiny and made here. The model is replaced by cheap stand-ins (identity, an
inversion, a per-tile constant offset, a recorder of tile positions).
"""

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from driftrec_jax import images as im_lib
from driftrec_jax.images import (
    ImageReadError,
    count_tiles,
    load_image,
    output_path,
    output_paths,
    restore_image,
    restore_images,
    save_image,
    tile_origins,
    tile_windows,
)

RNG = np.random.default_rng(1234)
TILE, OVERLAP, BATCH = 48, 16, 4  # small tiles: step 32, overlaps of 16..32 pixels


def identity(tiles):
    assert tiles.shape == (BATCH, TILE, TILE, 3) and tiles.dtype == np.float32
    return tiles


# ---------------------------------------------------------------------------------------------
# Independent writers for formats Pillow cannot produce (16-bit multi-channel PNG and TIFF).


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_lines(raw_rows, bpp, first_filter=0):
    """PNG-filter byte rows, cycling filter types 0..4 (spec's reference definitions)."""
    out, prior = b"", bytes(len(raw_rows[0])) if raw_rows else b""
    for r, row in enumerate(raw_rows):
        ftype = (first_filter + r) % 5
        line = bytearray()
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][ftype]
            line.append((x - pred) % 256)
        out += bytes([ftype]) + bytes(line)
        prior = row
    return out


def _png16(path, a, interlace=False):
    """Write uint16 (H, W, C) as a 16-bit PNG with all five filter types (optionally Adam7)."""
    h, w, c = a.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c

    def rows_of(img):
        return [img[r].astype(">u2").tobytes() for r in range(img.shape[0])]

    if not interlace:
        data = _filter_lines(rows_of(a), bpp)
    else:
        data = b""
        for k, (y0, x0, dy, dx) in enumerate(
            [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
        ):
            sub = a[y0::dy, x0::dx]
            if sub.size:
                data += _filter_lines(rows_of(sub), bpp, first_filter=k)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, int(interlace))
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    )


def _tiff16_rgb(path, a, orientation=None):
    """Write uint16 (H, W, 3) as an uncompressed little-endian RGB TIFF, one strip."""
    h, w, _ = a.shape
    pixels = a.astype("<u2").tobytes()
    bps_at = 8 + len(pixels)
    ifd_at = bps_at + 6
    entries = [
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, 8), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1),
    ]
    if orientation:
        entries.append((274, 3, 1, orientation))
    entries.sort()
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 and count == 1 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    Path(path).write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + pixels + struct.pack("<3H", 16, 16, 16) + ifd)


def _u16(x):
    return np.round(np.asarray(x, np.float64) * 65535).astype(np.int64)


def _u8(x):
    return np.round(np.asarray(x, np.float64) * 255).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Tiling


@pytest.mark.parametrize(
    "h, w",
    [(5, 7), (48, 48), (49, 48), (33, 47), (100, 61), (1, 200), (211, 3), (17, 333), (129, 130)],
)
def test_identity_restore_reproduces_image(h, w):
    # pixel values as they come from files: k / 65535 (16-bit) and k / 255 (8-bit)
    k16 = RNG.integers(0, 65536, (h, w, 3))
    k8 = k16 >> 8
    calls = []

    def rec(tiles):
        calls.append(tiles.shape)
        return identity(tiles)

    for k, top in [(k16, 65535), (k8, 255)]:
        x = (k / top).astype(np.float32)
        y = restore_image(x, rec, tile=TILE, overlap=OVERLAP, batch_size=BATCH)
        assert y.shape == x.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, x, rtol=0, atol=2e-7)
        np.testing.assert_array_equal(np.round(y.astype(np.float64) * top), k)  # exact levels
    assert len(calls) == 2 * math.ceil(count_tiles(h, w, TILE, OVERLAP) / BATCH)


def test_tile_origins_grid_properties():
    for tile, overlap in [(48, 16), (64, 0), (256, 32), (80, 40), (50, 3)]:
        step_max = (tile - overlap) // 16 * 16
        for n in list(range(1, 300)) + [1000, 4000, 6000]:
            o = tile_origins(n, tile, overlap)
            assert o[0] == 0 and np.all(o % 16 == 0)
            assert o[-1] + tile >= n  # covered
            if n <= tile:
                assert len(o) == 1
            else:
                assert o[-1] + tile - n < 16  # at most 15 pixels of edge padding
                gaps = np.diff(o)
                assert np.all(gaps >= 16) and np.all(gaps <= step_max)
                # no fewer tiles would do with steps ≤ step_max
                assert (len(o) - 2) * step_max < o[-1]


def test_tiles_seen_by_model_sit_on_16_pixel_grid():
    """Encode pixel coordinates in the image and read them back from what the model receives."""
    h, w = 150, 83
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = np.stack([yy / 4096, xx / 4096, np.zeros_like(yy, float)], -1).astype(np.float32)
    seen = []

    def rec(tiles):
        for t in tiles:
            seen.append((round(float(t[0, 0, 0]) * 4096), round(float(t[0, 0, 1]) * 4096), t.copy()))
        return tiles

    restore_image(x, rec, tile=TILE, overlap=OVERLAP, batch_size=BATCH)
    real = seen[: count_tiles(h, w, TILE, OVERLAP)]
    oy, ox = tile_origins(h, TILE, OVERLAP), tile_origins(w, TILE, OVERLAP)
    assert [(a, b) for a, b, _ in real] == [(a, b) for a in oy for b in ox]
    for y0, x0, t in real:
        assert y0 % 16 == 0 and x0 % 16 == 0
        rows = np.minimum(np.arange(y0, y0 + TILE), h - 1)  # edge padding beyond the image
        cols = np.minimum(np.arange(x0, x0 + TILE), w - 1)
        np.testing.assert_array_equal(t, x[rows][:, cols])
    for _, _, t in seen[len(real):]:  # padding of the last batch
        assert not t.any()


def test_small_image_is_edge_padded_to_tile():
    x = RNG.random((5, 9, 3), dtype=np.float32)
    got = []
    restore_image(x, lambda t: got.append(t.copy()) or t, tile=TILE, overlap=OVERLAP, batch_size=BATCH)
    t = got[0][0]
    np.testing.assert_array_equal(t[:5, :9], x)
    np.testing.assert_array_equal(t[40, 30], x[4, 8])
    np.testing.assert_array_equal(t[2, 47], x[2, 8])


def test_windows_positive_and_cross_fade_to_one():
    o = tile_origins(300, TILE, OVERLAP)
    wins = tile_windows(o, TILE)
    total = np.zeros(o[-1] + TILE)
    for oi, wi in zip(o, wins):
        assert np.all(wi > 0) and np.all(wi <= 1)
        total[oi : oi + TILE] += wi
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_per_tile_offsets_blend_without_seams():
    """Each tile gets its own constant offset; the result must ramp between them smoothly."""
    h, w = 140, 175
    x = RNG.random((h, w, 3), dtype=np.float32) * 0.1
    offsets = []
    rng = np.random.default_rng(7)

    def shift(tiles):
        c = rng.uniform(-0.5, 0.5, size=len(tiles)).astype(np.float32)
        offsets.extend(c)
        return tiles + c[:, None, None, None]

    y = restore_image(x, shift, tile=TILE, overlap=OVERLAP, batch_size=BATCH)
    f = (y - x)[..., 0].astype(np.float64)
    oy, ox = tile_origins(h, TILE, OVERLAP), tile_origins(w, TILE, OVERLAP)
    c = np.array(offsets[: len(oy) * len(ox)]).reshape(len(oy), len(ox))

    # Where one tile alone covers a pixel, the output is that tile's output.
    def alone(o, n):
        spans = []
        for i, s in enumerate(o):
            lo = o[i - 1] + TILE if i > 0 else 0
            hi = o[i + 1] if i + 1 < len(o) else n
            spans.append((max(s, lo), min(s + TILE, hi, n)))
        return spans

    for i, (ya, yb) in enumerate(alone(oy, h)):
        for j, (xa, xb) in enumerate(alone(ox, w)):
            assert ya < yb and xa < xb
            np.testing.assert_allclose(f[ya:yb, xa:xb], c[i, j], atol=1e-6)

    # Between neighbours the blend follows a raised cosine over the overlap d ≥ OVERLAP, whose
    # steepest step is (π/2d)·|Δc|; a hard seam would jump by the whole |Δc| (up to 1 here).
    d_min = min(TILE - np.diff(oy).max(), TILE - np.diff(ox).max())
    assert d_min >= OVERLAP
    bound = math.pi / (2 * d_min) * (c.max() - c.min()) + 1e-5
    jump = max(np.abs(np.diff(f, axis=0)).max(), np.abs(np.diff(f, axis=1)).max())
    assert jump <= bound
    assert c.max() - c.min() > 0.5  # the offsets really were applied, so the bound means something
    assert bound < 0.1


def test_streaming_packs_tiles_across_images_in_order():
    sizes = [(20, 30), (70, 50), (5, 5), (48, 97), (33, 33), (1, 1)]
    xs = [RNG.random((h, w, 3), dtype=np.float32) for h, w in sizes]
    total = sum(count_tiles(h, w, TILE, OVERLAP) for h, w in sizes)

    def invert(t):
        assert t.shape == (BATCH, TILE, TILE, 3)
        return 1.0 - t

    pulled = []

    def source():
        for k, x in enumerate(xs):
            pulled.append(k)
            yield x

    reports = []
    outs = []
    for k, y in enumerate(
        restore_images(
            source(), invert, tile=TILE, overlap=OVERLAP, batch_size=BATCH,
            progress=lambda d, n: reports.append((d, n)), total_tiles=total,
        )
    ):
        # lazy: no image is pulled long before it is needed (at most one batch ahead)
        assert max(pulled) <= k + BATCH
        outs.append(y)
    assert len(outs) == len(xs)
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, 1.0 - x, atol=1e-6)
        np.testing.assert_allclose(
            y, restore_image(x, invert, tile=TILE, overlap=OVERLAP, batch_size=BATCH), atol=1e-7
        )
    assert len(reports) == math.ceil(total / BATCH)  # packed: only the last batch is partial
    assert reports[-1] == (total, total)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)


def test_progress_accepts_tqdm_like_object():
    class Bar:
        total = None
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    restore_image(RNG.random((90, 60, 3), dtype=np.float32), identity, TILE, OVERLAP, BATCH, progress=bar)
    assert bar.n == bar.total == count_tiles(90, 60, TILE, OVERLAP)


def test_tiling_rejects_bad_arguments():
    x = np.zeros((10, 10, 3), np.float32)
    with pytest.raises(ValueError, match="restore_batch returned shape"):
        restore_image(x, lambda t: t[:1], TILE, OVERLAP, BATCH)
    with pytest.raises(ValueError, match="overlap"):
        restore_image(x, identity, tile=48, overlap=40)
    with pytest.raises(ValueError, match="tile"):
        restore_image(x, identity, tile=8, overlap=0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        restore_image(np.zeros((10, 10), np.float32), identity, TILE, OVERLAP, BATCH)
    with pytest.raises(ValueError, match="float"):
        restore_image(np.zeros((10, 10, 3), np.uint8), identity, TILE, OVERLAP, BATCH)


# ---------------------------------------------------------------------------------------------
# Reading and writing


def test_rgb8_round_trip_and_rounding(tmp_path):
    a = RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    li = load_image(tmp_path / "a.png")
    assert li.rgb.dtype == np.float32 and li.rgb.shape == (13, 17, 3)
    assert (li.grayscale, li.bit_depth, li.alpha, li.name) == (False, 8, None, "a.png")
    np.testing.assert_array_equal(_u8(li.rgb), a)
    # rounding, not truncation: k + 0.6 levels → k + 1, k + 0.4 → k
    k = a.astype(np.float32)
    save_image(tmp_path / "up.png", np.minimum((k + 0.6) / 255, 1), li)
    save_image(tmp_path / "down.png", (k + 0.4) / 255, li)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "up.png")), np.minimum(a.astype(int) + 1, 255))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "down.png")), a)


def test_grayscale_in_grayscale_out(tmp_path):
    g = RNG.integers(0, 256, (11, 9), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    li = load_image(tmp_path / "g.png")
    assert li.grayscale and li.bit_depth == 8 and li.alpha is None
    np.testing.assert_array_equal(li.rgb[..., 0], li.rgb[..., 2])
    np.testing.assert_array_equal(_u8(li.rgb[..., 1]), g)
    y = restore_image(li.rgb, identity, TILE, OVERLAP, BATCH)
    y[..., 0] += 3 / 255  # written value is the mean of the three channels
    y[..., 1] -= 3 / 255
    out = save_image(tmp_path / "out" / "g.png", y, li)
    back = Image.open(out)
    assert back.mode == "L"
    np.testing.assert_array_equal(np.asarray(back), g)


def test_gray_16bit_png_round_trip(tmp_path):
    g = RNG.integers(0, 65536, (10, 12), dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    li = load_image(tmp_path / "g16.png")
    assert li.grayscale and li.bit_depth == 16
    np.testing.assert_array_equal(_u16(li.rgb[..., 0]), g)
    save_image(tmp_path / "o.png", li.rgb, li)
    back = Image.open(tmp_path / "o.png")
    assert back.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(back), g)


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_multichannel_png_keeps_16_bits(tmp_path, channels, interlace):
    a = RNG.integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    a[0, 0] = 0x12FF  # high and low bytes differ: 8-bit narrowing would lose 0xFF
    _png16(tmp_path / "in.png", a, interlace=interlace)
    li = load_image(tmp_path / "in.png")
    assert li.bit_depth == 16
    colour = a[..., :1] if channels == 2 else a[..., :3]
    assert li.grayscale == (channels == 2)
    np.testing.assert_array_equal(_u16(li.rgb), np.broadcast_to(colour, li.rgb.shape))
    if channels in (2, 4):
        np.testing.assert_array_equal(_u16(li.alpha), a[..., -1])
    else:
        assert li.alpha is None
    out = save_image(tmp_path / "out.png", restore_image(li.rgb, identity, TILE, OVERLAP, BATCH), li)
    # Pillow alone reads the high bytes (checks the file is a valid PNG of the right kind) ...
    pil = Image.open(out)
    assert pil.mode == {2: "RGBA", 3: "RGB", 4: "RGBA"}[channels]
    hi = np.asarray(pil)
    if channels == 2:
        np.testing.assert_array_equal(hi[..., 0], a[..., 0] >> 8)
        np.testing.assert_array_equal(hi[..., 3], a[..., 1] >> 8)
    else:
        np.testing.assert_array_equal(hi, a >> 8)
    # ... and reading it back gives every bit.
    again = load_image(out)
    assert again.bit_depth == 16 and again.grayscale == li.grayscale
    np.testing.assert_array_equal(_u16(again.rgb), np.broadcast_to(colour, li.rgb.shape))
    if channels in (2, 4):
        np.testing.assert_array_equal(_u16(again.alpha), a[..., -1])


def test_16bit_rgb_tiff_raw_and_deflate(tmp_path):
    a = RNG.integers(0, 65536, (7, 10, 3), dtype=np.uint16)
    _tiff16_rgb(tmp_path / "raw.tif", a)
    li = load_image(tmp_path / "raw.tif")
    assert li.bit_depth == 16 and not li.grayscale
    np.testing.assert_array_equal(_u16(li.rgb), a)
    _tiff16_rgb(tmp_path / "rot.tif", a, orientation=6)
    np.testing.assert_array_equal(_u16(load_image(tmp_path / "rot.tif").rgb), np.rot90(a, -1))
    tifffile = pytest.importorskip("tifffile")
    b = RNG.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", b, compression="zlib", photometric="rgb", extrasamples=["unassalpha"])
    li = load_image(tmp_path / "z.tif")  # decoded by libtiff in Pillow
    np.testing.assert_array_equal(_u16(li.rgb), b[..., :3])
    np.testing.assert_array_equal(_u16(li.alpha), b[..., 3])


def test_16bit_gray_tiff_with_orientation(tmp_path):
    """Pillow 13 mis-reads memory-mapped TIFFs with orientation 5–8 when opened by file name."""
    g = RNG.integers(0, 65536, (3, 4), dtype=np.uint16)
    for name, arr in [("g16.tif", g), ("g8.tif", (g >> 8).astype(np.uint8))]:
        pil = Image.fromarray(arr)
        exif = pil.getexif()
        exif[0x0112] = 6
        pil.save(tmp_path / name, exif=exif)
        li = load_image(tmp_path / name)
        scale = _u16 if arr.dtype == np.uint16 else _u8
        np.testing.assert_array_equal(scale(li.rgb[..., 0]), np.rot90(arr, -1))


def test_rgba_alpha_preserved_bit_exact(tmp_path):
    a = RNG.integers(0, 256, (15, 14, 4), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "rgba.png")
    li = load_image(tmp_path / "rgba.png")
    assert li.alpha is not None and not li.grayscale
    y = restore_image(li.rgb, lambda t: 1.0 - t, TILE, OVERLAP, BATCH)
    back = np.asarray(Image.open(save_image(tmp_path / "o.png", y, li)))
    assert back.shape == (15, 14, 4)
    np.testing.assert_array_equal(back[..., 3], a[..., 3])
    np.testing.assert_array_equal(back[..., :3], 255 - a[..., :3])


def test_gray_alpha_8bit(tmp_path):
    a = RNG.integers(0, 256, (6, 7, 2), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "la.png")
    li = load_image(tmp_path / "la.png")
    assert li.grayscale and li.alpha is not None
    back = Image.open(save_image(tmp_path / "o.png", li.rgb, li))
    assert back.mode == "LA"
    np.testing.assert_array_equal(np.asarray(back), a)


def test_palette_with_and_without_transparency_becomes_rgb(tmp_path):
    rgb = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    p = Image.fromarray(rgb).quantize(colors=16)
    p.save(tmp_path / "p.png")
    li = load_image(tmp_path / "p.png")
    assert (li.grayscale, li.alpha, li.mode) == (False, None, "P")
    np.testing.assert_array_equal(_u8(li.rgb), np.asarray(p.convert("RGB")))

    idx = np.asarray(p)
    p.info["transparency"] = int(idx[0, 0])
    p.save(tmp_path / "pt.png", transparency=int(idx[0, 0]))
    li = load_image(tmp_path / "pt.png")
    assert li.alpha is not None
    np.testing.assert_array_equal(_u8(li.alpha), np.where(idx == idx[0, 0], 0, 255))
    np.testing.assert_array_equal(_u8(li.rgb), np.asarray(p.convert("RGB")))
    back = Image.open(save_image(tmp_path / "o.png", li.rgb, li))
    assert back.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(back)[..., 3], np.where(idx == idx[0, 0], 0, 255))


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = RNG.integers(0, 256, (10, 8, 4), dtype=np.uint8)
    pil = Image.frombytes("CMYK", (8, 10), cmyk.tobytes())
    pil.save(tmp_path / "c.tif")
    li = load_image(tmp_path / "c.tif")
    assert li.rgb.shape == (10, 8, 3) and not li.grayscale and li.icc_profile is None
    ref = np.asarray(pil.convert("RGB")).astype(int)
    assert np.abs(_u8(li.rgb) - ref).max() <= 1
    pil.save(tmp_path / "c.jpg", quality=95)  # Adobe CMYK JPEG
    ref = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")).astype(int)
    assert np.abs(_u8(load_image(tmp_path / "c.jpg").rgb) - ref).max() <= 1
    assert Image.open(save_image(tmp_path / "o.png", li.rgb, li)).mode == "RGB"


# Expected effect of each EXIF orientation on the stored pixels (TIFF/EXIF 2.3 definitions).
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("ext", ["jpg", "png"])
@pytest.mark.parametrize("orientation", sorted(ORIENT))
def test_exif_orientation_applied(tmp_path, orientation, ext):
    a = np.zeros((16, 24, 3), np.uint8)
    a[:8, :8] = (250, 10, 10)  # marked top-left corner
    a[8:, 16:] = (10, 10, 250)
    pil = Image.fromarray(a)
    exif = pil.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"e.{ext}"
    pil.save(path, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    stored = np.asarray(Image.open(path))  # decoded pixels, orientation not applied
    li = load_image(path)
    np.testing.assert_array_equal(_u8(li.rgb), ORIENT[orientation](stored))
    # the orientation is in the pixels now, so the output carries no EXIF that would re-rotate it
    out = Image.open(save_image(tmp_path / "o.png", restore_image(li, identity, TILE, OVERLAP, BATCH), li))
    assert out.getexif().get(0x0112) is None
    np.testing.assert_array_equal(np.asarray(out), ORIENT[orientation](stored))


def test_icc_profile_carried_to_output(tmp_path):
    profile = b"not-a-real-profile" * 10
    Image.fromarray(RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(tmp_path / "i.png", icc_profile=profile)
    li = load_image(tmp_path / "i.png")
    assert li.icc_profile == profile
    assert Image.open(save_image(tmp_path / "o.png", li.rgb, li)).info["icc_profile"] == profile
    deep = im_lib.LoadedImage(li.rgb, None, False, 16, "x", icc_profile=profile)
    assert Image.open(save_image(tmp_path / "o16.png", li.rgb, deep)).info["icc_profile"] == profile


@pytest.mark.parametrize("kind", ["garbage", "truncated", "text", "missing", "directory", "empty"])
def test_unreadable_files_raise_image_read_error(tmp_path, kind):
    p = tmp_path / "bad.jpg"
    if kind == "garbage":
        p.write_bytes(bytes(RNG.integers(0, 256, 500, dtype=np.uint8)))
    elif kind == "truncated":
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p, quality=90)
        p.write_bytes(p.read_bytes()[:400])
    elif kind == "text":
        p.write_text("hello, I am not an image\n")
    elif kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    with pytest.raises(ImageReadError) as err:
        load_image(p)
    msg = str(err.value)
    assert "bad.jpg" in msg and "\n" not in msg
    assert isinstance(err.value, OSError)


def test_save_image_rejects_mismatch(tmp_path):
    li = im_lib.LoadedImage(np.zeros((4, 4, 3), np.float32), None, False, 8, "x")
    with pytest.raises(ValueError, match="source image"):
        save_image(tmp_path / "o.png", np.zeros((4, 5, 3), np.float32), li)
    with pytest.raises(ValueError, match="NaN"):
        save_image(tmp_path / "o.png", np.full((4, 4, 3), np.nan, np.float32), li)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Output names


def test_output_path_basic_rules(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    inputs = [a / "x.jpg", b / "x.jpg", a / "y.png", a / "z.jpeg"]
    out = tmp_path / "out"
    assert output_path(a / "z.jpeg", out, inputs) == out / "z.png"
    assert output_path(a / "x.jpg", out, inputs) == out / "x.png"  # a/… sorts first
    assert output_path(b / "x.jpg", out, inputs) == out / "x_2.png"
    # writing next to the inputs: a PNG input is never overwritten
    assert output_path(a / "y.png", a, inputs) == a / "y_restored.png"
    assert output_path(a / "z.jpeg", a, inputs) == a / "z.png"
    # order of the inputs does not matter
    assert output_paths(inputs[::-1], out) == output_paths(inputs, out)


def test_output_paths_never_hit_inputs_or_each_other(tmp_path):
    rng = np.random.default_rng(3)
    stems = ["a", "a_2", "a_restored", "a_restored_2", "A", "b", "b_3"]
    exts = [".png", ".jpg", ".JPG", ".jpeg", ".png"]
    folders = [tmp_path / "p", tmp_path / "q"]
    for trial in range(30):
        n = int(rng.integers(1, 14))
        inputs = sorted({folders[rng.integers(2)] / (stems[rng.integers(len(stems))] + exts[rng.integers(len(exts))])
                         for _ in range(n)})
        for outdir in folders + [tmp_path / "out"]:
            mapping = output_paths(inputs, outdir)
            outs = [str(mapping[str(p)]).casefold() for p in inputs]
            assert len(set(outs)) == len(outs)
            assert not set(outs) & {str(p).casefold() for p in inputs}
            assert all(o.endswith(".png") for o in outs)
            shuffled = [inputs[k] for k in rng.permutation(len(inputs))]
            assert output_paths(shuffled, outdir) == mapping


# ---------------------------------------------------------------------------------------------
# Atomic writing, header checks


def _listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"the user's file")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with im_lib.atomic_write(target) as fp:
            fp.write(b"half a new file")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"the user's file" and _listing(tmp_path) == ["a.png"]
    with im_lib.atomic_write(target) as fp:  # overwrite=True (the default) replaces it
        fp.write(b"new")
    assert target.read_bytes() == b"new" and _listing(tmp_path) == ["a.png"]
    # Permissions like any new file (umask), not tempfile's 0o600.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_write_never_replaces_without_overwrite(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # a file system without hard links: the exists-check fallback
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "a.png"
    target.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError):
        with im_lib.atomic_write(target, overwrite=False) as fp:
            fp.write(b"new")
    assert target.read_bytes() == b"the user's file" and _listing(tmp_path) == ["a.png"]
    with im_lib.atomic_write(tmp_path / "b.png", overwrite=False) as fp:
        fp.write(b"fresh")
    assert (tmp_path / "b.png").read_bytes() == b"fresh" and _listing(tmp_path) == ["a.png", "b.png"]


def test_write_png_text_and_failed_encoding(tmp_path):
    a = RNG.integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    im_lib.write_png(tmp_path / "d.png", a)
    back = load_image(tmp_path / "d.png")
    assert back.bit_depth == 16 and np.array_equal(_u16(back.rgb), a)
    with im_lib.atomic_write(tmp_path / "t.csv", text=True, newline="") as f:
        f.write("ä,b\r\n")
    assert (tmp_path / "t.csv").read_bytes() == "ä,b\r\n".encode()
    with pytest.raises(ValueError):
        im_lib.write_png(tmp_path / "bad.png", np.zeros((4, 4, 5), np.uint8))
    assert _listing(tmp_path) == ["d.png", "t.csv"]


def _png_header(w: int, h: int) -> bytes:
    """A PNG signature, an IHDR claiming w x h RGB pixels, and a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + im_lib._png_chunk(b"IHDR", ihdr)
            + im_lib._png_chunk(b"IDAT", zlib.compress(bytes(64))) + im_lib._png_chunk(b"IEND", b""))


def test_probe_image_checks_header_size_and_mode(tmp_path):
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(tmp_path / "ok.png")
    head = im_lib.probe_image(tmp_path / "ok.png")
    assert (head.width, head.height, head.mode, head.format) == (5, 3, "RGB", "PNG")
    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 20000))  # 600 MP: over 2x Pillow's limit
    with pytest.raises(im_lib.ImageTooLargeError) as err:
        im_lib.probe_image(tmp_path / "bomb.png")
    assert err.value.pixels == 600_000_000 and "30000x20000" in str(err.value) and "\n" not in str(err.value)
    assert im_lib.probe_image(tmp_path / "bomb.png", max_pixels=0).width == 30000  # 0: no limit
    with pytest.raises(im_lib.ImageTooLargeError):
        im_lib.probe_image(tmp_path / "ok.png", max_pixels=14)
    Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match="floating-point"):
        im_lib.probe_image(tmp_path / "float.tif")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image file"):
        im_lib.probe_image(tmp_path / "text.jpg")
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's limit is left as it was
