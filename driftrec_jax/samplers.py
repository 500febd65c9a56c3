"""Reverse-time samplers for any registered drifting SDE (paper Sec. IV-F/G, SPEC §4).

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
    """Euler–Maruyama predictor, N network calls (SPEC §4).

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
}


def color_correct(x, y):
    """Shift each RGB channel of x so that its mean equals that of the JPEG input y (SPEC §4)."""
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
