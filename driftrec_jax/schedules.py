"""Drift schedules of the DriftRec SDE family (DriftRec paper Sec. II-B/C, eqs. (3)-(9);
docs/SCHEDULES.md).

Every member of the family is the linear SDE

    dx = γ F(t) (y − x) dt + g(t) dw,      g(t) = ν · h(t),      t ∈ [0, 1],

where y is the JPEG-decoded image. A *schedule* is the small, pure part that differs between
members: the drift shape F(t) (or its integral Φ(t) = ∫₀ᵗ F), optionally the unnormalised
diffusion shape h(t) (default h(t) = σmin (σmax/σmin)^t, the VE diffusion), and optionally closed
forms of the variance and of ν. Everything else (mean, variance by quadrature, ν so that
σ(1) = σmax, drift, diffusion, prior, reverse drifts) is derived once in `driftrec_jax.sde`.

Adding a schedule = one `Schedule(...)` definition + one entry in `SCHEDULES`
(see docs/SCHEDULES.md). Every test parametrised over `SCHEDULES` then covers it.

All functions here are pure jnp functions of t (scalar or any array shape), jit/vmap-able.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Gauss–Legendre nodes/weights on [-1, 1] (float64, numpy; cast to the dtype of t on use).
# 32 nodes integrate the smooth exponentials of this family on [0, t ≤ 1] to float32 round-off.
QUADRATURE_NODES = 32
_GL_X, _GL_W = np.polynomial.legendre.leggauss(QUADRATURE_NODES)


def as_time(t) -> Array:
    """Returns t as a floating jnp array (ints become the default float dtype)."""
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


def integrate_0_to_t(fn: Callable[[Array], Array], t) -> Array:
    """∫₀ᵗ fn(s) ds by 32-node Gauss–Legendre quadrature, vectorised over t.

    `fn` must act elementwise; it is called once on an array of shape t.shape + (32,).
    Returns an array of t's shape and dtype.
    """
    t = as_time(t)
    x = jnp.asarray(_GL_X, t.dtype)
    w = jnp.asarray(_GL_W, t.dtype)
    half = 0.5 * t[..., None]
    s = half * (x + 1.0)
    return jnp.sum(w * fn(s), axis=-1) * (0.5 * t)


def default_g_shape(t, sigma_min: float, sigma_max: float) -> Array:
    """Unnormalised VE diffusion h(t) = σmin (σmax/σmin)^t, so that g(t) = ν h(t) (paper eq. (3),
    in the form of the authors' code)."""
    t = as_time(t)
    return sigma_min * jnp.exp(t * math.log(sigma_max / sigma_min))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One member of the DriftRec family: F(t) or Φ(t) = ∫₀ᵗ F, plus optional closed forms.

    Fields (all module-level functions, so the dataclass stays hashable):
      F(t): drift shape. If omitted, derived from `int_F` with `jax.jvp`.
      int_F(t): Φ(t) = ∫₀ᵗ F(s) ds. If omitted, computed from F by Gauss–Legendre quadrature.
      g_shape(t, sigma_min, sigma_max): unnormalised diffusion h(t); g = ν h.
        Default `default_g_shape`, h(t) = σmin (σmax/σmin)^t.
      unit_variance(t, gamma, sigma_min, sigma_max): closed form of
        U(t) = ∫₀ᵗ exp(−2γ(Φ(t) − Φ(s))) h(s)² ds, so that σ_t² = ν² U(t).
        If omitted, U is computed by quadrature.
      nu(gamma, sigma_min, sigma_max): the normaliser ν, when the authors define it by a formula
        rather than by σ(1) = σmax (OUVE). If omitted, ν = σmax / √U(1).
      default_gamma: the paper's stiffness γ for this schedule (Table I).
      description: one line for listings and docs.
    """

    F: Optional[Callable[[Array], Array]] = None
    int_F: Optional[Callable[[Array], Array]] = None
    g_shape: Callable[..., Array] = default_g_shape
    unit_variance: Optional[Callable[..., Array]] = None
    nu: Optional[Callable[..., Array]] = None
    default_gamma: float = 1.0
    description: str = ""

    def __post_init__(self):
        if self.F is None and self.int_F is None:
            raise ValueError("a Schedule needs F(t) or its integral int_F(t)")
        for field in ("F", "int_F", "g_shape", "unit_variance", "nu"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(f"Schedule.{field} must be callable, got {type(value).__name__}")

    def drift_shape(self, t) -> Array:
        """F(t); from `int_F` by forward-mode autodiff when F is not given."""
        t = as_time(t)
        if self.F is not None:
            return jnp.broadcast_to(jnp.asarray(self.F(t), t.dtype), t.shape)
        _, dphi = jax.jvp(self.int_F, (t,), (jnp.ones_like(t),))
        return dphi

    def integrated_drift(self, t) -> Array:
        """Φ(t) = ∫₀ᵗ F(s) ds; by quadrature of F when `int_F` is not given."""
        t = as_time(t)
        if self.int_F is not None:
            return jnp.broadcast_to(jnp.asarray(self.int_F(t), t.dtype), t.shape)
        return integrate_0_to_t(self.drift_shape, t)


# --------------------------------------------------------------------------------------------
# OUVE, eq. (4): F = 1, Φ = t, a(t) = e^{−γt}.


def ouve_F(t):
    """OUVE drift shape F(t) = 1 (paper eq. (4))."""
    return jnp.ones_like(t)


def ouve_int_F(t):
    """OUVE Φ(t) = t."""
    return t


def ouve_unit_variance(t, gamma, sigma_min, sigma_max):
    """OUVE U(t) = σmin² (e^{2Lt} − e^{−2γt}) / (2(γ + L)), L = ln(σmax/σmin) (the closed form
    of the authors' code; paper Sec. II-C, "Variance expressions")."""
    L = math.log(sigma_max / sigma_min)
    return sigma_min**2 * (jnp.expm1(2.0 * L * t) - jnp.expm1(-2.0 * gamma * t)) / (2.0 * (gamma + L))


def ouve_nu(gamma, sigma_min, sigma_max):
    """OUVE ν = √(2(γ + L)) as the authors define it; σ(1) = σmax up to σmin² e^{−2γ}
    (docs/SCHEDULES.md)."""
    return jnp.sqrt(2.0 * (gamma + math.log(sigma_max / sigma_min)))


# --------------------------------------------------------------------------------------------
# TSDVE, eq. (5): F = t, Φ = t²/2, a(t) = e^{−γt²/2}. Called "t2ve" in the authors' code.


def tsdve_F(t):
    """TSDVE drift shape F(t) = t (paper eq. (5))."""
    return t


def tsdve_int_F(t):
    """TSDVE Φ(t) = t²/2."""
    return 0.5 * t * t


def tsdve_unit_variance(t, gamma, sigma_min, sigma_max):
    """TSDVE U(t) = σmin²/√γ · [e^{2Lt} D((γt+L)/√γ) − e^{−γt²} D(L/√γ)] with Dawson's D.

    Completing the square in ∫₀ᵗ e^{−γ(t²−s²)} e^{2Ls} ds; with ν² = σmax²/U(1) this is the authors'
    code's closed form (den = σmin² D(L/√γ) − σmax² e^γ D((γ+L)/√γ)).
    """
    L = math.log(sigma_max / sigma_min)
    rg = math.sqrt(gamma)
    dawsn = jax.scipy.special.dawsn
    bracket = jnp.exp(2.0 * L * t) * dawsn((gamma * t + L) / rg) - jnp.exp(-gamma * t * t) * dawsn(
        jnp.asarray(L / rg, jnp.result_type(t))
    )
    return sigma_min**2 / rg * bracket


# --------------------------------------------------------------------------------------------
# CosVE, eq. (6): F = 1 − cos(πt), Φ = t − sin(πt)/π. No closed-form variance (quadrature).


def cosve_F(t):
    """CosVE drift shape F(t) = 1 − cos(πt) = 2 sin²(πt/2) (paper eq. (6))."""
    return 2.0 * jnp.sin(0.5 * jnp.pi * t) ** 2


def cosve_int_F(t):
    """CosVE Φ(t) = t − sin(πt)/π."""
    return t - jnp.sin(jnp.pi * t) / jnp.pi


OUVE = Schedule(
    F=ouve_F,
    int_F=ouve_int_F,
    unit_variance=ouve_unit_variance,
    nu=ouve_nu,
    default_gamma=1.0,
    description="Ornstein-Uhlenbeck VE: F(t) = 1, a(t) = exp(-gamma t)",
)
TSDVE = Schedule(
    F=tsdve_F,
    int_F=tsdve_int_F,
    unit_variance=tsdve_unit_variance,
    default_gamma=2.0,
    description="t-squared decay VE: F(t) = t, a(t) = exp(-gamma t^2 / 2)",
)
COSVE = Schedule(
    F=cosve_F,
    int_F=cosve_int_F,
    default_gamma=1.0,
    description="cosine VE: F(t) = 1 - cos(pi t), a(t) = exp(-gamma (t - sin(pi t)/pi))",
)

# The one registry of drift schedules (name -> Schedule). `driftrec_jax.sde.SDES` is this dict.
SCHEDULES: dict[str, Schedule] = {
    "ouve": OUVE,
    "tsdve": TSDVE,
    "cosve": COSVE,
}

# Other spellings accepted by `get_sde` (not registry entries, so tests do not run twice).
ALIASES: dict[str, str] = {"t2ve": "tsdve"}
