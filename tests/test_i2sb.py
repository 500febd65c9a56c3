"""I²SB's bridge (Liu et al. 2023): the schedule, the pinned marginal, and sampling with an oracle."""

import jax
import jax.numpy as jnp
import numpy as np

from driftrec_jax.i2sb import I2SB, sample


def test_schedule_is_symmetric_and_pinned():
    p = I2SB()
    betas = np.asarray(p.betas)
    assert betas.shape == (1000,)
    np.testing.assert_allclose(betas, betas[::-1], rtol=1e-6)  # symmetric schedule
    assert betas[0] == np.float64(betas.min()) and betas[499] == np.float64(betas.max())
    s2, sb2 = np.asarray(p.sigma2_grid), np.asarray(p.sigma2_bar_grid)
    assert s2[0] == 0 and sb2[-1] == 0
    np.testing.assert_allclose(s2 + sb2, s2[-1], rtol=1e-6)
    t = jnp.array([0.0, 0.5, 1.0])
    std = np.asarray(p.std(t))
    assert std[0] == 0 and std[2] == 0 and std[1] > 0
    np.testing.assert_allclose(np.asarray(p.mean_coeff(t)), [1.0, 0.5, 0.0], atol=1e-6)


def test_marginal_matches_brownian_bridge_monte_carlo():
    """x_t of the bridge from x0 to y: mean (1 - a) y + a x0, std sigma * sigma_bar / sigma_1."""
    p = I2SB()
    x0, y = jnp.zeros((1, 1, 1, 1)), jnp.ones((1, 1, 1, 1))
    mean, std = p.marginal(x0, y, jnp.asarray(0.3))
    # Monte Carlo: Brownian motion with variance sigma^2(t) started at x0, conditioned on y at t = 1.
    rng = np.random.default_rng(0)
    s2 = np.asarray(p.sigma2_grid)
    n = 300
    w_t = rng.normal(0, np.sqrt(s2[n]), 400_000)
    w_1 = w_t + rng.normal(0, np.sqrt(s2[-1] - s2[n]), w_t.shape)
    # Condition on the endpoint by the Gaussian regression of w_t on w_1.
    cond = w_t - (s2[n] / s2[-1]) * (w_1 - 1.0)
    assert abs(cond.mean() - float(mean.squeeze())) < 3e-3
    assert abs(cond.std() - float(std.squeeze())) / float(std.squeeze()) < 1e-2


def test_sampling_with_an_oracle_returns_x0_and_starts_from_y():
    p = I2SB()
    key = jax.random.PRNGKey(0)
    x0 = jax.random.uniform(key, (2, 8, 8, 3))
    y = x0 + 0.2
    np.testing.assert_array_equal(np.asarray(p.prior_sample(key, y)), np.asarray(y))
    calls = []

    def oracle(x_n, y_, t):
        calls.append(1)
        return x0

    out = sample(p, oracle, key, y, nfe=10)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-5)
    out2 = sample(p, oracle, jax.random.PRNGKey(1), y, nfe=10)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(x0), atol=1e-5)
    assert p.sampling_steps(10)[0] == 1000 and p.sampling_steps(10)[-1] == 0


def test_i2sb_posterior_step_is_ddim_eta_one():
    """In u = x − y the bridge is a Gaussian diffusion u_t = a_t u_0 + σ_t z (a = `mean_coeff`,
    σ = `std`), and its posterior step is the exact-posterior (DDIM η = 1) step of
    driftrec_jax.samplers with those a, σ (docs/SAMPLERS.md)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from driftrec_jax import samplers
    from driftrec_jax.i2sb import I2SB

    process = I2SB()
    key = jax.random.PRNGKey(3)
    kx, k0, ky = jax.random.split(jax.random.PRNGKey(0), 3)
    x_n = jax.random.uniform(kx, (2, 4, 4, 3))
    x0_hat = jax.random.uniform(k0, x_n.shape)
    y = jax.random.uniform(ky, x_n.shape)
    for n, n_prev in ((600, 300), (999, 20), (300, 1)):
        t, s = n / process.n_steps, n_prev / process.n_steps
        coeffs = {"a_t": process.mean_coeff(t), "a_s": process.mean_coeff(s), "sig_t": process.std(t),
                  "sig_s": process.std(s)}
        z = jax.random.normal(key, x_n.shape)
        u_s = samplers._ddim_update(1.0)(x_n - y, x0_hat - y, None, coeffs, z)
        # The bridge's posterior does not depend on y: shifting both ends by y shifts the step.
        want = process.posterior_step(key, x_n - y, x0_hat - y, jnp.int32(n), jnp.int32(n_prev))
        np.testing.assert_allclose(np.asarray(u_s), np.asarray(want), atol=3e-4)  # float32 near the pinned end
