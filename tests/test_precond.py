"""EDM-style preconditioning of drifting SDEs (``model.preconditioning = "edm"``,
docs/TRAINING.md): on a Gaussian toy the preconditioned score of an oracle denoiser is the exact
score and the loss at the optimum is its expected value; a tiny model trains with it, and its model
file round-trips and restores; ``train.max_cpu_minutes`` stops on the process's CPU time."""

import contextlib
import io
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from driftrec_jax import config_lib, losses, models, restore_cli
from driftrec_jax.score import EDMPreconditioning, make_preconditioning, make_score_fn
from driftrec_jax.sde import get_sde

MINI = {"ch_mult": (1,), "num_res_blocks": 1, "attn_resolutions": ()}


def _toy(sde, precond, m, sd):
    """An oracle 'network' for u0 = x0 − y ~ N(m, sd²) per pixel: the raw output F whose denoiser
    D = c_skip u_t + c_out F is E[u0 | u_t] (Gaussian conditioning). It reads a and σ back from the
    SDE at the test's t (passed in as its 'params') and checks c_noise = σ/a against it."""

    def apply_fn(params, inp, c_noise):
        t = params["t"]  # the test passes its t in (the same as the sampler's)
        a = sde.mean_coeff(t)[:, None, None, None]
        s = sde.std(t)[:, None, None, None]
        c_in, c_skip, c_out, c_noise_ref = precond.coefficients(a, s)
        c_noise = jnp.where(jnp.abs(c_noise / c_noise_ref.reshape(-1) - 1) < 1e-6, c_noise, jnp.nan)
        u = inp[..., :3] / c_in
        d = m + a * sd ** 2 / (a * a * sd ** 2 + s * s) * (u - a * m)  # E[u0 | u_t]
        return (d - c_skip * u) / c_out + 0 * c_noise[:, None, None, None]  # NaN if c_noise ≠ σ/a

    return apply_fn


@pytest.mark.parametrize("name", ["ouve", "cosve"])
def test_oracle_denoiser_gives_the_exact_score(name):
    sde = get_sde(name)
    precond = EDMPreconditioning(sigma_data=0.07)
    m, sd = 0.02, 0.05  # the toy's u0 differs from the σ_data the coefficients assume
    rng = np.random.default_rng(0)
    t = jnp.asarray([0.01, 0.2, 0.6, 1.0])
    y = jnp.asarray(rng.random((4, 5, 6, 3)), jnp.float32)
    x = y + jnp.asarray(rng.normal(size=(4, 5, 6, 3)), jnp.float32) * 0.3
    score = jax.jit(make_score_fn(_toy(sde, precond, m, sd), sde, precond))({"t": t}, x, y, t)
    # Exact: x_t − y ~ N(a m, a² sd² + σ²) given y.
    a = sde.mean_coeff(t)[:, None, None, None]
    s = sde.std(t)[:, None, None, None]
    exact = -(x - y - a * m) / (a * a * sd ** 2 + s * s)
    np.testing.assert_allclose(np.asarray(score), np.asarray(exact), rtol=2e-4, atol=1e-3)
    # and the denoiser from it is Tweedie's (sde.denoise): x̂0 = y + E[u0 | u_t].
    x0_hat = sde.denoise(x, y, t, score)
    d = m + a * sd ** 2 / (a * a * sd ** 2 + s * s) * (x - y - a * m)
    np.testing.assert_allclose(np.asarray(x0_hat), np.asarray(y + d), rtol=1e-4, atol=1e-4)


def test_loss_at_the_optimum_is_half_a_unit_per_pixel():
    """When u0 ~ N(0, σ_data²) the optimal denoiser is c_skip·u_t (F = 0), and the loss is
    ½ E‖(u0 − c_skip u_t)/c_out‖² = ½ per pixel at every t: the target has unit variance."""
    sde = get_sde("ouve")
    precond = EDMPreconditioning(sigma_data=0.08)
    rng = np.random.default_rng(1)
    y = jnp.asarray(rng.random((64, 16, 16, 3)), jnp.float32)
    batch = {"jpeg": y, "clean": y + 0.08 * jnp.asarray(rng.normal(size=y.shape), jnp.float32)}

    def zero_net(params, inp, c_noise):
        return jnp.zeros(inp.shape[:-1] + (3,), inp.dtype)

    loss = jax.jit(lambda b: losses.preconditioned_dsm_loss(zero_net, sde, precond, None, b, jax.random.PRNGKey(0)))(batch)
    pixels = 16 * 16 * 3
    assert abs(float(loss) / (0.5 * pixels) - 1.0) < 0.02, float(loss)
    # The same weighting written with the denoiser: ½ λ ‖D − u0‖², λ = 1/c_out².
    a, s = jnp.asarray(0.7), jnp.asarray(0.3)
    c_out = precond.coefficients(a, s)[2]
    np.testing.assert_allclose(float(precond.loss_weight(a, s)), float(1 / c_out ** 2), rtol=1e-6)


def test_spec_field_and_old_files():
    c = config_lib.load_config("tiny_test")
    spec = models.model_spec(c)
    assert "preconditioning" not in spec  # the paper's default: model files stay as they were
    assert models.build_task(spec).preconditioning is None
    assert models.build_task(spec).model.scale_by_sigma
    c.model.preconditioning, c.model.sigma_data = "edm", 0.06
    spec = models.model_spec(c)
    assert (spec["preconditioning"], spec["sigma_data"]) == ("edm", 0.06)
    task = models.build_task(spec)
    assert task.preconditioning == EDMPreconditioning(0.06) and not task.model.scale_by_sigma
    c.model.variant = "regression"
    with pytest.raises(ValueError, match="score variant"):
        models.model_spec(c)
    with pytest.raises(ValueError, match="unknown preconditioning"):
        make_preconditioning("karras")


def test_cpu_time_budget():
    """``train.max_cpu_minutes``: the loop's check says which limit ran out (the loop itself stops,
    saves and logs the reason as for ``train.max_minutes``, tested in test_train.py)."""
    from driftrec_jax.train_cli import _time_is_up

    assert config_lib.default_config().train.max_cpu_minutes == 0.0
    now_cpu, now_wall = time.process_time(), time.perf_counter()
    assert _time_is_up(None, now_cpu - 1e-3) == "cpu time limit"
    assert _time_is_up(None, now_cpu + 100.0) == ""
    assert _time_is_up(now_wall + 100.0, now_cpu + 100.0) == ""
    assert _time_is_up(now_wall - 1e-3, now_cpu + 100.0) == "time limit"
    assert _time_is_up(None, None) == ""


def test_edm_trains_round_trips_and_restores(tmp_path):
    from driftrec_jax import parallel, train_lib

    c = config_lib.load_config("tiny_test")
    c.model.overrides = dict(MINI)
    c.model.preconditioning, c.model.sigma_data = "edm", 0.05
    spec = models.model_spec(c)
    task = models.build_task(spec)
    tx = train_lib.make_optimizer(c.optim)
    mesh = parallel.make_mesh(1)
    state = jax.jit(lambda key: train_lib.create_train_state(task, tx, key, 16))(jax.random.PRNGKey(0))
    init = jax.tree.map(np.asarray, state.params)
    step = train_lib.make_train_step(task, tx, c.optim, mesh)
    rng = np.random.default_rng(0)
    losses_seen = []
    for _ in range(2):
        clean = rng.random((8, 16, 16, 3), dtype=np.float32)
        batch = {"clean": clean, "jpeg": np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)}
        state, m = step(state, parallel.global_batch(batch, mesh))
        losses_seen.append(float(m["loss"]))
    assert int(state.step) == 2 and np.all(np.isfinite(losses_seen))
    # The unit-variance target: an untrained network (output near 0) starts near ½ per pixel.
    assert 0.2 * 16 * 16 * 3 < losses_seen[0] < 2.0 * 16 * 16 * 3, losses_seen
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(state.params)))

    path = tmp_path / "edm.msgpack"
    models.save_model(str(path), spec, state.ema_params)
    task2, params2, spec2 = models.load_model(str(path))
    assert spec2["preconditioning"] == "edm" and spec2["sigma_data"] == 0.05
    assert task2 == task and task2.preconditioning == EDMPreconditioning(0.05)
    # `driftrec restore` with the model file: the preconditioned score drives the sampler.
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(src / "a.jpg", quality=20)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = restore_cli.main([str(src), "-o", str(tmp_path / "out"), "--checkpoint", str(path), "--tile", "16",
                               "--overlap", "0", "--steps", "2", "--no-compile-cache"])
    assert rc == 0, err.getvalue()
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == (24, 20, 3)


def test_compare_training_variants_parse():
    import argparse
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "compare_training.py")
    spec = importlib.util.spec_from_file_location("compare_training", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_variant("small=") == ("small", [])
    assert mod.parse_variant("edm=model.preconditioning=edm,model.sigma_data=0.05") == (
        "edm", ["--config.model.preconditioning=edm", "--config.model.sigma_data=0.05"])
    for bad in ("nameonly", "=x=1", "v=model.network"):
        with pytest.raises(argparse.ArgumentTypeError):
            mod.parse_variant(bad)
    assert [mod.parse_variant(v)[0] for v in mod.DEFAULT_VARIANTS] == ["small", "cpu", "edm"]
