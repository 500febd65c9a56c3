"""The L2 regression baseline on CelebA-HQ 256x256 (folder or TFDS, see ouve_celebahq).

Run:
  python train.py --config configs/regression_celebahq.py --workdir workdirs/regression_celebahq --config.data.source=/data/celebahq256/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.data.source = "/data/celebahq256/train"
    c.model.variant = "regression"
    c.train.num_steps = 200_000
    return c
