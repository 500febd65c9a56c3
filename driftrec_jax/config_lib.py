"""Loading configs (ml_collections ConfigDicts) by name or path, with command-line overrides.

Without ml_collections installed (a bare accelerator host), configs are built from the small
stand-in :class:`driftrec_jax.configdict.ConfigDict` instead, which offers the same access.

A config is a Python file in ``configs/`` defining ``get_config()``; configs edit the one default,
:func:`default_config`. ``load_config("small_ouve")`` finds ``configs/small_ouve.py`` (in the
working directory or next to the package); any path to a ``.py`` file works too. A config can
start from another one with :func:`sibling_config` (``configs/small_regression.py`` is
``small_ouve`` with another model variant).

Overrides use dotted field names, the way ml_collections' absl flags spell them::

    --config.train.num_steps=200  --config.model.network small  --config.sde.name=cosve
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Sequence

try:
    from ml_collections import ConfigDict
except ImportError:  # a host without ml_collections: the stand-in
    from .configdict import ConfigDict

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_search_path() -> list[str]:
    return [os.path.join(os.getcwd(), "configs"), os.path.join(_PACKAGE_ROOT, "configs")]


def resolve_config_path(name_or_path: str) -> str:
    if os.path.isfile(name_or_path):
        return name_or_path
    stem = name_or_path[:-3] if name_or_path.endswith(".py") else name_or_path
    for folder in config_search_path():
        candidate = os.path.join(folder, os.path.basename(stem) + ".py")
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"config not found: {name_or_path} (looked in {', '.join(config_search_path())})")


def load_config(name_or_path: str) -> ConfigDict:
    path = resolve_config_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"driftrec_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config()")
    return module.get_config()


def sibling_config(config_file: str, name: str) -> ConfigDict:
    """The config ``name`` from the folder of ``config_file`` (a config's ``__file__``), to edit."""
    return load_config(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py"))


def ddrm_prior(max_train_timestep: int) -> ConfigDict:
    """The ``ddrm`` block of a DDRM-JPEG prior's config: linear β 1e-4..0.02 over T = 1000
    (DDPM's schedule, as the DDRM-JPEG authors' code uses it)."""
    return ConfigDict(dict(
        num_timesteps=1000, beta_start=1e-4, beta_end=0.02, max_train_timestep=max_train_timestep))


def i2sb_bridge(cond_y: bool = True) -> ConfigDict:
    """The ``i2sb`` block of an I²SB config (driftrec_jax.i2sb, tasks.I2SBTask): the I²SB
    authors' symmetric schedule, N = 1000 steps, β from 1e-4 to β_max/N = 0.3/N and back;
    ``cond_y``: the network sees concat(x_n, y) (as the DriftRec paper trained I²SB, Sec. III-C)
    rather than x_n alone (the I²SB authors' default)."""
    return ConfigDict(dict(n_steps=1000, beta_min=1e-4, beta_max=0.3, cond_y=cond_y))


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as a path or a schedule name


def parse_overrides(args: Sequence[str]) -> dict:
    """``['--config.a.b=1', '--config.c', 'x']`` → ``{'a.b': 1, 'c': 'x'}``."""
    out, i = {}, 0
    args = list(args)
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ValueError(f"unrecognised argument {arg!r} (overrides look like --config.train.num_steps=100)")
        key = arg[len("--config."):]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ValueError(f"{arg} needs a value")
            i += 1
            value = args[i]
        out[key] = _parse_value(value)
        i += 1
    return out


def apply_overrides(config: ConfigDict, overrides: dict) -> ConfigDict:
    for key, value in overrides.items():
        node, *_ = config, None
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise KeyError(f"config has no field {key!r}")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node:
            raise KeyError(f"config has no field {key!r}")
        old = node[leaf]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return config


def default_config() -> ConfigDict:
    """The one default every config edits: DriftRec-OUVE with the paper's optimiser settings.

    Not meant to be run as it is (it names no data); see the other configs. Fields:
      model.network     network preset ('paper', 'small', 'tiny') and model.overrides of its fields
      model.variant     'score' (DriftRec), 'regression' (the L2 baseline), 'ddrm_eps' (DDRM-JPEG's
                        prior, block ddrm.*) or 'i2sb' (I²SB, block i2sb.*): driftrec_jax.tasks
      model.dtype       'float32' or 'bfloat16' compute (parameters stay float32)
      model.preconditioning  'none' (the paper's eq. (15)) or 'edm' (docs/TRAINING.md), with
                        model.sigma_data, the standard deviation of x0 − y
      sde.*             drift schedule name from driftrec_jax.sde.SDES and its parameters
      data.*            training pairs (see driftrec_jax/data.py); batch_size is the GLOBAL batch
      optim.*           AdamW, EMA
      train.*           steps, logging, sample grids, checkpoints, validation
      sample.*          sampler used for sample grids and validation (a model whose method samples
                        otherwise, e.g. DDRM, uses its own default)
    """
    c = ConfigDict()

    c.model = ConfigDict()
    c.model.network = "paper"
    c.model.overrides = ConfigDict()
    c.model.variant = "score"
    c.model.dtype = "float32"
    # "none": the paper's score network and loss, eq. (15); "edm": EDM-style preconditioning in
    # u = x − y (docs/TRAINING.md), with sigma_data the per-pixel std of x0 − y of the training pairs.
    c.model.preconditioning = "none"
    c.model.sigma_data = 0.04  # measured on small_ouve's training pairs (docs/TRAINING.md)

    c.sde = ConfigDict()
    c.sde.name = "ouve"
    c.sde.gamma = 1.0
    c.sde.sigma_min = 0.01
    c.sde.sigma_max = 1.0

    c.data = ConfigDict()
    c.data.source = ""  # folder, text file of paths, or 'tfds:NAME[/CONFIG]'
    c.data.split = "train"  # tfds split
    c.data.tfds_data_dir = None  # tfds data_dir (None: TFDS's default)
    c.data.tfds_image_key = None  # image feature of a tfds dataset (None: 'hr' or 'image')
    c.data.crop_size = 256
    c.data.crop_scale = (0.2, 1.0)  # area fraction of the random resized crop (the authors' code)
    c.data.batch_size = 32  # GLOBAL: the paper's 8 per GPU x 4 GPUs
    c.data.seed = 0
    c.data.q_range = (0, 100)  # inclusive range of the uniform integer JPEG quality
    c.data.cache = True  # keep decoded images in memory
    c.data.crops_per_image = 1
    c.data.shuffle_buffer = 1024  # tfds sources only; folders are permuted fully each epoch
    c.data.jpeg_backend = "tf"  # 'tf' or 'pillow' (same bytes, docs/DATA.md)
    c.data.pipeline = "tf"  # 'tf' (tf.data) or 'numpy' (threads + Pillow, no TensorFlow; same batches)
    c.data.num_parallel_calls = -1  # -1: autotune
    c.data.prefetch = 2

    c.optim = ConfigDict()
    c.optim.lr = 1e-4
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 0
    c.optim.grad_clip = 0.0  # 0 = off (the paper clips nothing)
    c.optim.ema_decay = 0.999

    c.train = ConfigDict()
    c.train.seed = 0
    c.train.num_steps = 26_700  # ~300 epochs of D2KF2K's 2840 training images at batch 32
    c.train.max_minutes = 0.0  # > 0: stop (checkpointed, resumable) after this many minutes of wall time
    # > 0: the same after this many minutes of the process's CPU time (all threads; equal-budget comparisons)
    c.train.max_cpu_minutes = 0.0
    c.train.steps_per_call = 1
    c.train.log_every = 50
    c.train.sample_every = 2000
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 3
    c.train.async_checkpoints = True
    c.train.eval_every = 0  # 0 = off; else validation metrics on train.eval_folder
    c.train.eval_folder = ""
    c.train.eval_images = 8
    c.train.eval_quality = 10
    c.train.num_sample_images = 4
    # A model file or workdir whose weights a new run starts from (parameters and EMA; fresh
    # optimiser, step 0). Ignored when the workdir already has a checkpoint to resume.
    c.train.init_from = ""

    # Sampler of the sample grids and validation (names as `driftrec restore --sampler`;
    # driftrec_jax.sampler_settings): steps, ODE tolerance, DDIM η, few-step time grid ("" = the
    # sampler's default).
    from .sampler_settings import DEFAULT_EPS, DEFAULT_TOL, default_setting

    default = default_setting()  # the same default as `driftrec restore`
    c.sample = ConfigDict()
    c.sample.sampler = default.sampler
    c.sample.steps = default.steps or 100
    c.sample.tol = DEFAULT_TOL
    c.sample.eta = 1.0 if default.eta is None else default.eta
    c.sample.grid = default.grid or ""
    c.sample.eps = DEFAULT_EPS
    return c
