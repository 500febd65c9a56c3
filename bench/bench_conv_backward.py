"""Why NCSN++'s backward pass is slow on the CPU: forward+backward of one 3×3 convolution three ways.

    python bench/bench_conv_backward.py

For each (input shape, output channels), the gradient of Σ conv(x, k)² with respect to x and k is
jitted and timed (median of --repeats calls after a warm-up) for:

  lax      jax.lax.conv_general_dilated (XLA derives both gradients as convolutions);
  im2col   the 9 shifted copies of x concatenated along channels, one matrix product (the
           gradients are matrix products too; what layers.Conv does on maps of ≤ 8×8 pixels);
  hybrid   lax forward and input gradient, weight gradient as an im2col matrix product.

Printed: milliseconds per call and the largest relative difference of the weight gradient from
lax's. Shapes: the 'small' network's levels at 64² crops (batch 8, 32–64 channels) and the paper
network's (128–256 channels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = [((8, 64, 64, 32), 32), ((8, 32, 32, 64), 64), ((8, 16, 16, 64), 64),
          ((8, 64, 64, 128), 128), ((8, 32, 32, 256), 256)]


def conv_lax(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _columns(x):
    b, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)


def conv_im2col(x, k):
    return jnp.dot(_columns(x), k.reshape(9 * x.shape[-1], -1))


@jax.custom_vjp
def conv_hybrid(x, k):
    return conv_lax(x, k)


def _hybrid_fwd(x, k):
    return conv_lax(x, k), (x, k)


def _hybrid_bwd(res, g):
    x, k = res
    gx = conv_lax(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2))  # correlation with the flipped kernel
    gk = jnp.einsum("bhwk,bhwo->ko", _columns(x), g).reshape(k.shape)
    return gx, gk


conv_hybrid.defvjp(_hybrid_fwd, _hybrid_bwd)


def time_grad(fn, shape, cout, repeats):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    k = jnp.asarray(0.05 * rng.standard_normal((3, 3, shape[-1], cout)), jnp.float32)
    grad = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.square(fn(x, k))), argnums=(0, 1)))
    out = jax.block_until_ready(grad(x, k))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(x, k))
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (median)")
    args = p.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
    print("| input (B, H, W, C) | out C | lax ms | im2col ms | hybrid ms | weight-grad rel. diff |")
    print("|---|---|---|---|---|---|")
    for shape, cout in SHAPES:
        res = {name: time_grad(fn, shape, cout, args.repeats)
               for name, fn in (("lax", conv_lax), ("im2col", conv_im2col), ("hybrid", conv_hybrid))}
        ref = res["lax"][1][1]
        diff = float(jnp.max(jnp.abs(res["hybrid"][1][1] - ref)) / jnp.max(jnp.abs(ref)))
        print(f"| {shape} | {cout} | {1e3 * res['lax'][0]:.1f} | {1e3 * res['im2col'][0]:.1f} | "
              f"{1e3 * res['hybrid'][0]:.1f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
