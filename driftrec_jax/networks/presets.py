"""Network configurations by name (docs/NETWORK.md) and :func:`make_network`.

* ``paper``: the DriftRec paper's NCSN++ (65,623,359 parameters for the score variant).
* ``small``: a few million parameters, trainable on a CPU (bundled model, examples).
* ``cpu``: for CPU budgets: a 2× space-to-depth stem (no layer at full resolution) and 16 channels
  at the top level; about 7× the training images per CPU second of ``small`` (BENCHMARKS.md).
* ``tiny``: well under a million parameters, for unit tests.
* ``fixture``: the configuration of the parity fixture made with the authors' code.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import jax.numpy as jnp

from driftrec_jax.networks.ncsnpp import NCSNpp

# Architecture fields only; the variant (score / regression) is chosen by make_network.
NETWORKS: dict[str, dict[str, Any]] = {
    "paper": dict(nf=128, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), image_size=256),
    "small": dict(nf=32, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), image_size=64),
    "cpu": dict(nf=16, ch_mult=(1, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,), image_size=64, stem=2),
    "tiny": dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), image_size=32),
    "fixture": dict(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), image_size=64),
}

# The two ways DriftRec uses the network.
VARIANTS: dict[str, dict[str, Any]] = {
    "score": dict(in_channels=6, conditional=True, scale_by_sigma=True),
    "regression": dict(in_channels=3, conditional=False, scale_by_sigma=False),
}
# Every network `make_network` builds: the DriftRec authors' two above (weight import, model-info)
# and DDRM-JPEG's unconditional ε-prediction prior (the image alone, conditioned on σ_t, output
# not divided by σ).
ALL_VARIANTS: dict[str, dict[str, Any]] = {
    **VARIANTS,
    "ddrm_eps": dict(in_channels=3, conditional=True, scale_by_sigma=False),
    # I²SB's network (driftrec_jax.tasks.I2SBTask): concat(x_n, y), or x_n alone ('i2sb_xn'),
    # conditioned on σ_n, output not divided by σ.
    "i2sb": dict(in_channels=6, conditional=True, scale_by_sigma=False),
    "i2sb_xn": dict(in_channels=3, conditional=True, scale_by_sigma=False),
}

_FIELDS = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "image_size", "fourier_scale",
           "init_scale", "stem", "size_mode", "pad_mode", "pad_where")


def network_config(name_or_dict: Union[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Architecture fields of a preset name, or of a mapping ``{'preset': name, **overrides}``.

    A mapping without ``preset`` starts from ``paper``. ml_collections ConfigDicts are accepted.
    """
    if hasattr(name_or_dict, "to_dict"):
        name_or_dict = name_or_dict.to_dict()
    if isinstance(name_or_dict, str):
        overrides, base = {}, name_or_dict
    elif isinstance(name_or_dict, Mapping):
        overrides = dict(name_or_dict)
        base = overrides.pop("preset", overrides.pop("network", "paper"))
    else:
        raise TypeError(f"network config must be a preset name or a mapping, got {type(name_or_dict).__name__}")
    if base not in NETWORKS:
        raise ValueError(f"unknown network preset {base!r}; choose from {', '.join(NETWORKS)}")
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown network config field(s) {sorted(unknown)}; allowed: {', '.join(_FIELDS)}")
    cfg = dict(NETWORKS[base], **overrides)
    for key in ("ch_mult", "attn_resolutions"):
        cfg[key] = tuple(int(v) for v in cfg[key])
    return cfg


def make_network(name_or_dict: Union[str, Mapping[str, Any]] = "paper", variant: str = "score",
                 dtype=jnp.float32) -> NCSNpp:
    """Build an :class:`NCSNpp` from a preset (or overrides) for ``variant`` 'score', 'regression',
    'ddrm_eps', 'i2sb' or 'i2sb_xn' (`ALL_VARIANTS`).

    ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
    """
    if variant not in ALL_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(ALL_VARIANTS)}")
    return NCSNpp(**network_config(name_or_dict), **ALL_VARIANTS[variant], dtype=dtype, param_dtype=jnp.float32)
