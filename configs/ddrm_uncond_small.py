"""The unconditional ε-prediction DDPM prior for DDRM-JPEG (SPEC §6), small enough for a CPU.

NCSN++ 'small' preset with 3 input channels, conditioned on the noise level of timestep t
(driftrec_jax.ddrm.EPS_VARIANT); linear β 1e-4..0.02, T = 1000; trained on clean 64x64 crops
only (the JPEG half of the training pairs is ignored). DDRM-JPEG only ever queries t ≤ 285, so
this config trains on t < 300 (ddrm.max_train_timestep; set it to 1000 for a full prior).

Sample grids restore the first training JPEGs with DDRM-JPEG (20 steps, tables from each image's
quality); validation restores central crops of ../shared/data/val/kodak24 at QF 10 with DDRM.
Then: driftrec restore photo.jpg -o out/ --method ddrm --checkpoint workdirs/ddrm_uncond_small

Run:
  python train.py --config configs/ddrm_uncond_small.py --workdir workdirs/ddrm_uncond_small --config.data.source=../shared/data/train
"""

import ml_collections

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.model.network = "small"
    c.model.variant = "ddrm_eps"
    c.ddrm = ml_collections.ConfigDict()
    c.ddrm.num_timesteps = 1000
    c.ddrm.beta_start = 1e-4
    c.ddrm.beta_end = 0.02
    c.ddrm.max_train_timestep = 300
    c.data.source = "../shared/data/train"
    c.data.crop_size = 64
    c.data.crop_scale = (0.03, 0.3)  # near full resolution, as in small_ouve
    c.data.batch_size = 8
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 100
    c.train.num_steps = 5000
    c.train.log_every = 20
    c.train.sample_every = 1000
    c.train.eval_every = 1000
    c.train.eval_folder = "../shared/data/val/kodak24"
    c.train.eval_quality = 10
    c.train.checkpoint_every = 500
    return c
