"""The regression baseline matching small_ouve (same network preset, data and schedule of training).

Run:
  python train.py --config configs/small_regression.py --workdir workdirs/small_regression --config.data.source=../shared/data/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.model.network = "small"
    c.model.variant = "regression"
    c.data.source = "../shared/data/train"
    c.data.crop_size = 64
    c.data.batch_size = 8
    c.train.num_steps = 20_000
    c.train.log_every = 20
    c.train.sample_every = 1000
    c.train.checkpoint_every = 500
    return c
