"""DriftRec-OUVE on D2KF2K (DIV2K + Flickr2K), the paper's main model (Table I).

Paper hyperparameters: NCSN++ (65.6 M parameters), gamma 1, sigma_min 0.01, sigma_max 1, 256x256 random
resized crops, JPEG quality uniform in 0..100, AdamW lr 1e-4, EMA 0.999, global batch 32, ~300 epochs.
Point data.source at the folder of D2KF2K training images (80 % of the 3550 images).

Run:
  python train.py --config configs/ouve_d2kf2k.py --workdir workdirs/ouve_d2kf2k --config.data.source=/data/D2KF2K/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.data.source = "/data/D2KF2K/train"
    return c
