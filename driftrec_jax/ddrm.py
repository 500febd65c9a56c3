"""DDRM-JPEG (Kawar, Song, Ermon, Elad 2022, "JPEG artifact correction using denoising diffusion
restoration models", built on DDRM, Kawar et al. 2022; docs/DDRM.md): JPEG restoration and
dequantisation with an unconditional ε-prediction diffusion model.

The prior is a DDPM: linear β from 1e-4 to 0.02 over T = 1000 steps, ᾱ_t = Π_{s≤t}(1 − β_s),
images scaled to [−1, 1] inside this module (inputs and outputs of the public functions are in
[0, 1], like the rest of driftrec_jax). The network is NCSN++ with 3 input channels, conditioned
on the noise level of timestep t — σ_t = √((1 − ᾱ_t)/ᾱ_t), the VE-equivalent noise of x_t/√ᾱ_t,
whose log goes through NCSN++'s Fourier embedding — and not divided by σ: it predicts ε.

The sampler (DDRM-JPEG paper Sec. 3, with the settings of its Sec. 4 and the authors' code):
non-blind, H = Decode∘Encode with the quantisation tables of the input file. 20 steps on the
timesteps 285, 270, …, 0 (skip = 300 // 20), then −1 with ᾱ_{−1} = 1. Start
x = √ᾱ_285 y0 + √(1 − ᾱ_285) z; each step t → t′:

    x̂0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t
    x̃0 = x̂0 − H(x̂0) + y0                                   (the "pseudo-inverse" step)
    x_t′ = √ᾱ_t′ [η_B x̃0 + (1 − η_B) x̂0] + √(1 − ᾱ_t′) [η z + (1 − η) ε_θ]

with η = 1, η_B = 0.4, so the output (t′ = −1) is 0.4 x̃0 + 0.6 x̂0. "Ours (A)" averages k
independent samples. Dequantisation uses the same loop with H = quantisation to b bits per channel
(bins of width 2^−b on [0, 1], reconstructed at their centres), which the authors' code lacks.

Public API:
  schedule   `linear_betas`, `alphas_cumprod`, `noise_level`, `sampling_timesteps`
  operators  `jpeg_operator`, `quantize`, `quantize_operator`
  network    `EPS_VARIANT`, `make_eps_network`, `make_eps_fn`
  sampling   `ddrm_samples` (all k samples), `make_restorer` → restore(params, y, tables, key)
  files      `load_jpeg` (pixels + tables + subsampling of a JPEG file), `file_tables`
  training   `eps_loss` (the task, its network and restorer: `tasks.DDRMTask`)
"""

from __future__ import annotations

import io
import os
from functools import partial
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import jpeg
from .networks.presets import ALL_VARIANTS

# DDPM's linear schedule (Ho et al. 2020) and DDRM-JPEG's settings (paper Sec. 4: t = 300, 20 steps,
# η = 1, η_B = 0.4), as the authors' code uses them.
NUM_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02
INIT_TIMESTEP = 300
NUM_STEPS = 20
ETA = 1.0
ETA_B = 0.4

# NCSN++ fields for the ε network: 3 inputs (x_t), conditioned on σ_t, output not divided by σ.
EPS_VARIANT = ALL_VARIANTS["ddrm_eps"]

MODES = ("jpeg", "quant")


# --------------------------------------------------------------------------- DDPM schedule


def linear_betas(num_timesteps: int = NUM_TIMESTEPS, beta_start: float = BETA_START,
                 beta_end: float = BETA_END) -> np.ndarray:
    """β_0..β_{T−1} = linspace(β_start, β_end, T) in float64 (DDPM's linear schedule, Ho et al. 2020)."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be ≥ 1, got {num_timesteps}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start ≤ beta_end < 1, got {beta_start}, {beta_end}")
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def alphas_cumprod(num_timesteps: int = NUM_TIMESTEPS, beta_start: float = BETA_START,
                   beta_end: float = BETA_END) -> np.ndarray:
    """ᾱ_t = Π_{s=0..t} (1 − β_s) for t = 0..T−1, float64 (so ᾱ_0 = 1 − β_0; ᾱ_{−1} := 1 is implicit)."""
    return np.cumprod(1.0 - linear_betas(num_timesteps, beta_start, beta_end))


def noise_level(alpha_bar) -> np.ndarray:
    """σ = √((1 − ᾱ)/ᾱ) (float64, on the host): the noise level the ε network is conditioned on
    (through NCSN++'s Fourier embedding of log σ); the VE noise of x_t/√ᾱ_t."""
    alpha_bar = np.asarray(alpha_bar, np.float64)
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


class _Coefficients(NamedTuple):
    """Per-timestep √ᾱ, √(1 − ᾱ) and σ = √((1 − ᾱ)/ᾱ), computed in float64 and stored as float32
    (1 − ᾱ_t cancels badly in float32 for small t); index T holds t = −1: ᾱ = 1."""

    sqrt_a: jax.Array
    sqrt_1ma: jax.Array
    sigma: jax.Array

    def at(self, t):
        """(√ᾱ_t, √(1 − ᾱ_t), σ_t) for integer t in −1..T−1 (any shape)."""
        i = jnp.asarray(t, jnp.int32)
        i = jnp.where(i < 0, self.sqrt_a.shape[0] - 1, i)
        return self.sqrt_a[i], self.sqrt_1ma[i], self.sigma[i]


def _coefficients(alphas) -> _Coefficients:
    a = np.concatenate([np.asarray(alphas, np.float64).reshape(-1), [1.0]])
    if not np.all((a > 0) & (a <= 1)):
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    return _Coefficients(*(jnp.asarray(v, jnp.float32) for v in (np.sqrt(a), np.sqrt(1 - a), noise_level(a))))


def sampling_timesteps(init_timestep: int = INIT_TIMESTEP, num_steps: int = NUM_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(t, t′) of each sampling step: t = (init // n)·(n−1), …, 0 and t′ the next one, ending at −1.

    The defaults give t = 285, 270, …, 15, 0 and t′ = 270, …, 0, −1, as the DDRM-JPEG authors' code does.
    """
    if num_steps < 1 or init_timestep < num_steps:
        raise ValueError(f"need 1 ≤ num_steps ≤ init_timestep, got {num_steps} steps from {init_timestep}")
    skip = init_timestep // num_steps
    ts = np.arange(0, init_timestep, skip, dtype=np.int32)[:num_steps][::-1]
    return ts.copy(), np.concatenate([ts[1:], [-1]]).astype(np.int32)


# --------------------------------------------------------------------------- degradation operators


def jpeg_operator(tables, subsampling: str = "4:2:0", dct: str = "islow") -> Callable:
    """H(x) = Decode(Encode(x)) on images in [0, 1] with the given tables (DDRM-JPEG paper Sec. 3).

    tables: (luma, chroma), each (8, 8) or (B, 8, 8) for one table per image of the batch.
    """
    def h(x):
        return jpeg.jpeg_roundtrip(x, tables, subsampling, dct=dct)

    return h


def quantize(x, bits: int) -> jax.Array:
    """Quantisation to `bits` bits per channel on [0, 1]: bin k = ⌊x·2^b⌋ (clipped to 0..2^b − 1),
    reconstructed at its centre (k + ½)/2^b (the dequantisation problem of the DDRM-JPEG paper's Fig. 2).

    Idempotent; maps 8-bit images reduced to b bits either by keeping the top bits (Pillow's
    posterize) or by rounding x·(2^b − 1) to the bin that holds them.
    """
    n = float(2 ** bits)
    k = jnp.clip(jnp.floor(jnp.asarray(x, jnp.float32) * n), 0.0, n - 1.0)
    return (k + 0.5) / n


def quantize_operator(bits: int) -> Callable:
    """H(x) = `quantize`(x, bits) (dequantisation mode)."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits per channel must be an int in 1..8, got {bits!r}")
    return partial(quantize, bits=int(bits))


# --------------------------------------------------------------------------- the ε network


def make_eps_network(network: Union[str, dict] = "small", dtype=jnp.float32):
    """NCSN++ for ε prediction: a preset name of networks.presets (or {'preset': name, **overrides})
    with the `EPS_VARIANT` fields (3 inputs, conditioned on σ_t, not divided by σ)."""
    from .networks.presets import make_network

    return make_network(network, variant="ddrm_eps", dtype=dtype)


def make_eps_fn(apply_fn: Callable, alphas) -> Callable:
    """ε_θ(params, x, t) for x in [−1, 1] and integer timesteps t (scalar or (B,)), from a network
    apply(params, x, sigma) conditioned on σ_t = `noise_level`(ᾱ_t). alphas: ᾱ_0..ᾱ_{T−1} (host array)."""
    coeffs = _coefficients(alphas)

    def eps(params, x, t):
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (x.shape[0],))
        return apply_fn(params, x, coeffs.at(t)[2])

    return eps


# --------------------------------------------------------------------------- the sampler


def _ddrm_one(eps, h, y0, key, coeffs, ts, ts_next, eta, eta_b):
    """One DDRM chain for the whole batch (the update above; docs/DDRM.md). eps(x, t) and h(x) work in [−1, 1]."""
    sa0, s1ma0, _ = coeffs.at(ts[0])
    key_init, key_steps = jax.random.split(key)
    x = sa0 * y0 + s1ma0 * jax.random.normal(key_init, y0.shape, y0.dtype)

    def step(x, inputs):
        t, t_next, k = inputs
        (sa, s1ma, _), (sa_next, s1ma_next, _) = coeffs.at(t), coeffs.at(t_next)
        e = eps(x, t)
        x0_hat = (x - s1ma * e) / sa
        x0_tilde = x0_hat - h(x0_hat) + y0
        noise = eta * jax.random.normal(k, x.shape, x.dtype) + (1.0 - eta) * e
        x = sa_next * (eta_b * x0_tilde + (1.0 - eta_b) * x0_hat) + s1ma_next * noise
        return x, None

    keys = jax.random.split(key_steps, ts.shape[0])
    x, _ = jax.lax.scan(step, x, (jnp.asarray(ts), jnp.asarray(ts_next), keys))
    return x  # the last t′ is −1: ᾱ = 1, so x = η_B x̃0 + (1 − η_B) x̂0


def ddrm_samples(eps, y, key, *, tables=None, subsampling: str = "4:2:0", mode: str = "jpeg",
                 bits: int = 3, num_samples: int = 1, init_timestep: int = INIT_TIMESTEP,
                 num_steps: int = NUM_STEPS, eta: float = ETA, eta_b: float = ETA_B, alphas=None,
                 dct: str = "islow", sample_batch: Optional[int] = None) -> jax.Array:
    """k = `num_samples` independent DDRM-JPEG restorations of a batch (DDRM-JPEG paper Sec. 3-4), in [0, 1].

    eps(x, t): the ε network with its parameters bound (x in [−1, 1], t an int timestep).
    y: (B, H, W, 3) in [0, 1]. mode 'jpeg': y is the decoded JPEG and is used as y0; `tables` are
    its (luma, chroma) tables ((8, 8) or (B, 8, 8) each) and `subsampling` its chroma layout.
    mode 'quant': y0 = quantize(y, bits) and H = quantisation to `bits` bits per channel.
    The k chains run `sample_batch` at a time (vmapped; None = all at once) with lax.map, each
    with its own key from `key`. Returns (k, B, H, W, 3), clipped to [0, 1]. Pure and jit-able;
    the number of network evaluations per chain is `num_steps`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    y = jnp.asarray(y, jnp.float32)
    if y.ndim != 4 or y.shape[-1] != 3:
        raise ValueError(f"y must be a (B, H, W, 3) batch in [0, 1], got shape {y.shape}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
    if mode == "jpeg":
        if tables is None:
            raise ValueError("mode 'jpeg' needs the quantisation tables of the input (jpeg.read_jpeg_tables)")
        h01, y0 = jpeg_operator(tables, subsampling, dct), y
    else:
        h01 = quantize_operator(bits)
        y0 = h01(y)
    coeffs = _coefficients(alphas_cumprod() if alphas is None else alphas)
    ts, ts_next = sampling_timesteps(init_timestep, num_steps)
    if ts[0] >= coeffs.sqrt_a.shape[0] - 1:
        raise ValueError(f"init_timestep {init_timestep} lies beyond the schedule's {coeffs.sqrt_a.shape[0] - 1} steps")

    def h(x):  # H on the [−1, 1] scale of the diffusion
        return 2.0 * h01((x + 1.0) * 0.5) - 1.0

    def chain(k):
        x = _ddrm_one(eps, h, 2.0 * y0 - 1.0, k, coeffs, ts, ts_next, eta, eta_b)
        return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)

    keys = jax.random.split(key, num_samples)
    return jax.lax.map(chain, keys, batch_size=sample_batch)


def make_restorer(apply_fn: Callable, *, alphas=None, num_samples: int = 1, num_steps: int = NUM_STEPS,
                  init_timestep: int = INIT_TIMESTEP, eta: float = ETA, eta_b: float = ETA_B,
                  mode: str = "jpeg", bits: int = 3, dct: str = "islow",
                  sample_batch: Optional[int] = None) -> Callable:
    """`restore(params, y, tables, key, subsampling='4:2:0') -> (x, nfe)` for DDRM-JPEG (docs/DDRM.md).

    apply_fn(params, x, sigma) is the ε network (e.g. `tasks.DDRMTask.apply` or NCSNpp.apply); y is the
    decoded JPEG batch (B, H, W, 3) in [0, 1] and tables its (luma, chroma) quantisation tables
    (from `load_jpeg` / jpeg.read_jpeg_tables; (8, 8) or (B, 8, 8) each; ignored in 'quant' mode);
    subsampling '4:2:0' or '4:4:4'. x is the mean of `num_samples` samples ("Ours (A)"; k = 1:
    "Ours (S)"), nfe = num_samples · num_steps network evaluations per image (a scalar).

    Every image is restored on its own key (image i: the i-th of jax.random.split(key, B)), so its
    result does not depend on its batch neighbours; the network still sees the whole batch. Two
    more entry points share the one jitted function:
      restore.samples(params, y, tables, key, subsampling)  → all k samples, (k, B, H, W, 3);
      restore.tiles(params, tiles, tables, keys, subsampling) → (x, nfe per tile (N,)) with one
        key per tile (keys (N, 2)) and per-tile tables ((N, 8, 8) each), for tiled restoration.
    """
    alphas = alphas_cumprod() if alphas is None else np.asarray(alphas, np.float64)
    eps_fn = make_eps_fn(apply_fn, alphas)
    nfe = num_samples * num_steps
    settings = dict(mode=mode, bits=bits, num_samples=num_samples, init_timestep=init_timestep,
                    num_steps=num_steps, eta=eta, eta_b=eta_b, alphas=alphas, dct=dct, sample_batch=sample_batch)

    @partial(jax.jit, static_argnames=("subsampling",))
    def samples_per_image(params, y, tables, keys, subsampling: str = "4:2:0"):
        y = jnp.asarray(y, jnp.float32)
        if y.ndim != 4 or y.shape[-1] != 3:
            raise ValueError(f"y must be a (B, H, W, 3) batch in [0, 1], got shape {y.shape}")
        b = y.shape[0]
        if mode == "jpeg":
            if tables is None:
                raise ValueError("mode 'jpeg' needs the quantisation tables of the input (jpeg.read_jpeg_tables)")
            tables = tuple(jnp.broadcast_to(jnp.asarray(t), (b, 8, 8)) for t in tables)
        else:
            tables = None

        def one(img, img_tables, key):
            out = ddrm_samples(partial(eps_fn, params), img[None], key, tables=img_tables,
                               subsampling=subsampling, **settings)
            return out[:, 0]

        return jax.vmap(one, out_axes=1)(y, tables, keys)  # (k, B, H, W, 3)

    def samples(params, y, tables, key, subsampling: str = "4:2:0"):
        return samples_per_image(params, y, tables, jax.random.split(key, np.shape(y)[0]), subsampling)

    def restore(params, y, tables, key, subsampling: str = "4:2:0"):
        return jnp.mean(samples(params, y, tables, key, subsampling), axis=0), jnp.asarray(nfe, jnp.int32)

    def tiles(params, tiles, tables, keys, subsampling: str = "4:2:0"):
        x = jnp.mean(samples_per_image(params, tiles, tables, keys, subsampling), axis=0)
        return x, jnp.full((x.shape[0],), nfe, jnp.int32)

    restore.samples = samples
    restore.tiles = tiles
    return restore


# --------------------------------------------------------------------------- reading inputs


def load_jpeg(path: Union[str, os.PathLike, bytes]) -> tuple[np.ndarray, tuple, str]:
    """(pixels (H, W, 3) float32 in [0, 1], (luma, chroma) tables, subsampling) of a JPEG file.

    Pixels are decoded by Pillow (libjpeg, as the operator reproduces). A grayscale JPEG comes back
    as gray RGB with tables (luma, all-ones) and '4:4:4': for r = g = b the operator's Y is the gray
    value exactly and Cb = Cr = 128, so it reproduces the file, and the ones keep the colour near gray.
    Other chroma layouts (4:2:2, 4:4:0, ...) raise ValueError.
    """
    from PIL import Image

    data = path if isinstance(path, (bytes, bytearray)) else open(path, "rb").read()
    tables, subsampling = file_tables(bytes(data))
    im = Image.open(io.BytesIO(data))
    pixels = np.asarray(im.convert("RGB"), np.float32) / 255.0
    return pixels, tables, subsampling


def _gray_tables(luma) -> tuple[tuple, str]:
    """A gray JPEG as the operator sees it: its luma table, all-ones chroma, '4:4:4' (for r = g = b
    the operator's Y is the gray value and Cb = Cr = 128, so it reproduces the file)."""
    return (np.asarray(luma, np.int32), np.ones((8, 8), np.int32)), "4:4:4"


def pillow_tables(quality: int, gray: bool = False) -> tuple[tuple, str]:
    """((luma, chroma) tables, subsampling) of a JPEG that Pillow writes at `quality` with its
    defaults (4:2:0 for colour; libjpeg treats quality 0 as 1); `gray`: a one-channel file."""
    luma, chroma = jpeg.quality_to_tables(max(int(quality), 1))
    return _gray_tables(luma) if gray else ((luma, chroma), "4:2:0")


def file_tables(path: Union[str, os.PathLike, bytes]) -> tuple[tuple, str]:
    """((luma, chroma) tables, subsampling) that the operator needs for a JPEG file (or its bytes).

    A grayscale JPEG gives (luma, all-ones) and '4:4:4' (see `load_jpeg`). A file that is not a
    JPEG, or whose chroma layout is other than 4:2:0 / 4:4:4 / gray, raises ValueError.
    """
    info = jpeg.read_jpeg_tables(path)
    if info.subsampling == "gray":
        return _gray_tables(info.tables[0])
    if info.subsampling in jpeg.SUBSAMPLINGS and len(info.tables) == 2:
        return tuple(info.tables), info.subsampling
    raise ValueError(f"DDRM-JPEG supports 4:2:0, 4:4:4 and gray JPEGs with shared chroma tables, "
                     f"got {info.subsampling} with {len(info.tables)} tables")


# --------------------------------------------------------------------------- training


def eps_loss(eps, params, batch, key, alphas, max_timestep: Optional[int] = None) -> jax.Array:
    """DDPM ε-prediction loss (Ho et al. 2020; the prior DDRM-JPEG samples with) on the global batch.

    x0 = 2·batch['clean'] − 1, t ~ U{0, …, max_timestep − 1} (default T), z ~ N(0, I),
    x_t = √ᾱ_t x0 + √(1 − ᾱ_t) z; loss = ½‖ε_θ(x_t, t) − z‖² summed over pixels, averaged over
    the batch (the reduction of losses.py). batch['jpeg'] is not used (the prior is unconditional).
    eps(params, x, t) as made by `make_eps_fn`; alphas: ᾱ_0..ᾱ_{T−1} (host array).
    """
    coeffs = _coefficients(alphas)
    num_timesteps = coeffs.sqrt_a.shape[0] - 1
    x0 = 2.0 * jnp.asarray(batch["clean"], jnp.float32) - 1.0
    b = x0.shape[0]
    key_t, key_z = jax.random.split(key)
    t = jax.random.randint(key_t, (b,), 0, num_timesteps if max_timestep is None else max_timestep)
    sa, s1ma, _ = (c[:, None, None, None] for c in coeffs.at(t))
    z = jax.random.normal(key_z, x0.shape, x0.dtype)
    err = eps(params, sa * x0 + s1ma * z, t) - z
    return jnp.mean(0.5 * jnp.sum(jnp.square(err), axis=(1, 2, 3)))
