"""DriftRec-TSDVE on D2KF2K: F(t) = t, gamma 2 (to match OUVE's terminal mean), else as ouve_d2kf2k.

Run:
  python train.py --config configs/tsdve_d2kf2k.py --workdir workdirs/tsdve_d2kf2k --config.data.source=/data/D2KF2K/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.data.source = "/data/D2KF2K/train"
    c.sde.name = "tsdve"
    c.sde.gamma = 2.0
    return c
