"""Real photographs of any size: reading, writing and output names (image I/O).

This module turns photos of any size and pixel format into float32 RGB arrays in [0, 1] and back
(DESIGN.md conventions; DriftRec does not centre to [-1, 1]: paper Sec. III-B), and is the only
place that knows about image files. Cutting images into tiles and blending them back is
`driftrec_jax.tiling`; restoring them on the devices is `driftrec_jax.engine`.

Only numpy and Pillow are imported here, so that `driftrec restore` starts fast.

Reading (`load_image`): grayscale stays grayscale (restored as gray replicated to three channels,
written back as one channel), alpha is carried through, palette / CMYK / YCbCr / LAB / HSV become
RGB, 16-bit PNG and TIFF keep their 16 bits, the EXIF orientation is applied. Training and
evaluation read the same files as 8-bit RGB (`open_rgb8`, `load_rgb8`; rules in docs/DATA.md);
both readings start from one decoder (`_open_decoded`). Folders are listed by `list_image_folder`
(`IMAGE_EXTENSIONS`) for training, evaluation and restoration alike. Writing
(`save_image`) is always PNG, 8 or 16 bits like the source. `output_paths` names outputs so that no
input is ever overwritten. Tiling (the grid, blending, `restore_image` / `restore_images`) is
`driftrec_jax.tiling`, re-exported here. docs/IMAGES.md is the
user-facing description of all of this, with measured memory and time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .image_files import IMAGE_EXTENSIONS, is_image_name, list_image_folder  # noqa: F401 (the one lister)

__all__ = [
    "ALIGN",
    "ImageReadError",
    "ImageTooLargeError",
    "LoadedImage",
    "load_image",
    "probe_image",
    "ImageHeader",
    "to_rgb8",
    "open_rgb8",
    "load_rgb8",
    "IMAGE_EXTENSIONS",
    "is_image_name",
    "list_image_folder",
    "save_image",
    "save_png",
    "write_png",
    "atomic_write",
    "output_path",
    "output_paths",
    "tile_origins",
    "tile_windows",
    "count_tiles",
    "restore_image",
    "restore_images",
]


class ImageReadError(OSError):
    """A file could not be read as an image (missing, unreadable, corrupt, unsupported format)."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the allowed limit (`probe_image`); .pixels is its count."""

    def __init__(self, message: str, pixels: int):
        super().__init__(message)
        self.pixels = pixels

    def __str__(self) -> str:
        return self.args[0]


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image as read by `load_image`.

    rgb: float32 (H, W, 3) in [0, 1], EXIF orientation applied; a grayscale source has its gray
        value in all three channels. alpha: float32 (H, W) in [0, 1] or None (the source's alpha
        channel at the source's bit depth, k / (2**bit_depth − 1) exactly up to float32 rounding).
    grayscale: the source had one colour channel (L, LA, 1-bit, 16-bit gray).
    bit_depth: 16 for 16-bit sources, else 8 (1-, 2- and 4-bit sources count as 8).
    name: the file's base name; path: the path it was read from; mode: the source's Pillow mode.
    icc_profile: the source's embedded ICC profile (None if absent, or for CMYK sources, whose
        profile no longer describes the converted RGB).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool
    bit_depth: int
    name: str
    path: str = ""
    mode: str = ""
    icc_profile: bytes | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return self.rgb.shape[0], self.rgb.shape[1]


# --------------------------------------------------------------------------------------------
# Reading


def _rawmode_of(tile) -> str | None:
    """The raw (packed) pixel format a Pillow tile descriptor decodes from, if it names one."""
    args = tile.args
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile, rawmode: str):
    """The tile descriptor with its raw mode replaced (decoder and offsets unchanged)."""
    args = tile.args
    new_args = rawmode if isinstance(args, str) else (rawmode,) + tuple(args[1:])
    return tile._replace(args=new_args)


def _swap_16bit(rawmode: str) -> str:
    """The 16-bit raw mode whose unpacker keeps the *other* byte of every sample.

    Pillow stores multi-channel 16-bit data (RGB;16B, RGBA;16L, CMYK;16N, …) in 8-bit images and
    keeps the most significant byte. Decoding the same data a second time with the opposite byte
    order (same bits per pixel, so PNG un-filtering and TIFF decompression are identical) keeps
    the least significant byte instead.
    """
    head, order = rawmode[:-1], rawmode[-1]
    if order == "N":
        order = "L" if sys.byteorder == "little" else "B"
    return head + ("L" if order == "B" else "B")


def _open_decoded(src, rawmode_of: Callable[[str], str] | None = None) -> Image.Image:
    """Open and decode the first frame of a file (path) or of encoded bytes, EXIF orientation
    applied, optionally with every tile's raw mode rewritten: the package's one image decoder
    (`load_image` and `open_rgb8` start here).

    A file is opened through a file object rather than by name: Pillow 13 memory-maps
    uncompressed single-strip TIFFs opened by name and then mis-reads those whose EXIF
    orientation is 5–8 (it maps them with the rotated size).
    """
    path = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
    with (io.BytesIO(src) if path == "<bytes>" else open(path, "rb")) as fp:
        im = Image.open(fp)
        if rawmode_of is not None:
            im.tile = [_with_rawmode(t, rawmode_of(_rawmode_of(t))) for t in im.tile]
        im.load()
        # Apply the EXIF orientation (TIFF: Pillow already did it in load, so this is a no-op).
        # A damaged EXIF block costs the orientation, not the image.
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception as err:  # noqa: BLE001 - Pillow's EXIF parser raises many kinds
            warnings.warn(f"{path}: EXIF orientation not applied (unreadable EXIF: {err})", stacklevel=3)
        return im


def _sixteen_bit_planes(path: str, im: Image.Image) -> np.ndarray | None:
    """Full 16-bit samples (H, W, C) uint16 of a multi-channel 16-bit image, or None.

    None when `im` (opened, not yet decoded) is not one of the multi-channel 16-bit formats that
    Pillow narrows to 8 bits. Gray+alpha 16-bit PNG (raw mode LA;16B) is decoded once as raw RGBA
    bytes (L high, L low, A high, A low); the others twice, high then low bytes.
    """
    rawmodes = {_rawmode_of(t) for t in im.tile}
    if len(rawmodes) != 1:
        return None
    rawmode = rawmodes.pop()
    if rawmode is None or im.mode not in ("RGB", "RGBA", "CMYK"):
        return None
    if rawmode == "LA;16B":
        b = np.asarray(_open_decoded(path, lambda r: "RGBA"), dtype=np.uint16)
        return np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=-1)
    if not rawmode.endswith((";16B", ";16L", ";16N")) or rawmode.startswith("RGBa"):
        return None
    hi = np.asarray(_open_decoded(path), dtype=np.uint16)
    lo = np.asarray(_open_decoded(path, _swap_16bit), dtype=np.uint8)
    hi <<= 8
    hi |= lo
    return hi


def _to_unit(a: np.ndarray, bits: int) -> np.ndarray:
    """Integer samples → float32 in [0, 1] (k / (2**bits − 1), computed in place)."""
    out = a.astype(np.float32)
    out /= np.float32(2**bits - 1)
    return out


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Naive CMYK → RGB, R = (1 − C)(1 − K) etc. (Pillow's own conversion, in float)."""
    k = 1.0 - cmyk[..., 3:4]
    rgb = 1.0 - cmyk[..., :3]
    rgb *= k
    return rgb


# Pixel formats `load_image` reads (Pillow modes); anything else is refused.
READABLE_MODES = frozenset({
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "YCbCr", "LAB", "HSV", "CMYK",
    "I;16", "I;16L", "I;16B", "I;16N", "I",
})


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What `probe_image` reads from a file's header: size as stored (before the EXIF
    orientation), Pillow mode and format name."""

    width: int
    height: int
    mode: str
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels"


def _read_error(path: str, err: Exception) -> ImageReadError:
    """The one-line ImageReadError for an exception raised while opening or decoding `path`."""
    if isinstance(err, FileNotFoundError):
        reason = "no such file"
    elif isinstance(err, IsADirectoryError):
        reason = "is a directory"
    elif isinstance(err, PermissionError):
        reason = "permission denied"
    elif isinstance(err, Image.UnidentifiedImageError):
        reason = "not an image file Pillow recognises"
    elif isinstance(err, Image.DecompressionBombError):
        reason = str(err).replace("\n", " ")
    else:  # Pillow raises many kinds of errors for damaged headers and data
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        reason = f"damaged or unsupported image ({detail})"
    return ImageReadError(f"cannot read {path}: {reason}")


def probe_image(path, max_pixels: int | None = None) -> ImageHeader:
    """Open a file's header (no pixel data is decoded) and check that `load_image` can read it.

    Raises ImageReadError ("cannot read PATH: reason", one line) when the file is missing, not
    an image Pillow recognises, of a pixel format `load_image` refuses (READABLE_MODES; 32-bit
    float), or larger than `max_pixels` (None: Pillow's own limit Image.MAX_IMAGE_PIXELS, which
    guards against decompression bombs; 0: no limit). Damage in the pixel data is only found
    by `load_image`.
    """
    path = os.fspath(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else (max_pixels or None)
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the size is checked below, with a message that helps
        with open(path, "rb") as fp, Image.open(fp) as im:
            head = ImageHeader(int(im.size[0]), int(im.size[1]), im.mode, im.format or "")
    except Exception as err:  # noqa: BLE001 - every failure is this file's one line
        raise _read_error(path, err) from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if head.mode == "F":
        raise ImageReadError(f"cannot read {path}: 32-bit floating-point images are not supported")
    if head.mode not in READABLE_MODES:
        raise ImageReadError(f"cannot read {path}: unsupported pixel format {head.mode}")
    if limit and head.pixels > limit:
        raise ImageTooLargeError(
            f"cannot read {path}: {head.width}x{head.height} is {_megapixels(head.pixels)}, over the limit of "
            f"{_megapixels(limit)} that guards against decompression bombs", head.pixels)
    return head


def load_image(path) -> LoadedImage:
    """Read an image file into float32 RGB in [0, 1] plus alpha and format facts.

    Handles every mode Pillow reads: grayscale (1, L, LA, I;16*, I) → gray replicated to RGB with
    `grayscale=True`; RGB/RGBA/RGBX; palette (P, PA; with tRNS transparency → RGBA); a tRNS colour
    key on L or RGB becomes alpha; CMYK, YCbCr, LAB, HSV → RGB; 16-bit PNG/TIFF (gray, gray+alpha,
    RGB, RGBA, CMYK) keep all 16 bits (Pillow itself narrows multi-channel 16-bit data to 8 bits;
    see `_sixteen_bit_planes`). Only the first frame of animations / multi-page files is read.
    The EXIF orientation is applied (ImageOps.exif_transpose). 32-bit float images (mode F) are
    refused. Raises ImageReadError naming the file for anything unreadable.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fp:
            head = Image.open(fp)
            mode, info = head.mode, dict(head.info)
            deep = _sixteen_bit_planes(path, head)
        if deep is not None:
            im = None
        else:
            im = _open_decoded(path)
            mode = im.mode
    except (MemoryError, ImageReadError):
        raise
    except Exception as err:  # noqa: BLE001 - every failure is this file's one line
        raise _read_error(path, err) from None

    icc = info.get("icc_profile") or None
    alpha = None
    gray = False
    bits = 8

    if deep is not None:
        bits = 16
        if deep.shape[-1] == 2:  # 16-bit gray + alpha
            gray = True
            g = _to_unit(deep[..., 0], 16)
            rgb = np.repeat(g[..., None], 3, axis=2)
            alpha = _to_unit(deep[..., 1], 16)
        elif mode == "CMYK":
            rgb = _cmyk_to_rgb(_to_unit(deep, 16))
            icc = None
        else:
            rgb = _to_unit(deep[..., :3], 16)
            if mode == "RGBA":
                alpha = _to_unit(deep[..., 3], 16)
        return LoadedImage(rgb, alpha, gray, bits, name, path, mode, icc)

    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        bits, gray = 16, True
        a = np.asarray(im)
        if mode == "I":
            a = np.clip(a, 0, 65535)
        g = _to_unit(a, 16)
        rgb = np.repeat(g[..., None], 3, axis=2)
        return LoadedImage(rgb, None, True, bits, name, path, mode, icc)
    if mode == "F":
        raise ImageReadError(f"cannot read {path}: 32-bit floating-point images are not supported")

    if mode == "1":
        im = im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("LA")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in ("RGBa", "RGBX", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode == "CMYK":
        a = np.asarray(im, dtype=np.uint8)
        return LoadedImage(_cmyk_to_rgb(_to_unit(a, 8)), None, False, 8, name, path, mode, None)
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageReadError(f"cannot read {path}: unsupported pixel format {mode}")

    a = np.asarray(im, dtype=np.uint8)
    if im.mode in ("L", "LA"):
        gray = True
        lum = a if a.ndim == 2 else a[..., 0]
        rgb = np.repeat(_to_unit(lum, 8)[..., None], 3, axis=2)
        if im.mode == "LA":
            alpha = _to_unit(a[..., 1], 8)
    else:
        rgb = _to_unit(a[..., :3], 8)
        if im.mode == "RGBA":
            alpha = _to_unit(a[..., 3], 8)
    return LoadedImage(rgb, alpha, gray, bits, name, path, mode, icc)


# --------------------------------------------------------------------------------------------
# Reading as 8-bit RGB (training and evaluation pairs; docs/DATA.md)

# Modes whose samples are 16-bit (or wider) integers: scaled to 8 bits by round(v / 257).
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Modes that carry transparency: composited on white.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-composites an (H, W, 4) uint8 RGBA array over white: round(c·a/255 + 255·(1 − a/255))."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _rgb8_image(im: Image.Image) -> Image.Image:
    """A decoded, upright Pillow image of any mode as an 8-bit RGB Pillow image (rules: `to_rgb8`)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _WIDE_GRAY_MODES:
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        gray = ((v + 128) // 257).astype(np.uint8)  # round(v / 257); no ties for integer v
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), "RGB")
    if mode == "F":
        raise ValueError("floating-point images (mode F) are not supported: their value range is unknown")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return Image.fromarray(_composite_on_white(np.asarray(im.convert("RGBA"))), "RGB")
    return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGB


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Converts a Pillow image to an (H, W, 3) uint8 RGB array (the training and evaluation input).

    Rules (docs/DATA.md): EXIF orientation applied; grayscale/1-bit/palette/CMYK/YCbCr via Pillow's
    own conversion to RGB; 16-bit grayscale (modes I;16*, I) scaled by round(v/257) after clipping to
    0..65535; transparency (RGBA, LA, PA, palette or colour-key transparency) composited on white;
    16-bit RGB(A) files are already reduced by Pillow on opening to their high byte (floor(v/256),
    at most one level from round(v/257)); float images (mode F) are rejected (ValueError).
    """
    return np.asarray(_rgb8_image(ImageOps.exif_transpose(im)))


def open_rgb8(src) -> Image.Image:
    """Decodes a file (path) or encoded bytes with `_open_decoded` (first frame, EXIF orientation)
    and returns it as an 8-bit RGB Pillow image by the rules of `to_rgb8`. Raises ImageReadError
    (one line naming the file) for a file that cannot be opened or decoded, ValueError for mode F."""
    name = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
    try:
        im = _open_decoded(src)
    except (MemoryError, ImageReadError):
        raise
    except Exception as err:  # noqa: BLE001 - every failure is this file's one line
        raise _read_error(name, err) from None
    return _rgb8_image(im)


def load_rgb8(src) -> np.ndarray:
    """Reads an image file (or encoded bytes) as an (H, W, 3) uint8 RGB array (`open_rgb8`)."""
    return np.asarray(open_rgb8(src))

# --------------------------------------------------------------------------------------------
# Writing

_BAND_ROWS = 256  # rows quantised / compressed at a time when writing (bounds temporary memory)
# zlib level of the PNGs written: on a 24-megapixel photo level 3 took 6 s and gave a file 5 %
# larger than level 6 (16 s); level 1 took 4 s for 19 % more (docs/IMAGES.md).
PNG_COMPRESS_LEVEL = 3


def _quantise(x: np.ndarray, bits: int, out: np.ndarray) -> None:
    """float in [0, 1] → unsigned integers of `bits` bits in `out`, rounding to nearest (not
    truncating), a band of rows at a time."""
    top = np.float32(2**bits - 1)
    for r in range(0, x.shape[0], _BAND_ROWS):
        band = np.clip(x[r : r + _BAND_ROWS], 0.0, 1.0).astype(np.float32)
        band *= top
        band += np.float32(0.5)
        out[r : r + _BAND_ROWS] = np.floor(band)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png16(fp, a: np.ndarray, icc_profile: bytes | None) -> None:
    """Write uint16 (H, W) or (H, W, C∈{2,3,4}) as a 16-bit PNG (gray, gray+alpha, RGB, RGBA).

    Pillow cannot write 16-bit PNGs with more than one channel, so this writes the file itself:
    every scanline uses the PNG "Up" filter (difference to the line above, byte-wise mod 256),
    compressed band by band.
    """
    a = a[..., None] if a.ndim == 2 else a
    h, w, c = a.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    fp.write(b"\x89PNG\r\n\x1a\n")
    fp.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
    if icc_profile:
        fp.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    comp = zlib.compressobj(PNG_COMPRESS_LEVEL)
    prev = np.zeros((1, w * c * 2), np.uint8)
    for r in range(0, h, _BAND_ROWS):
        rows = a[r : r + _BAND_ROWS].astype(">u2").reshape(-1, w * c).view(np.uint8)
        lines = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        lines[:, 0] = 2  # filter type Up
        np.subtract(rows, np.concatenate([prev, rows[:-1]]), out=lines[:, 1:])
        prev = rows[-1:]
        data = comp.compress(lines.tobytes())
        if data:
            fp.write(_png_chunk(b"IDAT", data))
    fp.write(_png_chunk(b"IDAT", comp.flush()))
    fp.write(_png_chunk(b"IEND", b""))


def _open_temp(folder: Path, name: str):
    """A new hidden temporary file ``.NAME.XXXXXXXX.tmp`` in `folder`: (binary file, its path).
    Created with mode 0o666 less the umask, like any new file (not tempfile's 0o600), so the
    renamed output has the usual permissions. (Its own function so that tests can make it fail.)"""
    import secrets

    for _ in range(100):
        tmp = Path(folder) / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), tmp
    raise FileExistsError(17, "no free temporary file name", str(folder))


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Give the finished temporary file its name: os.replace, or with overwrite=False a hard
    link that fails when `path` exists (FileExistsError; no window in which another writer's
    file could be replaced), falling back to an exists-check and os.replace on file systems
    without hard links."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares)
        if os.path.lexists(path):
            raise FileExistsError(17, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def foreign_outputs(folder: str, marker: str, names) -> list[str]:
    """The entries of `names` inside `folder` when `folder` is not the output folder of the tool
    that leaves `marker` there (e.g. evaluate's cache.jsonl, training's checkpoints/): what the tool
    would replace in somebody else's folder. NotADirectoryError when `folder` is a file."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(folder)
    if not os.path.isdir(folder) or os.path.exists(os.path.join(folder, marker)):
        return []
    return [n for n in names if os.path.lexists(os.path.join(folder, n))]


@contextlib.contextmanager
def atomic_write(path, *, overwrite: bool = True, text: bool = False, newline: str | None = None):
    """Write a file under a temporary name in its own folder, then rename it into place.

    Yields a file object (binary, or UTF-8 text with `text`). When the block ends normally the
    data is flushed to disk (fsync) and the file gets its name (os.replace), so readers and
    interrupted runs only ever see the old file or the complete new one, never a partial one.
    If the block raises (a full disk, an encoder error, Ctrl-C), the temporary file is removed
    and nothing is renamed. With overwrite=False an existing `path` is never replaced: the
    rename raises FileExistsError instead (checked atomically where the file system has hard
    links). A process killed with SIGKILL may leave the hidden ``.NAME.*.tmp`` file behind,
    never a truncated NAME. The folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fp, tmp = _open_temp(path.parent, path.name)
    try:
        with fp:
            if text:
                import io

                with io.TextIOWrapper(fp, encoding="utf-8", newline=newline) as tf:
                    yield tf
                    tf.flush()
                    os.fsync(fp.fileno())
            else:
                yield fp
                fp.flush()
                os.fsync(fp.fileno())
        _publish(tmp, path, overwrite)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def write_png(path, pixels: np.ndarray, icc_profile: bytes | None = None, *, overwrite: bool = True) -> Path:
    """Write integer pixels as a PNG through `atomic_write`: the package's one PNG writer.

    pixels: uint8 or uint16, (H, W) gray or (H, W, C) with C = 2 (gray + alpha), 3 (RGB) or
    4 (RGBA); uint16 gives a 16-bit PNG. zlib level PNG_COMPRESS_LEVEL. Returns the path.
    """
    path = Path(path)
    a = np.asarray(pixels)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"write_png: need uint8/uint16 (H, W) or (H, W, 1..4) pixels, got {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    with atomic_write(path, overwrite=overwrite) as fp:
        if a.dtype == np.uint16:
            _write_png16(fp, a, icc_profile)
        else:
            extra = {"icc_profile": icc_profile} if icc_profile else {}
            Image.fromarray(a).save(fp, format="PNG", compress_level=PNG_COMPRESS_LEVEL, **extra)
    return path


def save_png(path, image: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write a float image in [0, 1] ((H, W), (H, W, 1) gray or (H, W, 3) RGB) as an 8-bit PNG
    (clipped, rounded to nearest) with `write_png`: for figures, sample grids and examples."""
    x = np.asarray(image, np.float32)
    planes = np.empty(x.shape, np.uint8)
    _quantise(x, 8, planes)
    return write_png(path, planes, overwrite=overwrite)


def save_image(path, rgb: np.ndarray, like: LoadedImage, *, overwrite: bool = True) -> Path:
    """Write restored float RGB (H, W, 3) as a PNG in the format of the source `like`.

    Always PNG (lossless); values are clipped to [0, 1] and rounded to the nearest level. A
    grayscale source gives a one-channel PNG of the mean of the three restored channels; the
    source's alpha is re-attached unchanged; a 16-bit source gives a 16-bit PNG, anything else
    8 bits; the source's ICC profile is embedded again. The EXIF block is not copied (the
    orientation has been applied to the pixels). Written by `write_png` (atomically; with
    overwrite=False an existing file raises FileExistsError). Returns the path written.
    """
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_image: rgb must have shape (H, W, 3), got {rgb.shape}")
    if rgb.shape[:2] != like.shape:
        raise ValueError(f"save_image: rgb is {rgb.shape[:2]} but the source image is {like.shape}")
    if not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"save_image: rgb must be a float array in [0, 1], got dtype {rgb.dtype}")
    if not np.isfinite(rgb).all():
        raise ValueError("save_image: rgb contains NaN or infinite values")
    bits = 16 if like.bit_depth == 16 else 8

    colour = rgb.mean(axis=2, dtype=np.float32)[..., None] if like.grayscale else rgb
    nc = colour.shape[2]
    planes = np.empty(like.shape + (nc + (like.alpha is not None),), np.uint16 if bits == 16 else np.uint8)
    _quantise(colour, bits, planes[..., :nc])
    if like.alpha is not None:
        _quantise(like.alpha, bits, planes[..., nc])
    if planes.shape[2] == 1:
        planes = planes[..., 0]

    return write_png(path, planes, like.icc_profile, overwrite=overwrite)


# --------------------------------------------------------------------------------------------
# Output names


def _ident(p) -> str:
    """Which file a path names: absolute, symlinks resolved."""
    return os.path.normcase(os.path.realpath(os.fspath(p)))


def _key(p) -> str:
    """Clash key of a path: its identity, case folded (safe on case-insensitive disks)."""
    return _ident(p).casefold()


def output_paths(inputs: Sequence, outdir) -> dict[str, Path]:
    """Output PNG path for every input; keys are `os.fspath(input)`.

    Rule (docs/IMAGES.md): the output of `dir/name.ext` is `outdir/name.png`, except
    - if `outdir/name.png` is itself one of the inputs (e.g. restoring PNGs in place), the name is
      `name_restored.png`;
    - if several inputs want the same name (same stem in different folders, or `a.jpg` and
      `a.jpeg`), the one whose full path sorts first keeps it and the others get `name_2.png`,
      `name_3.png`, … in that order, skipping any name another input wants or that is an input.
    No output is ever an input file, and no two inputs share an output. The result depends only
    on the set of inputs (not their order). Names clash when they are equal ignoring case (so the
    rule is safe on case-insensitive disks); paths naming the same file (symlinks resolved) are
    one input. Existing files that are not inputs are not looked at (the caller decides whether
    to overwrite or skip them).
    """
    outdir = Path(outdir)
    unique: dict[str, str] = {}  # identity -> the input as first given
    for p in inputs:
        unique.setdefault(_ident(p), os.fspath(p))
    ordered = sorted(unique.items())
    input_keys = {ident.casefold() for ident in unique}

    def primary(p: str) -> Path:
        stem = Path(p).stem
        cand = outdir / f"{stem}.png"
        if _key(cand) in input_keys:
            cand = outdir / f"{stem}_restored.png"
        return cand

    wants = {ident: primary(p) for ident, p in ordered}
    reserved = {_key(c) for c in wants.values()} | input_keys
    taken: set[str] = set()
    named: dict[str, Path] = {}
    for ident, p in ordered:
        cand = wants[ident]
        if _key(cand) in taken or _key(cand) in input_keys:
            base, n = cand.stem, 2
            while True:
                cand = outdir / f"{base}_{n}.png"
                ck = _key(cand)
                if ck not in taken and ck not in reserved:
                    break
                n += 1
        taken.add(_key(cand))
        named[ident] = cand
    return {os.fspath(p): named[_ident(p)] for p in inputs}


def output_path(input_path, outdir, inputs: Sequence) -> Path:
    """Output PNG path of one input among `inputs` (see `output_paths`, which names them all at once
    and should be preferred for many files)."""
    if _ident(input_path) not in {_ident(p) for p in inputs}:
        inputs = list(inputs) + [input_path]
    return output_paths(inputs, outdir)[os.fspath(input_path)]


# Tiling lives in driftrec_jax.tiling; these names stay importable from here.
from .tiling import (ALIGN, TiledImage, count_tiles, restore_image, restore_images,  # noqa: E402,F401
                     tile_origins, tile_windows)
from .tiling import check_tiling as _check_tiling  # noqa: E402,F401
