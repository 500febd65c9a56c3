"""The regression baseline matching small_ouve: the same network preset, data and optimiser.

Run:
  python train.py --config configs/small_regression.py --workdir workdirs/small_regression --config.data.source=data/train
"""

from driftrec_jax.config_lib import sibling_config


def get_config():
    c = sibling_config(__file__, "small_ouve")
    c.model.variant = "regression"
    return c
