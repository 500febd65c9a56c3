"""DDRM-JPEG (driftrec_jax/ddrm.py; Kawar et al. 2022, docs/DDRM.md).

The method is checked with ε-predictors whose behaviour is known in closed form:
  * the oracle of the true image x0, ε(x_t, t) = (x_t − √ᾱ_t x0)/√(1 − ᾱ_t), built on an
    independently computed ᾱ: every x̂0 is x0, so the sampler must return x0 (JPEG-consistent);
  * the oracle of a *different* image x0′: every x̂0 is x0′, so whatever the noise the output is
    0.4 x̃0 + 0.6 x0′ with x̃0 = x0′ − H(x0′) + y0, and x̃0 must be consistent with the JPEG;
and with a tiny NCSN++ with random weights for shapes, keys and the k-sample average.
"""

import io
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from flax import linen as nn
from PIL import Image

from driftrec_jax import ddrm, engine, jpeg, tasks, train_lib

QUALITY = 10


def _photo(h, w, top=120, left=180):
    return np.ascontiguousarray(skimage.data.astronaut()[top:top + h, left:left + w]).astype(np.float32) / 255.0


CLEAN = _photo(32, 48)[None]  # (1, 32, 48, 3), whole 16-px MCUs
TABLES = jpeg.quality_to_tables(QUALITY)


def _alphas_reference():
    """ᾱ_t by an explicit float64 product loop (independent of ddrm.alphas_cumprod)."""
    out, prod = [], 1.0
    for i in range(1000):
        prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / 999)
        out.append(prod)
    return np.array(out)


ALPHAS_REF = _alphas_reference()


SQRT_A = jnp.asarray(np.sqrt(ALPHAS_REF), jnp.float32)
SQRT_1MA = jnp.asarray(np.sqrt(1.0 - ALPHAS_REF), jnp.float32)


def _oracle(x0_01):
    """ε-predictor that returns the exact noise of x_t around the image x0 (in [0, 1])."""
    x0 = 2.0 * jnp.asarray(x0_01) - 1.0

    def eps(x, t):
        return (x - SQRT_A[t] * x0) / SQRT_1MA[t]

    return eps


def _coef_agreement(a, b, subsampling):
    ca = jpeg.jpeg_encode(a, TABLES, subsampling)
    cb = jpeg.jpeg_encode(b, TABLES, subsampling)
    return float(np.mean(np.concatenate([np.asarray(u == v).ravel() for u, v in zip(ca, cb)])))


@partial(jax.jit, static_argnames=("subsampling", "mode", "bits"))
def _oracle_run(x0, y, key, subsampling="4:2:0", mode="jpeg", bits=3):
    return ddrm.ddrm_samples(_oracle(x0), y, key, tables=TABLES, subsampling=subsampling, mode=mode,
                             bits=bits, num_samples=2)


# --------------------------------------------------------------------------- schedule


def test_schedule_matches_spec():
    a = ddrm.alphas_cumprod()
    np.testing.assert_allclose(a, ALPHAS_REF, rtol=1e-12)
    assert a[0] == pytest.approx(1 - 1e-4) and a[999] == pytest.approx(4.0358e-5, rel=1e-4)
    ts, nxt = ddrm.sampling_timesteps()
    np.testing.assert_array_equal(ts, np.arange(285, -1, -15))
    np.testing.assert_array_equal(nxt, list(range(270, -1, -15)) + [-1])
    np.testing.assert_allclose(ddrm.noise_level(a[0]), np.sqrt(1e-4 / (1 - 1e-4)), rtol=1e-9)
    ts, nxt = ddrm.sampling_timesteps(1000, 10)
    assert ts[0] == 900 and nxt[-1] == -1 and len(ts) == 10
    with pytest.raises(ValueError, match="num_steps"):
        ddrm.sampling_timesteps(10, 20)


# --------------------------------------------------------------------------- oracle ε-predictors


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_true_oracle_returns_the_clean_image(subsampling):
    y = jpeg.jpeg_roundtrip(CLEAN, TABLES, subsampling)
    out = _oracle_run(CLEAN, y, jax.random.PRNGKey(0), subsampling)
    assert out.shape == (2,) + CLEAN.shape
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(CLEAN, out.shape), atol=2e-4)
    # ... which is JPEG-consistent: it encodes to the coefficients of y.
    assert _coef_agreement(out[0], y, subsampling) >= 0.99
    assert float(jnp.abs(out[0] - y).mean()) > 0.01  # and is not y itself


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_wrong_oracle_gives_eta_b_mixture_and_consistent_x0_tilde(subsampling):
    y = jpeg.jpeg_roundtrip(CLEAN, TABLES, subsampling)
    other = np.clip(np.roll(CLEAN, 3, axis=2) * 0.8 + 0.1, 0, 1)  # an image JPEG-inconsistent with y
    out = np.asarray(_oracle_run(other, y, jax.random.PRNGKey(1), subsampling))
    h_other = np.asarray(jpeg.jpeg_roundtrip(other, TABLES, subsampling))
    expected = np.clip(other + 0.4 * (np.asarray(y) - h_other), 0.0, 1.0)
    diff = np.abs(out - expected)
    # Rounding inside H can flip at float-level differences of x̂0 on a few pixels.
    assert np.mean(diff < 1e-4) > 0.99 and diff.max() < 0.05
    np.testing.assert_allclose(out[0], out[1], atol=0.05)  # noise-free: both keys agree
    # x̃0 = x0′ − H(x0′) + y0 (read back from the output) encodes like y; x0′ itself does not.
    x0_tilde = (expected - 0.6 * other) / 0.4
    inside = (expected > 0) & (expected < 1)  # the output clip hides x̃0 elsewhere
    assert inside.mean() > 0.95
    # At QF 10 most coefficients are 0 either way, so compare the mismatches (measured: 0.1 % vs 3-6 %).
    miss_tilde = 1.0 - _coef_agreement(x0_tilde, y, subsampling)
    miss_other = 1.0 - _coef_agreement(other, y, subsampling)
    assert miss_tilde <= 0.01 and miss_tilde < 0.1 * miss_other, (miss_tilde, miss_other)


def test_dequantisation_mode():
    bits = 3
    q = ddrm.quantize(CLEAN, bits)
    assert len(np.unique(np.asarray(q))) <= 2**bits
    np.testing.assert_array_equal(np.asarray(ddrm.quantize(q, bits)), np.asarray(q))  # idempotent
    # 8-bit posterize (keep the top 3 bits) lands in the same bins.
    poster = np.asarray(Image.fromarray(np.round(CLEAN[0] * 255).astype(np.uint8)).point(lambda v: v & 0xE0))
    np.testing.assert_array_equal(np.asarray(ddrm.quantize(poster / 255.0, bits))[None], np.asarray(
        ddrm.quantize(np.round(CLEAN * 255) / 255.0, bits)))
    with pytest.raises(ValueError, match="bits"):
        ddrm.quantize_operator(0)

    out = np.asarray(_oracle_run(CLEAN, q, jax.random.PRNGKey(2), mode="quant", bits=bits))
    np.testing.assert_allclose(out[0], CLEAN, atol=2e-4)
    other = np.clip(CLEAN * 0.7 + 0.2, 0, 1)
    out = np.asarray(_oracle_run(other, q, jax.random.PRNGKey(3), mode="quant", bits=bits))
    expected = other + 0.4 * (np.asarray(q) - np.asarray(ddrm.quantize(other, bits)))
    assert np.mean(np.abs(out[0] - expected) < 1e-4) > 0.99
    x0_tilde = (out[0] - 0.6 * other) / 0.4
    assert np.mean(np.asarray(ddrm.quantize(x0_tilde, bits)) == np.asarray(q)) > 0.99


# --------------------------------------------------------------------------- a tiny random network


# One level pair, no attention: enough to exercise the time-conditioned 3-channel NCSN++ while
# compiling fast. Weights are drawn with numpy from the shapes (jitting Flax's init compiles for
# over a minute on 2 cores), all of them random so that every one matters.
TINY = {"preset": "tiny", "nf": 4, "ch_mult": (1, 2), "attn_resolutions": ()}


def _random_params(net, seed=0):
    shapes = jax.eval_shape(lambda k: net.init(k, jnp.zeros((1, 16, 16, 3)), jnp.ones((1,))), jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def tiny():
    net = ddrm.make_eps_network(TINY)
    restore = ddrm.make_restorer(net.apply, num_samples=3)
    return net, _random_params(net), restore


def _odd_batch():
    """Two 20×28 images (partial MCUs) with one quality each."""
    x = np.stack([_photo(20, 28), _photo(20, 28, top=300, left=40)])
    luma, chroma = jpeg.quality_to_tables_jnp(jnp.array([10, 50]))
    y = jpeg.jpeg_roundtrip(x, (luma, chroma))
    return y, (luma, chroma)


def test_random_network_shapes_keys_and_average(tiny):
    net, params, restore = tiny
    y, tables = _odd_batch()
    key = jax.random.PRNGKey(7)
    x, nfe = restore(params, y, tables, key)
    assert x.shape == y.shape and x.dtype == jnp.float32 and int(nfe) == 3 * ddrm.NUM_STEPS
    assert bool(jnp.all(jnp.isfinite(x))) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    x_again, _ = restore(params, y, tables, key)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_again))  # same key, same image
    x_other, _ = restore(params, y, tables, jax.random.PRNGKey(8))
    assert float(jnp.abs(x - x_other).mean()) > 1e-3

    # The restorer's output is the mean of k = 3 independent chains drawn in one jitted call.
    samples = restore.samples(params, y, tables, key)
    assert samples.shape == (3,) + y.shape
    np.testing.assert_allclose(np.asarray(samples.mean(0)), np.asarray(x), atol=1e-6)
    spread = [float(jnp.abs(samples[i] - samples[j]).mean()) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert min(spread) > 1e-3
    # Each image has its own key and tables: the tile entry point with the same per-image keys
    # gives the same images, and reversing the batch (images, tables, keys) reverses the result.
    keys = jax.random.split(key, 2)
    x_tiles, nfe_tiles = restore.tiles(params, y, tables, keys)
    np.testing.assert_allclose(np.asarray(x_tiles), np.asarray(x), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(nfe_tiles), [60, 60])
    flipped = tuple(t[::-1] for t in tables)
    x_rev, _ = restore.tiles(params, y[::-1], flipped, keys[::-1])
    np.testing.assert_allclose(np.asarray(x_rev[::-1]), np.asarray(x), atol=1e-5)
    # Per-image tables matter: the same network with image 0's table for both images differs.
    one = tuple(jnp.broadcast_to(t[:1], t.shape) for t in tables)  # same shapes: no recompilation
    x_one_table, _ = restore(params, y, one, key)
    np.testing.assert_allclose(np.asarray(x_one_table[0]), np.asarray(x[0]), atol=1e-5)
    assert float(jnp.abs(x_one_table[1] - x[1]).mean()) > 1e-3


def test_restorer_rejects_bad_input(tiny):
    net, params, restore = tiny
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        restore(params, jnp.zeros((16, 16, 3)), TABLES, jax.random.PRNGKey(0))
    eps = partial(ddrm.make_eps_fn(net.apply, ddrm.alphas_cumprod()), params)
    with pytest.raises(ValueError, match="tables"):
        ddrm.ddrm_samples(eps, jnp.zeros((1, 16, 16, 3)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="mode"):
        ddrm.ddrm_samples(eps, jnp.zeros((1, 16, 16, 3)), jax.random.PRNGKey(0), mode="blur")
    with pytest.raises(ValueError, match="beyond the schedule"):
        ddrm.ddrm_samples(eps, jnp.zeros((1, 16, 16, 3)), jax.random.PRNGKey(0), tables=TABLES,
                          init_timestep=2000)


# --------------------------------------------------------------------------- training


def test_eps_loss_oracle_zero_and_timestep_range():
    batch = {"clean": jnp.asarray(np.concatenate([CLEAN, CLEAN[:, ::-1]])), "jpeg": None}
    alphas = ddrm.alphas_cumprod()
    key = jax.random.PRNGKey(0)
    x0 = 2.0 * batch["clean"] - 1.0

    def oracle(params, x, t):
        return (x - SQRT_A[t][:, None, None, None] * x0) / SQRT_1MA[t][:, None, None, None]

    assert float(ddrm.eps_loss(oracle, None, batch, key, alphas)) < 1e-4
    zero = float(ddrm.eps_loss(lambda p, x, t: jnp.zeros_like(x), None, batch, key, alphas))
    assert zero == pytest.approx(0.5 * 32 * 48 * 3, rel=0.05)  # ½ E‖z‖²

    def guard(params, x, t):  # huge error for any t ≥ 300
        return jnp.where((t >= 300)[:, None, None, None], 1e3, 0.0) + jnp.zeros_like(x)

    @jax.jit
    @jax.vmap
    def guarded(k):
        return (ddrm.eps_loss(guard, None, batch, k, alphas, max_timestep=300),
                ddrm.eps_loss(guard, None, batch, k, alphas))

    restricted, full = guarded(jax.random.split(key, 16))
    assert float(restricted.max()) < 1e4 and float(full.max()) > 1e6


class _ToyEps(nn.Module):
    """A stand-in for NCSN++ with the same call (x, sigma) and a 'constants' collection, so that
    the train-step glue is tested without compiling NCSN++'s gradient (minutes on 2 cores)."""

    @nn.compact
    def __call__(self, x, sigma):
        w = self.variable("constants", "fourier_W", lambda: jnp.ones((4,))).value
        emb = nn.Dense(3)(jnp.sin(jnp.log(sigma)[:, None] * w))
        return nn.Conv(3, (3, 3))(x) + emb[:, None, None, :]


def test_eps_task_trains_with_train_lib(tiny):
    spec = {"network": dict(TINY), "overrides": {}, "variant": "ddrm_eps", "dtype": "float32",
            "ddrm": {"max_train_timestep": 300}}
    task = tasks.build_task(spec)
    assert isinstance(task, tasks.DDRMTask) and task.max_train_timestep == 300 and task.model == tiny[0]
    assert task.needs_tables and task.input_channels() == 3 and task.sampler_names == ("ddrm",)
    shapes = jax.eval_shape(lambda k: task.init_params(k, 16), jax.random.PRNGKey(0))
    assert jax.tree.structure(shapes) == jax.tree.structure(tiny[1])
    with pytest.raises(ValueError, match="ddrm_eps"):
        tasks.build_task(dict(spec, variant="eps"))
    with pytest.raises(ValueError, match="unknown ddrm field"):
        tasks.build_task(dict(spec, ddrm={"gamma": 1.0}))

    from ml_collections import ConfigDict

    toy = tasks.DDRMTask(model=_ToyEps(), max_train_timestep=300)
    optim = ConfigDict({"lr": 1e-2, "weight_decay": 0.0, "ema_decay": 0.999})
    tx = train_lib.make_optimizer(optim)
    state = train_lib.create_train_state(toy, tx, jax.random.PRNGKey(0), image_size=16)
    batch = {"clean": jnp.asarray(_photo(16, 16)[None].repeat(2, 0)), "jpeg": jnp.zeros((2, 16, 16, 3))}
    step = jax.jit(partial(train_lib.train_step, toy, tx, optim))
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 30 and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it learns something
    np.testing.assert_array_equal(state.params["constants"]["fourier_W"], np.ones(4))


def test_training_sample_grid_restores_with_each_images_quality(tiny):
    """train.py's sample grid for a DDRM model: JPEG | DDRM-JPEG restoration | clean, with the
    tables of each training image's quality (the pipeline's JPEGs are libjpeg's 4:2:0)."""
    from driftrec_jax import train_cli

    net, params, _ = tiny
    task = tasks.DDRMTask(model=net)
    clean = np.stack([_photo(16, 16), _photo(16, 16, top=300, left=40)])
    quality = np.array([10, 0])  # quality 0: libjpeg's tables of quality 1
    luma, chroma = jpeg.quality_to_tables_jnp(jnp.asarray(np.maximum(quality, 1)))
    y = np.asarray(jpeg.jpeg_roundtrip(clean, (luma, chroma)))
    batch = {"clean": clean, "jpeg": y, "quality": quality}
    key = jax.random.PRNGKey(3)
    grid = train_cli._sample_grid(task, params, batch, None, key, 2)
    assert grid.shape == (32, 48, 3)
    # The task's restorer with DDRM-JPEG's default 20 steps; image i is the engine's source str(i)
    # under the grid's key (engine.tile_key).
    restorer = task.tile_restorer(task.default_setting(), subsampling="4:2:0")
    keys = jnp.stack([engine.tile_key(key, str(i), 0) for i in range(2)])
    want, nfe = restorer(params, jnp.asarray(y), keys, (luma, chroma))
    assert int(nfe[0]) == ddrm.NUM_STEPS
    # Up to float rounding: the grid ran one image per device, `want` both in one batch.
    np.testing.assert_allclose(grid[:16, 16:32], np.clip(np.asarray(want[0]), 0, 1), atol=1e-5)
    np.testing.assert_allclose(grid[16:, 16:32], np.clip(np.asarray(want[1]), 0, 1), atol=1e-5)
    np.testing.assert_allclose(grid[:16, :16], y[0], atol=1e-6)
    np.testing.assert_allclose(grid[16:, 32:], clean[1], atol=1e-6)


# --------------------------------------------------------------------------- files


def test_load_jpeg_color_gray_and_unsupported():
    img = np.round(_photo(24, 40) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=25)
    pixels, tables, sub = ddrm.load_jpeg(buf.getvalue())
    assert sub == "4:2:0" and pixels.shape == (24, 40, 3)
    for got, want in zip(tables, jpeg.quality_to_tables(25)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.round(pixels * 255).astype(np.uint8),
                                  np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))

    gray = img[..., 1]
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "JPEG", quality=25)
    pixels, tables, sub = ddrm.load_jpeg(buf.getvalue())
    assert sub == "4:4:4" and (np.asarray(tables[1]) == 1).all()
    # The operator with these tables reproduces the gray file from the gray original.
    rt = jpeg.jpeg_roundtrip(np.repeat(gray[..., None], 3, -1) / 255.0, tables, sub)
    np.testing.assert_array_equal(np.round(np.asarray(rt) * 255).astype(np.uint8), np.round(pixels * 255).astype(np.uint8))
    np.testing.assert_array_equal(np.round(pixels[..., 0] * 255).astype(np.uint8),
                                  np.asarray(Image.open(io.BytesIO(buf.getvalue()))))

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=25, subsampling=1)  # 4:2:2
    with pytest.raises(ValueError, match="4:2:2"):
        ddrm.load_jpeg(buf.getvalue())
