"""Metrics of driftrec_jax/metrics.py against independent references (docs/EVALUATE.md,
EVALUATION.md).

References: scikit-image's PSNR and SSIM (float64) on crops of the photographs scikit-image
ships; a plain-loop numpy transcription of Yim & Bovik's BEF (2011) on hand-made blocky
images; LPIPS checked by its identities and by its ordering of a mild and a strong distortion.
"""

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from driftrec_jax import metrics as M

RNG = np.random.default_rng(20240605)


def _jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _photos_rgb() -> tuple[np.ndarray, np.ndarray]:
    """Two 72x88 RGB crops (uint8) of scikit-image's photographs and their JPEG-20 versions."""
    clean = np.stack([skdata.astronaut()[100:172, 180:268], skdata.coffee()[150:222, 200:288]])
    return clean, np.stack([_jpeg(c, 20) for c in clean])


def _photo_gray() -> tuple[np.ndarray, np.ndarray]:
    clean = skdata.camera()[200:280, 150:246]  # 80x96
    return clean, _jpeg(clean, 15)


def _f(u8):
    return np.asarray(u8, np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# PSNR and SSIM vs scikit-image
# ---------------------------------------------------------------------------------------------

SKIMAGE_SSIM = {
    "driftrec": dict(win_size=9),
    "fbcnn": dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
}


def test_psnr_matches_scikit_image_rgb_gray_and_batched():
    clean, jpeg = _photos_rgb()
    ours = np.asarray(M.psnr(_f(jpeg), _f(clean)))
    assert ours.shape == (2,)
    for i in range(2):
        ref = peak_signal_noise_ratio(clean[i].astype(np.float64), jpeg[i].astype(np.float64), data_range=255)
        assert abs(ours[i] - ref) < 1e-4
        assert abs(float(M.psnr(_f(jpeg[i]), _f(clean[i]))) - ref) < 1e-4  # a single HWC image
    g, gj = _photo_gray()
    ref = peak_signal_noise_ratio(g.astype(np.float64), gj.astype(np.float64), data_range=255)
    assert abs(float(M.psnr(_f(gj)[..., None], _f(g)[..., None])) - ref) < 1e-4
    assert np.isinf(float(M.psnr(_f(g)[..., None], _f(g)[..., None])))


@pytest.mark.parametrize("convention", ["driftrec", "fbcnn"])
def test_ssim_matches_scikit_image_on_rgb_photographs(convention):
    clean, jpeg = _photos_rgb()
    noisy = np.clip(clean + RNG.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    for distorted in (jpeg, noisy):
        ours = np.asarray(M.ssim(_f(distorted), _f(clean), convention=convention))
        for i in range(2):
            ref = structural_similarity(clean[i].astype(np.float64), distorted[i].astype(np.float64),
                                        data_range=255, channel_axis=2, **SKIMAGE_SSIM[convention])
            assert abs(ours[i] - ref) < 1e-4, (convention, i, ours[i], ref)


@pytest.mark.parametrize("convention", ["driftrec", "fbcnn"])
def test_ssim_matches_scikit_image_on_grayscale(convention):
    g, gj = _photo_gray()
    ref = structural_similarity(g.astype(np.float64), gj.astype(np.float64), data_range=255,
                                **SKIMAGE_SSIM[convention])
    ours = float(M.ssim(_f(gj)[..., None], _f(g)[..., None], convention=convention))
    assert abs(ours - ref) < 1e-4
    assert abs(float(M.ssim(_f(g)[..., None], _f(g)[..., None], convention=convention)) - 1.0) < 1e-5


def test_the_two_ssim_conventions_differ():
    clean, jpeg = _photos_rgb()
    a = np.asarray(M.ssim(_f(jpeg), _f(clean), convention="driftrec"))
    b = np.asarray(M.ssim(_f(jpeg), _f(clean), convention="fbcnn"))
    assert np.all(np.abs(a - b) > 1e-3)


# ---------------------------------------------------------------------------------------------
# BEF and PSNR-B vs a loop transcription of Yim & Bovik (2011)
# ---------------------------------------------------------------------------------------------


def _bef_loops(img: np.ndarray, floor_count: bool, block: int = 8) -> float:
    """BEF of a 2-D float64 image on its own scale, pair by pair (Yim & Bovik 2011)."""
    h, w = img.shape
    d_b = d_bc = 0.0
    for r in range(h):
        for c in range(w - 1):
            d = (img[r, c] - img[r, c + 1]) ** 2
            if c % block == block - 1:
                d_b += d
            else:
                d_bc += d
    for r in range(h - 1):
        for c in range(w):
            d = (img[r, c] - img[r + 1, c]) ** 2
            if r % block == block - 1:
                d_b += d
            else:
                d_bc += d
    if floor_count:
        n_b = h * (w // block - 1) + w * (h // block - 1)
    else:
        n_b = h * (w / block - 1) + w * (h / block - 1)
    n_bc = h * (w - 1) + w * (h - 1) - n_b
    d_b, d_bc = d_b / n_b, d_bc / n_bc
    eta = np.log2(block) / np.log2(min(h, w))
    return eta * (d_b - d_bc) if d_b > d_bc else 0.0


def _y255(rgb_u8: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing luma of uint8 RGB, rounded to integers (FBCNN's rgb2ycbcr on uint8)."""
    r, g, b = (rgb_u8[..., i].astype(np.float64) for i in range(3))
    return np.round(16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0)


def _smooth(h: int, w: int, channels: int) -> np.ndarray:
    """A smooth image in [0.2, 0.8]: a few low-frequency sinusoids per channel."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = [0.5 + 0.15 * np.sin(2 * np.pi * (1.1 + 0.3 * c) * xx) * np.cos(2 * np.pi * (0.7 + 0.2 * c) * yy)
           + 0.1 * (xx - yy) for c in range(channels)]
    return np.stack(out, -1)


def _block_offsets(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A constant random offset in [-1, 1] per 8x8 block (and channel)."""
    g = np.random.default_rng(seed).uniform(-1, 1, ((h + 7) // 8, (w + 7) // 8, channels))
    return np.repeat(np.repeat(g, 8, 0), 8, 1)[:h, :w]


def _blocky(h, w, channels, strength):
    return np.clip(_smooth(h, w, channels) + strength * _block_offsets(h, w, channels), 0, 1)


@pytest.mark.parametrize("convention", ["torchjpeg", "fbcnn"])
@pytest.mark.parametrize("channels", [1, 3])
def test_bef_is_zero_without_blocks(convention, channels):
    flat = np.full((40, 48, channels), 0.37, np.float32)
    assert float(M.bef(flat, convention=convention)) == 0.0
    # A diagonal ramp has one squared difference for every neighbour pair: D_B = D_Bc. (Grey
    # steps of 1/219 keep FBCNN's rounded luma Y = 16 + 219 v on integers, so no rounding noise.)
    yy, xx = np.mgrid[0:48, 0:48]
    ramp = np.repeat(((xx + yy) / 219.0)[..., None], channels, -1).astype(np.float32)
    assert float(M.bef(ramp, convention=convention)) == pytest.approx(0.0, abs=1e-9)
    # Content that is smooth everywhere has (next to) no blocking; FBCNN's luma is rounded to
    # integers, which leaves a BEF of the order of the rounding noise (< 1e-6, i.e. < 0.07 on
    # the 0..255 scale).
    tol = 1e-6 if (convention == "fbcnn" and channels == 3) else 1e-8
    assert float(M.bef(_smooth(40, 48, channels).astype(np.float32), convention=convention)) < tol


@pytest.mark.parametrize("convention", ["torchjpeg", "fbcnn"])
@pytest.mark.parametrize("channels", [1, 3])
def test_bef_grows_with_blockiness(convention, channels):
    strengths = [0.0, 0.01, 0.03, 0.1]
    vals = [float(M.bef(_blocky(48, 64, channels, s).astype(np.float32), convention=convention))
            for s in strengths]
    assert vals[0] < (1e-6 if (convention == "fbcnn" and channels == 3) else 1e-8)
    assert all(b > a for a, b in zip(vals, vals[1:])), vals
    # Pure blocks (constant inside each 8x8 block): every non-boundary difference is zero.
    pure = (0.5 + 0.3 * _block_offsets(48, 64, channels)).astype(np.float32)
    assert float(M.bef(pure, convention=convention)) > vals[-1] * 0.5


@pytest.mark.parametrize("shape", [(48, 64), (44, 37), (33, 50)])
def test_bef_matches_loop_reference_gray_both_conventions(shape):
    h, w = shape
    img = _blocky(h, w, 1, 0.05)[..., 0]
    img = (np.round(img * 255) / 255).astype(np.float32)  # on the 8-bit grid
    for convention, floor in (("torchjpeg", True), ("fbcnn", False)):
        ref = _bef_loops(img.astype(np.float64), floor)
        ours = float(M.bef(img[..., None], convention=convention))
        assert ours == pytest.approx(ref, rel=1e-4, abs=1e-9), (convention, shape)


def test_bef_colour_conventions_match_loop_reference():
    rgb = _blocky(40, 56, 3, 0.04)
    u8 = np.round(rgb * 255).astype(np.uint8)
    x = u8.astype(np.float32) / 255.0
    # FBCNN: BEF of the rounded luma Y (on the [0, 255] scale there; ours is on [0, 1]).
    ref_fbcnn = _bef_loops(_y255(u8), floor_count=False) / 255.0**2
    assert float(M.bef(x, convention="fbcnn")) == pytest.approx(ref_fbcnn, rel=1e-4)
    # torchjpeg: D_B and D_Bc summed over channels before the comparison (= sum of per-channel
    # BEFs when every channel is blocky).
    per_channel = [_bef_loops(x[..., c].astype(np.float64), floor_count=True) for c in range(3)]
    assert all(v > 0 for v in per_channel)
    assert float(M.bef(x, convention="torchjpeg")) == pytest.approx(sum(per_channel), rel=1e-4)


def test_bef_and_psnrb_on_real_jpeg_are_larger_than_on_the_original():
    clean, jpeg = _photos_rgb()
    for convention in ("torchjpeg", "fbcnn"):
        assert np.all(np.asarray(M.bef(_f(jpeg), convention=convention))
                      > np.asarray(M.bef(_f(clean), convention=convention)))


@pytest.mark.parametrize("convention", ["torchjpeg", "fbcnn"])
def test_psnrb_is_at_most_psnr_and_equal_when_bef_is_zero(convention):
    clean, jpeg = _photos_rgb()
    x, y = _f(jpeg), _f(clean)
    p, pb, b = (np.asarray(v) for v in (M.psnr(x, y), M.psnrb(x, y, convention=convention),
                                         M.bef(x, convention=convention)))
    assert np.all(b > 0) and np.all(pb < p)
    # A restored image without blocks: BEF 0, PSNR-B = PSNR.
    smooth = _smooth(72, 88, 3).astype(np.float32)
    noisy = np.clip(smooth + RNG.normal(0, 0.02, smooth.shape), 0, 1).astype(np.float32)
    assert float(M.bef(smooth, convention=convention)) == 0.0
    assert float(M.psnrb(smooth, noisy, convention=convention)) == pytest.approx(float(M.psnr(smooth, noisy)), abs=2e-3)
    # Grayscale too.
    g, gj = _photo_gray()
    gx, gy = _f(gj)[..., None], _f(g)[..., None]
    assert float(M.psnrb(gx, gy, convention=convention)) < float(M.psnr(gx, gy))


def test_psnrb_formulas_per_convention():
    """PSNR-B = 10 log10(1 / (MSE + BEF)), per channel averaged (torchjpeg) or on RGB + Y (FBCNN)."""
    clean, jpeg = _photos_rgb()
    x, y = _f(jpeg[0]).astype(np.float64), _f(clean[0]).astype(np.float64)
    ref_tj = np.mean([10 * np.log10(1 / (np.mean((x[..., c] - y[..., c]) ** 2) + _bef_loops(x[..., c], True)))
                      for c in range(3)])
    assert float(M.psnrb(_f(jpeg[0]), _f(clean[0]), convention="torchjpeg")) == pytest.approx(ref_tj, abs=1e-4)
    bef_y = _bef_loops(_y255(jpeg[0]), False) / 255.0**2
    ref_fb = 10 * np.log10(1 / (np.mean((x - y) ** 2) + bef_y))
    assert float(M.psnrb(_f(jpeg[0]), _f(clean[0]), convention="fbcnn")) == pytest.approx(ref_fb, abs=1e-4)


def test_rgb_to_y_is_bt601_studio_swing():
    u8 = RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    y = np.asarray(M.rgb_to_y(u8.astype(np.float32) / 255.0, round_to_uint8=True))[..., 0] * 255.0
    np.testing.assert_allclose(y, _y255(u8), atol=1e-3)
    assert float(M.rgb_to_y(np.zeros((1, 1, 3)))[0, 0, 0]) * 255 == pytest.approx(16.0)
    assert float(M.rgb_to_y(np.ones((1, 1, 3)))[0, 0, 0]) * 255 == pytest.approx(235.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------


def _box_blur(x: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    p = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
    c = np.cumsum(np.cumsum(np.pad(p, ((1, 0), (1, 0), (0, 0))), 0), 1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def test_lpips_identity_order_symmetry_and_gray():
    clean = _f(skdata.chelsea()[60:124, 120:184])  # 64x64 RGB
    mild = np.clip(clean + RNG.normal(0, 0.02, clean.shape), 0, 1).astype(np.float32)
    strong = _box_blur(clean, 3).astype(np.float32)
    batch_x = np.stack([clean, mild, strong])
    batch_y = np.stack([clean, clean, clean])
    d = np.asarray(M.lpips(batch_x, batch_y))
    assert d.shape == (3,)
    assert abs(d[0]) < 1e-6
    assert 0 < d[1] < d[2], d
    assert float(M.lpips(strong, clean)) == pytest.approx(float(d[2]), rel=1e-4, abs=1e-6)  # single image
    assert float(M.lpips(clean, strong)) == pytest.approx(float(d[2]), rel=1e-3, abs=1e-5)  # symmetric
    # A grayscale image is compared as its RGB replica.
    g = clean.mean(-1, keepdims=True)
    gs = strong.mean(-1, keepdims=True)
    assert float(M.lpips(gs, g)) == pytest.approx(float(M.lpips(np.repeat(gs, 3, -1), np.repeat(g, 3, -1))), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_one_line_errors():
    x = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        M.psnr(x, np.zeros((16, 17, 3)))
    with pytest.raises(ValueError, match="HWC or NHWC"):
        M.psnr(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="convention"):
        M.ssim(x, x, convention="matlab")
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)), convention="fbcnn")
    with pytest.raises(ValueError, match="convention"):
        M.bef(x, convention="nope")
    with pytest.raises(ValueError, match="at least 16x16"):
        M.bef(np.zeros((15, 30, 1)))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        M.lpips(np.zeros((16, 16, 2)), np.zeros((16, 16, 2)))
