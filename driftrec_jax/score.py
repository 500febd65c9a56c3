"""The network as the rest of the code sees it: ``score(params, x, y, t)``.

Samplers and losses never touch Flax modules; they receive these closures. ``params`` is the
network's whole variables pytree (``{'params': ..., plus any constant collections}``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

ScoreFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]
PredictFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def batch_times(t, batch_size: int) -> jnp.ndarray:
    """Broadcast a scalar or ``(B,)`` time to shape ``(B,)``."""
    return jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch_size,))


def make_score_fn(apply_fn: Callable, sde) -> ScoreFn:
    """DriftRec's conditional score S_θ(x_t, y, t) (paper Sec. II-D).

    The network sees concat(x_t, y) on channels and is conditioned on σ_t = ``sde.std(t)``
    (Fourier features of log σ); it divides its output by σ_t itself.
    """

    def score(params, x, y, t):
        sigma = sde.std(batch_times(t, x.shape[0]))
        return apply_fn(params, jnp.concatenate([x, y], axis=-1), sigma)

    return score


def make_predict_fn(apply_fn: Callable) -> PredictFn:
    """The regression baseline: one unconditional network pass from the JPEG y to x̂0."""

    def predict(params, y):
        return apply_fn(params, y, None)

    return predict
