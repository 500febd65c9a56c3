"""DriftRec forward SDEs derived from a drift schedule (DriftRec paper Sec. II-B/C, eqs. (1)-(9);
docs/SCHEDULES.md).

    dx = f(x, y, t) dt + g(t) dw,   f = γ F(t) (y − x),   g(t) = ν h(t),   t ∈ [0, T = 1].

Being linear in x, the forward process has Gaussian marginals (paper Sec. II-B):
    mean  μ_t = a(t) x0 + (1 − a(t)) y,        a(t) = exp(−γ Φ(t)),  Φ(t) = ∫₀ᵗ F,
    var   σ_t² = ν² U(t),  U(t) = ∫₀ᵗ exp(−2γ(Φ(t) − Φ(s))) h(s)² ds,
which solves the variance ODE dσ²/dt = −2γF(t) σ² + g(t)². U comes from the schedule's closed
form where it has one (OUVE, TSDVE), otherwise from Gauss–Legendre quadrature inside JAX (CosVE
and any new schedule). ν is the schedule's formula (OUVE: √(2(γ + L))) or σmax/√U(1).

Reverse time (paper eq. (2)): the reverse SDE has drift f − g² S and the probability-flow ODE
f − ½ g² S, S ≈ ∇ log p_t; samplers step x ← x − (reverse drift) Δt (+ g √Δt z for the SDE).

`get_sde(name, ...)` builds a `DriftSDE` from the registry `SDES` (the same dict as
`driftrec_jax.schedules.SCHEDULES`). A `DriftSDE` is a frozen, hashable dataclass, so it can be a
static argument of `jax.jit`. Time t is a scalar or a (B,) array; it is broadcast against
(B, H, W, C) images.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from driftrec_jax.schedules import ALIASES, SCHEDULES, Schedule, as_time, integrate_0_to_t

Array = jax.Array

# The registry of SDE families: the very same dict as `schedules.SCHEDULES` (name -> Schedule).
SDES = SCHEDULES

# Methods are jitted with the (hashable) SDE static: eager calls then compile once per shape
# instead of once per primitive; inside an outer jit/grad/vmap they simply inline.
_jit_method = functools.partial(jax.jit, static_argnums=0)


def _expand(v: Array, x: Array) -> Array:
    """Reshapes a per-example value of shape (B,) to (B, 1, ..., 1) so it broadcasts against x
    (B, ...); a scalar stays a scalar."""
    v = jnp.asarray(v)
    x = jnp.asarray(x)
    if v.ndim > x.ndim:
        raise ValueError(f"time has shape {v.shape} but the image has only shape {x.shape}")
    if v.ndim == 0:
        return v
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


@dataclasses.dataclass(frozen=True)
class DriftSDE:
    """A DriftRec forward SDE: one `Schedule` plus γ, σmin, σmax (paper eq. (3), Table I).

    closed_form=False ignores the schedule's closed-form variance and uses quadrature (the
    schedule's ν formula, if any, is kept). T = 1 is the terminal time; t_eps = 0.01 is the
    smallest training time (the samplers' ε = 0.03 lives with the samplers).
    """

    schedule: Schedule
    gamma: float = 1.0
    sigma_min: float = 0.01
    sigma_max: float = 1.0
    closed_form: bool = True
    name: str = ""
    T: float = 1.0
    t_eps: float = 0.01

    def __post_init__(self):
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(self.schedule).__name__}")
        for field in ("gamma", "sigma_min", "sigma_max", "T", "t_eps"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{field} must be a Python number (hashable), got {type(value).__name__}")
            object.__setattr__(self, field, float(value))
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not 0 <= self.t_eps < self.T:
            raise ValueError(f"need 0 <= t_eps < T, got t_eps={self.t_eps}, T={self.T}")

    # --- the schedule's pieces -----------------------------------------------------------------
    def _h(self, t: Array) -> Array:
        return self.schedule.g_shape(t, self.sigma_min, self.sigma_max)

    @_jit_method
    def unit_variance(self, t) -> Array:
        """U(t) = σ_t²/ν² = ∫₀ᵗ exp(−2γ(Φ(t) − Φ(s))) h(s)² ds (closed form or quadrature)."""
        t = as_time(t)
        if self.closed_form and self.schedule.unit_variance is not None:
            u = self.schedule.unit_variance(t, self.gamma, self.sigma_min, self.sigma_max)
            return jnp.asarray(u, t.dtype)
        phi_t = self.schedule.integrated_drift(t)[..., None]

        def integrand(s):
            return jnp.exp(-2.0 * self.gamma * (phi_t - self.schedule.integrated_drift(s))) * self._h(s) ** 2

        return integrate_0_to_t(integrand, t)

    def nu(self, dtype=None) -> Array:
        """ν: the schedule's formula if it has one (OUVE), else σmax/√U(1) so that σ(1) = σmax."""
        dtype = dtype or jnp.result_type(float)
        if self.schedule.nu is not None:
            return jnp.asarray(self.schedule.nu(self.gamma, self.sigma_min, self.sigma_max), dtype)
        return self.sigma_max / jnp.sqrt(self.unit_variance(jnp.asarray(1.0, dtype)))

    # --- the SDE API (docs/DESIGN.md) -----------------------------------------------------------
    @_jit_method
    def mean_coeff(self, t) -> Array:
        """a(t) = exp(−γ ∫₀ᵗ F): the weight of x0 in the mean μ_t = a x0 + (1 − a) y."""
        t = as_time(t)
        return jnp.exp(-self.gamma * self.schedule.integrated_drift(t))

    @_jit_method
    def variance(self, t) -> Array:
        """σ_t² = ν² U(t), the marginal variance of x_t given (x0, y) (paper Sec. II-C,
        "Variance expressions"; docs/SCHEDULES.md)."""
        t = as_time(t)
        return self.nu(t.dtype) ** 2 * self.unit_variance(t)

    @_jit_method
    def std(self, t) -> Array:
        """σ_t, the marginal standard deviation (same shape as t)."""
        return jnp.sqrt(self.variance(t))

    @_jit_method
    def log_snr(self, t) -> Array:
        """λ(t) = log(a(t)/σ_t), the log signal-to-noise ratio of u = x − y (docs/SAMPLERS.md).

        With y fixed, u = x − y obeys du = −γF(t) u dt + g(t) dw: a Gaussian diffusion with
        u_t = a(t) u_0 + σ_t z, so λ falls monotonically in t for every registered schedule and
        the exponential-integrator samplers step in it."""
        t = as_time(t)
        return jnp.log(self.mean_coeff(t)) - jnp.log(self.std(t))

    @_jit_method
    def marginal(self, x0, y, t) -> tuple[Array, Array]:
        """(μ_t, σ_t) of p(x_t | x0, y): μ_t = a x0 + (1 − a) y (image-shaped); σ_t is a scalar
        for scalar t and (B, 1, ..., 1) for t of shape (B,), so x_t = μ_t + σ_t z broadcasts."""
        x0 = jnp.asarray(x0)
        a = _expand(self.mean_coeff(t), x0)
        mean = a * x0 + (1.0 - a) * jnp.asarray(y)
        return mean, _expand(self.std(t), x0)

    @_jit_method
    def drift(self, x, y, t) -> Array:
        """f(x, y, t) = γ F(t) (y − x) (paper eq. (3))."""
        x = jnp.asarray(x)
        rate = self.gamma * self.schedule.drift_shape(as_time(t))
        return _expand(rate, x) * (jnp.asarray(y) - x)

    @_jit_method
    def diffusion(self, t) -> Array:
        """g(t) = ν h(t); by default ν σmin (σmax/σmin)^t (paper eq. (3), in the
        form the authors' code uses)."""
        t = as_time(t)
        return self.nu(t.dtype) * self._h(t)

    @_jit_method
    def prior_sample(self, key, y) -> Array:
        """x_T = y + σ_T z, with σ_T the computed std at t = T (not the literal σmax), as the
        authors' code does."""
        y = jnp.asarray(y)
        dtype = y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.result_type(float)
        z = jax.random.normal(key, y.shape, dtype)
        return y + self.std(jnp.asarray(self.T, dtype)) * z

    @_jit_method
    def denoise(self, x, y, t, score) -> Array:
        """Tweedie's estimate of x0 from x_t given the score value S (an array like x): the mean
        μ_t = a x0 + (1 − a) y has E[μ_t | x_t] = x_t + σ_t² S, so
        x̂0 = (x_t + σ_t² S − (1 − a) y) / a (exact for a point mass, tested)."""
        x = jnp.asarray(x)
        a = _expand(self.mean_coeff(t), x)
        var = _expand(self.variance(t), x)
        return (x + var * jnp.asarray(score) - (1.0 - a) * jnp.asarray(y)) / a

    @functools.partial(jax.jit, static_argnums=(0, 5), static_argnames=("probability_flow",))
    def reverse_drift(self, x, y, t, score, probability_flow: bool = False) -> Array:
        """Drift of the reverse-time process at (x, t) given the score value S (an array like x):
        f − g² S for the reverse SDE (paper eq. (2)), f − ½ g² S for the probability-flow ODE.
        A sampler steps backwards: x ← x − (this) Δt (+ g √Δt z for the SDE)."""
        x = jnp.asarray(x)
        g2 = _expand(self.diffusion(t) ** 2, x)
        weight = 0.5 if probability_flow else 1.0
        return self.drift(x, y, t) - weight * g2 * jnp.asarray(score)


def get_sde(
    name: str,
    gamma: float | None = None,
    sigma_min: float = 0.01,
    sigma_max: float = 1.0,
    closed_form: bool = True,
    t_eps: float = 0.01,
) -> DriftSDE:
    """The registered SDE `name` ("ouve", "tsdve" (alias "t2ve"), "cosve", ...) with the paper's
    defaults (Table I): γ = the schedule's default (1; TSDVE 2), σmin 0.01, σmax 1, t_eps 0.01."""
    key = ALIASES.get(name, name)
    if key not in SDES:
        raise KeyError(f"unknown SDE {name!r}; registered: {', '.join(sorted(SDES))}")
    schedule = SDES[key]
    if gamma is None:
        gamma = schedule.default_gamma
    return DriftSDE(
        schedule=schedule,
        gamma=gamma,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        closed_form=closed_form,
        name=key,
        t_eps=t_eps,
    )

