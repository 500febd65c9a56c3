"""Samplers on a Gaussian toy problem whose score is known in closed form.

Per pixel, x0 ~ N(m0, s0²) and y is a constant image. Then x_t | y is Gaussian with mean
a(t) m0 + (1 − a(t)) y and variance a(t)² s0² + σ_t², so the exact score is
S(x, t) = −(x − μ_t) / v_t. Started from the exact law at t = 1, the reverse SDE and the
probability-flow ODE must reproduce the exact law at t = ε.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from driftrec_jax import samplers
from driftrec_jax.sde import get_sde

M0, S0, Y = 0.3, 0.2, 0.7
EPS = 0.03
SHAPE = (4, 32, 32, 3)  # 12288 independent pixel samples


def exact_moments(sde, t):
    a = sde.mean_coeff(t)
    return a * M0 + (1 - a) * Y, a**2 * S0**2 + sde.std(t) ** 2


def exact_score(sde):
    def score(x, y, t):
        mean, var = exact_moments(sde, t)
        return -(x - mean) / var

    return score


@dataclasses.dataclass(frozen=True)
class ExactPrior:
    """The SDE with its prior replaced by the exact law of x_1 (so only the sampler is tested)."""

    sde: object

    def __getattr__(self, name):
        return getattr(self.sde, name)

    def prior_sample(self, key, y):
        mean, var = exact_moments(self.sde, 1.0)
        return mean + jnp.sqrt(var) * jax.random.normal(key, y.shape)


@pytest.fixture(scope="module", params=["ouve", "cosve"])
def toy(request):
    sde = get_sde(request.param)
    return ExactPrior(sde), exact_score(sde)


def _check_moments(x, sde, rel_var=0.06):
    mean, var = exact_moments(sde, EPS)
    n = x.size
    assert abs(float(jnp.mean(x)) - float(mean)) < 4 * np.sqrt(float(var) / n) + 2e-3
    assert abs(float(jnp.var(x)) / float(var) - 1) < rel_var


@pytest.mark.parametrize("name", ["em", "heun"])
def test_reverse_sde_recovers_gaussian(toy, name):
    sde, score = toy
    y = jnp.full(SHAPE, Y)
    opts = {"time_grid": "uniform"} if name == "em" else {}
    x, nfe = jax.jit(lambda k: samplers.SAMPLERS[name](score, sde, y, k, steps=200, eps=EPS, **opts))(
        jax.random.PRNGKey(0))
    _check_moments(x, sde)
    assert int(nfe) == (200 if name == "em" else 400)


def test_probability_flow_ode_recovers_gaussian(toy):
    sde, score = toy
    y = jnp.full(SHAPE, Y)
    x, nfe = jax.jit(lambda k: samplers.probability_flow(score, sde, y, k, eps=EPS, rtol=1e-5, atol=1e-5))(
        jax.random.PRNGKey(1))
    _check_moments(x, sde, rel_var=0.03)
    assert 10 < int(nfe) < 400


def test_authors_time_grid_is_close_to_uniform():
    sde = ExactPrior(get_sde("ouve"))
    y = jnp.full(SHAPE, Y)
    score = exact_score(sde.sde)
    x, _ = samplers.euler_maruyama(score, sde, y, jax.random.PRNGKey(0), steps=100, eps=EPS)
    # Δt = 1/N on a grid spanning 1 − ε: the mean ends a little past t = ε towards x0's mean.
    mean_eps, _ = exact_moments(sde.sde, EPS)
    assert abs(float(jnp.mean(x)) - float(mean_eps)) < 0.02


@pytest.mark.parametrize("tol", [1e-2, 1e-4])
def test_ode_nfe_count_is_exact(tol):
    """The reported NFE equals the number of times the solver really called the network."""
    sde = ExactPrior(get_sde("ouve"))
    inner = exact_score(sde.sde)
    calls = []

    def counting_score(x, y, t):
        io_callback(lambda: calls.append(1), None, ordered=True)
        return inner(x, y, t)

    y = jnp.full((1, 4, 4, 3), Y)
    _, nfe = samplers.probability_flow(counting_score, sde, y, jax.random.PRNGKey(0), eps=EPS, rtol=tol, atol=tol)
    assert int(nfe) == len(calls)


def test_same_key_same_image_and_shapes():
    sde = get_sde("ouve")
    score = exact_score(sde)
    y = jnp.full((2, 8, 12, 3), Y, jnp.float32)
    run = jax.jit(lambda k: samplers.sample(score, sde, y, k, sampler="em", steps=10, num_samples=3))
    a, _ = run(jax.random.PRNGKey(3))
    b, _ = run(jax.random.PRNGKey(3))
    c, _ = run(jax.random.PRNGKey(4))
    assert a.shape == y.shape and a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_sample_averaging_reduces_variance():
    sde = get_sde("ouve")
    score = exact_score(sde)
    y = jnp.full((2, 16, 16, 3), Y, jnp.float32)
    one, _ = samplers.sample(score, sde, y, jax.random.PRNGKey(0), steps=20, num_samples=1,
                             color_correction=False, clip=False)
    avg, _ = samplers.sample(score, sde, y, jax.random.PRNGKey(0), steps=20, num_samples=8,
                             color_correction=False, clip=False)
    assert float(jnp.var(avg)) < 0.3 * float(jnp.var(one))


def test_color_correction_matches_channel_means():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
    y = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3)) * 0.5
    out = samplers.color_correct(x, y)
    np.testing.assert_allclose(np.asarray(out.mean(axis=(1, 2))), np.asarray(y.mean(axis=(1, 2))), atol=1e-6)
    # shapes within a channel are untouched
    np.testing.assert_allclose(np.asarray(out - x)[:, 0, 0], np.asarray(out - x)[:, 5, 3], atol=1e-6)


def test_unknown_sampler_is_a_clear_error():
    sde = get_sde("ouve")
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.sample(exact_score(sde), sde, jnp.zeros((1, 4, 4, 3)), jax.random.PRNGKey(0), sampler="nope")


# --- exact-transition samplers (DDIM, DPM-Solver++(2M), SDE-DPM-Solver++(2M)) -------------------

from driftrec_jax.sde import SDES  # noqa: E402

FEW_STEP = {"ddim": {"eta": 1.0}, "ddim0": {"eta": 0.0}, "dpm2m": {}, "sde-dpm2m": {}}


def _few_step(name):
    return samplers.SAMPLERS["ddim" if name == "ddim0" else name], FEW_STEP[name]


def _denoised_law(sde, t):
    """Mean and variance of Tweedie's x̂0 = E[x0 | x_t] when x_t has the exact marginal: the last
    call of a few-step sampler returns this at t = ε."""
    mean, var = exact_moments(sde, t)
    k = sde.mean_coeff(t) * S0**2 / var  # E[x0 | x_t] = M0 + k (x_t − μ_t)
    return M0, k**2 * var


@pytest.mark.parametrize("name", ["ddim", "dpm2m", "sde-dpm2m"])
@pytest.mark.parametrize("schedule", sorted(SDES))
def test_few_step_samplers_recover_gaussian(schedule, name):
    """Every registered schedule: with enough steps the output has the law of E[x0 | x_ε]."""
    sde0 = get_sde(schedule)
    fn, opts = _few_step(name)
    y = jnp.full(SHAPE, Y)
    steps = 200 if name.startswith("ddim") else 40  # DDIM is first order (η = 1: it loses Var(u0 | u_t))
    x, nfe = jax.jit(lambda k: fn(exact_score(sde0), ExactPrior(sde0), y, k, steps=steps, eps=EPS, **opts))(
        jax.random.PRNGKey(5))
    mean, var = _denoised_law(sde0, EPS)
    n = x.size
    assert abs(float(jnp.mean(x)) - mean) < 4 * np.sqrt(float(var) / n) + 2e-3
    assert abs(float(jnp.var(x)) / float(var) - 1) < 0.06
    assert int(nfe) == steps


def _order_errors(name, schedule, grid, steps_list):
    sde0 = get_sde(schedule)
    score = exact_score(sde0)
    x1 = jnp.linspace(-1.5, 2.5, 24).reshape(1, 2, 4, 3)
    y = jnp.full(x1.shape, Y)
    # The probability-flow ODE of a Gaussian keeps (x_t − μ_t)/√v_t fixed: the exact end point.
    mu1, v1 = exact_moments(sde0, 1.0)
    mue, ve = exact_moments(sde0, EPS)
    xe = mue + jnp.sqrt(ve / v1) * (x1 - mu1)
    target = sde0.denoise(xe, y, EPS, score(xe, y, EPS))
    fn = samplers.SAMPLERS[name]
    errs = []
    for n in steps_list:
        x, _ = fn(score, sde0, y, jax.random.PRNGKey(0), steps=n, eps=EPS, eta=0.0, grid=grid, x_init=x1)
        errs.append(float(jnp.max(jnp.abs(x - target))))
    return np.asarray(errs)


@pytest.mark.parametrize("name, order, grid", [("ddim", 1.0, "t"), ("dpm2m", 2.0, "lambda"), ("dpm2m", 2.0, "edm")])
def test_deterministic_convergence_order(name, order, grid):
    """DDIM η = 0 is first order and DPM-Solver++(2M) second order in the step (measured on the
    Gaussian toy, whose probability-flow ODE has a closed-form solution)."""
    errs = _order_errors(name, "ouve", grid, [17, 33, 65])
    rates = np.log2(errs[:-1] / errs[1:])
    assert np.all(np.abs(rates - order) < 0.2), rates
    assert errs[-1] < (2e-2 if order == 1 else 1e-3)


def _flow_moments(sde, t, start_mean, start_var, stochastic):
    """Law of x_t when the reverse process starts at t = 1 from N(start_mean, start_var) and runs
    with the exact score. A mean offset δ (and a variance excess) at t = 1 is carried by the
    probability-flow ODE as δ √(v_t/v_1) (variance v_t·start_var/v_1), and by the reverse SDE as
    δ (v_t/v_1)(a_1/a_t) (variance excess times its square)."""
    mu1, v1 = exact_moments(sde, 1.0)
    mu, v = exact_moments(sde, t)
    if stochastic:
        gain = (v / v1) * sde.mean_coeff(1.0) / sde.mean_coeff(t)
        return mu + gain * (start_mean - mu1), v + gain**2 * (start_var - v1)
    gain = jnp.sqrt(v / v1)
    return mu + gain * (start_mean - mu1), gain**2 * start_var


@pytest.mark.parametrize("name", ["ddim", "sde-dpm2m", "dpm2m"])
@pytest.mark.parametrize("start", ["exact", "paper_prior"])
def test_trajectory_marginals(name, start):
    """At every grid time the samples have the law the exact reverse process gives: the forward
    marginal when started from it, and the analytically transported law when started from the
    paper's prior y + σ(1) z (whose mean ignores a(1)(x0 − y))."""
    sde0 = get_sde("ouve")
    fn, opts = _few_step(name)
    shape = (8, 64, 64, 3)
    y = jnp.full(shape, Y)
    sde = ExactPrior(sde0) if start == "exact" else sde0
    steps = 200 if name == "ddim" else 50
    _, _, xs = jax.jit(lambda k: fn(exact_score(sde0), sde, y, k, steps=steps, eps=EPS, trajectory=True, **opts))(
        jax.random.PRNGKey(2))
    ts = np.asarray(samplers.time_grid(sde0, steps, EPS, opts.get("grid", "lambda" if "dpm" in name else "t")))
    if start == "exact":
        m1, v1 = exact_moments(sde0, 1.0)
    else:
        m1, v1 = Y, sde0.std(1.0) ** 2
    stochastic = name in ("ddim", "sde-dpm2m")
    for i in range(0, steps, steps // 10):
        mean, var = _flow_moments(sde0, ts[i], m1, v1, stochastic)
        x = xs[i]
        assert abs(float(jnp.mean(x)) - float(mean)) < 4 * np.sqrt(float(var) / x.size) + 3e-3, (i, ts[i])
        assert abs(float(jnp.var(x)) / float(var) - 1) < 0.04, (i, ts[i], float(jnp.var(x)), float(var))


@pytest.mark.parametrize("stochastic", [False, True])
def test_paper_prior_is_mismatched(stochastic):
    """The check above tells both starts apart at the early grid times (else it would test
    nothing): the reverse SDE forgets the offset faster than the ODE, but not by t = 0.9."""
    sde0 = get_sde("ouve")
    for t in (1.0, 0.9):
        m_exact, _ = _flow_moments(sde0, t, *exact_moments(sde0, 1.0), stochastic=stochastic)
        m_paper, _ = _flow_moments(sde0, t, Y, sde0.std(1.0) ** 2, stochastic=stochastic)
        assert abs(float(m_exact) - float(m_paper)) > 0.05


@pytest.mark.parametrize("name", ["ddim", "dpm2m", "sde-dpm2m"])
@pytest.mark.parametrize("steps", [1, 3])
def test_few_step_nfe_count_is_exact(name, steps):
    sde = get_sde("ouve")
    inner = exact_score(sde)
    calls = []

    def counting_score(x, y, t):
        io_callback(lambda: calls.append(1), None, ordered=True)
        return inner(x, y, t)

    y = jnp.full((1, 4, 4, 3), Y)
    x, nfe = jax.jit(lambda k: samplers.SAMPLERS[name](counting_score, sde, y, k, steps=steps, eps=EPS))(
        jax.random.PRNGKey(0))
    assert int(nfe) == steps == len(calls)
    assert np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("name", ["ddim", "sde-dpm2m", "dpm2m"])
def test_few_step_same_key_same_image(name):
    sde = get_sde("tsdve")
    y = jax.random.uniform(jax.random.PRNGKey(9), (2, 8, 8, 3))
    run = jax.jit(lambda k: samplers.sample(exact_score(sde), sde, y, k, sampler=name, steps=5, num_samples=2))
    a, b, c = (np.asarray(run(jax.random.PRNGKey(s))[0]) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # every sampler draws its prior from the key


def test_ddim_eta_one_first_step_is_the_posterior_step():
    """DDIM η = 1 and the first (first-order) step of SDE-DPM-Solver++ are the same exact
    posterior step, derived two ways; on the same grid and key they give the same image."""
    sde = get_sde("cosve")
    y = jnp.full((1, 6, 6, 3), Y)
    a, _ = samplers.ddim(exact_score(sde), sde, y, jax.random.PRNGKey(4), steps=2, eta=1.0, grid="t")
    b, _ = samplers.sde_dpm_solver_2m(exact_score(sde), sde, y, jax.random.PRNGKey(4), steps=2, grid="t")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


@pytest.mark.parametrize("grid", samplers.GRIDS)
@pytest.mark.parametrize("schedule", sorted(SDES))
def test_time_grids(grid, schedule):
    sde = get_sde(schedule)
    ts = np.asarray(samplers.time_grid(sde, 8, EPS, grid))
    assert ts[0] == 1.0 and abs(ts[-1] - EPS) < 1e-7 and np.all(np.diff(ts) < 0)
    lam = np.asarray(sde.log_snr(jnp.asarray(ts)))
    assert np.all(np.diff(lam) > 0)
    if grid == "lambda":
        np.testing.assert_allclose(np.diff(lam), np.diff(lam).mean(), rtol=1e-3)
    if grid == "edm":
        s = np.exp(-lam) ** (1 / samplers.DEFAULT_RHO)
        np.testing.assert_allclose(np.diff(s), np.diff(s).mean(), rtol=1e-3)


def test_few_step_bad_options_are_clear_errors():
    sde = get_sde("ouve")
    y = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="eta"):
        samplers.ddim(exact_score(sde), sde, y, jax.random.PRNGKey(0), eta=1.5)
    with pytest.raises(ValueError, match="grid"):
        samplers.ddim(exact_score(sde), sde, y, jax.random.PRNGKey(0), grid="log")
    with pytest.raises(ValueError, match="steps"):
        samplers.dpm_solver_2m(exact_score(sde), sde, y, jax.random.PRNGKey(0), steps=0)
