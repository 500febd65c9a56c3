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
