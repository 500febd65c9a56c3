"""DriftRec-CosVE on D2KF2K: F(t) = 1 - cos(pi t), gamma 1, else as ouve_d2kf2k.

Run:
  python train.py --config configs/cosve_d2kf2k.py --workdir workdirs/cosve_d2kf2k --config.data.source=/data/D2KF2K/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.data.source = "/data/D2KF2K/train"
    c.sde.name = "cosve"
    return c
