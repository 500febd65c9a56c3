"""The L2 regression baseline on D2KF2K: the same NCSN++ with 3 inputs (the JPEG), unconditional.

Run:
  python train.py --config configs/regression_d2kf2k.py --workdir workdirs/regression_d2kf2k --config.data.source=/data/D2KF2K/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.data.source = "/data/D2KF2K/train"
    c.model.variant = "regression"
    return c
