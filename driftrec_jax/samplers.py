"""Reverse-time samplers for any registered drifting SDE (DriftRec paper Sec. IV-F/G, Table VI;
few-step samplers: docs/SAMPLERS.md).

Every sampler is a free function with the same signature::

    sampler(score, sde, y, key, **options) -> (x0, nfe)

where ``score(x, y, t)`` is the network with its parameters already bound (see
:mod:`driftrec_jax.score`), ``y`` the batch of JPEG images (B, H, W, C) and ``nfe`` the number of
network evaluations (a scalar array, since adaptive solvers decide it at run time). The whole
batch is one state: there is no host round trip per step, so a sampler jits end to end, and the
same key gives the same images.

Euler–Maruyama and Euler–Heun are written as ``lax.scan`` loops rather than with diffrax's
fixed-step SDE solvers, because the paper's predictor has semantics diffrax does not express: it
evaluates on the grid ``linspace(1, ε, N)`` but steps by Δt = 1/N (the authors' code), and it
returns the *noise-free* mean of its last step. The probability-flow ODE uses diffrax's adaptive
Dormand–Prince 5(4) (or Tsit5) with a PID step-size controller.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp

# Paper defaults (Table I / Sec. IV-F).
DEFAULT_STEPS = 100
DEFAULT_EPS = 0.03


def _bcast(v, x):
    """Broadcast a scalar or (B,) value against image-shaped x."""
    v = jnp.asarray(v, x.dtype)
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim)) if v.ndim else v


def reverse_drift(score, sde, x, y, t, probability_flow: bool = False):
    """Drift of the reverse-time SDE, f − g²S, or of the probability-flow ODE, f − ½g²S."""
    return sde.reverse_drift(x, y, t, score(x, y, t), probability_flow)


def euler_maruyama(score, sde, y, key, *, steps: int = DEFAULT_STEPS, eps: float = DEFAULT_EPS,
                   time_grid: str = "authors"):
    """Euler–Maruyama predictor, N network calls (the paper's sampler, Sec. IV and IV-G).

    x_N = y + σ(1) z. For each grid time t_i, with step Δt:
        x̄ = x − (f − g²S)(x, y, t_i) Δt,   x = x̄ + g(t_i) √Δt z_i,
    and the result is the last noise-free x̄.

    ``time_grid="authors"`` (default, the paper's code): t_i in linspace(1, ε, N) and Δt = 1/N, so
    the N steps add up to 1 although the grid spans 1 − ε. ``time_grid="uniform"``: t_i the left
    ends of linspace(1, ε, N + 1) and Δt = (1 − ε)/N, a consistent discretisation that ends at ε.
    """
    key_prior, key_steps = jax.random.split(key)
    x = sde.prior_sample(key_prior, y)
    if time_grid == "authors":
        ts, dt = jnp.linspace(1.0, eps, steps), 1.0 / steps
    elif time_grid == "uniform":
        ts, dt = jnp.linspace(1.0, eps, steps + 1)[:-1], (1.0 - eps) / steps
    else:
        raise ValueError(f"time_grid must be 'authors' or 'uniform', got {time_grid!r}")
    keys = jax.random.split(key_steps, steps)

    def step(carry, inputs):
        x, _ = carry
        t, k = inputs
        x_mean = x - reverse_drift(score, sde, x, y, t) * dt
        noise = jax.random.normal(k, x.shape, x.dtype)
        x = x_mean + _bcast(sde.diffusion(t), x) * jnp.sqrt(dt) * noise
        return (x, x_mean), None

    (_, x_mean), _ = jax.lax.scan(step, (x, x), (ts, keys))
    return x_mean, jnp.asarray(steps, jnp.int32)


def euler_heun(score, sde, y, key, *, steps: int = DEFAULT_STEPS, eps: float = DEFAULT_EPS):
    """Roberts' (2012) modified improved Euler scheme for SDEs, 2 network calls a step.

    Written in reverse time τ = 1 − t with drift a = −(f − g²S) and additive noise b = g(t).
    With h the step, ΔW ~ N(0, h) and S_k = ±1 at random:
        K1 = h a(t_k, X) + (ΔW − S_k √h) b(t_k)
        K2 = h a(t_{k+1}, X + K1) + (ΔW + S_k √h) b(t_{k+1})
        X ← X + (K1 + K2)/2.
    The grid is linspace(1, ε, N+1), so both evaluations stay inside [ε, 1]; the last step is
    taken without noise (Heun's method on the drift), so the result is noise-free like the
    Euler–Maruyama sampler's.
    """
    key_prior, key_steps = jax.random.split(key)
    x = sde.prior_sample(key_prior, y)
    ts = jnp.linspace(1.0, eps, steps + 1)
    h = (1.0 - eps) / steps
    keys = jax.random.split(key_steps, steps)
    last = jnp.arange(steps) == steps - 1

    def step(x, inputs):
        t0, t1, k, is_last = inputs
        k_w, k_s = jax.random.split(k)
        dw = jnp.sqrt(h) * jax.random.normal(k_w, x.shape, x.dtype)
        s = jnp.where(jax.random.bernoulli(k_s, 0.5, (x.shape[0],) + (1,) * (x.ndim - 1)), 1.0, -1.0)
        noise_on = jnp.where(is_last, 0.0, 1.0)
        dw, s = dw * noise_on, s * noise_on
        k1 = -reverse_drift(score, sde, x, y, t0) * h + (dw - s * jnp.sqrt(h)) * _bcast(sde.diffusion(t0), x)
        k2 = -reverse_drift(score, sde, x + k1, y, t1) * h + (dw + s * jnp.sqrt(h)) * _bcast(sde.diffusion(t1), x)
        return x + 0.5 * (k1 + k2), None

    x, _ = jax.lax.scan(step, x, (ts[:-1], ts[1:], keys, last))
    return x, jnp.asarray(2 * steps, jnp.int32)


# --- Exact-transition samplers -------------------------------------------------------------------
#
# With y fixed, u = x − y follows du = −γF(t) u dt + g(t) dw: a linear Gaussian diffusion with
# u_t = a_t u_0 + σ_t z, a_t = `sde.mean_coeff(t)`, σ_t = `sde.std(t)` (docs/SAMPLERS.md). So the
# samplers built for Gaussian diffusions with (α_t, σ_t) — DDIM (Song et al. 2021, "Denoising
# Diffusion Implicit Models", eq. 12) and DPM-Solver++ (Lu et al. 2022, Sec. 4 and App. B) — apply
# to every registered schedule unchanged, with the network's data prediction û0 = x̂0 − y from
# Tweedie's formula (`sde.denoise`). Each one takes `steps` network calls at the grid times
# 1 = t_0 > … > t_{steps−1} = ε and returns the noise-free x̂0 of the last call.

GRIDS = ("t", "lambda", "edm")
DEFAULT_GRID = "t"
DEFAULT_RHO = 7.0


def _invert_log_snr(sde, targets, eps, iterations: int = 48):
    """Times t in [ε, 1] with λ(t) = targets (λ falls in t), by bisection inside JAX."""
    lo = jnp.full_like(targets, eps)
    hi = jnp.ones_like(targets)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        early = sde.log_snr(mid) > targets  # still above the target: the answer lies later
        return jnp.where(early, mid, lo), jnp.where(early, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return 0.5 * (lo + hi)


def time_grid(sde, steps: int, eps: float = DEFAULT_EPS, grid: str = DEFAULT_GRID,
              rho: float = DEFAULT_RHO):
    """The ``steps`` times 1 = t_0 > … > t_{steps−1} = ε at which a few-step sampler calls the network.

    ``grid="t"``: uniform in t. ``grid="lambda"``: uniform in λ = log(a/σ) (DPM-Solver's choice).
    ``grid="edm"``: the noise level s = σ/a = e^{−λ} spaced as s_i^{1/ρ} uniform (Karras et al.
    2022, eq. 5), which puts more calls at low noise for larger ρ. One call (``steps=1``) is at t = 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if steps == 1:
        return jnp.ones((1,))
    ts = jnp.linspace(1.0, eps, steps)
    if grid == "t":
        return ts
    lam_hi, lam_lo = sde.log_snr(jnp.asarray(eps)), sde.log_snr(jnp.asarray(1.0))
    frac = jnp.linspace(0.0, 1.0, steps)
    if grid == "lambda":
        targets = lam_lo + frac * (lam_hi - lam_lo)
    else:
        s_max, s_min = jnp.exp(-lam_lo) ** (1.0 / rho), jnp.exp(-lam_hi) ** (1.0 / rho)
        targets = -rho * jnp.log(s_max + frac * (s_min - s_max))
    inner = _invert_log_snr(sde, targets[1:-1], eps)
    return jnp.concatenate([jnp.ones((1,)), inner, jnp.full((1,), eps)])


def _exponential_sampler(update, score, sde, y, key, *, steps: int, eps: float, grid: str, rho: float,
                         x_init=None, trajectory: bool = False):
    """The loop shared by the exact-transition samplers.

    ``update(u, d, d_prev, coeffs, z) -> u_next`` moves u = x − y from grid time t_i to t_{i+1}
    given the data predictions d = û0(t_i) and d_prev = û0(t_{i−1}); ``coeffs`` holds a, σ, λ at
    both ends, h = λ_{i+1} − λ_i, the previous h and whether this is the first step. With
    ``trajectory=True`` also returns x at every grid time (steps, *y.shape), for tests and
    diagnostics. ``x_init`` replaces the prior draw y + σ(1) z (e.g. a test's exact marginal).
    """
    ts = time_grid(sde, steps, eps, grid, rho).astype(y.dtype)
    a, sig = sde.mean_coeff(ts), sde.std(ts)
    lam = jnp.log(a) - jnp.log(sig)
    key_prior, key_steps = jax.random.split(key)
    x = sde.prior_sample(key_prior, y) if x_init is None else x_init
    u = x - y

    def predict(u, t):
        x = u + y
        return sde.denoise(x, y, t, score(x, y, t)) - y

    n = steps - 1
    h = lam[1:] - lam[:-1]
    coeffs = {
        "a_t": a[:-1], "a_s": a[1:], "sig_t": sig[:-1], "sig_s": sig[1:], "h": h,
        # h of the previous step (a placeholder 1 on the first, where it is unused); [:n] for steps = 1
        "h_prev": jnp.concatenate([jnp.ones((1,), h.dtype), h[:-1]])[:n],
        "first": jnp.arange(n) == 0,
    }

    def step(carry, inputs):
        u, d_prev = carry
        t, c, k = inputs
        d = predict(u, t)
        z = jax.random.normal(k, u.shape, u.dtype)
        u_next = update(u, d, d_prev, c, z)
        return (u_next, d), u_next + y

    (u, _), xs = jax.lax.scan(step, (u, jnp.zeros_like(u)), (ts[:-1], coeffs, jax.random.split(key_steps, n)))
    x0 = predict(u, ts[-1]) + y
    nfe = jnp.asarray(steps, jnp.int32)
    if trajectory:
        return x0, nfe, jnp.concatenate([x[None], xs], axis=0)
    return x0, nfe


def _ddim_update(eta):
    def update(u, d, d_prev, c, z):
        # Posterior q(u_s | u_t, u_0) of the Gaussian diffusion: σ̃² = σ²_{t|s} σ_s² / σ_t² with
        # σ²_{t|s} = σ_t² − (a_t/a_s)² σ_s². DDIM keeps the share √(σ_s² − c²) of the predicted
        # noise and draws c = η σ̃ afresh (η = 1: the posterior itself).
        ratio = c["a_t"] / c["a_s"]
        var_ts = c["sig_t"] ** 2 - ratio**2 * c["sig_s"] ** 2
        post_std = jnp.sqrt(jnp.maximum(var_ts, 0.0)) * c["sig_s"] / c["sig_t"]
        noise_std = eta * post_std
        eps_hat = (u - c["a_t"] * d) / c["sig_t"]
        keep = jnp.sqrt(jnp.maximum(c["sig_s"] ** 2 - noise_std**2, 0.0))
        return c["a_s"] * d + keep * eps_hat + noise_std * z

    return update


def _dpm2m_update(eta):
    def update(u, d, d_prev, c, z):
        # DPM-Solver++(2M) in data prediction (Lu et al. 2022, Alg. 2), and with eta > 0 its SDE
        # form: of the step h in λ, the share eta·h is taken stochastically. The second-order
        # correction (d − d_prev)/(2r), r = h_prev/h, is off on the first step.
        h = c["h"]
        decay = jnp.exp(-eta * h)
        weight = -jnp.expm1(-(1.0 + eta) * h)
        correction = jnp.where(c["first"], 0.0, 0.5 * h / c["h_prev"])
        data = d + correction * (d - d_prev)
        noise = c["sig_s"] * jnp.sqrt(jnp.maximum(-jnp.expm1(-2.0 * eta * h), 0.0))
        return (c["sig_s"] / c["sig_t"]) * decay * u + c["a_s"] * weight * data + noise * z

    return update


def ddim(score, sde, y, key, *, steps: int = 6, eta: float = 1.0, eps: float = DEFAULT_EPS,
         grid: str = DEFAULT_GRID, rho: float = DEFAULT_RHO, **kwargs):
    """DDIM(η) on the drifting SDE's exact transitions, ``steps`` network calls.

    Step t → s with û0 = x̂0 − y and ε̂ = (u_t − a_t û0)/σ_t:
        u_s = a_s û0 + √(σ_s² − c²) ε̂ + c z,   c = η σ̃,
    where σ̃ is the std of the exact posterior q(u_s | u_t, u_0). η = 1 is ancestral sampling
    through that posterior; η = 0 is deterministic (the first-order exponential integrator of the
    probability-flow ODE). Returns the last call's x̂0.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    return _exponential_sampler(_ddim_update(eta), score, sde, y, key, steps=steps, eps=eps, grid=grid,
                                rho=rho, **kwargs)


def dpm_solver_2m(score, sde, y, key, *, steps: int = 6, eps: float = DEFAULT_EPS, grid: str = "lambda",
                  rho: float = DEFAULT_RHO, eta: float = 0.0, **kwargs):
    """DPM-Solver++(2M) (Lu et al. 2022): deterministic, second order, multistep, ``steps`` calls.

    In λ = log(a/σ) with h = λ_s − λ_t, r = h_prev/h and D = û0 + (û0 − û0_prev)/(2r):
        u_s = (σ_s/σ_t) u_t − a_s (e^{−h} − 1) D.
    With ``eta`` > 0 (``sde_dpm_solver_2m``: eta = 1) a share of each step is stochastic:
        u_s = (σ_s/σ_t) e^{−ηh} u_t + a_s (1 − e^{−(1+η)h}) D + σ_s √(1 − e^{−2ηh}) z.
    Its first step (D = û0) with η = 1 equals DDIM η = 1. Returns the last call's x̂0.
    """
    if eta < 0.0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    return _exponential_sampler(_dpm2m_update(eta), score, sde, y, key, steps=steps, eps=eps, grid=grid,
                                rho=rho, **kwargs)


def sde_dpm_solver_2m(score, sde, y, key, *, steps: int = 6, eps: float = DEFAULT_EPS, grid: str = "lambda",
                      rho: float = DEFAULT_RHO, **kwargs):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, App. B): ``dpm_solver_2m`` with η = 1."""
    return dpm_solver_2m(score, sde, y, key, steps=steps, eps=eps, grid=grid, rho=rho, eta=1.0, **kwargs)


ODE_SOLVERS = {"dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}


def probability_flow(
    score,
    sde,
    y,
    key,
    *,
    eps: float = DEFAULT_EPS,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    solver: str = "dopri5",
    max_steps: int = 4096,
):
    """The probability-flow ODE dx = [f − ½g²S] dt from t = 1 to ε (paper Sec. IV-G).

    Solved with diffrax's adaptive 5(4) Runge–Kutta (Dormand–Prince by default) and a PID
    step-size controller; the whole batch shares one step size (error measured over the batch).
    Starts from the same prior y + σ(1) z as the SDE samplers; ``key`` only draws that z.
    The number of network evaluations is 6 per attempted step (the methods are FSAL) plus one
    for the first stage; a test counts the real calls.
    """
    x1 = sde.prior_sample(key, y)
    term = diffrax.ODETerm(lambda t, x, args: reverse_drift(score, sde, x, y, t, probability_flow=True))
    sol = diffrax.diffeqsolve(
        term,
        ODE_SOLVERS[solver](),
        t0=1.0,
        t1=eps,
        dt0=None,
        y0=x1,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    nfe = 6 * sol.stats["num_steps"] + _INITIAL_STEP_NFE
    return sol.ys[0], jnp.asarray(nfe, jnp.int32)


# Evaluations before the first step (the first FSAL stage); checked by a counting test in
# tests/test_samplers.py.
_INITIAL_STEP_NFE = 1

SAMPLERS: dict[str, Callable] = {
    "em": euler_maruyama,
    "heun": euler_heun,
    "ode": probability_flow,
    "ddim": ddim,
    "dpm2m": dpm_solver_2m,
    "sde-dpm2m": sde_dpm_solver_2m,
}


def color_correct(x, y):
    """Shift each RGB channel of x so that its mean equals that of the JPEG input y (paper Sec. IV-H)."""
    axes = tuple(range(1, x.ndim - 1))
    return x + jnp.mean(y, axis=axes, keepdims=True) - jnp.mean(x, axis=axes, keepdims=True)


def sample(
    score,
    sde,
    y,
    key,
    *,
    sampler: str = "em",
    num_samples: int = 1,
    color_correction: bool = True,
    clip: bool = True,
    **options,
):
    """Restore a batch: ``num_samples`` independent samples per image, run as one batch and averaged.

    Averaging more samples trades perceptual quality (LPIPS) for distortion (PSNR), paper Fig. 7.
    Returns (x0 in [0, 1] when ``clip``, nfe per sample).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    b = y.shape[0]
    y_k = jnp.broadcast_to(y[None], (num_samples,) + y.shape).reshape((num_samples * b,) + y.shape[1:])
    x, nfe = SAMPLERS[sampler](score, sde, y_k, key, **options)
    x = jnp.mean(x.reshape((num_samples, b) + y.shape[1:]), axis=0)
    if color_correction:
        x = color_correct(x, y)
    if clip:
        x = jnp.clip(x, 0.0, 1.0)
    return x, nfe


def make_sampler(score_fn, sde, **settings) -> Callable:
    """A jitted ``restore(params, y, key) -> (x0, nfe)`` for a network and fixed settings."""

    @jax.jit
    def restore(params, y, key):
        return sample(partial(score_fn, params), sde, y, key, **settings)

    return restore


def make_regression_restorer(predict_fn, *, clip: bool = True) -> Callable:
    """The regression baseline through the same API: one network pass, nfe = 1."""

    @jax.jit
    def restore(params, y, key=None):
        x = predict_fn(params, y)
        return (jnp.clip(x, 0.0, 1.0) if clip else x), jnp.asarray(1, jnp.int32)

    return restore
