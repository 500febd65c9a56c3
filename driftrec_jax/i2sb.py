"""I²SB's image-to-image Schrödinger bridge as one more process (Liu et al. 2023,
"I²SB: Image-to-Image Schrödinger Bridge"; docs/SCHEDULES.md), for side-by-side
comparisons with the DriftRec SDEs under the same marginal API.

Discrete symmetric schedule with N = 1000 steps (as the I²SB authors' code builds it):
    b = linspace(√β_min, √(β_max/N), N)²,   β = concat(b[:N/2], flip(b[:N/2])),   β_max = 0.3.
This module puts the states on the N + 1 step *boundaries* n = 0..N, t_n = n/N, with
    σ_n² = Σ_{k<n} β_k  (σ_0 = 0),   σ̄_n² = Σ_{k≥n} β_k  (σ̄_N = 0),   σ_n² + σ̄_n² = σ_1²,
so x_0 = x0 (clean) and x_N = y (JPEG) exactly. Between boundaries σ² is interpolated linearly
(β piecewise constant in t). The marginal given (x0, y) is Gaussian:
    mean = (1 − a) x0 + a y,  a = σ²/σ_1²,      std = σ σ̄ / σ_1   (0 at both ends).
Sampling starts at x_N = y exactly; each step draws from the Gaussian posterior
p(x_{n'} | x0 = x̂0, x_n) of the Brownian motion between x̂0 (variance 0) and x_n (variance σ_n²)
(a Gaussian product); the last step to n' = 0 has variance 0, so the output is the last x̂0.

How it differs from `driftrec_jax.sde.DriftSDE` (so it is not in `SDES`): the same
`mean_coeff`, `std`, `marginal`, `prior_sample`, `T` exist (mean_coeff is again the weight of x0),
but the process is discrete, pinned at both ends (std(1) = 0, prior = y, no noise to add), and it
is sampled by posterior steps between predicted clean images, not by a drift/diffusion pair and a
score, so `drift`, `diffusion` and `reverse_drift` do not exist.

The I²SB authors' code indexes steps 0..N−1 with σ_n² = Σ_{k≤n} β_k (so its std is not exactly 0
at its first step); boundary n here corresponds to their step n − 1. Their network regresses
(x_n − x0)/σ_n; `x0_from_output` and `output_target` give that parametrisation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from driftrec_jax.schedules import as_time
from driftrec_jax.sde import _expand

Array = jax.Array

# Methods are jitted with the (hashable) process static, as in `driftrec_jax.sde`.
_jit_method = functools.partial(jax.jit, static_argnums=0)


@functools.lru_cache(maxsize=16)
def _boundary_variances(n_steps: int, beta_min: float, beta_max: float):
    """(β, σ², σ̄²) in float64: β (N,), σ_n² and σ̄_n² on the N + 1 boundaries."""
    b = np.linspace(np.sqrt(beta_min), np.sqrt(beta_max / n_steps), n_steps) ** 2
    half = b[: n_steps // 2]
    betas = np.concatenate([half, half[::-1]])
    fwd = np.concatenate([[0.0], np.cumsum(betas)])
    bwd = np.concatenate([np.cumsum(betas[::-1])[::-1], [0.0]])
    for a in (betas, fwd, bwd):
        a.setflags(write=False)
    return betas, fwd, bwd


@dataclasses.dataclass(frozen=True)
class I2SB:
    """The I²SB bridge (Liu et al. 2023): N steps, β from β_min to β_max/N and back. Hashable."""

    n_steps: int = 1000
    beta_min: float = 1e-4
    beta_max: float = 0.3
    name: str = "i2sb"
    T: float = 1.0

    def __post_init__(self):
        if not isinstance(self.n_steps, int) or self.n_steps < 2 or self.n_steps % 2:
            raise ValueError(f"n_steps must be an even int >= 2, got {self.n_steps!r}")
        for field in ("beta_min", "beta_max"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{field} must be a Python number (hashable), got {type(value).__name__}")
            object.__setattr__(self, field, float(value))
        if not 0 < self.beta_min < self.beta_max / self.n_steps:
            raise ValueError(f"need 0 < beta_min < beta_max / n_steps, got {self.beta_min}, {self.beta_max}")

    # --- the discrete schedule -----------------------------------------------------------------
    @property
    def betas(self) -> np.ndarray:
        """β_k, k = 0..N−1 (float64, read-only)."""
        return _boundary_variances(self.n_steps, self.beta_min, self.beta_max)[0]

    @property
    def sigma2_grid(self) -> np.ndarray:
        """σ_n² = Σ_{k<n} β_k on the boundaries n = 0..N (float64, read-only)."""
        return _boundary_variances(self.n_steps, self.beta_min, self.beta_max)[1]

    @property
    def sigma2_bar_grid(self) -> np.ndarray:
        """σ̄_n² = Σ_{k≥n} β_k on the boundaries n = 0..N (float64, read-only)."""
        return _boundary_variances(self.n_steps, self.beta_min, self.beta_max)[2]

    @property
    def t_eps(self) -> float:
        """The smallest time a network sees in sampling: one step, 1/N."""
        return 1.0 / self.n_steps

    def network_time(self, n) -> Array:
        """Network-input time of boundary n: t_n = n / N."""
        return jnp.asarray(n) / jnp.asarray(self.n_steps, jnp.result_type(float))

    def _interp(self, grid: np.ndarray, t: Array) -> Array:
        xp = jnp.arange(self.n_steps + 1, dtype=t.dtype)
        return jnp.interp(t * self.n_steps, xp, jnp.asarray(grid, t.dtype))

    # --- continuous-time marginal API (same names as DriftSDE) --------------------------------
    @_jit_method
    def sigma_fwd(self, t) -> Array:
        """σ(t), the std accumulated from x0 (√Σ_{k<tN} β_k, interpolated)."""
        t = as_time(t)
        return jnp.sqrt(self._interp(self.sigma2_grid, t))

    @_jit_method
    def sigma_bwd(self, t) -> Array:
        """σ̄(t), the std still to come until y (√Σ_{k≥tN} β_k, interpolated)."""
        t = as_time(t)
        return jnp.sqrt(self._interp(self.sigma2_bar_grid, t))

    @_jit_method
    def mean_coeff(self, t) -> Array:
        """Weight of x0 in the marginal mean: 1 − σ²(t)/σ_1² = σ̄²(t)/σ_1² (1 at t = 0, 0 at t = 1)."""
        t = as_time(t)
        total = jnp.asarray(self.sigma2_grid[-1], t.dtype)
        return self._interp(self.sigma2_bar_grid, t) / total

    @_jit_method
    def std(self, t) -> Array:
        """Marginal std σ(t) σ̄(t) / σ_1 (0 at both ends) (Liu et al. 2023)."""
        t = as_time(t)
        total = jnp.asarray(self.sigma2_grid[-1], t.dtype)
        s2 = self._interp(self.sigma2_grid, t)
        sb2 = self._interp(self.sigma2_bar_grid, t)
        return jnp.sqrt(s2 * sb2 / total)

    @_jit_method
    def marginal(self, x0, y, t) -> tuple[Array, Array]:
        """(mean, std) of x_t given (x0, y): mean = a x0 + (1 − a) y, a = `mean_coeff(t)`; std has
        t's shape followed by singleton axes, as in `DriftSDE.marginal`."""
        x0 = jnp.asarray(x0)
        a = _expand(self.mean_coeff(t), x0)
        return a * x0 + (1.0 - a) * jnp.asarray(y), _expand(self.std(t), x0)

    def prior_sample(self, key, y) -> Array:
        """x_1 = y exactly (the bridge is pinned at the JPEG image); `key` is unused."""
        del key
        return jnp.asarray(y)

    # --- I²SB's network parametrisation --------------------------------------------------------
    @_jit_method
    def x0_from_output(self, x_n, t, out) -> Array:
        """x̂0 = x_n − σ(t) · out, for a network that regresses (x_n − x0)/σ(t)."""
        x_n = jnp.asarray(x_n)
        return x_n - _expand(self.sigma_fwd(t), x_n) * jnp.asarray(out)

    @_jit_method
    def output_target(self, x0, x_n, t) -> Array:
        """The regression target (x_n − x0)/σ(t) of I²SB's network (t > 0)."""
        x_n = jnp.asarray(x_n)
        return (x_n - jnp.asarray(x0)) / _expand(self.sigma_fwd(t), x_n)

    # --- the reverse step ------------------------------------------------------------------------
    def posterior_coeffs(self, n, n_prev, dtype=None):
        """(c_x0, c_xn, var) of p(x_{n'} | x0, x_n) = N(c_x0 x0 + c_xn x_n, var), 0 ≤ n' < n ≤ N.

        Brownian motion from x0: x_{n'} ~ N(x0, σ_{n'}²) and x_n | x_{n'} ~ N(x_{n'}, σ_n² − σ_{n'}²);
        their Gaussian product gives c_x0 = (σ_n² − σ_{n'}²)/σ_n², c_xn = σ_{n'}²/σ_n²,
        var = σ_{n'}² (σ_n² − σ_{n'}²)/σ_n².
        """
        n, n_prev = jnp.asarray(n), jnp.asarray(n_prev)
        if not (jnp.issubdtype(n.dtype, jnp.integer) and jnp.issubdtype(n_prev.dtype, jnp.integer)):
            raise TypeError(f"n and n_prev must be integer step indices, got {n.dtype}, {n_prev.dtype}")
        dtype = dtype or jnp.result_type(float)
        grid = jnp.asarray(self.sigma2_grid, dtype)
        s2n = grid[n]
        s2p = grid[n_prev]
        gap = s2n - s2p
        return gap / s2n, s2p / s2n, s2p * gap / s2n

    @functools.partial(jax.jit, static_argnums=(0, 6), static_argnames=("ot_ode",))
    def posterior_step(self, key, x_n, x0_hat, n, n_prev, ot_ode: bool = False) -> Array:
        """One I²SB reverse step from boundary n to n_prev < n: a draw from
        p(x_{n_prev} | x0 = x0_hat, x_n) (`posterior_coeffs`); the mean alone when ot_ode.
        n, n_prev: integer scalars or (B,) arrays."""
        x_n = jnp.asarray(x_n)
        c_x0, c_xn, var = self.posterior_coeffs(n, n_prev, x_n.dtype)
        c_x0, c_xn, var = (_expand(v, x_n) for v in (c_x0, c_xn, var))
        mean = c_x0 * jnp.asarray(x0_hat) + c_xn * x_n
        if ot_ode:
            return mean
        return mean + jnp.sqrt(var) * jax.random.normal(key, x_n.shape, x_n.dtype)

    def sampling_steps(self, nfe: int) -> np.ndarray:
        """The nfe + 1 boundaries visited, from N down to 0, evenly spaced (rounded)."""
        if not isinstance(nfe, int) or not 1 <= nfe <= self.n_steps:
            raise ValueError(f"nfe must be an int in [1, {self.n_steps}], got {nfe!r}")
        return np.round(np.linspace(0, self.n_steps, nfe + 1)).astype(np.int32)[::-1].copy()


@functools.partial(jax.jit, static_argnames=("process", "predict", "nfe", "ot_ode"))
def sample(process: I2SB, predict, key, y, nfe: int = 100, ot_ode: bool = False) -> Array:
    """I²SB sampling (Liu et al. 2023): start at x_N = y, then for each visited boundary n > 0
    x̂0 = predict(x_n, y, t_n) (t_n = n/N as a (B,) array) and x_{n'} ~ p(x_{n'} | x̂0, x_n).
    Returns x_0, which equals the last x̂0. `nfe` network calls; one jitted `lax.scan`.

    `predict` is a static argument: to use network parameters without baking them into the
    compiled graph, call `sample` inside your own `jax.jit` with a closure over the traced params.
    """
    y = jnp.asarray(y)
    steps = process.sampling_steps(nfe)
    batch = y.shape[0]

    def body(x, inputs):
        n, n_prev, k = inputs
        t = jnp.full((batch,), process.network_time(n), y.dtype)
        x0_hat = predict(x, y, t)
        return process.posterior_step(k, x, x0_hat, n, n_prev, ot_ode), None

    keys = jax.random.split(key, nfe)
    x, _ = jax.lax.scan(body, y, (jnp.asarray(steps[:-1]), jnp.asarray(steps[1:]), keys))
    return x
