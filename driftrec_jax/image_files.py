"""Which files are images: the one extension set and folder lister of training
(`data.list_images`), evaluation and `driftrec restore` (also exported by driftrec_jax.images).
Only the standard library is imported here, so that `driftrec restore --help`, which lists the
extensions, stays fast."""

from __future__ import annotations

import os

__all__ = ["IMAGE_EXTENSIONS", "is_image_name", "list_image_folder"]


# File extensions (any letter case) of the images found in folders, by training, evaluation and
# restoration alike: the formats Pillow decodes that photographs come in. Files named directly
# (restore inputs, list files) are read whatever their extension.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k",
})


def is_image_name(name: str) -> bool:
    """A file name `list_image_folder` picks up: an IMAGE_EXTENSIONS suffix (any case), not hidden."""
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def list_image_folder(folder, exclude=None) -> list[str]:
    """The image files under `folder`: searched recursively (symlinks followed) for IMAGE_EXTENSIONS
    names (`is_image_name`), hidden files and folders skipped, sorted by path relative to `folder`
    (with '/' separators, so the order is the same on every system). `exclude`: a folder whose
    contents are skipped (an output folder inside the input folder), unless it is `folder` itself.
    The one folder lister of training (`data.list_images`), evaluation and `driftrec restore`."""
    folder = os.fspath(folder)
    skip = os.path.realpath(exclude) if exclude is not None else None
    if skip == os.path.realpath(folder):
        skip = None
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and (skip is None or os.path.realpath(os.path.join(root, d)) != skip)]
        files += [os.path.join(root, n) for n in names if is_image_name(n)]
    files.sort(key=lambda f: os.path.relpath(f, folder).replace(os.sep, "/"))
    return files
