"""NCSN++ (Song et al. 2021) as used by DriftRec, in Flax linen (DriftRec paper Sec. II-D;
docs/NETWORK.md).

``NCSNpp(...)(x, sigma)`` maps an NHWC image batch to an NHWC 3-channel output.

* Score variant (``conditional=True, scale_by_sigma=True``): x = concat(x_t, y) (6 channels);
  the network is conditioned on Gaussian Fourier features of log σ and returns
  output_layer(U-Net(x)) / σ.
* Regression variant (``conditional=False, scale_by_sigma=False``): x = y (3 channels), no noise
  embedding (and no ``Dense_0`` in the residual blocks); returns output_layer(U-Net(x)).

Architecture (the paper configuration): BigGAN residual blocks with FIR [1,3,3,1] resampling,
skip rescaling by 1/√2, progressive 'input_skip' input pyramid combined by summation, progressive
'output_skip' output pyramid, self-attention at the nominal resolutions in ``attn_resolutions``
(nominal resolution of level i = image_size / 2^i, whatever the input size), SiLU activations.

Any input height and width is accepted; ``size_mode`` chooses how sizes that are not multiples of
2^(L−1) (L = len(ch_mult)) pass through the U-Net:

* ``'per_level'`` (default, what the authors' network does; matches their outputs): every FIR
  downsampling of an n-pixel side gives n // 2 (an odd side drops to the floor), and in the up
  path each ×2-upsampled map (features and output pyramid) that comes out one pixel short of the
  skip it meets is padded at the bottom/right by replicating its last row/column. The output has
  the input's size with no cropping. Only sides below 2^(L−1), where the floor would reach 0, are
  first edge-padded at the bottom/right to 2^(L−1) and cropped back (the authors' network fails there).
* ``'pad_input'``: the input is padded once to a multiple of 2^(L−1) (``pad_mode``, default
  replicate 'edge'; ``pad_where`` 'end' or 'center') and the output cropped back.

For sides that are multiples of 2^(L−1) both modes are the same network.

A space-to-depth stem (``stem`` s > 1, the ``cpu`` preset): the (padded) input is
pixel-unshuffled s× (each s×s block of pixels becomes s²·C channels), the U-Net runs on that
map (its top level at 1/s of the input's resolution, its input and output pyramids with s²·C
channels), and the output layer's s²·3 channels are pixel-shuffled back to full resolution. No
convolution then runs at the input's resolution. Sides are first edge-padded at the bottom/right to
a multiple of s (and cropped back), so any size is accepted; ``multiple`` is s·2^(L−1).

Variables: ``{'params': ...}`` holds everything trained; the Fourier frequencies W (fixed, drawn
from N(0, 16²) at init, never trained) live in the separate collection ``'constants'`` so that an
optimiser given ``variables['params']`` never touches them. Apply with the whole variables dict.

Submodules are named after what they are (``down2_res0``, ``mid_attn``, ``up1_skip_conv``...);
:func:`module_plan` lists them in the order of the authors' ``all_modules`` list, which is what
the weight importer (``convert.py``) relies on.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from driftrec_jax.networks.layers import (
    AttnBlock,
    Combine,
    GroupNorm,
    ResBlock,
    conv,
    default_init,
    fir_downsample,
    fir_upsample,
    fourier_features,
)

Dtype = Any

# Kinds of top-level modules in module_plan (they decide how torch weights are converted).
FOURIER, DENSE, CONV, NORM, RESBLOCK, ATTN, COMBINE = (
    "fourier", "dense", "conv", "groupnorm", "resblock", "attn", "combine")

# How sizes that are not multiples of 2^(L-1) pass through the U-Net (see the module docstring).
SIZE_MODES = ("per_level", "pad_input")


def fit_to(x: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Pad NHWC ``x`` at the bottom/right, replicating its last row/column, to ``target``'s H, W.

    After a ×2 upsampling of a floor-halved odd side the map is one pixel short of the skip it
    meets; the authors' network pads it this way ('per_level' sizing). Sizes never exceed the target.
    """
    dh, dw = target.shape[1] - x.shape[1], target.shape[2] - x.shape[2]
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot fit a {x.shape[1:3]} map to a smaller {target.shape[1:3]} one")
    if dh or dw:
        x = jnp.pad(x, ((0, 0), (0, dh), (0, dw), (0, 0)), mode="edge")
    return x


def space_to_depth(x: jnp.ndarray, s: int) -> jnp.ndarray:
    """(B, H, W, C) → (B, H/s, W/s, s·s·C): each s×s block of pixels becomes one pixel
    (channel index (row·s + column)·C + c). H and W must be multiples of s."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // s, w // s, s * s * c)


def depth_to_space(x: jnp.ndarray, s: int) -> jnp.ndarray:
    """The inverse of :func:`space_to_depth`: (B, h, w, s·s·C) → (B, s·h, s·w, C)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, s, s, c // (s * s)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * s, w * s, c // (s * s))


def module_plan(net: "NCSNpp") -> list[tuple[str, str]]:
    """(name, kind) of every top-level submodule, in the order of the authors' ``all_modules``.

    The trailing ``output_layer`` (a separate attribute in the authors' code) is listed last.
    """
    levels = len(net.ch_mult)
    plan: list[tuple[str, str]] = []
    if net.conditional:
        plan += [("fourier_W", FOURIER), ("embed_dense0", DENSE), ("embed_dense1", DENSE)]
    plan.append(("conv_in", CONV))
    for i in range(levels):
        for j in range(net.num_res_blocks):
            plan.append((f"down{i}_res{j}", RESBLOCK))
            if net.has_attention(i):
                plan.append((f"down{i}_attn{j}", ATTN))
        if i != levels - 1:
            plan += [(f"down{i}_downsample", RESBLOCK), (f"down{i}_combine", COMBINE)]
    plan += [("mid_res0", RESBLOCK), ("mid_attn", ATTN), ("mid_res1", RESBLOCK)]
    for i in reversed(range(levels)):
        for j in range(net.num_res_blocks + 1):
            plan.append((f"up{i}_res{j}", RESBLOCK))
        if net.has_attention(i):
            plan.append((f"up{i}_attn", ATTN))
        plan += [(f"up{i}_skip_norm", NORM), (f"up{i}_skip_conv", CONV)]
        if i != 0:
            plan.append((f"up{i}_upsample", RESBLOCK))
    plan.append(("output_layer", CONV))
    return plan


class NCSNpp(nn.Module):
    """NCSN++ U-Net; ``__call__(x, sigma=None)`` with x NHWC (any H, W) and sigma of shape () or (B,).

    Fields: ``nf`` base width; ``ch_mult`` width multiplier per level; ``num_res_blocks`` per level;
    ``attn_resolutions`` nominal resolutions with self-attention; ``image_size`` nominal input size
    (only used to place attention); ``in_channels`` 6 (score) or 3 (regression); ``conditional``
    (embed log σ); ``scale_by_sigma`` (divide the output by σ); ``fourier_scale`` (std of W);
    ``init_scale`` (0: residual branches start near zero); ``stem`` space-to-depth factor (1: none);
    ``size_mode`` 'per_level' (the
    authors' handling of odd sizes) or 'pad_input', with ``pad_mode``/``pad_where`` for the latter's
    padding to a multiple of 2^(L−1); ``dtype`` compute dtype, ``param_dtype`` parameters.
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    image_size: int = 256
    in_channels: int = 6
    out_channels: int = 3
    conditional: bool = True
    scale_by_sigma: bool = True
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    stem: int = 1
    size_mode: str = "per_level"
    pad_mode: str = "edge"
    pad_where: str = "end"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def has_attention(self, level: int) -> bool:
        """Whether ``level`` has self-attention (nominal resolution image_size / (stem·2^level))."""
        return (self.image_size // (self.stem * 2 ** level)) in tuple(self.attn_resolutions)

    @property
    def multiple(self) -> int:
        """The network's total downsampling, stem·2^(num_levels − 1) ('pad_input' pads to a multiple)."""
        return self.stem * 2 ** (len(self.ch_mult) - 1)

    def padding(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) input padding applied before the U-Net (cropped after).

        'pad_input': up to the next multiple of ``multiple``; 'per_level': only up to ``multiple``
        for a side shorter than that, and to a multiple of ``stem`` (bottom/right), none otherwise.
        """
        if self.size_mode not in SIZE_MODES:
            raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {self.size_mode!r}")
        if not isinstance(self.stem, int) or self.stem < 1:
            raise ValueError(f"stem must be a positive integer, got {self.stem!r}")
        if self.size_mode == "per_level":
            return tuple((0, max(self.multiple, n + (-n % self.stem)) - n) for n in (height, width))
        pads = []
        for n in (height, width):
            extra = -n % self.multiple
            if self.pad_where == "end":
                pads.append((0, extra))
            elif self.pad_where == "center":
                pads.append((extra // 2, extra - extra // 2))
            else:
                raise ValueError(f"pad_where must be 'end' or 'center', got {self.pad_where!r}")
        return tuple(pads)

    @nn.compact
    def __call__(self, x: jnp.ndarray, sigma: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"NCSNpp expects NHWC input with {self.in_channels} channels, got shape {x.shape}")
        if len(self.ch_mult) < 1 or self.num_res_blocks < 1:
            raise ValueError("NCSNpp needs at least one level and one residual block per level")
        batch, height, width, _ = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        levels = len(self.ch_mult)
        plan = iter(module_plan(self))

        def take(kind: str) -> str:
            name, k = next(plan)
            assert k == kind, (name, k, kind)
            return name

        (top, bottom), (left, right) = self.padding(height, width)
        pad_mode = self.pad_mode if self.size_mode == "pad_input" else "edge"
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode=pad_mode)
        x = x.astype(self.dtype)
        if self.stem > 1:
            x = space_to_depth(x, self.stem)

        if (self.conditional or self.scale_by_sigma) and sigma is None:
            raise ValueError("the score NCSNpp (conditional / scale_by_sigma) needs sigma")
        if sigma is not None:
            sigma = jnp.asarray(sigma, jnp.float32)
            if sigma.size not in (1, batch):
                raise ValueError(f"sigma must be a scalar or have shape ({batch},), got {sigma.shape}")
            sigma = jnp.broadcast_to(sigma.reshape(-1), (batch,))
        temb = None
        if self.conditional:
            name = take(FOURIER)
            if not self.is_initializing() and not self.has_variable("constants", name):
                raise ValueError("NCSNpp variables lack the 'constants' collection (Fourier W): "
                                 "apply with the whole variables dict returned by init/convert")
            w = self.variable("constants", name, lambda: self.fourier_scale * jax.random.normal(
                self.make_rng("params"), (self.nf,), jnp.float32)).value
            emb = fourier_features(jnp.log(sigma), w).astype(self.dtype)
            temb = nn.Dense(4 * self.nf, kernel_init=default_init(), name=take(DENSE), **kw)(emb)
            temb = nn.Dense(4 * self.nf, kernel_init=default_init(), name=take(DENSE), **kw)(nn.silu(temb))

        # Down path; the input pyramid is the raw input, FIR-downsampled once per level.
        pyramid = x
        hs = [conv(self.nf, 3, name=take(CONV), **kw)(x)]
        for i in range(levels):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.nf * self.ch_mult[i], init_scale=self.init_scale, name=take(RESBLOCK), **kw)(hs[-1], temb)
                if self.has_attention(i):
                    h = AttnBlock(init_scale=self.init_scale, name=take(ATTN), **kw)(h)
                hs.append(h)
            if i != levels - 1:
                h = ResBlock(hs[-1].shape[-1], down=True, init_scale=self.init_scale, name=take(RESBLOCK), **kw)(hs[-1], temb)
                pyramid = fir_downsample(pyramid)
                hs.append(Combine(name=take(COMBINE), **kw)(pyramid, h))

        h = hs[-1]
        h = ResBlock(h.shape[-1], init_scale=self.init_scale, name=take(RESBLOCK), **kw)(h, temb)
        h = AttnBlock(init_scale=self.init_scale, name=take(ATTN), **kw)(h)
        h = ResBlock(h.shape[-1], init_scale=self.init_scale, name=take(RESBLOCK), **kw)(h, temb)

        # Up path with the output pyramid ('output_skip').
        out = None
        for i in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                h = ResBlock(self.nf * self.ch_mult[i], init_scale=self.init_scale, name=take(RESBLOCK), **kw)(
                    jnp.concatenate([h, hs.pop()], axis=-1), temb)
            if self.has_attention(i):
                h = AttnBlock(init_scale=self.init_scale, name=take(ATTN), **kw)(h)
            skip = nn.silu(GroupNorm(name=take(NORM), **kw)(h))
            skip = conv(pyramid.shape[-1], 3, init_scale=self.init_scale, name=take(CONV), **kw)(skip)
            out = skip if out is None else fit_to(fir_upsample(out), skip) + skip
            if i != 0:
                h = ResBlock(h.shape[-1], up=True, init_scale=self.init_scale, name=take(RESBLOCK), **kw)(h, temb)
                h = fit_to(h, hs[-1])
        assert not hs

        out = conv(self.out_channels * self.stem ** 2, 1, name=take(CONV), **kw)(out).astype(jnp.float32)
        if self.stem > 1:
            out = depth_to_space(out, self.stem)
        if self.scale_by_sigma:
            out = out / sigma[:, None, None, None]
        return out[:, top:top + height, left:left + width, :]


def count_params(variables) -> int:
    """Number of scalars in a variables pytree (params and constants, as the torch state dict counts)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(variables)))
