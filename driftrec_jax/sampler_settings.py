"""One way of sampling, as restore, evaluate and training name it (no JAX import here).

A `SamplerSetting` is a sampler of `driftrec_jax.samplers`, its steps (network calls) or ODE
tolerance, its options (η, time grid) and the number of independent samples averaged per image.
Its text form is what `driftrec evaluate --sampler-settings` and the tables use:

    em:100          Euler–Maruyama, 100 steps (the paper's sampler)
    heun:50         Euler–Heun, 50 steps (2 network calls each)
    ode:1e-3        probability-flow ODE, Dopri5 at rtol = atol = 1e-3
    ddim:5          DDIM with η = 1 (exact posterior steps), 5 network calls
    ddim:10:0       DDIM with η = 0 (deterministic)
    dpm2m:8         DPM-Solver++(2M), 8 calls;  sde-dpm2m:8  its stochastic form (the default)
    ddim:5@lambda   ... on a grid uniform in λ = log(a/σ) (t, lambda or edm)
    em:100x4        the mean of 4 samples (paper Fig. 7)
    ddrm:20         DDRM-JPEG's sampler (DDRM ε models only)
    i2sb:100        I²SB's posterior sampler, 100 network calls (I²SB models only)

docs/SAMPLERS.md derives the few-step samplers and docs/RESTORE.md compares them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# name -> (short label for tables, one-line description for --help). Kept equal to
# samplers.SAMPLERS plus the samplers of the other methods ("ddrm", "i2sb"); a test checks it.
# Which names apply to which model: `driftrec_jax.tasks` (`Task.sampler_names`).
SAMPLERS: dict[str, tuple[str, str]] = {
    "em": ("EM", "Euler–Maruyama, the paper's (--steps 100: 100 calls, 12 times the default's): "
                 "the lowest LPIPS measured (0.6 below the default's), PSNR 0.46 dB below it"),
    "heun": ("Heun", "Euler–Heun for SDEs: 2 calls per step"),
    "ode": ("ODE", "probability-flow ODE, adaptive Dopri5 at --tol (about 45 calls at 1e-3): smooth"),
    "ddim": ("DDIM", "exact posterior steps, 5 calls: the highest PSNR (about +0.9 dB over em 100), "
                     "LPIPS within the spread of em 100's; --eta 0: deterministic"),
    "dpm2m": ("DPM++2M", "DPM-Solver++(2M), deterministic second order: smoother, worse LPIPS than the "
                         "stochastic samplers"),
    "sde-dpm2m": ("SDE-DPM++2M", "SDE-DPM-Solver++(2M), 8 calls (the default): PSNR above em 100's on "
                                 "329 of 330 images measured, LPIPS 0.6 (x100) behind it"),
    "ddrm": ("DDRM", "DDRM-JPEG's sampler (DDRM ε models only): --steps from t = 285 (default 20)"),
    "i2sb": ("I²SB", "I²SB's posterior sampler (I²SB models only): --steps network calls (default 100, as "
                     "the DriftRec paper compares it); no colour correction"),
}
# The samplers of DriftRec models (driftrec_jax.samplers); the others belong to one method each.
OTHER_METHODS_SAMPLERS = ("ddrm", "i2sb")
DIFFUSION_SAMPLERS = tuple(k for k in SAMPLERS if k not in OTHER_METHODS_SAMPLERS)
FEW_STEP = ("ddim", "dpm2m", "sde-dpm2m")
GRIDS = ("t", "lambda", "edm")
# Default steps of each sampler when a setting names none.
DEFAULT_STEPS = {"em": 100, "heun": 50, "ddim": 5, "dpm2m": 8, "sde-dpm2m": 8, "ddrm": 20, "i2sb": 100}
DEFAULT_GRID = {"ddim": "t", "dpm2m": "lambda", "sde-dpm2m": "lambda"}
DEFAULT_TOL = 1e-3
DEFAULT_EPS = 0.03  # the paper's last time ε (Sec. IV-F)
PAPER_SETTING = "em:100"
# What restore, evaluate, sample.py and training grids use when no sampler is named: the best
# setting of at most 10 network calls measured with the bundled model — above the paper's EM 100
# in PSNR, a little behind it in LPIPS on textured photos at low quality, which no setting of at
# most 10 calls closed (docs/RESTORE.md, 'Choosing a sampler').
DEFAULT_SETTING = "sde-dpm2m:8"


@dataclasses.dataclass(frozen=True)
class SamplerSetting:
    """Sampler name, steps (network calls for the few-step samplers) or tolerance (ODE), η
    (DDIM only), time grid (few-step samplers; None = the sampler's default), and the number of
    independent samples averaged per image."""

    sampler: str
    steps: int | None = None
    tol: float | None = None
    num_samples: int = 1
    eta: float | None = None
    grid: str | None = None

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        if self.sampler == "ode":
            if self.tol is None or not self.tol > 0:
                raise ValueError(f"the ODE sampler needs a tolerance > 0, got {self.tol}")
        elif self.steps is None or self.steps < 1:
            raise ValueError(f"the {self.sampler} sampler needs steps >= 1, got {self.steps}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.eta is not None:
            if self.sampler != "ddim":
                raise ValueError(f"η applies to the ddim sampler only, not {self.sampler}")
            if not 0.0 <= self.eta <= 1.0:
                raise ValueError(f"η must be in [0, 1], got {self.eta}")
            if self.eta == 1.0:
                object.__setattr__(self, "eta", None)  # the default: one canonical form
        if self.grid is not None:
            if self.sampler not in FEW_STEP:
                raise ValueError(f"a time grid applies to {', '.join(FEW_STEP)} only, not {self.sampler}")
            if self.grid not in GRIDS:
                raise ValueError(f"unknown time grid {self.grid!r}; choose from {', '.join(GRIDS)}")
            if self.grid == DEFAULT_GRID[self.sampler]:
                object.__setattr__(self, "grid", None)

    @property
    def key(self) -> str:
        """Canonical text, accepted back by `parse_setting` (e.g. em:100, ode:0.001x4, ddim:6:0)."""
        arg = f"{self.tol:g}" if self.sampler == "ode" else str(self.steps)
        text = f"{self.sampler}:{arg}"
        if self.eta is not None:
            text += f":{self.eta:g}"
        if self.grid is not None:
            text += f"@{self.grid}"
        return text + (f"x{self.num_samples}" if self.num_samples > 1 else "")

    @property
    def label(self) -> str:
        """Human text for tables, e.g. 'DDIM η=0 10 calls, mean of 4'."""
        name = SAMPLERS[self.sampler][0]
        if self.sampler == "ode":
            arg = f"tol {self.tol:g}"
        elif self.sampler in FEW_STEP or self.sampler == "i2sb":
            arg = f"{self.steps} calls"
        else:
            arg = f"{self.steps} steps"
        if self.eta is not None:
            name += f" η={self.eta:g}"
        if self.grid is not None:
            arg += f", {self.grid} grid"
        avg = f", mean of {self.num_samples}" if self.num_samples > 1 else ""
        return f"{name} {arg}{avg}"

    @property
    def nfe(self) -> int | None:
        """Network calls per sample, when known before sampling (not for the adaptive ODE)."""
        if self.sampler == "ode":
            return None
        return 2 * self.steps if self.sampler == "heun" else self.steps

    def options(self, eps: float = DEFAULT_EPS) -> dict[str, Any]:
        """Keyword arguments of `samplers.sample` for this setting."""
        if self.sampler in OTHER_METHODS_SAMPLERS:
            raise ValueError(f"the {self.sampler} setting is run by its task (driftrec_jax.tasks), not samplers.sample")
        opts: dict[str, Any] = {"sampler": self.sampler, "num_samples": self.num_samples, "eps": eps}
        if self.sampler == "ode":
            opts.update(rtol=self.tol, atol=self.tol)
        else:
            opts["steps"] = self.steps
        if self.sampler == "ddim":
            opts["eta"] = 1.0 if self.eta is None else self.eta
        if self.sampler in FEW_STEP:
            opts["grid"] = self.grid or DEFAULT_GRID[self.sampler]
        return opts


def parse_setting(text: str) -> SamplerSetting:
    """`NAME[:STEPS|:TOL][:ETA][@GRID][xK]`, e.g. `em`, `em:100`, `ode:1e-5`, `ddim:6`, `ddim:10:0`,
    `dpm2m:6@edm`, `em:100x4`, `ddrm:20x8`, `i2sb:10` (module docstring)."""
    body, sep, k = text.strip().lower().rpartition("x")
    if not sep:  # no 'xK': one sample
        body, k = k, ""
    body, _, grid = body.partition("@")
    name, _, rest = body.partition(":")
    arg, _, eta = rest.partition(":")
    try:
        num = int(k) if k else 1
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
        extra = {"eta": float(eta) if eta else None, "grid": grid or None}
        if name == "ode":
            return SamplerSetting("ode", tol=float(arg) if arg else DEFAULT_TOL, num_samples=num, **extra)
        return SamplerSetting(name, steps=int(arg) if arg else DEFAULT_STEPS[name], num_samples=num, **extra)
    except ValueError as err:
        raise ValueError(f"bad sampler setting {text!r} ({err}); write e.g. sde-dpm2m:8, ddim:5, em:100, ode:1e-3, "
                         "ddim:10:0, em:100x4, ddrm:20x8, i2sb:100") from None


def default_setting() -> SamplerSetting:
    return parse_setting(DEFAULT_SETTING)


def help_lines() -> str:
    """One line per sampler, what it costs and gives (for the --help epilogs)."""
    return "\n".join(f"  {k:<10} {v[1]}" for k, v in SAMPLERS.items())


def from_config(sample) -> SamplerSetting:
    """The setting of a training config's `sample` block (sampler, steps, tol, eta, grid)."""
    name = sample.sampler
    get = sample.get if hasattr(sample, "get") else lambda k, d=None: getattr(sample, k, d)
    if name == "ode":
        return SamplerSetting("ode", tol=float(get("tol", DEFAULT_TOL)))
    eta = get("eta", None) if name == "ddim" else None
    grid = get("grid", None) if name in FEW_STEP else None
    return SamplerSetting(name, steps=int(get("steps", DEFAULT_STEPS.get(name, 100))),
                          eta=None if eta is None else float(eta), grid=grid or None)
