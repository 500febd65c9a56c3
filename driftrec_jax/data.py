"""(clean, JPEG) image pairs for training and evaluation (DriftRec paper Sec. III-A training
data, Sec. IV-B/C protocols; docs/DATA.md).

Training (`make_train_iterator`, `train_dataset`): a pipeline that, per example,
  1. reads one source image of this process's shard (Pillow, any bit depth or mode, converted to
     8-bit RGB by `to_rgb8`; optionally kept decoded in memory),
  2. takes a random resized crop (square, scale 0.2..1 of the area, Pillow's antialiased bilinear
     resize to `crop_size`; paper Sec. III-A, with the scale range of the authors' code) and
     quantises it to uint8 -- this is the clean image x0,
  3. compresses it with libjpeg at an integer quality drawn uniformly from `q_range` (4:2:0, the
     quantisation tables and bytes of Pillow's encoder) and decodes it exactly as Pillow does -- y,
and yields per-process batches of numpy arrays
  {"clean": (B, S, S, 3) float32, "jpeg": (B, S, S, 3) float32, "quality": (B,) int32}, values in [0, 1].
Two implementations give the same batches (`DataConfig.pipeline`): "tf", a tf.data graph, and
"numpy", a thread pool around Pillow that never imports TensorFlow (folders and file lists only),
for hosts without TensorFlow.

Every random choice of example k is a pure function of (seed, process_index, k), and the file order
of each epoch is a seeded permutation, so the stream is reproducible and a run can resume at any
batch in O(1) (`start_batch`, `TrainIterator.skip`).

Evaluation (`eval_pairs`): full-size images at fixed qualities, or the unaligned double-JPEG protocol
(QF1, shift 0-4 px, QF2; paper Sec. IV-C, after FBCNN), with Pillow only. TensorFlow is imported
lazily and only by the "tf" training pipeline, so evaluation, restoration and the "numpy"
pipeline never import it. docs/DATA.md is the user guide.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .images import IMAGE_EXTENSIONS, list_image_folder, load_rgb8, open_rgb8, to_rgb8  # noqa: F401

log = logging.getLogger(__name__)

TFDS_PREFIX = "tfds:"

# Decoding any image to 8-bit RGB: driftrec_jax.images, the package's one decoder (also the one
# folder lister, `images.list_image_folder`).
load_rgb = load_rgb8
_open_rgb = open_rgb8


# ----------------------------------------------------------------------------------------------
# Sources and per-process sharding
# ----------------------------------------------------------------------------------------------


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Lists the image files of a source, in a deterministic order.

    `source` is a folder (`images.list_image_folder`: searched recursively for the extensions of
    `images.IMAGE_EXTENSIONS`, any letter case, hidden files and folders skipped; sorted by relative
    path), a text file with one path per line (blank
    lines and lines starting with '#' ignored; relative paths are relative to the list file's folder;
    order kept) or a Python sequence of paths (order kept). Raises FileNotFoundError for a missing
    path and ValueError for a source with no images.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.startswith(TFDS_PREFIX):
            raise ValueError(f"{path!r} is a tensorflow-datasets source; list_images takes folders and file lists")
        if os.path.isdir(path):
            files = list_image_folder(path)
        elif os.path.isfile(path):
            base = os.path.dirname(os.path.abspath(path))
            with open(path, encoding="utf-8") as fh:
                lines = [ln.strip() for ln in fh]
            files = [os.path.join(base, ln) for ln in lines if ln and not ln.startswith("#")]
        else:
            raise FileNotFoundError(f"image source not found: {path}")
    else:
        files = [os.fspath(p) for p in source]
    if not files:
        raise ValueError(f"no images found in source {source!r}")
    return files


def shard_files(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
    """This process's files: every `process_count`-th file from `process_index` (disjoint, covering)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
    if len(files) < process_count:
        raise ValueError(f"{len(files)} images cannot be split over {process_count} processes")
    return list(files[process_index::process_count])


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


def _is_tfds(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and os.fspath(source).startswith(TFDS_PREFIX)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Options of the training pipeline (the fields of `config.data`; docs/DATA.md).

    source: folder, list file, list of paths, or "tfds:NAME[/CONFIG]" (split from `split`).
    crop_size: side S of the square crops; crop_scale: area fraction range of the random resized
    crop (the authors' code: 0.2..1); batch_size: per-process batch; seed: >= 0; q_range: inclusive range of
    the uniform integer JPEG quality (paper Sec. III-A: 0..100); cache: keep decoded source images in memory
    (folders/lists; encoded records for tfds); crops_per_image: consecutive examples cut from one
    decode; shuffle_buffer: tfds sources only (folders/lists are permuted fully each epoch);
    jpeg_backend: "tf" (tf.image ops) or "pillow" (same pixels; the "numpy" pipeline always uses
    Pillow); pipeline: "tf" (tf.data) or "numpy" (a thread pool, no TensorFlow; folders and lists
    only; same batches); num_parallel_calls: -1 = autotune (numpy: one thread per CPU core).
    """

    source: Any = None
    split: str = "train"
    tfds_data_dir: str | None = None
    tfds_image_key: str | None = None
    crop_size: int = 256
    crop_scale: tuple[float, float] = (0.2, 1.0)
    batch_size: int = 8
    seed: int = 0
    q_range: tuple[int, int] = (0, 100)
    cache: bool = True
    crops_per_image: int = 1
    shuffle_buffer: int = 1024
    jpeg_backend: str = "tf"
    pipeline: str = "tf"
    num_parallel_calls: int = -1
    prefetch: int = 2

    def __post_init__(self):
        if self.source is None or (isinstance(self.source, str) and not self.source):
            raise ValueError("data config needs a source (folder, list file, list of paths or 'tfds:NAME')")
        if not isinstance(self.source, (str, os.PathLike)):
            object.__setattr__(self, "source", tuple(os.fspath(p) for p in self.source))
        object.__setattr__(self, "crop_scale", tuple(float(s) for s in self.crop_scale))
        object.__setattr__(self, "q_range", tuple(int(q) for q in self.q_range))
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        qlo, qhi = self.q_range
        if not 0 <= qlo <= qhi <= 100:
            raise ValueError(f"q_range must satisfy 0 <= lo <= hi <= 100, got {self.q_range}")
        for name in ("crop_size", "batch_size", "crops_per_image", "shuffle_buffer", "prefetch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.jpeg_backend not in ("tf", "pillow"):
            raise ValueError(f"jpeg_backend must be 'tf' or 'pillow', got {self.jpeg_backend!r}")
        if self.pipeline not in ("tf", "numpy"):
            raise ValueError(f"pipeline must be 'tf' or 'numpy', got {self.pipeline!r}")
        if self.pipeline == "numpy" and _is_tfds(self.source):
            raise ValueError("the numpy pipeline reads folders and file lists; a tensorflow-datasets source "
                             "needs pipeline='tf'")

    @property
    def is_tfds(self) -> bool:
        return _is_tfds(self.source)

    @classmethod
    def from_any(cls, config: Any) -> "DataConfig":
        """Builds a DataConfig from a DataConfig, a mapping or an ml_collections ConfigDict."""
        if isinstance(config, cls):
            return config
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        if not isinstance(config, Mapping):
            raise TypeError(f"data config must be a DataConfig, mapping or ConfigDict, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown data config field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(config))


# ----------------------------------------------------------------------------------------------
# Random resized crop and JPEG
# ----------------------------------------------------------------------------------------------


def random_crop_box(
    rng: np.random.Generator, width: int, height: int, scale: tuple[float, float] = (0.2, 1.0)
) -> tuple[int, int, int]:
    """Draws a square crop (left, top, side) as a random resized crop with aspect ratio 1 (paper Sec. III-A).

    The area is uniform in [scale_lo·W·H, min(scale_hi·W·H, short²)] (torchvision's
    RandomResizedCrop with ratio (1, 1) draws area uniform in scale·W·H and rejects squares that do
    not fit; this is the same distribution without the rejection loop), side = round(√area), and the
    position is uniform. If even the smallest area does not fit (aspect > 1/scale_lo) the centred
    square of the short side is used, as torchvision's fallback does.
    """
    short = min(width, height)
    area = float(width) * float(height)
    lo, hi = scale[0] * area, min(scale[1] * area, float(short) ** 2)
    if lo > hi:
        return (width - short) // 2, (height - short) // 2, short
    side = min(max(int(round(math.sqrt(rng.uniform(lo, hi)))), 1), short)
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return left, top, side


def resized_crop(image: Image.Image, box: tuple[int, int, int], size: int) -> np.ndarray:
    """Cuts the square `box` = (left, top, side) and resizes it to size×size (paper Sec. III-A).

    Crop first, then Pillow's bilinear resize, which widens its kernel by the scale factor when
    shrinking (antialiased); crops smaller than `size` are upsampled. This is exactly what
    torchvision's RandomResizedCrop does to a PIL image (resizing with Pillow's `box=` instead would
    also blend pixels from outside the box into the border rows). Returns uint8 (S, S, 3).
    """
    left, top, side = box
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR))


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-compresses a uint8 (H, W, 3) or (H, W) / (H, W, 1) image with Pillow's defaults at
    `quality` (0..100; 4:2:0 for colour) and decodes it with Pillow; returns uint8 of the same shape."""
    q = int(quality)
    if not 0 <= q <= 100:
        raise ValueError(f"JPEG quality must be in 0..100, got {quality}")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"jpeg_roundtrip needs a uint8 image, got {a.dtype}")
    squeeze = a.ndim == 3 and a.shape[-1] == 1
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if squeeze else a).save(buf, format="JPEG", quality=q)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        out = np.asarray(im)
    return out[..., None] if squeeze else out


# ----------------------------------------------------------------------------------------------
# Indexed sources (folders, lists): random access, cache, unreadable files
# ----------------------------------------------------------------------------------------------


class _ImageTable:
    """Random access to this process's decoded images, with an optional decoded cache.

    Unreadable images are logged once, counted in `unreadable` and remembered; `get_readable`
    replaces one by the next readable image of the given order, so each example index still maps to
    exactly one example (which keeps resuming exact).
    """

    def __init__(self, items: Sequence[Any], names: Sequence[str], cache: bool):
        self.items = list(items)
        self.names = list(names)
        self._cache: dict[int, Image.Image] | None = {} if cache else None
        self._bad: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def unreadable(self) -> int:
        return len(self._bad)

    def get(self, i: int) -> Image.Image | None:
        """Image i as 8-bit RGB, or None if it cannot be read (logged and counted once)."""
        if i in self._bad:
            return None
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        try:
            im = _open_rgb(self.items[i])
        except Exception as err:  # noqa: BLE001 -- any decoder failure means "unreadable"
            with self._lock:
                first = i not in self._bad
                self._bad.add(i)
            if first:
                log.warning("skipping unreadable image %s (%s: %s)", self.names[i], type(err).__name__, err)
            return None
        if self._cache is not None:
            self._cache[i] = im
        return im

    def get_readable(self, order: np.ndarray, pos: int) -> Image.Image:
        """The first readable image among order[pos], order[pos + 1], ... (cyclically)."""
        n = len(order)
        for j in range(n):
            im = self.get(int(order[(pos + j) % n]))
            if im is not None:
                return im
        raise RuntimeError(f"none of the {n} images of this process could be read")

    def check_any_readable(self) -> None:
        """Raises ValueError at start if no image of this shard can be read (the rest load lazily)."""
        for i in range(len(self)):
            if self.get(i) is not None:
                return
        raise ValueError(f"none of the {len(self)} images of this process could be read (e.g. {self.names[0]})")


class _ExampleMaker:
    """The pure part of the pipeline: group index g -> crops_per_image (clean uint8, quality) examples.

    Group g of epoch e = g // n uses image perm_e[g % n], where perm_e is a permutation seeded by
    (seed, process_index, e); its crops and qualities come from a generator seeded by
    (seed, process_index, g). Example k belongs to group k // crops_per_image.
    """

    def __init__(self, cfg: DataConfig, process_index: int, table: _ImageTable | None):
        self.cfg = cfg
        self.process_index = int(process_index)
        self.table = table
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.stream_unreadable = 0  # unreadable tfds records seen so far

    def _rng(self, *tags: int) -> np.random.Generator:
        return np.random.default_rng([int(self.cfg.seed), self.process_index, *tags])

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = self._rng(0, epoch).permutation(len(self.table))
                self._perms[epoch] = perm
                for old in [e for e in self._perms if e < epoch - 2]:
                    del self._perms[old]
        return perm

    def crops(self, image: Image.Image, g: int) -> tuple[np.ndarray, np.ndarray]:
        """crops_per_image random resized crops of `image` and their qualities, seeded by group g."""
        cfg = self.cfg
        rng = self._rng(1, g)
        m, s = cfg.crops_per_image, cfg.crop_size
        clean = np.empty((m, s, s, 3), np.uint8)
        quality = rng.integers(cfg.q_range[0], cfg.q_range[1] + 1, size=m).astype(np.int32)
        for j in range(m):
            clean[j] = resized_crop(image, random_crop_box(rng, image.width, image.height, cfg.crop_scale), s)
        return clean, quality

    def group_from_index(self, g: np.int64) -> tuple[np.ndarray, np.ndarray]:
        g = int(g)
        n = len(self.table)
        image = self.table.get_readable(self.permutation(g // n), g % n)
        return self.crops(image, g)

    def group_from_bytes(self, g: np.int64, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """For streamed (tfds) sources: an unreadable record gives an empty group (logged, counted)."""
        g = int(g)
        try:
            image = _open_rgb(bytes(data))
        except Exception as err:  # noqa: BLE001
            with self._lock:
                self.stream_unreadable += 1
            log.warning("skipping unreadable tfds record %d (%s: %s)", g, type(err).__name__, err)
            m, s = 0, self.cfg.crop_size
            return np.empty((m, s, s, 3), np.uint8), np.empty((m,), np.int32)
        return self.crops(image, g)

    def add_pillow_jpeg(self, clean: np.ndarray, quality: np.ndarray) -> np.ndarray:
        return np.stack([jpeg_roundtrip(c, int(q)) for c, q in zip(clean, quality)]) if len(clean) else clean.copy()


def _shard_table(cfg: DataConfig, process_index: int, process_count: int) -> _ImageTable:
    """The image table of this process's shard of a folder or list (fails at once if none is readable)."""
    files = shard_files(list_images(cfg.source), process_index, process_count)
    table = _ImageTable(files, files, cfg.cache)
    table.check_any_readable()
    return table


# ----------------------------------------------------------------------------------------------
# The tf.data pipeline
# ----------------------------------------------------------------------------------------------


def _import_tf():
    """Imports TensorFlow for the input pipeline only (quiet, and never on a GPU JAX needs)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialised, or no GPU support at all
        pass
    return tf


def tf_jpeg(clean, quality):
    """JPEG round trip in TensorFlow graph ops: uint8 (H, W, 3) tensor and int32 quality tensor (0..100)
    -> uint8 decoded image, pixel-identical to `jpeg_roundtrip` (Pillow) at the same quality.

    Measured (docs/DATA.md): the encoded bytes equal Pillow's from the first quantisation table (DQT)
    to the end -- same libjpeg tables, 4:2:0, Huffman coding -- and differ only in the JFIF header's
    density field; decoding with dct_method="INTEGER_ACCURATE" (libjpeg's islow IDCT, Pillow's
    default) gives Pillow's pixels, whereas TF's default fast IDCT is 37-47 dB away from them.
    """
    return _tf_jpeg_ops(_import_tf(), clean, quality)


def _tf_jpeg_ops(tf, clean, quality):
    # tf.image.adjust_jpeg_quality would decode with the default (inexact) IDCT: encode and decode here.
    data = tf.raw_ops.EncodeJpegVariableQuality(images=clean, quality=quality)
    return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")


def _tfds_source(cfg: DataConfig, process_index: int, process_count: int):
    """This process's part of a tensorflow-datasets split: (dataset of encoded image bytes, its length).

    The split is cut into `process_count` even, disjoint parts (tfds.even_splits); records are not
    decoded by TF (the Pillow path converts them like files)."""
    import tensorflow_datasets as tfds

    name = os.fspath(cfg.source)[len(TFDS_PREFIX):]
    builder = tfds.builder(name, data_dir=cfg.tfds_data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tensorflow-datasets dataset {name!r} is not prepared in {builder.data_dir!r}; build it first, "
            f"e.g. `tfds build {name} --data_dir DIR --manual_dir DIR_WITH_DOWNLOADS`"
        )
    images = [k for k, v in builder.info.features.items() if isinstance(v, tfds.features.Image)]
    key = cfg.tfds_image_key or ("hr" if "hr" in images else "image" if "image" in images else None)
    if key is None and len(images) == 1:
        key = images[0]
    if key not in images:
        raise ValueError(f"pick the image feature of {name!r} with tfds_image_key (image features: {images})")
    if builder.info.splits[cfg.split].num_examples < process_count:
        raise ValueError(f"split {cfg.split!r} of {name!r} has fewer examples than {process_count} processes")
    split = tfds.even_splits(cfg.split, n=process_count)[process_index]
    n = int(builder.info.splits[split].num_examples)
    if n < 1:
        raise ValueError(f"split {cfg.split!r} of {name!r} has no examples for process {process_index}")
    ds = builder.as_dataset(
        split=split, shuffle_files=False, decoders={key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    return ds.map(lambda ex: ex[key]), n


def _build(cfg: DataConfig, process_index: int, process_count: int, start_batch: int,
           table: _ImageTable | None = None):
    """Builds the batched tf.data pipeline starting at batch `start_batch`; returns (dataset, maker).
    `table` reuses the image table (decoded cache, unreadable record) of an earlier build."""
    tf = _import_tf()
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    m, s, b = cfg.crops_per_image, cfg.crop_size, cfg.batch_size
    first = start_batch * b  # index of the first example
    g0, r0 = divmod(first, m)
    par = tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls
    pillow = cfg.jpeg_backend == "pillow"
    out_types = [tf.uint8, tf.int32] + ([tf.uint8] if pillow else [])

    if cfg.is_tfds:
        maker = _ExampleMaker(cfg, process_index, None)
        records, n = _tfds_source(cfg, process_index, process_count)
        if cfg.cache:
            records = records.cache()  # one in-memory copy, shared by all epochs below
        # Epoch e is the part shuffled with seed (seed, e): resuming at group g0 re-reads at most one epoch.
        e0, off = divmod(g0, n)
        buffer = min(cfg.shuffle_buffer, n)
        epochs = tf.data.Dataset.range(e0, 2**62).flat_map(
            lambda e: records.shuffle(buffer, seed=int(cfg.seed) * 1_000_003 + e, reshuffle_each_iteration=False))
        groups = tf.data.Dataset.zip(tf.data.Dataset.range(g0, 2**62), epochs.skip(off))

        def make(g, data):
            clean, q = maker.group_from_bytes(g, data)
            return (clean, q, maker.add_pillow_jpeg(clean, q)) if pillow else (clean, q)

        ds = groups.map(lambda g, data: tf.numpy_function(make, [g, data], out_types),
                        num_parallel_calls=par, deterministic=True)
    else:
        table = table if table is not None else _shard_table(cfg, process_index, process_count)
        maker = _ExampleMaker(cfg, process_index, table)

        def make(g):
            clean, q = maker.group_from_index(g)
            return (clean, q, maker.add_pillow_jpeg(clean, q)) if pillow else (clean, q)

        ds = tf.data.Dataset.range(g0, 2**62).map(
            lambda g: tf.numpy_function(make, [g], out_types), num_parallel_calls=par, deterministic=True)

    def shaped(*t):
        t = list(t)
        t[0] = tf.ensure_shape(t[0], (None, s, s, 3))
        t[1] = tf.ensure_shape(t[1], (None,))
        if pillow:
            t[2] = tf.ensure_shape(t[2], (None, s, s, 3))
        return tuple(t)

    ds = ds.map(shaped).unbatch().skip(r0)
    if pillow:
        ds = ds.map(lambda c, q, y: {"clean": c, "jpeg": y, "quality": q})
    else:
        ds = ds.map(lambda c, q: {"clean": c, "jpeg": _tf_jpeg_ops(tf, c, q), "quality": q},
                    num_parallel_calls=par, deterministic=True)
    ds = ds.batch(b, drop_remainder=True)
    ds = ds.map(lambda e: {"clean": tf.cast(e["clean"], tf.float32) / 255.0,
                           "jpeg": tf.cast(e["jpeg"], tf.float32) / 255.0,
                           "quality": e["quality"]})
    ds = ds.prefetch(cfg.prefetch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options), maker


# ----------------------------------------------------------------------------------------------
# The numpy pipeline (threads and Pillow; no TensorFlow)
# ----------------------------------------------------------------------------------------------


class _NumpyStream:
    """The batches of the tf.data pipeline, made by a thread pool instead (pipeline="numpy").

    Groups g0, g0 + 1, ... are made by `_ExampleMaker` (crops, qualities) and Pillow's JPEG
    (`jpeg_roundtrip`) in worker threads -- Pillow releases the GIL while it resizes, encodes and
    decodes -- and are consumed in order, a bounded window of them ahead of the consumer; the first
    r0 examples are skipped, as the tf.data pipeline does. So batch k is the same as the "tf"
    pipeline's batch k, and equally a pure function of (seed, process, k).
    """

    def __init__(self, cfg: DataConfig, maker: _ExampleMaker, start_batch: int):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.cfg, self.maker = cfg, maker
        m, b = cfg.crops_per_image, cfg.batch_size
        self._next_group, self._skip = divmod(start_batch * b, m)
        workers = cfg.num_parallel_calls if cfg.num_parallel_calls > 0 else (os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="driftrec-data")
        self._window = max(2 * workers, cfg.prefetch * -(-b // m))  # groups in flight
        self._pending: Any = deque()
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._have = 0

    def _group(self, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clean, quality = self.maker.group_from_index(np.int64(g))
        return clean, self.maker.add_pillow_jpeg(clean, quality), quality

    def __iter__(self) -> "_NumpyStream":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        b = self.cfg.batch_size
        while self._have < b:
            while len(self._pending) < self._window:
                self._pending.append(self._pool.submit(self._group, self._next_group))
                self._next_group += 1
            clean, jpeg, quality = self._pending.popleft().result()
            if self._skip:
                cut = min(self._skip, len(clean))
                self._skip -= cut
                clean, jpeg, quality = clean[cut:], jpeg[cut:], quality[cut:]
            if len(clean):
                self._parts.append((clean, jpeg, quality))
                self._have += len(clean)
        clean, jpeg, quality = (np.concatenate(a) for a in zip(*self._parts))
        rest = (clean[b:], jpeg[b:], quality[b:])
        self._parts, self._have = ([rest] if len(rest[0]) else []), len(rest[0])
        scale = np.float32(255.0)
        return {"clean": clean[:b].astype(np.float32) / scale, "jpeg": jpeg[:b].astype(np.float32) / scale,
                "quality": quality[:b].astype(np.int32)}

    def close(self) -> None:
        """Stops the worker threads (queued groups are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _build_numpy(cfg: DataConfig, process_index: int, process_count: int, start_batch: int,
                 table: _ImageTable | None = None) -> tuple[_NumpyStream, _ExampleMaker]:
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    table = table if table is not None else _shard_table(cfg, process_index, process_count)
    maker = _ExampleMaker(cfg, process_index, table)
    return _NumpyStream(cfg, maker, start_batch), maker


def train_dataset(config: Any, process_index: int = 0, process_count: int = 1, start_batch: int = 0):
    """The tf.data.Dataset of per-process training batches (infinite), from batch `start_batch` on.

    Elements: {"clean", "jpeg": (B, S, S, 3) float32 in [0, 1], "quality": (B,) int32}. `config` is a
    DataConfig, dict or ConfigDict (see `DataConfig`); its `pipeline` must be "tf". Paper Sec. III-A; docs/DATA.md.
    """
    cfg = DataConfig.from_any(config)
    if cfg.pipeline != "tf":
        raise ValueError("train_dataset builds the tf.data pipeline; for pipeline='numpy' use make_train_iterator")
    return _build(cfg, int(process_index), int(process_count), int(start_batch))[0]


class TrainIterator:
    """Iterator of per-process numpy training batches with a resumable position (docs/DATA.md).

    `position` is the index of the next batch; store it with a checkpoint and pass it back as
    `start_batch` (or call `skip`) to continue the same stream for the same seed. `num_images` is the
    size of this process's shard (folders/lists) and `unreadable` the number of files skipped so far.
    `dataset` is the tf.data.Dataset behind it (None for pipeline="numpy"); `close()` stops the
    numpy pipeline's threads.
    """

    def __init__(self, config: Any, process_index: int = 0, process_count: int = 1, start_batch: int = 0):
        self.config = DataConfig.from_any(config)
        self.process_index, self.process_count = int(process_index), int(process_count)
        self._start(int(start_batch))

    def _start(self, start_batch: int, table: _ImageTable | None = None) -> None:
        self.close()
        if self.config.pipeline == "numpy":
            self.dataset = None
            self._it, self._maker = _build_numpy(self.config, self.process_index, self.process_count,
                                                 start_batch, table)
        else:
            self.dataset, self._maker = _build(self.config, self.process_index, self.process_count,
                                               start_batch, table)
            self._it = self.dataset.as_numpy_iterator()
        self.position = start_batch

    def close(self) -> None:
        if isinstance(getattr(self, "_it", None), _NumpyStream):
            self._it.close()

    @property
    def num_images(self) -> int | None:
        return None if self._maker.table is None else len(self._maker.table)

    @property
    def unreadable(self) -> int:
        table = self._maker.table
        return table.unreadable if table is not None else self._maker.stream_unreadable

    def skip(self, n_batches: int) -> None:
        """Advances the stream by n_batches without producing them (O(1) for folders and lists)."""
        if n_batches < 0:
            raise ValueError(f"cannot skip a negative number of batches ({n_batches})")
        # Reuses the decoded cache and the unreadable record; a tfds stream re-reads at most one epoch.
        self._start(self.position + int(n_batches), self._maker.table)

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._it)
        self.position += 1
        return batch


def make_train_iterator(
    data_config: Any, process_index: int = 0, process_count: int = 1, start_batch: int = 0
) -> TrainIterator:
    """Per-process iterator of numpy batches {"clean", "jpeg", "quality"} (see `TrainIterator`).

    Pass jax.process_index() / jax.process_count(); each process reads a disjoint shard of the files.
    """
    return TrainIterator(data_config, process_index, process_count, start_batch)


# ----------------------------------------------------------------------------------------------
# Evaluation pairs (Pillow only; no TensorFlow)
# ----------------------------------------------------------------------------------------------


def _as_pairs(double) -> list[tuple[int, int]]:
    if len(double) == 2 and all(isinstance(q, (int, np.integer)) for q in double):
        double = [double]
    pairs = [(int(q1), int(q2)) for q1, q2 in double]
    if not pairs:
        raise ValueError("double needs at least one (qf1, qf2) pair")
    return pairs


def double_jpeg_shift(name: str, seed: int = 0, max_shift: int = 4) -> tuple[int, int]:
    """The (dy, dx) shift, each uniform in 0..max_shift, of one image in the double-JPEG protocol,
    seeded by (seed, CRC-32 of its name) so that it does not depend on the other files."""
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
    dy, dx = rng.integers(0, max_shift + 1, size=2)
    return int(dy), int(dx)


def eval_pairs(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    qualities: Sequence[int] = (10,),
    double: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    mode: str = "rgb",
    crop: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Fixed full-size evaluation pairs, in file order (paper Sec. IV-B/C), computed with Pillow only.

    Single JPEG (double=None): for each image and each q in `qualities`, yields {"name", "clean",
    "jpeg": (H, W, C) float32 in [0, 1], "quality": q}. Unaligned double JPEG (double=(qf1, qf2) or a
    list of pairs; `qualities` unused): JPEG at qf1, drop the first dy rows and dx columns (dy, dx
    uniform in 0..4 from `double_jpeg_shift(name, seed)`), JPEG at qf2; "clean" is the original with
    the same rows/columns dropped; also yields "quality1": qf1 and "shift": (dy, dx). `mode` "rgb"
    (C = 3, images converted by `to_rgb8`) or "gray" (C = 1: colour images converted to Pillow's
    ITU-R 601 luma and compressed as one-channel JPEGs). Unreadable files are skipped with a warning.
    `crop`: first cut every original to its central crop×crop pixels (sides shorter than `crop`
    stay whole; the offset is (side − crop) // 2) — a reduced protocol, for quick evaluations.
    """
    if mode not in ("rgb", "gray"):
        raise ValueError(f"mode must be 'rgb' or 'gray', got {mode!r}")
    if crop is not None and int(crop) < 8:
        raise ValueError(f"crop must be at least 8 pixels, got {crop}")
    qualities = [int(q) for q in qualities]
    pairs = _as_pairs(double) if double is not None else None
    for q in qualities + [q for p in (pairs or []) for q in p]:
        if not 0 <= q <= 100:
            raise ValueError(f"JPEG quality must be in 0..100, got {q}")
    files = list_images(source)
    root = os.fspath(source) if isinstance(source, (str, os.PathLike)) and os.path.isdir(source) else None
    for path in files:
        name = os.path.relpath(path, root).replace(os.sep, "/") if root else os.fspath(path)
        try:
            x = load_rgb(path)
        except Exception as err:  # noqa: BLE001
            log.warning("skipping unreadable image %s (%s: %s)", path, type(err).__name__, err)
            continue
        if mode == "gray":
            x = np.asarray(Image.fromarray(x).convert("L"))[..., None]
        if crop is not None:
            top, left = max(x.shape[0] - int(crop), 0) // 2, max(x.shape[1] - int(crop), 0) // 2
            x = np.ascontiguousarray(x[top:top + int(crop), left:left + int(crop)])
        clean = x.astype(np.float32) / 255.0
        if pairs is None:
            for q in qualities:
                yield {"name": name, "clean": clean, "jpeg": jpeg_roundtrip(x, q).astype(np.float32) / 255.0,
                       "quality": q}
            continue
        dy, dx = double_jpeg_shift(name, seed)
        for q1, q2 in pairs:
            y = jpeg_roundtrip(jpeg_roundtrip(x, q1)[dy:, dx:], q2)
            yield {"name": name, "clean": clean[dy:, dx:], "jpeg": y.astype(np.float32) / 255.0,
                   "quality": q2, "quality1": q1, "shift": (dy, dx)}
