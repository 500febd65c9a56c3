"""`driftrec model-info CONFIG`: parameter count and per-level shapes of a network, no weights.

CONFIG is a network preset (``paper``, ``small``, ``tiny``, ``fixture``) or a training config
(name in ``configs/`` or a path) whose ``model.network``, ``model.overrides`` and ``model.variant``
define the network. Everything is computed with :func:`jax.eval_shape`, so even the paper's
65.6 M-parameter network costs no memory. Example::

    driftrec model-info paper --size 256 256
    driftrec model-info small_ouve --variant regression
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import jax
import jax.numpy as jnp
from flax.core import unfreeze
from flax.traverse_util import flatten_dict

from driftrec_jax.networks.ncsnpp import NCSNpp, count_params
from driftrec_jax.networks.presets import NETWORKS, VARIANTS, make_network, network_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help=f"network preset ({', '.join(NETWORKS)}) or a training config name/path")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default=None,
                        help="score (DriftRec, 6 inputs) or regression (3 inputs); default: the config's, else score")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="input height and width for the shapes (default: the nominal image_size)")


def network_from_name(config: str, variant: Optional[str] = None) -> tuple[NCSNpp, str]:
    """(network, description) for a preset name or a training config; raises ValueError if unknown."""
    if config in NETWORKS:
        variant = variant or "score"
        return make_network(config, variant), f"preset {config!r}, {variant}"
    from driftrec_jax.config_lib import load_config

    try:
        cfg = load_config(config)
    except FileNotFoundError as err:
        raise ValueError(f"unknown config {config!r}: not a network preset ({', '.join(NETWORKS)}) "
                         f"and no config file of that name") from err
    model = cfg.model
    variant = variant or model.get("variant", "score")
    net_cfg = dict(network_config(model.network), **dict(model.get("overrides", {})))
    return make_network(net_cfg, variant), f"config {config!r}: network {model.network!r}, {variant}"


def level_table(net: NCSNpp, height: int, width: int) -> tuple[list[dict], dict]:
    """(rows, variable shapes): one row per part of the U-Net with its name, the output shape
    (H, W, C) of its last block, attention, and parameter count.

    Shapes come from tracing the network on a (1, height, width, C) input with eval_shape.
    """
    x = jax.ShapeDtypeStruct((1, height, width, net.in_channels), jnp.float32)
    sigma = jax.ShapeDtypeStruct((1,), jnp.float32)
    args = (x, sigma) if net.conditional else (x,)
    variables = jax.eval_shape(net.init, jax.random.key(0), *args)

    def apply(v, *a):
        return net.apply(v, *a, capture_intermediates=True, mutable=["intermediates"])

    _, state = jax.eval_shape(apply, variables, *args)
    outputs = {name: value["__call__"][0].shape for name, value in state["intermediates"].items()
               if "__call__" in value}

    sizes: dict[str, int] = {}
    for key, leaf in flatten_dict(unfreeze(variables)).items():
        sizes[key[1]] = sizes.get(key[1], 0) + int(leaf.size)

    def part(prefixes):
        return sum(size for name, size in sizes.items() if name.startswith(prefixes))

    rows = []
    if net.conditional:
        rows.append(dict(part="embedding", shape=(4 * net.nf,), attention="", params=part(("fourier_W", "embed_"))))
    rows.append(dict(part="conv_in", shape=outputs["conv_in"][1:], attention="", params=part(("conv_in",))))
    for i in range(len(net.ch_mult)):
        rows.append(dict(part=f"down {i}", shape=outputs[f"down{i}_res{net.num_res_blocks - 1}"][1:],
                         attention="yes" if net.has_attention(i) else "no", params=part((f"down{i}_",))))
    rows.append(dict(part="middle", shape=outputs["mid_res1"][1:], attention="yes", params=part(("mid_",))))
    for i in reversed(range(len(net.ch_mult))):
        rows.append(dict(part=f"up {i}", shape=outputs[f"up{i}_res{net.num_res_blocks}"][1:],
                         attention="yes" if net.has_attention(i) else "no", params=part((f"up{i}_",))))
    rows.append(dict(part="output", shape=(height, width, net.out_channels), attention="",
                     params=part(("output_layer",))))
    return rows, variables


def run(args: argparse.Namespace) -> int:
    try:
        net, description = network_from_name(args.config, args.variant)
    except ValueError as err:
        print(f"driftrec model-info: {err}", file=sys.stderr)
        return 2
    height, width = args.size if args.size else (net.image_size, net.image_size)
    if height < 1 or width < 1:
        print(f"driftrec model-info: --size must be positive, got {height} {width}", file=sys.stderr)
        return 2
    rows, variables = level_table(net, height, width)
    total = count_params(variables)
    fixed = count_params(variables.get("constants", {}))

    print(f"NCSN++ ({description})")
    print(f"  nf {net.nf}, ch_mult {tuple(net.ch_mult)}, {net.num_res_blocks} res blocks per level, "
          f"attention at nominal {tuple(net.attn_resolutions)} of {net.image_size}, "
          f"{net.in_channels} input channels"
          + (f", {net.stem}x space-to-depth stem (the U-Net runs at 1/{net.stem} resolution)" if net.stem > 1 else ""))
    print(f"parameters: {total:,}" + (f" ({total - fixed:,} trained + {fixed:,} fixed Fourier frequencies)" if fixed else ""))
    print(f"input {height}x{width}; shape: a part's last block output (H, W, C); 'down i' includes "
          f"its downsampling block, 'up i' its upsampling block:")
    print(f"  {'part':<10} {'shape':<16} {'attn':<5} {'params':>12}")
    for row in rows:
        shape = "x".join(str(s) for s in row["shape"])
        print(f"  {row['part']:<10} {shape:<16} {row['attention']:<5} {row['params']:>12,}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="driftrec model-info", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
