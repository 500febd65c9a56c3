"""I²SB (Liu et al. 2023, "I²SB: Image-to-Image Schrödinger Bridge") beside DriftRec, small enough
for a CPU: the same 'small' NCSN++ preset, data (64x64 crops, blind: JPEG quality uniform in
0..100) and optimiser as small_ouve, so the two compare as the DriftRec paper compares them
(Sec. III-C: same network, data and training budget).

The bridge is the I²SB authors' (driftrec_jax.i2sb: N = 1000 steps, symmetric β schedule,
β_max = 0.3); the network regresses (x_n − x0)/σ_n, conditioned on σ_n. It sees concat(x_n, y),
as the DriftRec paper's I²SB did (the authors' code with "--cond-x1"); the I²SB authors' own
default is x_n alone: --config.i2sb.cond_y=False. Sample grids run I²SB's sampler with 10
network calls; restoring defaults to 100 (driftrec_jax.sampler_settings, `i2sb`).

Run:
  python train.py --config configs/small_i2sb.py --workdir workdirs/small_i2sb --config.data.source=data/train
Then:
  driftrec restore photo.jpg -o out/ --checkpoint workdirs/small_i2sb [--steps 100]
  driftrec evaluate -c OUVE=workdirs/small_ouve -c I2SB=workdirs/small_i2sb -d data/val -q 10 -o eval/
"""

from driftrec_jax.config_lib import i2sb_bridge, sibling_config


def get_config():
    c = sibling_config(__file__, "small_ouve")  # the same network preset, data and optimiser
    c.model.variant = "i2sb"
    c.i2sb = i2sb_bridge(cond_y=True)
    c.sample.sampler = "i2sb"
    c.sample.steps = 10
    return c
