"""Building blocks of NCSN++ (Song et al. 2021, as used by DriftRec; docs/NETWORK.md).

All blocks take NHWC arrays. Parameters are float32 (``param_dtype``); convolutions and
matrix products run in ``dtype`` (float32 or bfloat16); group normalisation and the attention
softmax always run in float32.

Initialisation follows the published design: variance scaling (fan_avg, uniform) with scale 1 for
most layers, 0.1 for the attention projections q/k/v, and a near-zero scale (1e-10, "init_scale
0") for the last layer of every residual branch, so that each block starts as the identity.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# The FIR resampling kernel [1, 3, 3, 1] is separable: per axis it is [1, 3, 3, 1] / 8 for
# downsampling and 2 * [1, 3, 3, 1] / 8 = [1, 3, 3, 1] / 4 for upsampling (gain 1, factor 2).
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def default_init(scale: float = 1.0):
    """Variance-scaling (fan_avg, uniform) initialiser; scale 0 means 1e-10 (near zero)."""
    return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def _shift(x: jnp.ndarray, axis: int, offset: int) -> jnp.ndarray:
    """``y[i] = x[i + offset]`` along ``axis`` with zeros outside (offset is +1 or -1)."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    if offset > 0:
        pad[axis] = (0, offset)
        return jax.lax.slice_in_dim(jnp.pad(x, pad), offset, offset + n, axis=axis)
    pad[axis] = (-offset, 0)
    return jax.lax.slice_in_dim(jnp.pad(x, pad), 0, n, axis=axis)


def _fir_up_axis(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    # upfirdn with up=2, pad (2, 1) and kernel [1,3,3,1]/4 gives
    #   out[2i] = (x[i-1] + 3 x[i]) / 4,   out[2i+1] = (3 x[i] + x[i+1]) / 4   (zeros outside).
    even = (_shift(x, axis, -1) + 3.0 * x) * 0.25
    odd = (3.0 * x + _shift(x, axis, 1)) * 0.25
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return out.reshape(shape)


def _fir_down_axis(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    # pad (1, 1), correlate with [1,3,3,1]/8, keep every 2nd sample; n // 2 outputs (an odd
    # length loses its last sample, as upfirdn2d's output size (n + 2 - 4) // 2 + 1 does):
    #   out[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8   (zeros outside).
    n = x.shape[axis]
    m = n // 2
    even = jax.lax.slice_in_dim(x, 0, 2 * m, stride=2, axis=axis)      # x[2i]
    odd = jax.lax.slice_in_dim(x, 1, 2 * m, stride=2, axis=axis)       # x[2i+1]
    if n % 2:   # x[2i+2] exists for every i: the last one is x[n-1]
        even_next = jax.lax.slice_in_dim(x, 2, n, stride=2, axis=axis)
    else:
        even_next = _shift(even, axis, 1)
    return (_shift(odd, axis, -1) + 3.0 * (even + odd) + even_next) * 0.125


def fir_upsample(x: jnp.ndarray) -> jnp.ndarray:
    """Upsample NHWC ×2 with the FIR kernel outer([1,3,3,1])/64 · 4 (zero insertion, pad (2,1)).

    Equals ``upfirdn2d(x, 4k, up=2, pad=(2, 1))`` of the published NCSN++, computed per axis.
    """
    if x.ndim != 4:
        raise ValueError(f"fir_upsample expects NHWC, got shape {x.shape}")
    return _fir_up_axis(_fir_up_axis(x, 1), 2)


def fir_downsample(x: jnp.ndarray) -> jnp.ndarray:
    """Downsample NHWC ×2 with the FIR kernel outer([1,3,3,1])/64 (pad (1,1), stride 2).

    Equals ``upfirdn2d(x, k, down=2, pad=(1, 1))`` of the published NCSN++. An odd height or
    width n gives n // 2 outputs, as there (the last row/column only enters the previous output).
    """
    if x.ndim != 4:
        raise ValueError(f"fir_downsample expects NHWC, got shape {x.shape}")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"fir_downsample needs height and width of at least 2, got {x.shape[1:3]}")
    return _fir_down_axis(_fir_down_axis(x, 1), 2)


def num_groups(channels: int) -> int:
    """Group count of every GroupNorm in NCSN++: min(channels // 4, 32)."""
    return max(1, min(channels // 4, 32))


class GroupNorm(nn.Module):
    """GroupNorm(min(C//4, 32) groups, eps 1e-6, affine), computed in float32, cast to ``dtype``.

    Computed as per-channel statistics over H, W (contiguous reductions in NHWC, 5-7x faster on
    CPU than reducing a (B, H, W, G, C/G) view), averaged within each group, then one
    multiply-add per element. The variance is the two-pass mean of (x − mean)², not E[x²] − E[x]².
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, _, _, c = x.shape
        g = num_groups(c)
        if c % g:
            raise ValueError(f"GroupNorm: {c} channels do not split into {g} groups")
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(jnp.float32)

        def group_mean(per_channel):  # (B, C) -> the mean of each channel's group, as (B, 1, 1, C)
            m = per_channel.reshape(b, g, c // g).mean(axis=-1, keepdims=True)
            return jnp.broadcast_to(m, (b, g, c // g)).reshape(b, 1, 1, c)

        x = x.astype(jnp.float32)
        mean = group_mean(jnp.mean(x, axis=(1, 2)))
        var = group_mean(jnp.mean(jnp.square(x - mean), axis=(1, 2)))
        a = scale * jax.lax.rsqrt(var + 1e-6)
        return (x * a + (bias - mean * a)).astype(self.dtype)


# A 3×3 convolution of a map with at most this many pixels (H·W) runs as one matrix product of
# its 9 shifted copies ("im2col"). XLA's CPU convolution handles such tiny maps badly (it reverses
# the kernel, 2-20x slower at 1×1..8×8 with 256 channels); on larger maps its convolution wins.
SMALL_MAP_PIXELS = 64


class Conv(nn.Module):
    """k×k convolution (k odd), stride 1, zero padding k // 2, with bias; kernel HWIO (``kernel``).

    Same variables and result as ``nn.Conv(features, (k, k), padding=k // 2)``; small maps take
    the im2col path (see ``SMALL_MAP_PIXELS``).
    """

    features: int
    kernel_size: int = 3
    init_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", default_init(self.init_scale), (k, k, x.shape[-1], self.features),
                            self.param_dtype).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(self.dtype)
        x = x.astype(self.dtype)
        b, hgt, wid, c = x.shape
        if k == 1:
            y = jnp.dot(x, kernel[0, 0])
        elif hgt * wid <= SMALL_MAP_PIXELS:
            p = k // 2
            xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            cols = jnp.concatenate([xp[:, i:i + hgt, j:j + wid, :] for i in range(k) for j in range(k)], axis=-1)
            y = jnp.dot(cols, kernel.reshape(k * k * c, self.features))
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((k // 2, k // 2),) * 2,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


def conv(features: int, kernel: int, init_scale: float = 1.0, dtype=jnp.float32,
         param_dtype=jnp.float32, name: Optional[str] = None) -> Conv:
    """A 1×1 or 3×3 convolution with zero padding 'SAME' (1 for 3×3) and a bias."""
    return Conv(features, kernel, init_scale=init_scale, dtype=dtype, param_dtype=param_dtype, name=name)


class ResBlock(nn.Module):
    """BigGAN-style residual block of NCSN++ (optionally FIR up- or down-sampling).

    h = act(GN0(x)); [FIR up/down of h and x]; h = Conv_0 3×3(h); h += Dense_0(act(temb));
    h = act(GN1(h)); h = Conv_1 3×3(h) (init_scale 0); x = Conv_2 1×1(x) if the shape changes;
    returns (x + h) / √2 (skip_rescale).
    """

    out_ch: int
    up: bool = False
    down: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb=None):
        if self.up and self.down:
            raise ValueError("ResBlock cannot both upsample and downsample")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        in_ch = x.shape[-1]
        h = nn.silu(GroupNorm(name="GroupNorm_0", **kw)(x))
        if self.up:
            h, x = fir_upsample(h), fir_upsample(x)
        elif self.down:
            h, x = fir_downsample(h), fir_downsample(x)
        h = conv(self.out_ch, 3, name="Conv_0", **kw)(h)
        if temb is not None:
            h = h + nn.Dense(self.out_ch, kernel_init=default_init(), name="Dense_0", **kw)(
                nn.silu(temb))[:, None, None, :]
        h = nn.silu(GroupNorm(name="GroupNorm_1", **kw)(h))
        h = conv(self.out_ch, 3, init_scale=self.init_scale, name="Conv_1", **kw)(h)
        if in_ch != self.out_ch or self.up or self.down:
            x = conv(self.out_ch, 1, name="Conv_2", **kw)(x)
        return (x + h) * (1.0 / math.sqrt(2.0))


class NIN(nn.Module):
    """Per-pixel linear map x @ W + b with W of shape (in, out) (the torch layout, untransposed)."""

    features: int
    init_scale: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.features), self.param_dtype)
        b = self.param("b", nn.initializers.zeros, (self.features,), self.param_dtype)
        return jnp.dot(x.astype(self.dtype), w.astype(self.dtype)) + b.astype(self.dtype)


class AttnBlock(nn.Module):
    """Self-attention over all H·W positions, one head: returns (x + NIN_3(softmax(qkᵀ/√C) v)) / √2."""

    init_scale: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, hgt, wid, c = x.shape
        h = GroupNorm(name="GroupNorm_0", **kw)(x)
        q = NIN(c, name="NIN_0", **kw)(h).reshape(b, hgt * wid, c)
        k = NIN(c, name="NIN_1", **kw)(h).reshape(b, hgt * wid, c)
        v = NIN(c, name="NIN_2", **kw)(h).reshape(b, hgt * wid, c)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * (c ** -0.5)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        h = jnp.einsum("bqk,bkc->bqc", weights, v).reshape(b, hgt, wid, c)
        h = NIN(c, init_scale=self.init_scale, name="NIN_3", **kw)(h)
        return (x + h) * (1.0 / math.sqrt(2.0))


class Combine(nn.Module):
    """Input-skip combiner ('sum'): Conv_0 1×1 of the input pyramid added to h."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pyramid, h):
        return conv(h.shape[-1], 1, name="Conv_0", dtype=self.dtype, param_dtype=self.param_dtype)(pyramid) + h


def fourier_features(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """Gaussian Fourier features [sin(2π x W), cos(2π x W)] of a (B,) array (sin first)."""
    proj = x[:, None] * w[None, :] * (2.0 * jnp.pi)
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
