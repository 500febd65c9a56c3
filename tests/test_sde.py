"""Drift schedules and DriftRec SDEs (driftrec_jax.schedules, driftrec_jax.sde; DriftRec paper
Sec. II-B/C, docs/SCHEDULES.md).

Checked against independent things: the authors' reference values, the closed forms against the
generic quadrature, float64 adaptive quadrature (scipy), a float64 Euler–Maruyama Monte Carlo of
the forward SDE, the variance ODE by autodiff, and the probability-flow ODE of a point mass.
Every registry-wide test is parametrised over `SCHEDULES`, so a new schedule is covered.
"""

import json
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

from driftrec_jax import schedules as sched_lib
from driftrec_jax.schedules import SCHEDULES, Schedule
from driftrec_jax.sde import SDES, DriftSDE, get_sde

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "sde_reference_values.json").read_text())
NAMES = sorted(SCHEDULES)


def _case_id(case):
    return f"{case['sde']}-g{case['gamma']:g}"


# --------------------------------------------------------------------------------------------
# Registry and construction


def test_sdes_is_the_schedule_registry():
    assert SDES is SCHEDULES
    assert {"ouve", "tsdve", "cosve"} <= set(SCHEDULES)


def test_get_sde_paper_defaults():
    for name, gamma in (("ouve", 1.0), ("tsdve", 2.0), ("cosve", 1.0)):
        sde = get_sde(name)
        assert (sde.gamma, sde.sigma_min, sde.sigma_max) == (gamma, 0.01, 1.0)
        assert (sde.T, sde.t_eps, sde.name) == (1.0, 0.01, name)
    assert get_sde("t2ve") == get_sde("tsdve")
    assert get_sde("ouve", gamma=3).gamma == 3.0


def test_get_sde_bad_input():
    with pytest.raises(KeyError, match="ouve"):
        get_sde("nope")
    with pytest.raises(ValueError, match="sigma_min"):
        get_sde("ouve", sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="gamma"):
        get_sde("ouve", gamma=0.0)
    with pytest.raises(TypeError, match="gamma"):
        get_sde("ouve", gamma=jnp.asarray(1.0))
    with pytest.raises(ValueError, match="needs F"):
        Schedule()
    with pytest.raises(TypeError, match="callable"):
        Schedule(F=1.0)


def test_hashable_and_static_jit_argument():
    a, b = get_sde("cosve"), get_sde("cosve")
    assert a == b and hash(a) == hash(b) and len({a, b, get_sde("ouve")}) == 2
    traces = []

    def f(sde, t):
        traces.append(sde.name)
        return sde.std(t)

    jf = jax.jit(f, static_argnums=0)
    t = jnp.asarray([0.2, 0.7])
    np.testing.assert_allclose(jf(a, t), a.std(t), rtol=1e-6)
    jf(b, t)  # equal SDE: no retrace
    assert traces == ["cosve"]
    np.testing.assert_allclose(jf(get_sde("ouve"), t), get_sde("ouve").std(t), rtol=1e-6)
    assert traces == ["cosve", "ouve"]


# --------------------------------------------------------------------------------------------
# The authors' reference values (tests/fixtures/sde_reference_values.json, computed by the DriftRec
# authors' code), both variance paths


@pytest.mark.parametrize("closed_form", [True, False], ids=["closed", "quadrature"])
@pytest.mark.parametrize("case", REFERENCE["cases"], ids=_case_id)
def test_reference_values(case, closed_form):
    sde = get_sde(
        case["sde"], gamma=case["gamma"], sigma_min=case["sigma_min"], sigma_max=case["sigma_max"],
        closed_form=closed_form,
    )
    t = jnp.asarray(REFERENCE["t"], jnp.float32)
    np.testing.assert_allclose(sde.std(t), case["std"], rtol=1e-4)
    np.testing.assert_allclose(sde.mean_coeff(t), case["mean_coeff_x0"], rtol=1e-4)
    np.testing.assert_allclose(sde.diffusion(t), case["g"], rtol=1e-4)


def test_reference_covers_all_six_cases():
    assert sorted(_case_id(c) for c in REFERENCE["cases"]) == sorted(
        f"{n}-g{g}" for n in ("ouve", "tsdve", "cosve") for g in (1, 2)
    )


# --------------------------------------------------------------------------------------------
# Closed forms against quadrature and against the authors' code's formulas

T_GRID = np.geomspace(1e-3, 1.0, 25).astype(np.float32)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", ["ouve", "tsdve"])
def test_closed_form_equals_quadrature(name, gamma):
    closed = get_sde(name, gamma=gamma, sigma_min=0.02, sigma_max=1.5)
    quad = get_sde(name, gamma=gamma, sigma_min=0.02, sigma_max=1.5, closed_form=False)
    assert closed.schedule.unit_variance is not None
    t = jnp.asarray(T_GRID)
    np.testing.assert_allclose(closed.variance(t), quad.variance(t), rtol=5e-5)
    big = T_GRID >= 0.01  # away from the float32 cancellation of the TSDVE form at tiny t
    np.testing.assert_allclose(np.asarray(closed.variance(t))[big], np.asarray(quad.variance(t))[big], rtol=2e-6)
    np.testing.assert_allclose(closed.nu(), quad.nu(), rtol=1e-6)


def test_spec_nu_and_terminal_std():
    # OUVE: ν = √(2(γ + L)), σ_1² = σmin² [(σmax/σmin)² − e^{−2γ}].
    for gamma in (1.0, 2.0):
        sde = get_sde("ouve", gamma=gamma)
        np.testing.assert_allclose(sde.nu(), math.sqrt(2 * (gamma + math.log(100.0))), rtol=1e-6)
        np.testing.assert_allclose(sde.variance(1.0), 1e-4 * (1e4 - math.exp(-2 * gamma)), rtol=1e-6)
    # TSDVE: the authors' code's ν = √(−e^γ σmax² √γ / den), den from scipy's float64 Dawson function.
    for gamma, smin, smax in ((1.0, 0.01, 1.0), (2.0, 0.01, 1.0), (1.5, 0.05, 2.0)):
        L = math.log(smax / smin)
        D = scipy.special.dawsn
        den = smin**2 * D(L / math.sqrt(gamma)) - smax**2 * math.exp(gamma) * D((gamma + L) / math.sqrt(gamma))
        nu = math.sqrt(-math.exp(gamma) * smax**2 * math.sqrt(gamma) / den)
        for cf in (True, False):
            sde = get_sde("tsdve", gamma=gamma, sigma_min=smin, sigma_max=smax, closed_form=cf)
            np.testing.assert_allclose(sde.nu(), nu, rtol=1e-6)
            np.testing.assert_allclose(sde.std(1.0), smax, rtol=1e-6)
    # Schedules without a ν formula end exactly at σmax.
    for name, schedule in SCHEDULES.items():
        if schedule.nu is None:
            np.testing.assert_allclose(get_sde(name, sigma_max=1.7).std(1.0), 1.7, rtol=1e-6)


def test_dawson_function_accuracy():
    """jax.scipy.special.dawsn (used by TSDVE) over the arguments that occur, vs scipy."""
    x = np.linspace(0.0, 10.0, 4001)
    x32 = x.astype(np.float32)
    got = np.asarray(jax.scipy.special.dawsn(jnp.asarray(x32)), np.float64)
    ref = scipy.special.dawsn(x32.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=5e-7, atol=1e-30)
    with jax.enable_x64(True):
        got64 = np.asarray(jax.scipy.special.dawsn(jnp.asarray(x, jnp.float64)))
    np.testing.assert_allclose(got64, scipy.special.dawsn(x), rtol=1e-12)


def _float64_unit_variance(schedule, gamma, smin, smax, t, n=4001):
    """U(t) by composite Simpson in float64 on n points of [0, t]; Φ by cumulative Simpson of F
    (independent of the Gauss–Legendre path and of any closed-form Φ)."""
    with jax.enable_x64(True):
        s = np.linspace(0.0, t, n)
        F = np.asarray(schedule.drift_shape(jnp.asarray(s)), np.float64)
        h = np.asarray(schedule.g_shape(jnp.asarray(s), smin, smax), np.float64)
    phi = scipy.integrate.cumulative_simpson(F, x=s, initial=0.0)
    return scipy.integrate.simpson(np.exp(-2.0 * gamma * (phi[-1] - phi)) * h**2, x=s)


@pytest.mark.parametrize("name", NAMES)
def test_quadrature_accuracy_float32(name):
    """The generic quadrature path (float32) vs float64 adaptive quadrature: 1e-6 on [0.001, 1]."""
    schedule = SCHEDULES[name]
    sde = get_sde(name, closed_form=False)
    ts = np.asarray([1e-3, 0.01, 0.1, 0.5, 1.0], np.float32)
    got = np.asarray(sde.unit_variance(jnp.asarray(ts)), np.float64)
    ref = [_float64_unit_variance(schedule, sde.gamma, sde.sigma_min, sde.sigma_max, float(t)) for t in ts]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_F_only_and_int_F_only_schedules(name):
    """Φ by quadrature of F, and F by jax.jvp of Φ, reproduce the full definition."""
    full = SCHEDULES[name]
    t = jnp.asarray(T_GRID)
    x = jnp.zeros_like(t)
    ref = get_sde(name, closed_form=False)
    variants = []
    if full.F is not None:
        variants.append(Schedule(F=full.F, g_shape=full.g_shape, nu=full.nu))
    if full.int_F is not None:
        variants.append(Schedule(int_F=full.int_F, g_shape=full.g_shape, nu=full.nu))
    assert variants
    for schedule in variants:
        sde = DriftSDE(schedule=schedule, gamma=ref.gamma, sigma_min=ref.sigma_min, sigma_max=ref.sigma_max)
        np.testing.assert_allclose(sde.mean_coeff(t), ref.mean_coeff(t), rtol=1e-6)
        np.testing.assert_allclose(sde.drift(x, 1.0, t), ref.drift(x, 1.0, t), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(sde.std(t), ref.std(t), rtol=1e-6)
        np.testing.assert_allclose(sde.diffusion(t), ref.diffusion(t), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Float64 Euler–Maruyama Monte Carlo of the forward SDE vs the marginal, every schedule

N_PATHS, N_STEPS = 20_000, 2_000


@pytest.mark.parametrize("name", NAMES)
def test_monte_carlo_forward_sde_matches_marginal(name):
    sde = get_sde(name)
    dt = 1.0 / N_STEPS
    grid = jnp.asarray(np.arange(N_STEPS) * dt, jnp.float32)
    # γF(t_k) and g(t_k) through the public API (drift at x = 0, y = 1 is γF).
    rate = np.asarray(sde.drift(jnp.zeros_like(grid), 1.0, grid), np.float64)
    g = np.asarray(sde.diffusion(grid), np.float64)
    x0, y = 0.0, 1.0
    rng = np.random.default_rng(1234)
    x = np.full(N_PATHS, x0)
    checks = {N_STEPS // 2: 0.5, N_STEPS: 1.0}
    for k in range(N_STEPS):
        x = x + rate[k] * (y - x) * dt + g[k] * math.sqrt(dt) * rng.standard_normal(N_PATHS)
        if k + 1 in checks:
            t = checks[k + 1]
            mean, std = (float(v) for v in sde.marginal(jnp.float32(x0), jnp.float32(y), t))
            se_mean = std / math.sqrt(N_PATHS)
            se_std = std / math.sqrt(2 * N_PATHS)
            # 5 standard errors plus the O(dt) bias of Euler–Maruyama (≈ L·dt relative in σ²).
            assert abs(x.mean() - mean) < 5 * se_mean + 1e-3 * std, (t, x.mean(), mean)
            assert abs(x.std() - std) < 5 * se_std + 3e-3 * std, (t, x.std(), std)


# --------------------------------------------------------------------------------------------
# The variance ODE and the probability-flow ODE, by autodiff (float64)


@pytest.mark.parametrize("closed_form", [True, False], ids=["closed", "quadrature"])
@pytest.mark.parametrize("name", NAMES)
def test_variance_solves_its_ode(name, closed_form):
    """dσ²/dt = −2γF(t) σ² + g(t)² (the moment ODE of the linear SDE)."""
    sde = get_sde(name, closed_form=closed_form)
    with jax.enable_x64(True):
        ts = jnp.asarray([0.02, 0.2, 0.5, 0.8, 1.0], jnp.float64)
        lhs = jax.vmap(jax.grad(sde.variance))(ts)
        rate = sde.drift(jnp.zeros_like(ts), 1.0, ts)
        rhs = -2.0 * rate * sde.variance(ts) + sde.diffusion(ts) ** 2
        assert lhs.dtype == jnp.float64
        np.testing.assert_allclose(lhs, rhs, rtol=1e-9)
        np.testing.assert_allclose(sde.variance(jnp.float64(0.0)), 0.0, atol=1e-30)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_drifts_on_a_point_mass(name):
    """For x0 fixed, p_t = N(μ_t, σ_t²) and S = −(x − μ_t)/σ_t². Each level set x = μ_t + σ_t z moves
    with the probability-flow drift; the reverse-SDE drift adds −½ g² S; `denoise` returns x0."""
    sde = get_sde(name)
    with jax.enable_x64(True):
        key = jax.random.key(0)
        x0 = jax.random.uniform(key, (3, 4, 5, 3), jnp.float64)
        y = jax.random.uniform(jax.random.key(1), x0.shape, jnp.float64)
        z = jax.random.normal(jax.random.key(2), x0.shape, jnp.float64)
        t = jnp.asarray([0.05, 0.4, 0.9], jnp.float64)

        def level_set(t):
            mean, std = sde.marginal(x0, y, t)
            return mean + std * z

        x, dx_dt = jax.jvp(level_set, (t,), (jnp.ones_like(t),))
        mean, std = sde.marginal(x0, y, t)
        score = -(x - mean) / std**2
        ode = sde.reverse_drift(x, y, t, score, probability_flow=True)
        np.testing.assert_allclose(ode, dx_dt, rtol=1e-8, atol=1e-10)
        sde_drift = sde.reverse_drift(x, y, t, score)
        g2 = sde.diffusion(t)[:, None, None, None] ** 2
        np.testing.assert_allclose(sde_drift, ode - 0.5 * g2 * score, rtol=1e-10, atol=1e-12)
        # Tweedie's estimate recovers the point mass.
        np.testing.assert_allclose(sde.denoise(x, y, t, score), x0, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Shapes, broadcasting, jit/vmap, prior


def test_shapes_and_broadcasting():
    sde = get_sde("tsdve")
    x0 = jnp.full((2, 3, 4, 3), 0.25)
    y = jnp.full((2, 3, 4, 3), 0.75)
    t = jnp.asarray([0.1, 0.9])
    mean, std = sde.marginal(x0, y, t)
    assert mean.shape == x0.shape and std.shape == (2, 1, 1, 1)
    a = sde.mean_coeff(t)
    np.testing.assert_allclose(mean[:, 0, 0, 0], a * 0.25 + (1 - a) * 0.75, rtol=1e-6)
    np.testing.assert_allclose(std[:, 0, 0, 0], sde.std(t), rtol=1e-7)
    mean_s, std_s = sde.marginal(x0, y, 0.1)
    assert mean_s.shape == x0.shape and std_s.shape == ()
    np.testing.assert_allclose(mean_s[0], mean[0], rtol=1e-7)
    assert sde.drift(x0, y, t).shape == x0.shape
    np.testing.assert_allclose(sde.drift(x0, y, t)[:, 0, 0, 0], 2.0 * t * 0.5, rtol=1e-6)
    assert sde.diffusion(t).shape == (2,) and sde.std(0.3).shape == ()
    np.testing.assert_allclose(sde.marginal(x0, y, 0.0)[0], x0)
    with pytest.raises(ValueError, match="time has shape"):
        sde.drift(jnp.zeros(3), 0.0, jnp.zeros((3, 2)))


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap(name):
    sde = get_sde(name)
    x0 = jax.random.uniform(jax.random.key(3), (4, 2, 2, 3))
    y = jax.random.uniform(jax.random.key(4), (4, 2, 2, 3))
    t = jnp.asarray([0.01, 0.3, 0.6, 1.0])

    @jax.jit
    def everything(x0, y, t):
        mean, std = sde.marginal(x0, y, t)
        return mean, std, sde.drift(x0, y, t), sde.diffusion(t), sde.reverse_drift(x0, y, t, y, True)

    eager = (*sde.marginal(x0, y, t), sde.drift(x0, y, t), sde.diffusion(t), sde.reverse_drift(x0, y, t, y, True))
    for a, b in zip(everything(x0, y, t), eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    per_example = jax.vmap(lambda a, b, s: sde.marginal(a[None], b[None], s)[0][0])(x0, y, t)
    np.testing.assert_allclose(per_example, eager[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.vmap(sde.std)(t), sde.std(t), rtol=1e-5)


def test_prior_sample():
    y = jax.random.uniform(jax.random.key(5), (4, 48, 48, 3))
    key = jax.random.key(6)
    # OUVE with γ 0.1, σmin 0.5 ends at σ(1)² = σmax² − σmin² e^{−2γ} ≈ 0.795, visibly not σmax².
    for sde, sigma_1 in ((get_sde("cosve"), 1.0), (get_sde("ouve", gamma=0.1, sigma_min=0.5), math.sqrt(1 - 0.25 * math.exp(-0.2)))):
        np.testing.assert_allclose(sde.std(1.0), sigma_1, rtol=1e-6)
        x = sde.prior_sample(key, y)
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, sde.prior_sample(key, y))
        assert not np.allclose(x, sde.prior_sample(jax.random.key(7), y))
        noise = np.asarray(x - y)
        assert abs(noise.mean()) < 0.02 and abs(noise.std() / sigma_1 - 1.0) < 0.02


# --------------------------------------------------------------------------------------------
# docs/SCHEDULES.md: the worked example of a new schedule runs and does what it says


def test_docs_example_adds_a_schedule():
    text = (ROOT / "docs" / "SCHEDULES.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = [b for b in blocks if 'SCHEDULES["linear-ramp"]' in b]
    assert len(example) == 1
    assert "linear-ramp" not in SCHEDULES
    try:
        exec(compile(example[0], "SCHEDULES.md", "exec"), {})
        ramp = get_sde("linear-ramp", gamma=1.0)
        assert ramp.schedule.int_F is None and ramp.schedule.unit_variance is None
        tsdve = get_sde("tsdve", gamma=2.0)  # F = 2t with γ = 1 is TSDVE with γ = 2
        t = jnp.asarray([0.01, 0.25, 0.5, 1.0])
        for f in ("mean_coeff", "std", "diffusion"):
            np.testing.assert_allclose(getattr(ramp, f)(t), getattr(tsdve, f)(t), rtol=2e-6)
    finally:
        SCHEDULES.pop("linear-ramp", None)


def test_gauss_legendre_helper():
    t = jnp.asarray([0.0, 0.3, 1.0])
    np.testing.assert_allclose(sched_lib.integrate_0_to_t(jnp.exp, t), np.expm1(np.asarray(t)), rtol=1e-6)
    np.testing.assert_allclose(sched_lib.integrate_0_to_t(lambda s: s**5, 2.0), 2.0**6 / 6, rtol=1e-6)
