"""What a model is: a network plus either a drifting SDE (DriftRec) or nothing (regression).

The restoration path (`models.load_model`, `driftrec restore`) and training both build on `Task`;
it lives here, below both, so that loading a model for restoration never imports the optimiser
and training code (`train_lib`). The DDRM ε prior has the same face (`ddrm.EpsTask`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from . import losses
from .score import make_predict_fn, make_score_fn


@dataclasses.dataclass(frozen=True)
class Task:
    """What is being trained: the network, and either an SDE (DriftRec) or None (regression)."""

    model: Any  # flax module
    sde: Any | None
    image_channels: int = 3

    @property
    def is_regression(self) -> bool:
        return self.sde is None

    def input_channels(self) -> int:
        return self.image_channels if self.is_regression else 2 * self.image_channels

    def apply(self, params, x, sigma):
        return self.model.apply(params, x, sigma)

    def loss(self, params, batch, key):
        if self.is_regression:
            return losses.regression_loss(make_predict_fn(self.apply), params, batch, key)
        return losses.dsm_loss(make_score_fn(self.apply, self.sde), self.sde, params, batch, key)

    def init_params(self, key, image_size: int = 32):
        x = jnp.zeros((1, image_size, image_size, self.input_channels()), jnp.float32)
        sigma = None if self.is_regression else jnp.ones((1,), jnp.float32)
        return self.model.init(key, x, sigma)
