"""DriftRec-OUVE on CelebA-HQ 256x256, from a folder of images or from tensorflow-datasets.

From TFDS (celeb_a_hq must be prepared first: `tfds build celeb_a_hq/256 --manual_dir DIR`):
  python train.py --config configs/ouve_celebahq.py --workdir workdirs/ouve_celebahq \\
      --config.data.source=tfds:celeb_a_hq/256 --config.data.tfds_data_dir=/data/tfds

Run:
  python train.py --config configs/ouve_celebahq.py --workdir workdirs/ouve_celebahq --config.data.source=/data/celebahq256/train
"""

from driftrec_jax.config_lib import default_config


def get_config():
    c = default_config()
    c.data.source = "/data/celebahq256/train"
    c.train.num_steps = 200_000
    return c
