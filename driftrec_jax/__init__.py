"""driftrec_jax: DriftRec blind JPEG restoration (drifting diffusion SDEs) in JAX/Flax.

Layers, bottom-up (nothing imports upward):
  schedules, sde, networks, data, metrics, jpeg, parallel, checkpoint
  -> score, losses, samplers, ddrm
  -> train_lib, images
  -> evaluate, cli
Importing the package itself is cheap: submodules are imported on use.
"""

__version__ = "0.1.0"
