"""A small DriftRec-OUVE that trains on a CPU (the bundled default model's config).

The 'small' NCSN++ preset, 64x64 crops, global batch 8, on a folder of photos (e.g. BSDS + Urban100).

Run:
  python train.py --config configs/small_ouve.py --workdir workdirs/small_ouve --config.data.source=../shared/data/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.model.network = "small"
    c.data.source = "../shared/data/train"
    c.data.crop_size = 64
    c.data.batch_size = 8
    c.train.num_steps = 20_000
    c.train.log_every = 20
    c.train.sample_every = 1000
    c.train.checkpoint_every = 500
    c.sample.steps = 30
    return c
