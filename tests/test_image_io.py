"""One extension set, one folder lister, one decoder and one PNG writer for training, evaluation
and restoration (driftrec_jax/image_files.py, driftrec_jax/images.py)."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from driftrec_jax import data, evaluate, image_files, images, restore_cli, restoring

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
    assert _rel(restoring.find_images([folder])[0], folder) == LISTED  # driftrec restore
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


def test_every_png_goes_through_the_one_writer():
    """No module of the package or script writes an image file but through images.write_png:
    the only Pillow .save, matplotlib savefig or imsave call is write_png's own (JPEG round trips
    in memory aside)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = []
    for folder in ("driftrec_jax", "scripts"):
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                for line in open(path, encoding="utf-8"):
                    if re.search(r"\.save\(|savefig\(|imsave\(|imwrite\(", line) and not re.search(
                            r"np\.save\(|manager\.save\(|checkpoint\.save\(|format=\"JPEG\"", line):
                        found.append((os.path.relpath(path, root), line.strip()))
    assert found == [("driftrec_jax/images.py",
                      'Image.fromarray(a).save(fp, format="PNG", compress_level=PNG_COMPRESS_LEVEL, **extra)')]


def test_figures_are_written_by_write_png(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (optional dependency)")
    from driftrec_jax import plots

    written = []
    real = images.write_png
    monkeypatch.setattr(images, "write_png", lambda path, pixels, *a, **k: written.append(path) or real(path, pixels, *a, **k))
    fig = plots._pyplot().figure(figsize=(2, 1))
    path = str(tmp_path / "fig.png")
    assert plots.save_figure(fig, path, dpi=50) == path and written == [path]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (100, 50)
    assert os.listdir(tmp_path) == ["fig.png"]  # no temporary file left


def test_evaluate_reads_the_colour_mode_from_the_header(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "b.png")  # 16-bit gray
    with pytest.raises(ValueError, match=r"^cannot read .*a\.png: not an image file"):
        evaluate._detect_mode(str(tmp_path))
    os.remove(tmp_path / "a.png")
    assert evaluate._detect_mode(str(tmp_path)) == "gray"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    assert evaluate._detect_mode(str(tmp_path)) == "rgb"
