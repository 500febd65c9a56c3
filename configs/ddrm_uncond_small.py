"""The unconditional ε-prediction DDPM prior for DDRM-JPEG (Kawar et al. 2022), small enough for a CPU.

NCSN++ 'small' preset with 3 input channels, conditioned on the noise level of timestep t
(driftrec_jax.ddrm.EPS_VARIANT); linear β 1e-4..0.02, T = 1000; trained on clean 64x64 crops
only (the JPEG half of the training pairs is ignored). DDRM-JPEG only ever queries t ≤ 285, so
this config trains on t < 300 (ddrm.max_train_timestep; set it to 1000 for a full prior).

Sample grids restore the first training JPEGs with DDRM-JPEG (20 steps, tables from each image's
quality); validation, every train.eval_every steps once --config.train.eval_folder names a folder
(Kodak24 for the bundled prior), restores central crops of its images at QF 10 with DDRM.
Then: driftrec restore photo.jpg -o out/ --method ddrm --checkpoint workdirs/ddrm_uncond_small

Run:
  python train.py --config configs/ddrm_uncond_small.py --workdir workdirs/ddrm_uncond_small \
      --config.data.source=data/train --config.train.eval_folder=data/val/kodak24
"""

from driftrec_jax.config_lib import ddrm_prior, sibling_config


def get_config():
    c = sibling_config(__file__, "small_ouve")  # the same network preset, data and optimiser
    c.model.variant = "ddrm_eps"
    c.ddrm = ddrm_prior(max_train_timestep=300)
    c.train.eval_every = 1000
    # c.train.eval_folder: none by default (no validation); --config.train.eval_folder=FOLDER.
    c.train.eval_quality = 10
    return c
