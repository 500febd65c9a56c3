"""driftrec_jax: DriftRec blind JPEG restoration (drifting diffusion SDEs) in JAX/Flax.

Layers, bottom-up (nothing imports upward):
  schedules, sde, networks, data, metrics, jpeg, parallel, checkpoint
  -> score, losses, samplers, ddrm
  -> train_lib, images, engine
  -> restoring (restoring files), evaluate
  -> api, cli, restore_cli (the command line over restoring)
Importing the package itself is cheap: submodules are imported on use.

The Python API (driftrec_jax.api):

    r = driftrec_jax.load("driftrec")     # bundled model, model file or training workdir
    clean = r.restore(jpeg_pixels, sampler="sde-dpm2m:8", seed=0)
    r.restore_files(["photo.jpg"], "restored/")
"""

__version__ = "0.1.0"

__all__ = ["load", "Restorer"]


def __getattr__(name):
    if name in ("load", "Restorer"):  # imported on use, as the submodules
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'driftrec_jax' has no attribute {name!r}")
