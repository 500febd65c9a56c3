"""The JPEG operator in JAX: quality → tables, encode to quantised DCT coefficients, decode.

DDRM-JPEG (Kawar et al. 2022, Sec. 3; docs/DDRM.md) needs y0 = D(E(x)) and
x̃0 = x̂0 − D(E(x̂0)) + y0 inside a jitted sampler, so the operator here is pure jnp, jit- and
vmap-able, and follows what libjpeg (as used by Pillow and TensorFlow) does step by step, so that
D(E(x)) is the image a real JPEG file would decode to:

  encode  8-bit samples → RGB→YCbCr (BT.601 full range, libjpeg's 16-bit fixed point and +128
          offset) → edge padding to whole MCUs → 4:2:0: 2×2 mean with libjpeg's alternating
          1,2 rounding bias (h2v2_downsample) → 8×8 DCT of samples − 128 → divide by the table,
          round half away from zero.
  decode  multiply by the table → inverse DCT, + 128, round, clip to 0..255 → 4:2:0: libjpeg's
          "fancy" triangular upsampling (3/4–1/4 in both directions, its rounding) → YCbCr→RGB
          (libjpeg's fixed point) → clip to 0..255.

Two DCTs are available (argument `dct`):
  "islow"  libjpeg's default integer DCT/IDCT (jfdctint / jidctint, 13-bit fixed point) and its
           quantiser, in int32. With it the operator reproduces Pillow's (libjpeg-turbo's)
           encode+decode exactly on every image measured (bench/results/jpeg.md). Default.
  "float"  the plain orthonormal 8×8 DCT (matrix products at HIGHEST precision); a few
           coefficients fall on the other side of a rounding boundary, so it is close to but
           not identical with libjpeg.

Conventions: images are (..., H, W, 3) float arrays (any leading batch dims), values in
[0, data_range] (data_range 1.0 as everywhere in driftrec_jax, or 255.0); the encoder clips and
rounds to 8-bit levels first, as any 8-bit encoder sees its input. Tables are (..., 8, 8) in
natural (row-major, not zigzag) order; leading dims broadcast against the image's batch dims.
Coefficients are `JpegCoefficients(y, cb, cr)`, each (..., rows, cols, 8, 8) float32 holding
integers (the quantised DCT levels, i.e. DCT / table), blocks in raster order.

D(E(·)) is idempotent up to rounding on images whose size is a whole number of MCUs (8 or 16 px):
E(D(E(x))) = E(x) on all but a fraction of a percent of the coefficients. On other sizes the
partial edge blocks change on re-encoding, as with real JPEG files: the encoder pads by
replicating the last real pixel, which after decoding is not what the first encoding padded with.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SUBSAMPLINGS = ("4:2:0", "4:4:4")
DCT_METHODS = ("islow", "float")

# ITU-T T.81 Annex K.1 base tables (natural order), as libjpeg scales them.
LUMA_BASE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int32,
)
CHROMA_BASE_TABLE = np.full((8, 8), 99, dtype=np.int32)
CHROMA_BASE_TABLE[:4, :4] = [
    [17, 18, 24, 47],
    [18, 21, 26, 66],
    [24, 26, 56, 99],
    [47, 66, 99, 99],
]


def _zigzag_to_natural() -> np.ndarray:
    """Index i of the zigzag sequence → natural (row-major) position, T.81 Figure 5."""
    order = []
    for s in range(15):  # anti-diagonals row + col = s
        rows = range(max(0, s - 7), min(s, 7) + 1)
        rows = rows if s % 2 else reversed(rows)  # odd diagonals run downwards
        order.extend(r * 8 + (s - r) for r in rows)
    return np.array(order, dtype=np.int32)


ZIGZAG = _zigzag_to_natural()


# --------------------------------------------------------------------------- quality → tables


def _libjpeg_scale(quality):
    """libjpeg's jpeg_quality_scaling (jcparam.c): 5000 // q below 50, else 200 − 2q (percent)."""
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def quality_to_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """libjpeg's quantisation tables for a quality 1..100 (IJG libjpeg), in integer arithmetic.

    table = clip((s · base + 50) // 100, 1, 255) with s from `_libjpeg_scale` and the Annex K
    luma/chroma bases; the clip at 255 is libjpeg's default force_baseline (Pillow, TF).
    Returns (luma, chroma), each an (8, 8) int32 numpy array in natural order.
    """
    if isinstance(quality, (bool, np.bool_)) or not isinstance(quality, (int, np.integer)):
        raise TypeError(f"quality must be an int in 1..100, got {quality!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    s = _libjpeg_scale(int(quality))
    return tuple(np.clip((s * base + 50) // 100, 1, 255).astype(np.int32)
                 for base in (LUMA_BASE_TABLE, CHROMA_BASE_TABLE))


def quality_to_tables_jnp(quality) -> tuple[Array, Array]:
    """`quality_to_tables` in jnp, for a traced or batched quality (any shape, ints).

    Same integer arithmetic; qualities outside 1..100 are clipped (libjpeg clamps the same
    way; a traced value cannot raise). Returns (luma, chroma) int32 of shape quality.shape + (8, 8).
    """
    q = jnp.clip(jnp.asarray(quality).astype(jnp.int32), 1, 100)[..., None, None]
    s = jnp.where(q < 50, 5000 // q, 200 - 2 * q)
    return tuple(jnp.clip((s * jnp.asarray(base) + 50) // 100, 1, 255)
                 for base in (LUMA_BASE_TABLE, CHROMA_BASE_TABLE))


# --------------------------------------------------------------------------- reading JPEG files


class JpegFileTables(NamedTuple):
    """Quantisation tables and chroma subsampling of a JPEG file (`read_jpeg_tables`)."""

    tables: tuple  # (luma, chroma), or (y, cb, cr) when Cb and Cr use different tables, or (luma,)
    subsampling: str  # "4:2:0", "4:4:4", "4:2:2", "4:4:0", "4:1:1", "gray" or "HxV,HxV,HxV"


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _parse_jpeg_header(data: bytes):
    """DQT tables (natural order) and SOF components [(id, h, v, tq)] of a JPEG byte string."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    tables, components, pos = {}, None, 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG header: expected a marker at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos + 2 >= len(data):
            break
        marker = data[pos]
        length = int.from_bytes(data[pos + 1:pos + 3], "big")
        seg = data[pos + 3:pos + 1 + length]
        pos += 1 + length
        if marker == 0xDB:  # DQT: one or more (Pq|Tq, 64 values in zigzag order)
            while seg:
                precision, index = seg[0] >> 4, seg[0] & 15
                n = 64 * (2 if precision else 1)
                raw = np.frombuffer(seg[1:1 + n], dtype=">u2" if precision else np.uint8)
                if raw.size != 64:
                    raise ValueError("corrupt JPEG file: truncated DQT segment")
                table = np.empty(64, np.int32)
                table[ZIGZAG] = raw
                tables[index] = table.reshape(8, 8)
                seg = seg[1 + n:]
        elif marker in _SOF_MARKERS:
            count = seg[5]
            components = [(seg[6 + 3 * i], seg[7 + 3 * i] >> 4, seg[7 + 3 * i] & 15,
                           seg[8 + 3 * i]) for i in range(count)]
        elif marker == 0xDA:  # start of scan: every table a frame uses is defined by now
            break
    if components is None:
        raise ValueError("JPEG file has no frame header (SOF)")
    return tables, components


def _subsampling_name(components) -> str:
    if len(components) == 1:
        return "gray"
    factors = [(h, v) for _, h, v, _ in components]
    if len(factors) == 3 and factors[1] == factors[2] == (1, 1):
        names = {(1, 1): "4:4:4", (2, 2): "4:2:0", (2, 1): "4:2:2", (1, 2): "4:4:0",
                 (4, 1): "4:1:1"}
        if factors[0] in names:
            return names[factors[0]]
    return ",".join(f"{h}x{v}" for h, v in factors)


def read_jpeg_tables(path: Union[str, os.PathLike, bytes]) -> JpegFileTables:
    """Quantisation tables (natural order, int32 (8, 8)) and chroma subsampling of a JPEG file.

    Parses the DQT and SOF markers directly (baseline, extended and progressive files).
    `path` is a file path or the file's bytes. For a YCbCr file whose Cb and Cr share a table
    `tables` is (luma, chroma), ready for `jpeg_encode` / `jpeg_decode`.
    """
    data = path if isinstance(path, (bytes, bytearray)) else open(path, "rb").read()
    tables, components = _parse_jpeg_header(bytes(data))
    missing = sorted({c[3] for c in components} - tables.keys())
    if missing:
        raise ValueError(f"JPEG file uses quantisation table(s) {missing} but does not define them")
    per_component = [tables[c[3]] for c in components]
    if len(per_component) == 3 and components[1][3] == components[2][3]:
        per_component = per_component[:2]
    return JpegFileTables(tuple(per_component), _subsampling_name(components))


# --------------------------------------------------------------------------- colour (libjpeg)

# libjpeg's 16-bit fixed point: FIX(x) = round(x · 2^16), ONE_HALF = 2^15 (jccolor.c, jdcolor.c).
_SCALEBITS = 16
_HALF = 1 << (_SCALEBITS - 1)


def _fix16(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


def _rgb_to_ycbcr(rgb: Array) -> tuple[Array, Array, Array]:
    """BT.601 full-range RGB → YCbCr on int32 0..255 samples, exactly as libjpeg's encoder.

    Cb/Cr carry the +128 offset and round with 0.5 − ε so that 255 stays 255 (jccolor.c).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    offset = (128 << _SCALEBITS) + _HALF - 1
    y = (_fix16(0.29900) * r + _fix16(0.58700) * g + _fix16(0.11400) * b + _HALF) >> _SCALEBITS
    cb = (-_fix16(0.16874) * r - _fix16(0.33126) * g + _fix16(0.5) * b + offset) >> _SCALEBITS
    cr = (_fix16(0.5) * r - _fix16(0.41869) * g - _fix16(0.08131) * b + offset) >> _SCALEBITS
    return y, cb, cr


def _ycbcr_to_rgb(y: Array, cb: Array, cr: Array) -> Array:
    """YCbCr → RGB on int32 samples, exactly as libjpeg's decoder (jdcolor.c), clipped to 0..255."""
    cb, cr = cb - 128, cr - 128
    r = y + ((_fix16(1.40200) * cr + _HALF) >> _SCALEBITS)
    g = y + ((-_fix16(0.34414) * cb - _fix16(0.71414) * cr + _HALF) >> _SCALEBITS)
    b = y + ((_fix16(1.77200) * cb + _HALF) >> _SCALEBITS)
    return jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)


# --------------------------------------------------------------------------- chroma resampling


def _pad_edge(x: Array, rows: int, cols: int) -> Array:
    """Replicates the last row/column of the trailing (rows, cols) plane dims up to that size."""
    pad = [(0, 0)] * (x.ndim - 2) + [(0, rows - x.shape[-2]), (0, cols - x.shape[-1])]
    return jnp.pad(x, pad, mode="edge")


def _downsample_h2v2(plane: Array) -> Array:
    """libjpeg's h2v2_downsample: 2×2 sums + bias 1, 2, 1, 2, ... along a row, then >> 2."""
    *lead, h, w = plane.shape
    sums = plane.reshape(*lead, h // 2, 2, w // 2, 2).sum(axis=(-3, -1))
    bias = 1 + (jnp.arange(w // 2, dtype=jnp.int32) % 2)
    return (sums + bias) >> 2


def _upsample_h2v2_fancy(plane: Array) -> Array:
    """libjpeg's h2v2_fancy_upsample: triangular 3/4–1/4 filter in both directions.

    Vertically each output row is 3·nearest + next-nearest input row (edges replicated);
    horizontally the same weights on those sums, rounded with +8 (left output) and +7 (right
    output) before >> 4. Returns (..., 2h, 2w) int32.
    """
    up = jnp.concatenate([plane[..., :1, :], plane[..., :-1, :]], axis=-2)
    down = jnp.concatenate([plane[..., 1:, :], plane[..., -1:, :]], axis=-2)
    rows = jnp.stack([3 * plane + up, 3 * plane + down], axis=-2)  # (..., h, 2, w)
    rows = rows.reshape(*plane.shape[:-2], 2 * plane.shape[-2], plane.shape[-1])
    left = jnp.concatenate([rows[..., :1], rows[..., :-1]], axis=-1)
    right = jnp.concatenate([rows[..., 1:], rows[..., -1:]], axis=-1)
    out = jnp.stack([(3 * rows + left + 8) >> 4, (3 * rows + right + 7) >> 4], axis=-1)
    return out.reshape(*rows.shape[:-1], 2 * rows.shape[-1])


def _upsample_h2v2_box(plane: Array) -> Array:
    """libjpeg's h2v2_upsample (pixel replication), which it uses when the chroma is ≤ 2 wide."""
    return jnp.repeat(jnp.repeat(plane, 2, axis=-2), 2, axis=-1)


# --------------------------------------------------------------------------- blocks and DCTs


def _to_blocks(plane: Array) -> Array:
    """(..., 8R, 8C) → (..., R, C, 8, 8)."""
    *lead, h, w = plane.shape
    return jnp.swapaxes(plane.reshape(*lead, h // 8, 8, w // 8, 8), -3, -2)


def _from_blocks(blocks: Array) -> Array:
    """(..., R, C, 8, 8) → (..., 8R, 8C)."""
    *lead, r, c, _, _ = blocks.shape
    return jnp.swapaxes(blocks, -3, -2).reshape(*lead, 8 * r, 8 * c)


def _dct_matrix() -> np.ndarray:
    """Orthonormal DCT-II matrix: M[k, n] = a_k cos((2n + 1) k π / 16); T.81 A.3.3's FDCT = M X Mᵀ."""
    k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    m = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


_DCT = _dct_matrix()
_HI = jax.lax.Precision.HIGHEST  # float32 matmuls must not drop to TF32/bf16 on accelerators


def _float_fdct(blocks: Array) -> Array:
    return jnp.einsum("ij,...jk,lk->...il", _DCT, blocks, _DCT, precision=_HI)


def _float_idct(coefs: Array) -> Array:
    return jnp.einsum("ji,...jk,kl->...il", _DCT, coefs, _DCT, precision=_HI)


# libjpeg's ISLOW fixed point: 13-bit constants, 2 extra bits kept between the two passes.
_CB, _P1 = 13, 2
_C = {k: int(float(k) * (1 << _CB) + 0.5) for k in (
    "0.298631336", "0.390180644", "0.541196100", "0.765366865", "0.899976223", "1.175875602",
    "1.501321110", "1.847759065", "1.961570560", "2.053119869", "2.562915447", "3.072711026")}


def _odd_rotations(a, b, c, d):
    """The shared odd-part butterfly of jfdctint/jidctint (Loeffler–Ligtenberg–Moschytz).

    With a, b, c, d the odd inputs ordered as (x7, x5, x3, x1) in the IDCT and as
    (x3−x4, x2−x5, x1−x6, x0−x7) in the FDCT, returns the four rotated sums.
    """
    s1, s2, s3, s4 = a + d, b + c, a + c, b + d
    common = (s3 + s4) * _C["1.175875602"]
    s1 = s1 * -_C["0.899976223"]
    s2 = s2 * -_C["2.562915447"]
    s3 = s3 * -_C["1.961570560"] + common
    s4 = s4 * -_C["0.390180644"] + common
    return (a * _C["0.298631336"] + s1 + s3, b * _C["2.053119869"] + s2 + s4,
            c * _C["3.072711026"] + s2 + s3, d * _C["1.501321110"] + s1 + s4)


def _islow_fdct_1d(x: list, first_pass: bool):
    """One pass of libjpeg's jpeg_fdct_islow on the 8 samples x of a line.

    Everything before the final rounding is integer-linear, so this returns the 8 outputs
    before rounding and the right shift (with round half up) each output gets.
    """
    t0, t1, t2, t3 = (x[i] + x[7 - i] for i in range(4))
    t7, t6, t5, t4 = (x[i] - x[7 - i] for i in range(4))
    e10, e13, e11, e12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    rot = (e12 + e13) * _C["0.541196100"]
    out = [None] * 8
    out[0], out[4] = e10 + e11, e10 - e11
    out[2] = rot + e13 * _C["0.765366865"]
    out[6] = rot - e12 * _C["1.847759065"]
    out[7], out[5], out[3], out[1] = _odd_rotations(t4, t5, t6, t7)
    if first_pass:  # DC and the 4th harmonic are scaled up by 2^P1, the rest rounded down to it
        out[0], out[4] = out[0] * (1 << _P1), out[4] * (1 << _P1)
        shifts = [0 if i in (0, 4) else _CB - _P1 for i in range(8)]
    else:
        shifts = [_P1 if i in (0, 4) else _CB + _P1 for i in range(8)]
    return out, shifts


def _islow_idct_1d(x: list, first_pass: bool):
    """One pass of libjpeg's jpeg_idct_islow on the 8 coefficients x of a line (outputs before
    rounding, and their right shifts), like `_islow_fdct_1d`."""
    rot = (x[2] + x[6]) * _C["0.541196100"]
    e2 = rot - x[6] * _C["1.847759065"]
    e3 = rot + x[2] * _C["0.765366865"]
    e0, e1 = (x[0] + x[4]) * (1 << _CB), (x[0] - x[4]) * (1 << _CB)
    e10, e13, e11, e12 = e0 + e3, e0 - e3, e1 + e2, e1 - e2
    o0, o1, o2, o3 = _odd_rotations(x[7], x[5], x[3], x[1])
    out = [None] * 8
    for i, (e, o) in enumerate(((e10, o3), (e11, o2), (e12, o1), (e13, o0))):
        out[i], out[7 - i] = e + o, e - o
    return out, [_CB - _P1 if first_pass else _CB + _P1 + 3] * 8


def _pass_matrix(butterfly, first_pass: bool):
    """The integer matrix M (out = M @ line before rounding) and shifts of one butterfly pass,
    found by running the butterfly on unit vectors."""
    rows, shifts = butterfly(list(np.eye(8, dtype=np.int64)), first_pass)
    m = np.stack(rows)
    assert np.abs(m).max() < 2**31
    return m.astype(np.int32), np.array(shifts, dtype=np.int32)


_FDCT_PASSES = (_pass_matrix(_islow_fdct_1d, True), _pass_matrix(_islow_fdct_1d, False))
_IDCT_PASSES = (_pass_matrix(_islow_idct_1d, True), _pass_matrix(_islow_idct_1d, False))


def _integer_pass(x: Array, matrix_and_shifts, axis: int) -> Array:
    """Applies one integer pass along `axis` (-1: within rows, -2: within columns) of (..., 8, 8)
    int32 blocks: out_i = (Σ_j M_ij x_j + 2^(s_i − 1)) >> s_i (libjpeg's DESCALE; none if s_i = 0).

    A broadcast multiply-and-sum rather than a dot: integer dots are not fast everywhere, and
    int32 wrap-around cannot change a result that fits in int32 (libjpeg's do).
    """
    m, shifts = matrix_and_shifts
    half = np.where(shifts > 0, 1 << np.maximum(shifts - 1, 0), 0).astype(np.int32)
    if axis == -1:  # x[..., r, j] -> out[..., r, i]
        out = (x[..., None, :] * m).sum(-1)
        return (out + half) >> shifts
    out = (x[..., None, :, :] * m[:, :, None]).sum(-2)  # x[..., j, c] -> out[..., i, c]
    return (out + half[:, None]) >> shifts[:, None]


def _islow_fdct(blocks: Array) -> Array:
    """libjpeg's integer FDCT of int32 level-shifted blocks: rows, then columns; output is 8 × DCT."""
    first, second = _FDCT_PASSES
    return _integer_pass(_integer_pass(blocks, first, -1), second, -2)


def _islow_idct(coefs: Array) -> Array:
    """libjpeg's integer IDCT of dequantised int32 blocks: columns, then rows; with +128 and
    libjpeg's range limiting (its table wraps values beyond ±512 around, as here)."""
    first, second = _IDCT_PASSES
    x = _integer_pass(_integer_pass(coefs, first, -2), second, -1)
    v = x & 1023
    return jnp.where(v < 128, v + 128, jnp.where(v < 512, 255, jnp.where(v < 896, 0, v - 896)))


def _round_half_away(x: Array) -> Array:
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _quantise(blocks: Array, table: Array, dct: str) -> Array:
    """Samples (int32, 0..255) of (..., R, C, 8, 8) blocks → quantised DCT levels (float32)."""
    table = table[..., None, None, :, :]
    if dct == "islow":
        coefs = _islow_fdct(blocks - 128)
        q8 = table.astype(jnp.int32) * 8  # the integer FDCT is scaled by 8
        levels = (jnp.abs(coefs) + (q8 >> 1)) // q8
        return (jnp.sign(coefs) * levels).astype(jnp.float32)
    coefs = _float_fdct(blocks.astype(jnp.float32) - 128.0)
    return _round_half_away(coefs / table.astype(jnp.float32))


def _dequantise(levels: Array, table: Array, dct: str) -> Array:
    """Quantised DCT levels of (..., R, C, 8, 8) blocks → decoded int32 samples 0..255."""
    table = table[..., None, None, :, :]
    if dct == "islow":
        return _islow_idct(jnp.round(levels).astype(jnp.int32) * table.astype(jnp.int32))
    pixels = _float_idct(levels * table.astype(jnp.float32)) + 128.0
    return jnp.clip(jnp.floor(pixels + 0.5), 0, 255).astype(jnp.int32)


# --------------------------------------------------------------------------- public operator


class JpegCoefficients(NamedTuple):
    """Quantised DCT levels per component, each (..., block_rows, block_cols, 8, 8) float32.

    4:4:4: all three planes have ceil(H/8) × ceil(W/8) blocks; 4:2:0: Y has 2·ceil(H/16) ×
    2·ceil(W/16) blocks and Cb, Cr ceil(H/16) × ceil(W/16). A pytree (NamedTuple).
    """

    y: Array
    cb: Array
    cr: Array


def _check_options(subsampling: str, dct: str) -> None:
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")
    if dct not in DCT_METHODS:
        raise ValueError(f"dct must be one of {DCT_METHODS}, got {dct!r}")


def _component_tables(tables) -> tuple[Array, Array, Array]:
    """(luma, chroma) or (y, cb, cr) tables → one (..., 8, 8) array per component."""
    tables = tuple(tables)
    if len(tables) == 2:
        tables = (tables[0], tables[1], tables[1])
    if len(tables) != 3:
        raise ValueError(f"tables must be (luma, chroma) or (y, cb, cr), got {len(tables)} tables")
    tables = tuple(jnp.asarray(t) for t in tables)
    for t in tables:
        if t.shape[-2:] != (8, 8):
            raise ValueError(f"quantisation tables must be (..., 8, 8), got shape {t.shape}")
    return tables


def _mcu(subsampling: str) -> int:
    return 16 if subsampling == "4:2:0" else 8


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


@functools.partial(jax.jit, static_argnames=("subsampling", "data_range", "dct"))
def jpeg_encode(x, tables, subsampling: str = "4:2:0", *, data_range: float = 1.0,
                dct: str = "islow") -> JpegCoefficients:
    """E(x): images (..., H, W, 3) in [0, data_range] → quantised DCT levels (the E of DDRM-JPEG).

    Samples are clipped and rounded to 0..255, converted to YCbCr, padded to whole MCUs the way
    libjpeg pads (columns: last pixel replicated to a multiple of 16 (4:2:0) / 8 (4:4:4) before
    downsampling; rows: replicated to an even count, and then the downsampled chroma rows to a
    multiple of 8), chroma 2×2-averaged for 4:2:0, then blockwise DCT and division by the
    tables (luma table for Y, chroma for Cb and Cr) with rounding to the nearest level.
    """
    _check_options(subsampling, dct)
    x = jnp.asarray(x)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"jpeg_encode expects (..., H, W, 3) images, got shape {x.shape}")
    t_y, t_cb, t_cr = _component_tables(tables)
    h, w = x.shape[-3:-1]
    samples = jnp.clip(jnp.round(x.astype(jnp.float32) * (255.0 / data_range)), 0, 255)
    samples = jnp.moveaxis(samples.astype(jnp.int32), -1, -3)  # (..., 3, H, W)
    mcu = _mcu(subsampling)
    rows = _ceil_to(h, mcu)
    if subsampling == "4:4:4":
        y, cb, cr = _rgb_to_ycbcr(jnp.moveaxis(_pad_edge(samples, rows, _ceil_to(w, 8)), -3, -1))
    else:
        even = _pad_edge(samples, _ceil_to(h, 2), _ceil_to(w, 16))
        y, cb, cr = _rgb_to_ycbcr(jnp.moveaxis(even, -3, -1))
        y = _pad_edge(y, rows, y.shape[-1])
        cb, cr = (_pad_edge(_downsample_h2v2(c), rows // 2, c.shape[-1] // 2) for c in (cb, cr))
    return JpegCoefficients(*(_quantise(_to_blocks(p), t, dct)
                              for p, t in ((y, t_y), (cb, t_cb), (cr, t_cr))))


@functools.partial(jax.jit, static_argnames=("size", "subsampling", "data_range", "dct"))
def jpeg_decode(coeffs: JpegCoefficients, tables, size: tuple[int, int],
                subsampling: str = "4:2:0", *, data_range: float = 1.0,
                dct: str = "islow") -> Array:
    """D(c): quantised DCT levels → images (..., H, W, 3) float32 in [0, data_range] (the D of DDRM-JPEG).

    Dequantises, inverse-DCTs, rounds and clips each plane to 0..255, upsamples 4:2:0 chroma
    with libjpeg's fancy triangular filter over the real chroma samples (ceil(H/2) × ceil(W/2),
    edges replicated), converts to RGB and crops to `size` = (H, W). Values are k/255 levels.
    """
    _check_options(subsampling, dct)
    h, w = size
    coeffs = JpegCoefficients(*coeffs)
    t_y, t_cb, t_cr = _component_tables(tables)
    mcu = _mcu(subsampling)
    want = (_ceil_to(h, mcu) // 8, _ceil_to(w, mcu) // 8)
    if coeffs.y.shape[-4:] != want + (8, 8):
        raise ValueError(f"Y coefficients {coeffs.y.shape} do not fit size {size} with {subsampling}")
    y, cb, cr = (_from_blocks(_dequantise(c, t, dct))
                 for c, t in ((coeffs.y, t_y), (coeffs.cb, t_cb), (coeffs.cr, t_cr)))
    y = y[..., :h, :w]
    if subsampling == "4:2:0":
        hc, wc = -(-h // 2), -(-w // 2)
        upsample = _upsample_h2v2_fancy if wc > 2 else _upsample_h2v2_box
        cb, cr = (upsample(c[..., :hc, :wc])[..., :h, :w] for c in (cb, cr))
    else:
        cb, cr = cb[..., :h, :w], cr[..., :h, :w]
    rgb = _ycbcr_to_rgb(y, cb, cr).astype(jnp.float32)
    return rgb * (data_range / 255.0)


@functools.partial(jax.jit, static_argnames=("subsampling", "data_range", "dct"))
def jpeg_roundtrip(x, tables, subsampling: str = "4:2:0", *, data_range: float = 1.0,
                   dct: str = "islow") -> Array:
    """D(E(x)) (DDRM-JPEG's H): the image a JPEG file with these tables would decode to."""
    coeffs = jpeg_encode(x, tables, subsampling, data_range=data_range, dct=dct)
    return jpeg_decode(coeffs, tables, tuple(x.shape[-3:-1]), subsampling,
                       data_range=data_range, dct=dct)
