"""A small DriftRec-OUVE that trains on a CPU (the bundled default model's config).

The 'small' NCSN++ preset, 64x64 crops, global batch 8, on a folder of photos (e.g. BSDS500 +
Urban100, as for the bundled model; README.md says where the public sets come from). The folder is
given on the command line.

Run:
  python train.py --config configs/small_ouve.py --workdir workdirs/small_ouve --config.data.source=data/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.model.network = "small"
    # c.data.source: no default; --config.data.source=FOLDER (train.py refuses an empty one).
    c.data.crop_size = 64
    # Crops of about 60-190 px of the original, so that the model sees photos near full
    # resolution, as it will when restoring them (the paper's 0.2-1 suits 256-px crops of 2K images).
    c.data.crop_scale = (0.03, 0.3)
    c.data.batch_size = 8
    # A CPU budget: about 2 s a step on 2 cores. A higher learning rate than the paper's 1e-4
    # (with a short warm-up) makes the most of few steps.
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 100
    c.train.num_steps = 5000
    c.train.log_every = 20
    c.train.sample_every = 1000
    c.train.checkpoint_every = 500
    # Sample grids and validation use the default sampler (driftrec_jax.sampler_settings), a few
    # network calls: cheap enough to watch progress on a CPU.
    return c
