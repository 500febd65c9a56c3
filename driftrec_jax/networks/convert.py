"""Import (and export) of NCSN++ weights in the DriftRec authors' PyTorch layout (docs/NETWORK.md).

The authors' module keeps its layers in a list ``all_modules`` (order: :func:`module_plan`) plus
an ``output_layer``; ``tests/fixtures/ncsnpp_paper_state_dict_keys.txt`` lists every name and shape of
the paper configuration. Layout changes: convolutions OIHW → HWIO, Linear (out, in) → Dense
(in, out), GroupNorm weight → scale; the attention ``NIN_k.W`` (in, out) and the Fourier ``W`` are
taken as they are. ``W`` goes to the ``'constants'`` collection.

Sources: a mapping of arrays (numpy, or torch tensors), an ``.npz`` file, or a PyTorch Lightning
``.ckpt`` (its ``state_dict``, keys usually prefixed ``dnn.``, or its EMA ``shadow_params``, a list
in the order of the module's parameters). PyTorch is optional: it is imported only to read
``.ckpt``/``.pt`` files. Any missing, unexpected or mis-shaped key is an error that names the key.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

from driftrec_jax.networks.ncsnpp import NCSNpp, module_plan
from driftrec_jax.networks.presets import make_network

_ANCHOR = "output_layer.weight"


def _net(network: Union[str, Mapping, NCSNpp], variant: str) -> NCSNpp:
    return network if isinstance(network, NCSNpp) else make_network(network, variant)


def expected_shapes(net: NCSNpp) -> dict[tuple, tuple]:
    """Flat {(collection, *path): shape} of ``net``'s variables, computed without allocating them."""
    size = net.multiple
    x = jax.ShapeDtypeStruct((1, size, size, net.in_channels), jnp.float32)
    args = (x, jax.ShapeDtypeStruct((1,), jnp.float32)) if net.conditional else (x,)
    shapes = jax.eval_shape(net.init, jax.random.key(0), *args)
    return {k: tuple(v.shape) for k, v in flatten_dict(unfreeze(shapes)).items()}


# Registration order of the submodules inside one torch block (ResBlock, AttnBlock, Combine):
# torch's state dict follows it, and each layer lists its weight before its bias.
_SUB_ORDER = {name: i for i, name in enumerate(
    ("GroupNorm_0", "NIN_0", "NIN_1", "NIN_2", "NIN_3", "Conv_0", "Dense_0", "GroupNorm_1", "Conv_1", "Conv_2"))}


def torch_names(net: NCSNpp, shapes: Optional[Mapping[tuple, tuple]] = None) -> dict[tuple, str]:
    """{flat Flax key: the authors' state-dict name}, in the order of the authors' state dict.

    That order is ``output_layer`` first, then ``all_modules`` by index; inside a block the torch
    registration order (GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, Conv_2 in a residual
    block), weight before bias. (Flax sorts its variable names, so the order is rebuilt here.)
    ``shapes``: :func:`expected_shapes` of ``net`` if already computed.
    """
    index = {name: i for i, (name, _) in enumerate(module_plan(net)[:-1])}
    named = []
    for key in (shapes if shapes is not None else expected_shapes(net)):
        collection, top, *rest = key
        rank = -1 if top == "output_layer" else index[top]
        head = "output_layer" if top == "output_layer" else f"all_modules.{rank}"
        if collection == "constants":
            named.append(((rank, 0, 0), key, f"{head}.W"))
            continue
        *subs, leaf = rest
        sub_rank = _SUB_ORDER[subs[0]] if subs else 0
        leaf_rank = 1 if leaf in ("bias", "b") else 0
        name = ".".join([head, *subs, {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])
        named.append(((rank, sub_rank, leaf_rank), key, name))
    named.sort(key=lambda item: item[0])
    return {key: name for _, key, name in named}


def torch_key(net: NCSNpp, flax_key: tuple) -> str:
    """The authors' state-dict name of one flat Flax variable key ``(collection, module, ..., leaf)``."""
    return torch_names(net)[tuple(flax_key)]


def _torch_shape(flax_key: tuple, shape: tuple) -> tuple:
    """Shape in the torch layout: conv HWIO → OIHW, Dense (in, out) → Linear (out, in)."""
    if flax_key[-1] != "kernel":
        return tuple(shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape[::-1])


def torch_shapes(network: Union[str, Mapping, NCSNpp] = "paper", variant: str = "score") -> dict[str, tuple]:
    """{authors' name: torch shape} of a network, in the authors' state-dict order, with no weights.

    For the paper's score network this is ``ncsnpp_paper_state_dict_keys.txt`` (647 entries).
    """
    net = _net(network, variant)
    shapes = expected_shapes(net)
    return {name: _torch_shape(key, shapes[key]) for key, name in torch_names(net, shapes).items()}


def _from_torch(flax_key: tuple, array: np.ndarray) -> np.ndarray:
    if flax_key[-1] == "kernel":
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T
    return array


def _to_torch(flax_key: tuple, array: np.ndarray) -> np.ndarray:
    if flax_key[-1] == "kernel":
        return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
    return array


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _strip_prefix(state_dict: Mapping[str, Any], prefix: Optional[str]) -> dict[str, Any]:
    if prefix is None:
        candidates = sorted({k[: -len(_ANCHOR)] for k in state_dict if k.endswith(_ANCHOR)}, key=len)
        if not candidates:
            raise KeyError(f"no '{_ANCHOR}' key in the state dict: is it an NCSN++ state dict?")
        if len(candidates) > 1 and "dnn." in candidates:
            prefix = "dnn."
        elif len(candidates) > 1:
            raise KeyError(f"several networks in the state dict (prefixes {candidates}); pass prefix=")
        else:
            prefix = candidates[0]
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def params_from_torch_state_dict(state_dict: Mapping[str, Any], network: Union[str, Mapping, NCSNpp] = "paper",
                                 variant: Optional[str] = None, prefix: Optional[str] = None) -> dict:
    """Flax variables ``{'params': ..., ['constants': ...]}`` from the authors' PyTorch state dict.

    ``network`` is a preset name, a config mapping or an :class:`NCSNpp`; ``variant`` ('score' or
    'regression') is inferred from the presence of the Fourier ``W`` when None. ``prefix`` (e.g.
    ``'dnn.'``) is stripped; None finds it from the ``output_layer.weight`` key.
    """
    sd = _strip_prefix(state_dict, prefix)
    if variant is None:
        variant = "score" if "all_modules.0.W" in sd else "regression"
    net = _net(network, variant)
    shapes = expected_shapes(net)
    names = {name: key for key, name in torch_names(net, shapes).items()}
    missing = [n for n in names if n not in sd]
    extra = [n for n in sd if n not in names]
    if missing:
        raise KeyError(f"state dict lacks {len(missing)} key(s) of this network, first {missing[0]!r} "
                       f"(network {network!r}, variant {variant!r})")
    if extra:
        raise KeyError(f"state dict has {len(extra)} key(s) this network does not, first {extra[0]!r} "
                       f"(network {network!r}, variant {variant!r})")
    flat = {}
    for name, fkey in names.items():
        array = _as_numpy(sd[name])
        want = _torch_shape(fkey, shapes[fkey])
        if array.shape != want:
            raise ValueError(f"key {name!r} has shape {array.shape}, expected {want}")
        flat[fkey] = jnp.asarray(_from_torch(fkey, array))
    return unflatten_dict(flat)


def torch_state_dict_from_params(variables: Mapping, network: Union[str, Mapping, NCSNpp] = "paper",
                                 variant: str = "score") -> dict[str, np.ndarray]:
    """The inverse of :func:`params_from_torch_state_dict`: numpy arrays under the authors' names
    (and in their state-dict order), e.g. to save as ``.npz`` or to load into their module."""
    net = _net(network, variant)
    flat = flatten_dict(unfreeze(variables))
    names = torch_names(net)
    missing = [k for k in names if k not in flat]
    if missing:
        raise KeyError(f"variables lack {'/'.join(missing[0])} ({len(missing)} missing) for this network")
    return {name: _to_torch(key, np.asarray(flat[key], np.float32)) for key, name in names.items()}


def params_from_lightning_checkpoint(checkpoint: Mapping[str, Any], network: Union[str, Mapping, NCSNpp] = "paper",
                                     variant: Optional[str] = None, use_ema: bool = True,
                                     prefix: Optional[str] = None) -> dict:
    """Variables from a loaded Lightning checkpoint dict (``state_dict``, optional ``ema``).

    With ``use_ema`` and an ``ema`` entry holding ``shadow_params`` (a list in the order of the
    module's parameters, i.e. of ``state_dict``), the EMA weights replace the raw ones. An ``ema``
    that is itself a name → array mapping is used as a state dict.
    """
    if "state_dict" not in checkpoint:
        raise KeyError("checkpoint has no 'state_dict' entry")
    state_dict = dict(checkpoint["state_dict"])
    ema = checkpoint.get("ema") if use_ema else None
    if ema is not None:
        shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else ema
        if isinstance(shadow, Mapping):
            state_dict = dict(shadow)
        elif shadow is not None:
            shadow = list(shadow)
            keys = list(state_dict)
            if len(keys) != len(shadow):
                # Only the network's own entries may be parameters.
                net_prefix = prefix if prefix is not None else next(
                    (k[: -len(_ANCHOR)] for k in keys if k.endswith(_ANCHOR)), "")
                keys = [k for k in keys if k.startswith(net_prefix)]
            if len(keys) != len(shadow):
                raise ValueError(f"EMA has {len(shadow)} shadow parameters but the state dict {len(keys)} entries")
            for key, value in zip(keys, shadow):
                value = _as_numpy(value)
                have = _as_numpy(state_dict[key]).shape
                if value.shape != have:
                    raise ValueError(f"EMA shadow parameter for {key!r} has shape {value.shape}, state dict {have}")
                state_dict[key] = value
    return params_from_torch_state_dict(state_dict, network, variant, prefix)


def load_torch_checkpoint(path: Union[str, os.PathLike], network: Union[str, Mapping, NCSNpp] = "paper",
                          variant: Optional[str] = None, use_ema: bool = True, prefix: Optional[str] = None,
                          weights_only: bool = True) -> dict:
    """Variables from a file: ``.npz`` (state-dict arrays) or a torch ``.ckpt``/``.pt``/``.pth``.

    Torch files need PyTorch (optional extra ``driftrec_jax[torch]``). A Lightning checkpoint
    (with ``state_dict``) goes through :func:`params_from_lightning_checkpoint`; a bare state dict
    through :func:`params_from_torch_state_dict`. ``weights_only=False`` unpickles arbitrary objects:
    use it only for files you trust.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if path.endswith(".npz"):
        with np.load(path) as data:
            return params_from_torch_state_dict({k: data[k] for k in data.files}, network, variant, prefix)
    try:
        import torch
    except ImportError as err:
        raise ImportError("reading PyTorch checkpoints needs torch: pip install 'driftrec_jax[torch]'") from err
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises UnpicklingError (or RuntimeError) for non-tensor objects
        if not weights_only:
            raise
        raise ValueError(f"{path}: torch.load(weights_only=True) refused it ({type(err).__name__}); if you trust "
                         f"the file, pass weights_only=False") from err
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        return params_from_lightning_checkpoint(checkpoint, network, variant, use_ema, prefix)
    return params_from_torch_state_dict(checkpoint, network, variant, prefix)
