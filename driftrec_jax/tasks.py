"""One class per method: what a model is, how it trains, and how it restores a tile.

    class            model-spec variant  the network sees              trained with                 samplers
    DriftRecTask     score               concat(x_t, y), σ_t           DSM, paper eq. (15)          em heun ode ddim dpm2m sde-dpm2m
    RegressionTask   regression          y                             L2 (the paper's baseline)    none: one network pass
    DDRMTask         ddrm_eps            x_t, σ_t (unconditional)      DDPM ε prediction            ddrm (needs the JPEG's tables)
    I2SBTask         i2sb                concat(x_n, y) or x_n, σ_n    I²SB's (x_n − x0)/σ_n        i2sb

Every task has the same face, and nothing outside this module asks which kind of model it holds:

    input_channels(), init_params(key, image_size), apply(params, x, sigma), loss(params, batch, key)
    sampler_names, default_setting(), check_setting(setting), setting_from_config(sample),
    evaluation_settings(settings), describe(setting)
    needs_tables: the tile restorer takes each tile's JPEG quantisation tables (DDRM)
    kind (the `kind` column of evaluate's tables), method (`driftrec restore --method`), title
    tile_restorer(setting, *, eps, color_correction, subsampling=None)
        -> fn(params, tiles, keys, aux) -> (restored, nfe)

`tile_restorer` is what restore, evaluate and training's sample grids and validation run: tiles
float32 (B, h, w, 3) JPEG tiles in [0, 1]; keys (B, 2) uint32, one PRNG key per tile (every tile is
sampled on its own key under `jax.vmap`, so its result never depends on its batch neighbours; the
network still sees the whole batch); aux None, or for `needs_tables` tasks the per-tile tables
((B, 8, 8) int32 luma, (B, 8, 8) int32 chroma) of a JPEG with chroma layout `subsampling`
(static). Returns the restored tiles in [0, 1] and the network calls per tile (int32 (B,)). The
jitted function is memoised per (task, setting, eps, colour correction, subsampling).

Models are built from a model spec (`build_task`; `models.model_spec` writes one from a
config): the `variant` picks the class, whose config block (`sde`, `ddrm`, `i2sb`) holds its
process parameters. Adding a method is one class here and its entry in `TASKS` (docs/DESIGN.md).

This module lives below `models.py` and `train_lib.py`, so that loading a model for restoration
never imports the optimiser or the training code.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import losses, sampler_settings
from .sampler_settings import SamplerSetting
from .score import make_predict_fn, make_score_fn

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Jitted tile restorers of this process, keyed by (task, setting, eps, colour correction, subsampling).
_RESTORERS: dict = {}


class Task:
    """The face every method shares (module docstring). Subclasses are frozen dataclasses (hashable:
    a task is a static argument and a memo key) with a `model` field (the Flax network)."""

    kind: ClassVar[str]
    method: ClassVar[str]
    title: ClassVar[str]
    variant: ClassVar[str]  # the model-spec variant
    config_block: ClassVar[Optional[str]] = None  # the config/spec block of the process parameters
    needs_tables: ClassVar[bool] = False
    sampler_names: ClassVar[tuple] = ()
    # When none of the settings asked for applies to this model: its default setting (with every
    # number of averaged samples asked for) instead of an error.
    default_when_none_apply: ClassVar[bool] = True
    conditional: ClassVar[bool] = True  # the network is conditioned on a noise level σ

    # --- the network ---------------------------------------------------------------------------
    def input_channels(self) -> int:
        return self.image_channels

    def apply(self, params, x, sigma):
        return self.model.apply(params, x, sigma)

    def init_params(self, key, image_size: int = 32):
        x = jnp.zeros((1, image_size, image_size, self.input_channels()), jnp.float32)
        return self.model.init(key, x, jnp.ones((1,), jnp.float32) if self.conditional else None)

    def loss(self, params, batch, key):
        raise NotImplementedError

    # --- sampler settings ----------------------------------------------------------------------
    def default_setting(self) -> SamplerSetting | None:
        """What restore, evaluate and training use when no setting of this task is named."""
        return sampler_settings.parse_setting(self.sampler_names[0]) if self.sampler_names else None

    def check_setting(self, setting: SamplerSetting | None) -> SamplerSetting | None:
        """The setting this task samples with: `setting` itself when its sampler applies (None
        for a task without sampler, whatever is asked); ValueError (one line) otherwise."""
        if not self.sampler_names:
            return None
        if setting is None:
            return self.default_setting()
        if setting.sampler not in self.sampler_names:
            raise ValueError(f"{self.title} models sample with {', '.join(self.sampler_names)}, not {setting.sampler}")
        return setting

    def setting_from_config(self, sample) -> SamplerSetting | None:
        """The setting of a training config's `sample` block (grids, validation): its own when
        it names one of this task's samplers, else the task's default."""
        if not self.sampler_names:
            return None
        if sample is None or sample.sampler not in self.sampler_names:
            return self.default_setting()
        return sampler_settings.from_config(sample)

    def evaluation_settings(self, settings: Sequence[SamplerSetting]) -> list:
        """The table rows of this model among `settings` (evaluate): those whose sampler applies;
        when none does, the default setting with every number of samples in `settings` (or a
        ValueError where `default_when_none_apply` is off). [None] for a task without sampler."""
        if not self.sampler_names:
            return [None]
        mine = [s for s in settings if s.sampler in self.sampler_names]
        if mine:
            return mine
        if not self.default_when_none_apply:
            asked = ", ".join(sorted({s.sampler for s in settings})) or "no"
            raise ValueError(f"a {self.title} model samples with {', '.join(self.sampler_names)}, but only {asked} "
                             "sampler settings were given")
        default = self.default_setting()
        return [dataclasses.replace(default, num_samples=k) for k in sorted({s.num_samples for s in settings} or {1})]

    def describe(self, setting: SamplerSetting | None) -> str:
        """A few words for summary lines, e.g. 'SDE-DPM++2M 8 calls'."""
        return setting.label

    # --- restoring tiles -----------------------------------------------------------------------
    def tile_restorer(self, setting: SamplerSetting | None, *, eps: float = sampler_settings.DEFAULT_EPS,
                      color_correction: bool = True, subsampling: str | None = None) -> Callable:
        """jit(fn(params, tiles, keys, aux=None) -> (restored tiles, nfe per tile)), see the module
        docstring; memoised. `subsampling` ('4:2:0' or '4:4:4') is needed by `needs_tables` tasks."""
        setting = self.check_setting(setting)
        if self.needs_tables and subsampling is None:
            raise ValueError(f"a {self.title} model needs the chroma subsampling of its JPEG inputs")
        memo = (self, *self._restorer_options(setting, float(eps), bool(color_correction),
                                              subsampling if self.needs_tables else None))
        fn = _RESTORERS.get(memo)
        if fn is None:
            fn = _RESTORERS[memo] = jax.jit(self._tile_restorer(*memo[1:]))
        return fn

    def _restorer_options(self, setting, eps, color_correction, subsampling) -> tuple:
        """The options the restorer depends on (the memo key): all by default."""
        return setting, eps, color_correction, subsampling

    def _tile_restorer(self, setting, eps, color_correction, subsampling) -> Callable:
        raise NotImplementedError

    # --- model specs ---------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: dict, dtype) -> "Task":
        raise NotImplementedError

    @classmethod
    def _network(cls, spec: dict, variant: str, dtype):
        from .networks.presets import make_network, network_config

        net_cfg = dict(network_config(spec["network"]), **dict(spec.get("overrides", {})))
        return make_network(net_cfg, variant=variant, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class DriftRecTask(Task):
    """DriftRec (Welker et al.): the score network and any registered drifting SDE (`sde.SDES`)."""

    model: Any
    sde: Any
    image_channels: int = 3
    # None (the paper: the network's output divided by σ is the score, eq. (15)) or a
    # score.EDMPreconditioning (model.preconditioning = "edm"; the network does not divide by σ).
    preconditioning: Any = None

    kind: ClassVar[str] = "driftrec"
    method: ClassVar[str] = "driftrec"
    title: ClassVar[str] = "DriftRec"
    variant: ClassVar[str] = "score"
    config_block: ClassVar[Optional[str]] = "sde"
    sampler_names: ClassVar[tuple] = sampler_settings.DIFFUSION_SAMPLERS
    default_when_none_apply: ClassVar[bool] = False

    def input_channels(self) -> int:
        return 2 * self.image_channels

    def default_setting(self) -> SamplerSetting:
        return sampler_settings.default_setting()

    def score_fn(self):
        """S_θ(params, x_t, y, t), with the model's preconditioning (what the samplers take)."""
        return make_score_fn(self.apply, self.sde, self.preconditioning)

    def loss(self, params, batch, key):
        if self.preconditioning is not None:
            return losses.preconditioned_dsm_loss(self.apply, self.sde, self.preconditioning, params, batch, key)
        return losses.dsm_loss(self.score_fn(), self.sde, params, batch, key)

    def _tile_restorer(self, setting, eps, color_correction, subsampling):
        from . import samplers

        score = self.score_fn()
        opts = setting.options(eps)
        sde = self.sde

        def restore_tiles(params, tiles, keys, aux=None):
            def one(y, key):
                x, nfe = samplers.sample(partial(score, params), sde, y[None], key,
                                         color_correction=color_correction, **opts)
                return x[0], nfe

            return jax.vmap(one)(tiles, keys)

        return restore_tiles

    @classmethod
    def from_spec(cls, spec, dtype):
        from .sde import get_sde

        from .score import make_preconditioning

        sde_cfg = dict(spec["sde"])
        model = cls._network(spec, "score", dtype)
        # Absent in the spec (every model file before it, and every paper config): "none".
        precond = make_preconditioning(spec.get("preconditioning", "none"), spec.get("sigma_data", 0.04))
        if precond is not None:  # the network's raw output F, not divided by σ (score.make_score_fn)
            model = model.clone(scale_by_sigma=False)
        return cls(model=model, sde=get_sde(sde_cfg.pop("name"), **sde_cfg), preconditioning=precond)


@dataclasses.dataclass(frozen=True)
class RegressionTask(Task):
    """The paper's L2 regression baseline: one network pass from the JPEG to x̂0, no sampler."""

    model: Any
    image_channels: int = 3

    kind: ClassVar[str] = "regression"
    method: ClassVar[str] = "driftrec"  # restored like a DriftRec model, by `--method driftrec`
    title: ClassVar[str] = "regression"
    variant: ClassVar[str] = "regression"
    conditional: ClassVar[bool] = False

    def loss(self, params, batch, key):
        return losses.regression_loss(make_predict_fn(self.apply), params, batch, key)

    def describe(self, setting) -> str:
        return "regression (1 network pass)"

    def _restorer_options(self, setting, eps, color_correction, subsampling):
        return None, 0.0, False, None  # one compiled pass whatever the options

    def _tile_restorer(self, setting, eps, color_correction, subsampling):
        predict = make_predict_fn(self.apply)

        def restore_tiles(params, tiles, keys, aux=None):
            x = jnp.clip(predict(params, tiles), 0.0, 1.0)
            return x, jnp.ones((tiles.shape[0],), jnp.int32)

        return restore_tiles

    @classmethod
    def from_spec(cls, spec, dtype):
        return cls(model=cls._network(spec, "regression", dtype))


def _spec_fields(spec: dict, key: str, defaults: dict) -> dict:
    """A model spec's `key` section over its defaults; a field the method does not know is an error."""
    fields = dict(defaults, **dict(spec.get(key, {})))
    unknown = set(fields) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {key} field(s) {sorted(unknown)}; allowed: {', '.join(defaults)}")
    return fields


DDRM_DEFAULTS = dict(num_timesteps=1000, beta_start=1e-4, beta_end=0.02, max_train_timestep=None)


@dataclasses.dataclass(frozen=True)
class DDRMTask(Task):
    """DDRM-JPEG's unconditional ε-prediction prior and its DDPM schedule (driftrec_jax.ddrm has
    the sampler maths). `max_train_timestep` restricts training to t < it (None: all T; DDRM only
    ever queries t ≤ 285, so a small model can spend its capacity there)."""

    model: Any
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    max_train_timestep: Optional[int] = None
    image_channels: int = 3

    kind: ClassVar[str] = "ddrm"
    method: ClassVar[str] = "ddrm"
    title: ClassVar[str] = "DDRM ε"
    variant: ClassVar[str] = "ddrm_eps"
    config_block: ClassVar[Optional[str]] = "ddrm"
    needs_tables: ClassVar[bool] = True
    sampler_names: ClassVar[tuple] = ("ddrm",)

    def alphas(self) -> np.ndarray:
        from . import ddrm

        return ddrm.alphas_cumprod(self.num_timesteps, self.beta_start, self.beta_end)

    def eps_fn(self) -> Callable:
        from . import ddrm

        return ddrm.make_eps_fn(self.apply, self.alphas())

    def loss(self, params, batch, key):
        from . import ddrm

        return ddrm.eps_loss(self.eps_fn(), params, batch, key, self.alphas(), self.max_train_timestep)

    def make_restorer(self, **settings) -> Callable:
        """`ddrm.make_restorer` for this task's network and schedule."""
        from . import ddrm

        return ddrm.make_restorer(self.apply, alphas=self.alphas(), **settings)

    def describe(self, setting) -> str:
        text = f"DDRM-JPEG {setting.steps} steps"
        return text + (f", mean of {setting.num_samples} samples" if setting.num_samples > 1 else "")

    def _restorer_options(self, setting, eps, color_correction, subsampling):
        return setting, 0.0, False, subsampling  # DDRM has no last time ε and no colour correction

    def _tile_restorer(self, setting, eps, color_correction, subsampling):
        restorer = self.make_restorer(num_samples=setting.num_samples, num_steps=setting.steps)

        def restore_tiles(params, tiles, keys, aux=None):
            if aux is None:
                raise ValueError("a DDRM model needs the quantisation tables of every tile (aux)")
            return restorer.tiles(params, tiles, tuple(aux), keys, subsampling)

        return restore_tiles

    @classmethod
    def from_spec(cls, spec, dtype):
        fields = _spec_fields(spec, "ddrm", DDRM_DEFAULTS)
        return cls(model=cls._network(spec, "ddrm_eps", dtype), **fields)


I2SB_DEFAULTS = dict(n_steps=1000, beta_min=1e-4, beta_max=0.3, cond_y=True)


@dataclasses.dataclass(frozen=True)
class I2SBTask(Task):
    """I²SB (Liu et al. 2023, "I²SB: Image-to-Image Schrödinger Bridge") with the bridge of
    `driftrec_jax.i2sb` (symmetric β schedule, N = 1000, β_max = 0.3).

    As in the I²SB authors' code, images are scaled to [−1, 1] inside (inputs and outputs of the
    public functions are in [0, 1]) and the network regresses (x_n − x0)/σ_n (`I2SB.output_target`),
    conditioned on the step through σ_n = `I2SB.sigma_fwd(t_n)` (increasing in n; NCSN++ embeds
    its log), its output not divided by σ. Training draws the boundary n uniformly from 1..N,
    x_n from the bridge's marginal given (x0, y), and regresses with the reduction of losses.py
    (½ the sum over pixels, averaged over the batch).

    What the network sees: with `cond_y` (the default) concat(x_n, y), which is how the DriftRec
    paper trained I²SB for its comparison (Sec. III-C: the authors' code with option
    "--cond-x1"); with `cond_y=False` x_n alone, the I²SB authors' own default.

    Sampling (`i2sb.sample`, setting `i2sb:N`): N network calls on evenly spaced boundaries from
    y down to x0, each step a draw from the bridge's Gaussian posterior; k samples are averaged
    for `i2sbN:xK`. There is no colour correction (I²SB has none; the option is ignored) and no
    last time ε.
    """

    model: Any
    process: Any  # driftrec_jax.i2sb.I2SB
    cond_y: bool = True
    image_channels: int = 3

    kind: ClassVar[str] = "i2sb"
    method: ClassVar[str] = "i2sb"
    title: ClassVar[str] = "I²SB"
    variant: ClassVar[str] = "i2sb"
    config_block: ClassVar[Optional[str]] = "i2sb"
    sampler_names: ClassVar[tuple] = ("i2sb",)

    def input_channels(self) -> int:
        return 2 * self.image_channels if self.cond_y else self.image_channels

    def x0_prediction(self, params, x_n, y, t):
        """x̂0 from the network at (x_n, t), everything on the [−1, 1] scale; t: (B,) times n/N."""
        inputs = jnp.concatenate([x_n, y], axis=-1) if self.cond_y else x_n
        out = self.apply(params, inputs, self.process.sigma_fwd(t))
        return self.process.x0_from_output(x_n, t, out)

    def loss(self, params, batch, key):
        process = self.process
        x0 = 2.0 * jnp.asarray(batch["clean"], jnp.float32) - 1.0
        y = 2.0 * jnp.asarray(batch["jpeg"], jnp.float32) - 1.0
        key_n, key_z = jax.random.split(key)
        n = jax.random.randint(key_n, (x0.shape[0],), 1, process.n_steps + 1)
        t = n.astype(jnp.float32) / process.n_steps
        mean, std = process.marginal(x0, y, t)
        x_n = mean + std * jax.random.normal(key_z, x0.shape, x0.dtype)
        inputs = jnp.concatenate([x_n, y], axis=-1) if self.cond_y else x_n
        out = self.apply(params, inputs, process.sigma_fwd(t))
        err = out - process.output_target(x0, x_n, t)
        return jnp.mean(0.5 * jnp.sum(jnp.square(err), axis=(1, 2, 3)))

    def describe(self, setting) -> str:
        return setting.label

    def _restorer_options(self, setting, eps, color_correction, subsampling):
        return setting, 0.0, False, None  # no last time ε, no colour correction

    def _tile_restorer(self, setting, eps, color_correction, subsampling):
        from .i2sb import sample

        process, nfe, k = self.process, setting.steps, setting.num_samples

        def restore_tiles(params, tiles, keys, aux=None):
            def one(y01, key):
                y = jnp.broadcast_to(2.0 * y01[None] - 1.0, (k,) + y01.shape)
                x = sample(process, partial(self.x0_prediction, params), key, y, nfe=nfe)
                return jnp.clip((jnp.mean(x, axis=0) + 1.0) * 0.5, 0.0, 1.0), jnp.asarray(nfe, jnp.int32)

            return jax.vmap(one)(tiles, keys)

        return restore_tiles

    @classmethod
    def from_spec(cls, spec, dtype):
        from .i2sb import I2SB

        fields = _spec_fields(spec, "i2sb", I2SB_DEFAULTS)
        cond_y = bool(fields.pop("cond_y"))
        process = I2SB(n_steps=int(fields["n_steps"]), beta_min=float(fields["beta_min"]),
                       beta_max=float(fields["beta_max"]))
        model = cls._network(spec, "i2sb" if cond_y else "i2sb_xn", dtype)
        return cls(model=model, process=process, cond_y=cond_y)


# Model-spec variant -> task class.
TASKS: dict[str, type] = {cls.variant: cls for cls in (DriftRecTask, RegressionTask, DDRMTask, I2SBTask)}

# `driftrec restore --method`: what model each method needs (for its one-line error).
METHOD_MODELS = {
    "driftrec": "a DriftRec or regression model",
    "ddrm": "a DDRM ε model (e.g. trained with configs/ddrm_uncond_small.py)",
    "i2sb": "an I²SB model (e.g. trained with configs/small_i2sb.py)",
}


def spec_blocks(config) -> dict:
    """The process parameters a model spec stores for `config.model.variant` ({} or one block)."""
    cls = _task_class(config.model.variant)
    if cls.config_block is None:
        return {}
    return {cls.config_block: dict(getattr(config, cls.config_block))}


def build_task(spec: dict) -> Task:
    """The task of a model spec {'network', 'overrides', 'variant', 'dtype', and its block}."""
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"unknown compute dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return _task_class(spec.get("variant")).from_spec(spec, DTYPES[dtype])


def _task_class(variant) -> type:
    if variant not in TASKS:
        raise ValueError(f"unknown model variant {variant!r}; choose from {', '.join(TASKS)}")
    return TASKS[variant]

