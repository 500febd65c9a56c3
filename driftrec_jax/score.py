"""The network as the rest of the code sees it: ``score(params, x, y, t)``.

Samplers and losses never touch Flax modules; they receive these closures. ``params`` is the
network's whole variables pytree (``{'params': ..., plus any constant collections}``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

ScoreFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]
PredictFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def batch_times(t, batch_size: int) -> jnp.ndarray:
    """Broadcast a scalar or ``(B,)`` time to shape ``(B,)``."""
    return jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch_size,))


# Ways to turn the network's output into the score (config ``model.preconditioning``).
PRECONDITIONINGS = ("none", "edm")


@dataclasses.dataclass(frozen=True)
class EDMPreconditioning:
    """EDM-style preconditioning (Karras et al. 2022, "Elucidating the design space of diffusion-based
    generative models", Table 1 and Sec. 5) for a drifting SDE, written in the residual u = x − y
    (docs/TRAINING.md, "Loss weighting and preconditioning").

    With u0 = x0 − y (per-pixel standard deviation ``sigma_data``) and u_t = a·u0 + σ·z
    (a = ``sde.mean_coeff(t)``, σ = ``sde.std(t)``), the network's raw output F gives the denoiser
    D(u_t) = c_skip·u_t + c_out·F(c_in·u_t, y; c_noise) ≈ E[u0 | u_t], where

        c_in = 1/√(a²σ_d² + σ²),  c_skip = a σ_d²/(a²σ_d² + σ²),  c_out = σ σ_d/√(a²σ_d² + σ²),

    and c_noise = σ/a (the network embeds its logarithm, −log SNR). For a = 1 these are EDM's.
    """

    sigma_data: float = 0.04

    def coefficients(self, a, sigma):
        """(c_in, c_skip, c_out, c_noise) for mean coefficients ``a`` and stds ``sigma`` (same shapes)."""
        sd2 = self.sigma_data ** 2
        total = a * a * sd2 + sigma * sigma
        return jnp.reciprocal(jnp.sqrt(total)), a * sd2 / total, sigma * self.sigma_data * jnp.reciprocal(
            jnp.sqrt(total)), sigma / a

    def loss_weight(self, a, sigma):
        """λ = 1/c_out² = a²/σ² + 1/σ_d²: the weight of ‖D − u0‖² that makes the loss ‖F − F*‖²
        (eq. (15) of the DriftRec paper weights ‖D − u0‖² by a²/σ² alone)."""
        return a * a / (sigma * sigma) + 1.0 / self.sigma_data ** 2


def make_preconditioning(name: Optional[str] = "none", sigma_data: float = 0.04):
    """None for 'none' (the network's output divided by σ is the score, as in the paper), else an
    :class:`EDMPreconditioning`."""
    name = name or "none"
    if name not in PRECONDITIONINGS:
        raise ValueError(f"unknown preconditioning {name!r}; choose from {', '.join(PRECONDITIONINGS)}")
    if name == "none":
        return None
    if not float(sigma_data) > 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data!r}")
    return EDMPreconditioning(float(sigma_data))


def _expand(v, x):
    return jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))


def make_raw_fn(apply_fn: Callable, sde, precond: EDMPreconditioning):
    """(params, x_t, y, t) → (F, (a, σ, c_in, c_skip, c_out) broadcast to x's rank): the raw network
    output of a preconditioned model (its network does not divide by σ)."""

    def raw(params, x, y, t):
        tb = batch_times(t, x.shape[0])
        a, sigma = sde.mean_coeff(tb), sde.std(tb)
        c_in, c_skip, c_out, c_noise = precond.coefficients(a, sigma)
        f = apply_fn(params, jnp.concatenate([_expand(c_in, x) * (x - y), y], axis=-1), c_noise)
        return f, tuple(_expand(v, x) for v in (a, sigma, c_in, c_skip, c_out))

    return raw


def make_score_fn(apply_fn: Callable, sde, preconditioning: Optional[EDMPreconditioning] = None) -> ScoreFn:
    """DriftRec's conditional score S_θ(x_t, y, t) (paper Sec. II-D).

    Without preconditioning (the paper) the network sees concat(x_t, y) on channels and is
    conditioned on σ_t = ``sde.std(t)`` (Fourier features of log σ); it divides its output by σ_t
    itself. With an :class:`EDMPreconditioning` the network gives D (the denoised residual) and the
    score is −(u_t − a·D)/σ² (Tweedie), u_t = x_t − y.
    """
    if preconditioning is None:
        def score(params, x, y, t):
            sigma = sde.std(batch_times(t, x.shape[0]))
            return apply_fn(params, jnp.concatenate([x, y], axis=-1), sigma)

        return score
    raw = make_raw_fn(apply_fn, sde, preconditioning)

    def precond_score(params, x, y, t):
        f, (a, sigma, _, c_skip, c_out) = raw(params, x, y, t)
        u = x - y
        d = c_skip * u + c_out * f
        return -(u - a * d) / (sigma * sigma)

    return precond_score


def make_predict_fn(apply_fn: Callable) -> PredictFn:
    """The regression baseline: one unconditional network pass from the JPEG y to x̂0."""

    def predict(params, y):
        return apply_fn(params, y, None)

    return predict
