"""One extension set, one folder lister and one decoder for training, evaluation and restoration
(driftrec_jax/image_files.py, driftrec_jax/images.py)."""

import os

import numpy as np
import pytest
from PIL import Image

from driftrec_jax import data, evaluate, image_files, images, restore_cli

# (relative path, Pillow format or None for a non-image file)
FILES = [
    ("b.JPG", "JPEG"), ("a.png", "PNG"), ("c.jpeg", "JPEG"), ("d.Tif", "TIFF"), ("e.webp", "WEBP"),
    ("f.bmp", "BMP"), ("g.ppm", "PPM"), ("h.PGM", "PPM"), ("k.tiff", "TIFF"), ("l.gif", "GIF"),
    ("A.png", "PNG"), ("sub/i.png", "PNG"), ("sub/deeper/j.jpe", "JPEG"), ("sub-x.png", "PNG"),
    (".hidden.png", "PNG"), (".cache/m.png", "PNG"), ("sub/.n.jpg", "JPEG"),
    ("notes.txt", None), ("model.msgpack", None), ("png", None),
]
# Sorted by path relative to the folder ('/' separators): upper case before lower, 'sub-x' before 'sub/'.
LISTED = ["A.png", "a.png", "b.JPG", "c.jpeg", "d.Tif", "e.webp", "f.bmp", "g.ppm", "h.PGM", "k.tiff", "l.gif",
          "sub-x.png", "sub/deeper/j.jpe", "sub/i.png"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    for i, (rel, fmt) in enumerate(FILES):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt is None:
            path.write_text("not an image")
            continue
        a = rng.integers(0, 256, (8, 8 + i, 3), dtype=np.uint8)
        im = Image.fromarray(a[..., 0] if rel.endswith(".PGM") else a)
        im.save(path, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return root


def _rel(paths, root):
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]


def test_training_evaluation_and_restore_list_the_same_files(folder):
    assert image_files.IMAGE_EXTENSIONS is images.IMAGE_EXTENSIONS is restore_cli.IMAGE_EXTENSIONS
    assert _rel(image_files.list_image_folder(folder), folder) == LISTED
    assert _rel(data.list_images(folder), folder) == LISTED  # training sources
    assert _rel(evaluate._iter_names(str(folder), None), folder) == LISTED  # evaluation
    assert _rel(restore_cli.find_images([folder])[0], folder) == LISTED  # driftrec restore
    # Every listed file decodes, through the one decoder, for evaluation pairs and for restoring.
    pairs = list(data.eval_pairs(str(folder), qualities=(50,)))
    assert [p["name"] for p in pairs] == LISTED
    for rel, p in zip(LISTED, pairs):
        loaded = images.load_image(folder / rel)
        assert loaded.shape == p["clean"].shape[:2]
        if not rel.lower().endswith((".jpg", ".jpeg", ".jpe", ".webp")):  # lossless: the same pixels both ways
            np.testing.assert_array_equal(np.round(loaded.rgb * 255), np.round(p["clean"] * 255), err_msg=rel)
    # An output folder inside the input folder is skipped by restore (not when it is the folder).
    assert _rel(image_files.list_image_folder(folder, exclude=folder / "sub"), folder) == LISTED[:12]
    assert _rel(image_files.list_image_folder(folder, exclude=folder), folder) == LISTED


def test_the_8bit_reading_starts_from_the_one_decoder(folder, tmp_path):
    """data.load_rgb is images.load_rgb8; file and encoded bytes read the same; an unreadable
    file is one ImageReadError line naming it."""
    assert data.load_rgb is images.load_rgb8 and data.to_rgb8 is images.to_rgb8
    path = folder / "a.png"
    np.testing.assert_array_equal(images.load_rgb8(path), images.load_rgb8(path.read_bytes()))
    np.testing.assert_array_equal(images.load_rgb8(path), np.asarray(Image.open(path)))
    with pytest.raises(images.ImageReadError, match=r"^cannot read .*notes\.txt: not an image file"):
        images.load_rgb8(folder / "notes.txt")
    with pytest.raises(images.ImageReadError, match="no such file"):
        images.load_rgb8(tmp_path / "missing.png")
