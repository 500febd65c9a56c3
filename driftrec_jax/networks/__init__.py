"""NCSN++ networks: the Flax module, named presets, and import of the authors' PyTorch weights.

Importing this package never imports torch (only ``convert.load_torch_checkpoint`` does, on use).
"""

from driftrec_jax.networks.ncsnpp import NCSNpp, count_params, module_plan
from driftrec_jax.networks.presets import NETWORKS, VARIANTS, make_network, network_config

__all__ = ["NCSNpp", "NETWORKS", "VARIANTS", "count_params", "make_network", "module_plan", "network_config"]
