"""A tiny config for tests and smoke runs: the 'tiny' network, 32x32 crops, batch 8, a few steps.

Run:
  python train.py --config configs/tiny_test.py --workdir /tmp/driftrec_tiny --config.data.source=path/to/images
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.model.network = "tiny"
    c.data.crop_size = 32
    c.data.batch_size = 8
    c.data.shuffle_buffer = 64
    c.optim.lr = 2e-3
    c.train.num_steps = 50
    c.train.log_every = 10
    c.train.sample_every = 0
    c.train.checkpoint_every = 25
    c.train.async_checkpoints = False
    c.sample.steps = 10
    return c
