"""Tests of the (clean, JPEG) pair pipeline, driftrec_jax/data.py (DriftRec paper
Sec. III-A training data, Sec. IV-B/C protocols; docs/DATA.md).

Every image is generated here (tmp folders); tiny crops (16-32 px) and batches keep the file fast.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from driftrec_jax import config_lib, data

S = 32  # crop size used by the pipeline tests
B = 4  # per-process batch


def _u8(x: np.ndarray) -> np.ndarray:
    """Float pipeline output in [0, 1] back to the uint8 it was made from."""
    return np.round(np.asarray(x) * 255.0).astype(np.uint8)


def _photo(rng, h, w):
    """A smooth random colour image with some texture, so JPEG and crops change it visibly."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
    return np.clip(127.5 + 90 * base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _write_png16(path, a: np.ndarray) -> None:
    """Writes uint16 (H, W, 3) as a 16-bit RGB PNG (Pillow cannot write multi-channel 16-bit PNGs)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 5 colour images in nested folders, formats PNG/JPEG/BMP/TIFF, one smaller than S,
    plus files that must be ignored (a text file, a hidden image)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(_photo(rng, 40, 52)).save(root / "a" / "noise.png")
    Image.fromarray(_photo(rng, 36, 50)).save(root / "a" / "b" / "grad.JPG", quality=95)
    Image.fromarray(_photo(rng, 33, 33)).save(root / "c.bmp")
    Image.fromarray(_photo(rng, 28, 45)).save(root / "d.tiff")
    Image.fromarray(_photo(rng, 6, 10)).save(root / "small.png")  # smaller than the crop
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(_photo(rng, 8, 8)).save(root / ".hidden.png")
    return root


def _solid_folder(root, values, bad=()):
    """Solid-grey PNGs (value v identifies the file in every crop), plus corrupt files named in `bad`."""
    root.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full((12 + i, 20, 3), v, np.uint8)).save(root / f"img{i:02d}.png")
    for name in bad:
        if name.endswith(".png"):  # a truncated PNG: valid header, data cut off
            buf = io.BytesIO()
            Image.fromarray(_photo(np.random.default_rng(1), 30, 30)).save(buf, format="PNG")
            (root / name).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        else:
            (root / name).write_bytes(b"this is not a JPEG at all")
    return root


def _batches(cfg, n, **kw):
    it = data.make_train_iterator(cfg, **kw)
    return it, [next(it) for _ in range(n)]


def _cfg(source, **kw):
    return dict(dict(source=str(source), crop_size=S, batch_size=B, seed=3, num_parallel_calls=2), **kw)


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------


def test_list_images_folder_recursive_sorted_and_filtered(photos):
    files = data.list_images(photos)
    rel = [os.path.relpath(f, photos).replace(os.sep, "/") for f in files]
    assert rel == ["a/b/grad.JPG", "a/noise.png", "c.bmp", "d.tiff", "small.png"]


def test_file_list_and_sequence_sources(photos, tmp_path):
    lst = tmp_path / "sub" / "train.txt"
    lst.parent.mkdir()
    rel = os.path.relpath(photos / "c.bmp", lst.parent)
    lst.write_text(f"# comment\n{rel}\n\n{photos / 'a' / 'noise.png'}\n")
    files = data.list_images(lst)
    assert [os.path.realpath(f) for f in files] == [str((photos / "c.bmp").resolve()),
                                                      str((photos / "a" / "noise.png").resolve())]
    assert data.list_images([str(photos / "d.tiff")]) == [str(photos / "d.tiff")]
    # The training pipeline reads a list file: its shard is exactly the two listed images.
    it, (b,) = _batches(_cfg(lst, batch_size=2), 1)
    assert it.num_images == 2 and b["clean"].shape == (2, S, S, 3)


def test_empty_or_missing_source_is_a_clear_error_at_start(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        data.make_train_iterator(_cfg(tmp_path / "empty"))
    (tmp_path / "textonly").mkdir()
    (tmp_path / "textonly" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found"):
        data.make_train_iterator(_cfg(tmp_path / "textonly"))
    with pytest.raises(FileNotFoundError, match="not found"):
        data.make_train_iterator(_cfg(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs a source"):
        data.make_train_iterator(_cfg(""))
    allbad = _solid_folder(tmp_path / "allbad", [], bad=["x.png", "y.jpg"])
    with pytest.raises(ValueError, match="could be read"):
        data.make_train_iterator(_cfg(allbad))


def test_config_matches_config_lib_and_validates():
    c = config_lib.default_config().data
    c.source = "somewhere"
    cfg = data.DataConfig.from_any(c)  # every config_lib field is a DataConfig field
    assert {f.name for f in dataclasses.fields(data.DataConfig)} == set(c.to_dict())
    assert cfg.crop_scale == (0.2, 1.0) and cfg.q_range == (0, 100) and cfg.crop_size == 256
    for bad in (dict(q_range=(0, 101)), dict(crop_scale=(0.0, 1.0)), dict(jpeg_backend="cv2"), dict(batch_size=0),
                dict(pipeline="torch")):
        with pytest.raises(ValueError):
            data.DataConfig(source="x", **bad)
    with pytest.raises(ValueError, match="unknown data config"):
        data.DataConfig.from_any({"source": "x", "crop": 3})


# ---------------------------------------------------------------------------------------------
# pixel formats
# ---------------------------------------------------------------------------------------------


def test_pixel_formats_become_8bit_rgb_as_documented(tmp_path):
    rng = np.random.default_rng(5)
    h, w = 9, 11
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    idx = rng.integers(0, 3, (h, w), dtype=np.uint8)
    pal = np.array([[200, 10, 30], [0, 90, 250], [7, 7, 7]], np.uint8)
    expected = {}

    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    expected["gray.png"] = np.repeat(gray[..., None], 3, -1)
    Image.fromarray(g16).save(tmp_path / "gray16.png")  # mode I;16: round(v / 257)
    expected["gray16.png"] = np.repeat(np.round(g16 / 257.0).astype(np.uint8)[..., None], 3, -1)
    Image.fromarray(g16).save(tmp_path / "gray16.tif")
    expected["gray16.tif"] = expected["gray16.png"]
    _write_png16(tmp_path / "rgb16.png", rgb16)  # Pillow keeps the high byte: floor(v / 256)
    expected["rgb16.png"] = (rgb16 >> 8).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")  # composited on white
    a = rgba[..., 3:].astype(np.float64) / 255
    expected["rgba.png"] = np.round(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(pal.ravel().tolist())
    p.save(tmp_path / "palette.png")
    expected["palette.png"] = pal[idx]
    p.save(tmp_path / "palette_transparent.png", transparency=2)  # index 2 transparent -> white
    expected["palette_transparent.png"] = np.where((idx == 2)[..., None], 255, pal[idx]).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    expected["rgb.bmp"] = rgb
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    expected["rgb.tif"] = rgb
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation "rotate 90° clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    expected["rotated.png"] = np.rot90(rgb, k=-1)

    for name, want in expected.items():
        got = data.load_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    # 16-bit RGB loses at most one level against round(v / 257), as documented.
    assert np.abs(expected["rgb16.png"].astype(int) - np.round(rgb16 / 257.0)).max() <= 1
    # A CMYK JPEG and a grayscale JPEG come out as 3-channel uint8 too.
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(gray, "L").save(tmp_path / "gray.jpg")
    for name in ("cmyk.jpg", "gray.jpg"):
        assert data.load_rgb(tmp_path / name).shape == (h, w, 3)
    Image.fromarray(np.zeros((h, w), np.float32), "F").save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match="mode F"):
        data.load_rgb(tmp_path / "float.tif")
    os.remove(tmp_path / "float.tif")

    # The training pipeline takes all of them (images smaller than the crop included).
    it, bs = _batches(_cfg(tmp_path, batch_size=8), 3)
    assert it.num_images == len(expected) + 2 and it.unreadable == 0
    assert all(b["clean"].shape == (8, S, S, 3) for b in bs)


# ---------------------------------------------------------------------------------------------
# crops and JPEG
# ---------------------------------------------------------------------------------------------


def test_random_crop_box_is_square_inside_and_scaled():
    rng = np.random.default_rng(0)
    w, h = 120, 80
    fracs = []
    for _ in range(3000):
        left, top, side = data.random_crop_box(rng, w, h, (0.2, 1.0))
        assert 0 <= left and left + side <= w and 0 <= top and top + side <= h
        fracs.append(side * side / (w * h))
    fracs = np.array(fracs)
    # Area uniform on [0.2·W·H, short²] = [0.2, 2/3] of the image (up to rounding of the side).
    assert fracs.min() >= 0.2 - 0.02 and fracs.max() <= 80 * 80 / (w * h) + 1e-9
    assert abs(fracs.mean() - (0.2 + 2 / 3) / 2) < 0.01
    assert abs(np.mean(fracs < (0.2 + 2 / 3) / 2) - 0.5) < 0.04
    # Too elongated for even 20 % of the area as a square: the centred square of the short side.
    assert data.random_crop_box(rng, 100, 10, (0.2, 1.0)) == (45, 0, 10)
    # A 1x1 image still gives a 1-pixel crop.
    assert data.random_crop_box(rng, 1, 1) == (0, 0, 1)


def test_resized_crop_is_antialiased_and_uses_only_the_box():
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    im = Image.fromarray(np.repeat(checker[..., None], 3, -1))
    out = data.resized_crop(im, (0, 0, 64), 16).astype(float)
    assert out.shape == (16, 16, 3) and np.abs(out - 127.5).max() < 2  # averaged, not aliased
    half = np.zeros((40, 40, 3), np.uint8)
    half[:, 20:] = 255
    # A crop of the black half: the white pixels next to the box must not bleed into it.
    assert data.resized_crop(Image.fromarray(half), (0, 10, 20), 7).max() == 0
    # Crops smaller than the output are upsampled.
    small = data.resized_crop(Image.fromarray(half), (18, 0, 4), 32)
    assert small.shape == (32, 32, 3) and small[:, 0].max() < 60 and small[:, -1].min() > 195


def test_jpeg_roundtrip_is_pillow_default_420_and_tf_matches_it():
    rng = np.random.default_rng(2)
    x = _photo(rng, 24, 40)
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=30)
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(buf.getvalue()))) == 2  # 4:2:0
    np.testing.assert_array_equal(data.jpeg_roundtrip(x, 30), np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    np.testing.assert_array_equal(data.jpeg_roundtrip(x, 0), data.jpeg_roundtrip(x, 1))  # libjpeg clamps 0 -> 1
    assert np.abs(data.jpeg_roundtrip(x, 5).astype(int) - x).mean() > 5
    with pytest.raises(ValueError, match="0..100"):
        data.jpeg_roundtrip(x, 101)

    tf = data._import_tf()
    for q in (0, 1, 7, 50, 95, 100):
        # The documented claim: TF's bytes equal Pillow's from the first DQT marker on ...
        tf_bytes = tf.raw_ops.EncodeJpegVariableQuality(images=x, quality=q).numpy()
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=q)
        pil_bytes = buf.getvalue()
        assert tf_bytes[tf_bytes.find(b"\xff\xdb"):] == pil_bytes[pil_bytes.find(b"\xff\xdb"):], q
        # ... and the decoded pixels are Pillow's.
        np.testing.assert_array_equal(data.tf_jpeg(x, q).numpy(), data.jpeg_roundtrip(x, q), err_msg=str(q))


# ---------------------------------------------------------------------------------------------
# the training pipeline
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_batches(photos):
    """Six batches of a fresh iterator over `photos` (crosses several epochs of 5 images)."""
    return _batches(_cfg(photos, crops_per_image=3), 6)[1]


@pytest.mark.parametrize("pipeline,backend", [("tf", "tf"), ("tf", "pillow"), ("numpy", "pillow")])
def test_batches_shapes_range_quality_and_pillow_jpeg(photos, pipeline, backend):
    it, bs = _batches(_cfg(photos, q_range=(20, 22), jpeg_backend=backend, pipeline=pipeline, seed=11), 6)
    qs = np.concatenate([b["quality"] for b in bs])
    for b in bs:
        assert set(b) == {"clean", "jpeg", "quality"}
        assert b["clean"].shape == b["jpeg"].shape == (B, S, S, 3)
        assert b["clean"].dtype == b["jpeg"].dtype == np.float32 and b["quality"].dtype == np.int32
        for k in ("clean", "jpeg"):
            assert b[k].min() >= 0.0 and b[k].max() <= 1.0
        np.testing.assert_array_equal(b["clean"] * 255, _u8(b["clean"]))  # uint8 levels / 255
        for c, y, q in zip(b["clean"], b["jpeg"], b["quality"]):
            assert not np.array_equal(c, y)
            np.testing.assert_array_equal(_u8(y), data.jpeg_roundtrip(_u8(c), int(q)))  # Pillow's JPEG
    assert set(qs.tolist()) == {20, 21, 22}
    assert it.position == 6


def test_quality_uniform_over_full_range(photos):
    cfg = data.DataConfig(source=str(photos), crop_size=8, crops_per_image=50)
    maker = data._ExampleMaker(cfg, 0, None)
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    qs = np.concatenate([maker.crops(img, g)[1] for g in range(200)])  # 10 000 draws
    assert qs.min() == 0 and qs.max() == 100
    counts = np.bincount(qs, minlength=101)
    assert counts.min() > 50 and counts.max() < 150  # ~99 each


def test_deterministic_for_a_seed_and_different_across_seeds(photos, reference_batches):
    again = _batches(_cfg(photos, crops_per_image=3, num_parallel_calls=1), 6)[1]
    for a, b in zip(reference_batches, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    other = _batches(_cfg(photos, crops_per_image=3, seed=4), 2)[1]
    assert not np.array_equal(other[0]["clean"], reference_batches[0]["clean"])
    assert not np.array_equal(other[1]["quality"], reference_batches[1]["quality"])


@pytest.mark.parametrize("k", [1, 4])
def test_resume_at_batch_k_equals_the_rest_of_a_fresh_stream(photos, reference_batches, k):
    # crops_per_image 3 with batch 4: batch k starts inside a group of crops and a later epoch.
    it = data.make_train_iterator(_cfg(photos, crops_per_image=3), start_batch=k)
    assert it.position == k
    for want in reference_batches[k:]:
        got = next(it)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    it = data.make_train_iterator(_cfg(photos, crops_per_image=3))
    next(it)
    it.skip(k - 1)
    assert it.position == k
    np.testing.assert_array_equal(next(it)["clean"], reference_batches[k]["clean"])


def test_each_epoch_visits_every_file_once_in_a_new_order(tmp_path):
    values = [10 * (i + 1) for i in range(7)]
    root = _solid_folder(tmp_path / "solid", values)
    _, bs = _batches(_cfg(root, crop_size=8, batch_size=7), 3)  # one batch = one epoch
    orders = [[int(v) for v in _u8(b["clean"])[:, 0, 0, 0]] for b in bs]
    assert all(sorted(o) == values for o in orders)
    assert len({tuple(o) for o in orders + [values]}) == 4  # shuffled, differently each epoch


def test_process_shards_are_disjoint_and_cover_the_files(tmp_path):
    values = [10 * (i + 1) for i in range(7)]
    root = _solid_folder(tmp_path / "solid", values)
    files = data.list_images(root)
    shards = [data.shard_files(files, p, 3) for p in range(3)]
    assert sorted(sum(shards, [])) == sorted(files)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(shards) for b in shards[i + 1:])
    with pytest.raises(ValueError):
        data.shard_files(files[:2], 0, 3)

    seen = []
    for p in range(2):
        # 3 batches of 4 = 12 examples > the 4 (or 3) images of a shard: each file appears.
        it, bs = _batches(_cfg(root, crop_size=8, seed=0), 3, process_index=p, process_count=2)
        assert it.num_images == (4, 3)[p]
        seen.append({int(v) for b in bs for v in _u8(b["clean"])[:, 0, 0, 0]})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(values)
    assert seen[0] == set(values[0::2])


def test_corrupt_files_are_skipped_warned_once_and_counted(tmp_path, caplog):
    values = [40, 80, 120]
    root = _solid_folder(tmp_path / "withbad", values, bad=["img_bad1.png", "img_bad2.jpg"])
    with caplog.at_level(logging.WARNING, logger="driftrec_jax.data"):
        it, bs = _batches(_cfg(root, crop_size=8, cache=False), 6)  # 24 examples, ~5 epochs of 5 files
    assert it.num_images == 5 and it.unreadable == 2
    assert {int(v) for b in bs for v in _u8(b["clean"]).ravel()} == set(values)  # only readable files
    for name in ("img_bad1.png", "img_bad2.jpg"):
        assert sum(name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1
    # Resuming with corrupt files present still replays the same stream.
    it2 = data.make_train_iterator(_cfg(root, crop_size=8, cache=False), start_batch=3)
    np.testing.assert_array_equal(next(it2)["clean"], bs[3]["clean"])


def test_images_smaller_than_the_crop_are_upsampled(tmp_path):
    x = _photo(np.random.default_rng(8), 5, 7)
    Image.fromarray(x).save(tmp_path / "tiny.png")
    _, (b,) = _batches(_cfg(tmp_path, crop_scale=(1.0, 1.0), q_range=(100, 100)), 1)
    # Scale 1 of a 7x5 image cannot be a square: the centred 5x5 square, upsampled to S x S.
    want = data.resized_crop(Image.fromarray(x), (1, 0, 5), S)
    assert b["clean"].shape == (B, S, S, 3)
    for c in _u8(b["clean"]):
        np.testing.assert_array_equal(c, want)


# ---------------------------------------------------------------------------------------------
# the numpy pipeline (threads and Pillow, no TensorFlow)
# ---------------------------------------------------------------------------------------------


def test_numpy_pipeline_gives_the_tf_pipelines_batches_and_resumes_alike(photos, reference_batches):
    cfg = _cfg(photos, crops_per_image=3, pipeline="numpy")
    it, bs = _batches(cfg, 6)
    assert it.dataset is None and it.num_images == 5 and it.position == 6
    for want, got in zip(reference_batches, bs):  # crops, qualities, JPEG and float conversion: bit for bit
        for key in want:
            assert got[key].dtype == want[key].dtype
            np.testing.assert_array_equal(got[key], want[key])
    it.close()
    # Resuming inside a group of crops and a later epoch, and skipping on a live iterator.
    it = data.make_train_iterator(cfg, start_batch=4)
    for want in reference_batches[4:]:
        got = next(it)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    it.skip(1)  # position 6 -> 7
    assert it.position == 7
    it.close()
    np.testing.assert_array_equal(next(data.make_train_iterator(cfg, start_batch=7))["clean"],
                                  _batches(_cfg(photos, crops_per_image=3), 8)[1][7]["clean"])


def test_numpy_pipeline_is_deterministic_for_a_seed_whatever_the_threads(photos):
    def stream(seed, threads):
        it, bs = _batches(_cfg(photos, pipeline="numpy", seed=seed, num_parallel_calls=threads, cache=False), 4)
        it.close()
        return bs

    one, four = stream(5, 1), stream(5, 4)
    for a, b in zip(one, four):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = stream(6, 4)
    assert not np.array_equal(other[0]["clean"], one[0]["clean"])
    assert not np.array_equal(np.concatenate([b["quality"] for b in other]),
                              np.concatenate([b["quality"] for b in one]))


def test_numpy_pipeline_host_shards_are_disjoint_and_cover_the_files(tmp_path):
    values = [10 * (i + 1) for i in range(7)]
    root = _solid_folder(tmp_path / "solid", values)
    seen = []
    for p in range(2):
        it, bs = _batches(_cfg(root, crop_size=8, pipeline="numpy"), 3, process_index=p, process_count=2)
        assert it.num_images == (4, 3)[p]
        it.close()
        seen.append({int(v) for b in bs for v in _u8(b["clean"])[:, 0, 0, 0]})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(values)
    assert seen[0] == set(values[0::2])


def test_numpy_pipeline_refuses_tfds_sources_and_train_dataset(photos):
    with pytest.raises(ValueError, match="pipeline='tf'"):
        data.DataConfig(source="tfds:div2k", pipeline="numpy")
    with pytest.raises(ValueError, match="make_train_iterator"):
        data.train_dataset(_cfg(photos, pipeline="numpy"))


# ---------------------------------------------------------------------------------------------
# tensorflow-datasets source
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tiny tensorflow-datasets dataset built offline: 9 solid images (value 20·(i+1)) in 'train'."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data._import_tf()

    class DriftrecTestSolids(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(None, None, 3)), "id": tfds.features.Scalar(np.int32)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9), "test": self._generate_examples(2)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((10 + i, 14, 3), 20 * (i + 1), np.uint8), "id": i}

    root = tmp_path_factory.mktemp("tfds")
    DriftrecTestSolids(data_dir=str(root)).download_and_prepare()
    return str(root)


def test_tfds_source_by_name_and_split_sharded_and_resumable(tfds_dir):
    cfg = _cfg("tfds:driftrec_test_solids", tfds_data_dir=tfds_dir, crop_size=8, shuffle_buffer=4)
    it, bs = _batches(cfg, 5)  # 20 examples: over 2 epochs of 9
    assert bs[0]["clean"].shape == (B, 8, 8, 3) and it.num_images is None
    vals = [int(v) for b in bs for v in _u8(b["clean"])[:, 0, 0, 0]]
    assert set(vals[:9]) == {20 * (i + 1) for i in range(9)}  # one epoch = each record once
    assert vals[:9] != vals[9:18]  # reshuffled per epoch
    _, again = _batches(cfg, 5)
    for a, b in zip(bs, again):
        np.testing.assert_array_equal(a["clean"], b["clean"])
        np.testing.assert_array_equal(a["jpeg"], b["jpeg"])
    it = data.make_train_iterator(cfg, start_batch=3)  # starts inside the second epoch
    for want in bs[3:]:
        np.testing.assert_array_equal(next(it)["clean"], want["clean"])
    seen = [{int(v) for b in _batches(cfg, 3, process_index=p, process_count=2)[1]
             for v in _u8(b["clean"])[:, 0, 0, 0]} for p in (0, 1)]
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == 9
    _, (t,) = _batches(dict(cfg, split="test", batch_size=2), 1)
    assert {int(v) for v in _u8(t["clean"])[:, 0, 0, 0]} == {20, 40}
    with pytest.raises(FileNotFoundError, match="not prepared"):
        data.make_train_iterator(dict(cfg, tfds_data_dir=os.path.join(tfds_dir, "nothing_here")))


# ---------------------------------------------------------------------------------------------
# evaluation pairs
# ---------------------------------------------------------------------------------------------


def test_eval_pairs_single_quality(photos):
    pairs = list(data.eval_pairs(photos, qualities=(10, 40)))
    assert len(pairs) == 5 * 2 and [p["quality"] for p in pairs[:2]] == [10, 40]
    p = pairs[3]
    x = data.load_rgb(photos / p["name"])
    np.testing.assert_array_equal(_u8(p["clean"]), x)
    np.testing.assert_array_equal(_u8(p["jpeg"]), data.jpeg_roundtrip(x, 40))
    gray = next(data.eval_pairs(photos, qualities=(10,), mode="gray"))
    assert gray["clean"].shape[-1] == 1 and gray["jpeg"].shape == gray["clean"].shape


def test_eval_pairs_double_jpeg_shift_and_reproducibility(photos):
    shifts = np.array([data.double_jpeg_shift(f"img{i}.png", seed=0) for i in range(300)])
    assert shifts.min() == 0 and shifts.max() == 4  # uniform 0..4 px, both directions
    assert len({tuple(s) for s in shifts}) == 25
    assert any(data.double_jpeg_shift(f"img{i}.png", 0) != data.double_jpeg_shift(f"img{i}.png", 1) for i in range(10))

    a = list(data.eval_pairs(photos, double=(10, 30), seed=7))
    b = list(data.eval_pairs(photos, double=[(10, 30)], seed=7))
    assert len(a) == 5
    for p, q in zip(a, b):
        assert p["shift"] == q["shift"]
        np.testing.assert_array_equal(p["jpeg"], q["jpeg"])
        dy, dx = p["shift"]
        assert 0 <= dy <= 4 and 0 <= dx <= 4 and p["quality1"] == 10 and p["quality"] == 30
        x = data.load_rgb(photos / p["name"])
        np.testing.assert_array_equal(_u8(p["clean"]), x[dy:, dx:])
        want = data.jpeg_roundtrip(data.jpeg_roundtrip(x, 10)[dy:, dx:], 30)
        np.testing.assert_array_equal(_u8(p["jpeg"]), want)
    assert any(p["shift"] != (0, 0) for p in a)
