"""The JAX JPEG operator (driftrec_jax/jpeg.py, the operator of DDRM-JPEG) against Pillow's libjpeg.

Pillow is the independent reference: its quantisation tables for every quality, its decode of
the files it writes (round trip within one level on ≥ 99 % of the pixels), and the headers of
its files for `read_jpeg_tables`. Shapes are tiny and few, so that the jitted encoder and decoder
compile only a handful of times.
"""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from driftrec_jax import jpeg

PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def _photo(h, w, top=120, left=180):
    """A crop of scikit-image's astronaut (uint8), rich in edges and flat areas."""
    return np.ascontiguousarray(skimage.data.astronaut()[top:top + h, left:left + w])


def _pillow_jpeg(img_u8, quality, subsampling="4:2:0", **kw):
    """(file bytes, Pillow's RGB decode as uint8) of an image saved at `quality`."""
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, "JPEG", quality=quality,
                                 subsampling=PIL_SUBSAMPLING[subsampling], **kw)
    data = buf.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _levels(x):
    return np.round(np.asarray(x) * 255.0).astype(np.int32)


ALIGNED = _photo(32, 48)  # whole 16-px MCUs
ODD = _photo(37, 29, top=300, left=260)  # partial blocks on both axes, odd chroma size


# --------------------------------------------------------------------------- tables


def test_tables_equal_libjpeg_for_every_quality():
    flat = np.full((8, 8, 3), 128, np.uint8)
    ours_jnp = jpeg.quality_to_tables_jnp(jnp.arange(1, 101))
    for q in range(1, 101):
        data, _ = _pillow_jpeg(flat, q)
        pil = Image.open(io.BytesIO(data)).quantization  # natural order, as Pillow reports it
        luma, chroma = jpeg.quality_to_tables(q)
        np.testing.assert_array_equal(luma, np.reshape(pil[0], (8, 8)), err_msg=f"luma, quality {q}")
        np.testing.assert_array_equal(chroma, np.reshape(pil[1], (8, 8)), err_msg=f"chroma, quality {q}")
        np.testing.assert_array_equal(ours_jnp[0][q - 1], luma)
        np.testing.assert_array_equal(ours_jnp[1][q - 1], chroma)
        file_tables = jpeg.read_jpeg_tables(data)
        np.testing.assert_array_equal(file_tables.tables[0], luma)
        np.testing.assert_array_equal(file_tables.tables[1], chroma)


def test_table_landmarks():
    # Quality 50 is the Annex K table itself; 100 is all ones; 1 clips at 255 (force_baseline).
    np.testing.assert_array_equal(jpeg.quality_to_tables(50)[0], jpeg.LUMA_BASE_TABLE)
    assert (jpeg.quality_to_tables(100)[0] == 1).all() and (jpeg.quality_to_tables(100)[1] == 1).all()
    assert jpeg.quality_to_tables(1)[0].max() == 255
    # Quality 10: s = 500, so the DC luma step is (500·16 + 50) // 100 = 80.
    assert jpeg.quality_to_tables(10)[0][0, 0] == 80


@pytest.mark.parametrize("bad", [0, 101, -5])
def test_quality_out_of_range(bad):
    with pytest.raises(ValueError, match="1..100"):
        jpeg.quality_to_tables(bad)


@pytest.mark.parametrize("bad", [50.0, "50", True])
def test_quality_wrong_type(bad):
    with pytest.raises(TypeError, match="int"):
        jpeg.quality_to_tables(bad)


def test_zigzag_is_t81_order():
    # The first entries of T.81 Figure 5 in natural positions, and a permutation of 0..63.
    np.testing.assert_array_equal(jpeg.ZIGZAG[:10], [0, 1, 8, 16, 9, 2, 3, 10, 17, 24])
    assert jpeg.ZIGZAG[-1] == 63 and sorted(jpeg.ZIGZAG) == list(range(64))


# --------------------------------------------------------------------------- against Pillow


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
@pytest.mark.parametrize("quality", [5, 10, 50, 95])
@pytest.mark.parametrize("name", ["aligned", "odd"])
def test_roundtrip_matches_pillow(name, quality, subsampling):
    img = {"aligned": ALIGNED, "odd": ODD}[name]
    _, ref = _pillow_jpeg(img, quality, subsampling)
    tables = jpeg.quality_to_tables(quality)
    out = jpeg.jpeg_roundtrip(img.astype(np.float32) / 255.0, tables, subsampling)
    assert out.shape == img.shape and out.dtype == jnp.float32
    diff = np.abs(_levels(out) - ref.astype(np.int32))
    assert np.mean(diff <= 1) >= 0.99, f"within 1 level on only {np.mean(diff <= 1):.4f}"
    # Measured: identical to Pillow (libjpeg-turbo) everywhere; allow a little slack for other builds.
    assert np.mean(diff == 0) >= 0.95 and diff.mean() < 0.05


def test_float_dct_is_close_to_islow():
    x = ALIGNED.astype(np.float32) / 255.0
    tables = jpeg.quality_to_tables(10)
    exact = np.asarray(jpeg.jpeg_roundtrip(x, tables))
    approx = np.asarray(jpeg.jpeg_roundtrip(x, tables, dct="float"))
    psnr = 10 * np.log10(1.0 / np.mean((exact - approx) ** 2))
    assert 40.0 < psnr < np.inf  # close to libjpeg but not the same arithmetic


def test_data_range_255_equals_unit_range():
    tables = jpeg.quality_to_tables(30)
    unit = jpeg.jpeg_roundtrip(ALIGNED.astype(np.float32) / 255.0, tables)
    full = jpeg.jpeg_roundtrip(ALIGNED.astype(np.float32), tables, data_range=255.0)
    np.testing.assert_allclose(np.asarray(full), np.asarray(unit) * 255.0, atol=1e-3)


# --------------------------------------------------------------------------- operator properties


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
@pytest.mark.parametrize("quality", [10, 90])
def test_idempotent_on_its_own_output(quality, subsampling):
    """D(E(·)) applied to its own output changes it by rounding only (DDRM-JPEG paper Sec. 3,
    property 1)."""
    tables = jpeg.quality_to_tables(quality)
    x = ALIGNED.astype(np.float32) / 255.0
    c1 = jpeg.jpeg_encode(x, tables, subsampling)
    y = jpeg.jpeg_decode(c1, tables, x.shape[:2], subsampling)
    c2 = jpeg.jpeg_encode(y, tables, subsampling)
    y2 = jpeg.jpeg_decode(c2, tables, x.shape[:2], subsampling)
    same = np.mean(np.concatenate([np.asarray(a == b).ravel() for a, b in zip(c1, c2)]))
    assert same >= 0.99, f"E(D(E(x))) == E(x) on only {same:.4f} of the coefficients"
    diff = np.abs(_levels(y2) - _levels(y))
    assert diff.max() <= 4 and diff.mean() < 0.25  # measured: max 4, mean 0.15 at QF 90 4:2:0
    # ... while the first pass really changes the image (the operator is not the identity).
    assert np.abs(_levels(y) - ALIGNED.astype(np.int32)).mean() > 1.0


def test_odd_size_coefficient_shapes_and_full_blocks_idempotent():
    tables = jpeg.quality_to_tables(50)
    x = ODD.astype(np.float32) / 255.0  # 37 × 29
    c420 = jpeg.jpeg_encode(x, tables, "4:2:0")
    assert c420.y.shape == (6, 4, 8, 8) and c420.cb.shape == (3, 2, 8, 8) and c420.cr.shape == (3, 2, 8, 8)
    c444 = jpeg.jpeg_encode(x, tables, "4:4:4")
    assert c444.y.shape == c444.cb.shape == (5, 4, 8, 8)
    # 4:4:4: the whole 8×8 blocks (rows 0..31, cols 0..23) are idempotent up to rounding; only
    # the partial edge blocks, re-padded from decoded pixels, may change more.
    y = jpeg.jpeg_decode(c444, tables, (37, 29), "4:4:4")
    c2 = jpeg.jpeg_encode(y, tables, "4:4:4")
    full = (slice(0, 4), slice(0, 3))
    for a, b in zip(c444, c2):
        assert np.mean(np.asarray(a[full] == b[full])) >= 0.99


def test_decode_rejects_mismatched_size():
    tables = jpeg.quality_to_tables(50)
    c = jpeg.jpeg_encode(ALIGNED.astype(np.float32) / 255.0, tables)
    with pytest.raises(ValueError, match="do not fit"):
        jpeg.jpeg_decode(c, tables, (64, 64))


def test_bad_arguments():
    tables = jpeg.quality_to_tables(50)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\)"):
        jpeg.jpeg_encode(np.zeros((8, 8, 4), np.float32), tables)
    with pytest.raises(ValueError, match="subsampling"):
        jpeg.jpeg_encode(np.zeros((8, 8, 3), np.float32), tables, "4:1:1")
    with pytest.raises(ValueError, match="dct"):
        jpeg.jpeg_encode(np.zeros((8, 8, 3), np.float32), tables, dct="fast")
    with pytest.raises(ValueError, match="tables"):
        jpeg.jpeg_encode(np.zeros((8, 8, 3), np.float32), tables[:1])


# --------------------------------------------------------------------------- jit and vmap


def test_vmap_and_batched_tables_equal_per_image_calls():
    """A batch with one quality per image, three ways: vmap, leading batch dims, one by one."""
    x = np.stack([ALIGNED, ALIGNED[::-1], ALIGNED[:, ::-1]]).astype(np.float32) / 255.0
    qualities = np.array([10, 40, 85])
    luma, chroma = jpeg.quality_to_tables_jnp(qualities)  # (3, 8, 8) each

    singles = np.stack([np.asarray(jpeg.jpeg_roundtrip(x[i], jpeg.quality_to_tables(int(q))))
                        for i, q in enumerate(qualities)])
    vmapped = jax.jit(jax.vmap(lambda img, lt, ct: jpeg.jpeg_roundtrip(img, (lt, ct))))(x, luma, chroma)
    batched = jpeg.jpeg_roundtrip(x, (luma, chroma))
    np.testing.assert_array_equal(np.asarray(vmapped), singles)
    np.testing.assert_array_equal(np.asarray(batched), singles)
    assert not np.array_equal(singles[0], singles[2][:, ::-1])  # the qualities did differ

    # One shared table for a batch with two leading dims.
    shared = jpeg.jpeg_roundtrip(x.reshape(1, 3, 32, 48, 3), jpeg.quality_to_tables(10))
    np.testing.assert_array_equal(np.asarray(shared)[0, 0], singles[0])


def test_traced_quality_inside_jit():
    @jax.jit
    def roundtrip_at(x, q):
        return jpeg.jpeg_roundtrip(x, jpeg.quality_to_tables_jnp(q))

    x = ALIGNED.astype(np.float32) / 255.0
    expected = jpeg.jpeg_roundtrip(x, jpeg.quality_to_tables(40))
    np.testing.assert_array_equal(np.asarray(roundtrip_at(x, 40)), np.asarray(expected))


# --------------------------------------------------------------------------- reading files


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("quality", [7, 75])
def test_read_jpeg_tables_of_pillow_files(tmp_path, quality, subsampling):
    data, _ = _pillow_jpeg(ODD, quality, subsampling)
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    info = jpeg.read_jpeg_tables(path)
    assert info.subsampling == subsampling
    assert len(info.tables) == 2
    for got, want in zip(info.tables, jpeg.quality_to_tables(quality)):
        assert got.shape == (8, 8) and got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    from_str = jpeg.read_jpeg_tables(str(path))  # a str path and the bytes read the same
    assert from_str.subsampling == info.subsampling
    assert all(np.array_equal(a, b) for a, b in zip(from_str.tables, info.tables))


def test_read_jpeg_tables_progressive_gray_and_custom():
    data, _ = _pillow_jpeg(ODD, 33, "4:2:0", progressive=True)
    info = jpeg.read_jpeg_tables(data)
    assert info.subsampling == "4:2:0"
    np.testing.assert_array_equal(info.tables[0], jpeg.quality_to_tables(33)[0])

    buf = io.BytesIO()
    Image.fromarray(ODD[..., 0]).save(buf, "JPEG", quality=60)
    gray = jpeg.read_jpeg_tables(buf.getvalue())
    assert gray.subsampling == "gray" and len(gray.tables) == 1
    np.testing.assert_array_equal(gray.tables[0], jpeg.quality_to_tables(60)[0])

    # Custom tables (e.g. from another encoder) come back as written, in natural order.
    luma = np.arange(1, 65, dtype=np.int32).reshape(8, 8)
    chroma = np.full((8, 8), 7, np.int32)
    buf = io.BytesIO()
    Image.fromarray(ODD).save(buf, "JPEG", qtables=[luma.ravel().tolist(), chroma.ravel().tolist()],
                              subsampling=0)
    info = jpeg.read_jpeg_tables(buf.getvalue())
    np.testing.assert_array_equal(info.tables[0], luma)
    np.testing.assert_array_equal(info.tables[1], chroma)
    np.testing.assert_array_equal(np.reshape(Image.open(io.BytesIO(buf.getvalue())).quantization[0], (8, 8)), luma)


def test_read_jpeg_tables_rejects_non_jpeg():
    with pytest.raises(ValueError, match="not a JPEG"):
        jpeg.read_jpeg_tables(b"\x89PNG\r\n\x1a\n" + bytes(32))
