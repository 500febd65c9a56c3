"""The unconditional ε-prediction DDPM prior for DDRM-JPEG (Kawar et al. 2022) at paper scale, on D2KF2K.

The DriftRec paper's NCSN++ (128 base channels, 7 levels) with 3 input channels, conditioned on
the noise level of timestep t; linear β 1e-4..0.02, T = 1000, all timesteps trained; clean 256x256
random resized crops; AdamW lr 1e-4, EMA 0.999, global batch 32, as the DriftRec models, so the two
methods are compared on the same data and network. (DDRM-JPEG's own results use OpenAI's ImageNet
model, which this project does not import.)

Run:
  python train.py --config configs/ddrm_uncond_d2kf2k.py --workdir workdirs/ddrm_uncond_d2kf2k --config.data.source=/data/D2KF2K/train
"""

from driftrec_jax.config_lib import ddrm_prior, default_config


def get_config():
    c = default_config()
    c.model.variant = "ddrm_eps"
    c.ddrm = ddrm_prior(max_train_timestep=1000)
    c.data.source = "/data/D2KF2K/train"
    c.train.sample_every = 5000
    return c
