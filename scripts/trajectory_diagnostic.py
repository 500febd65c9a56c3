#!/usr/bin/env python
"""Where along the reverse SDE does a DriftRec model's texture appear?

    python scripts/trajectory_diagnostic.py data/val/mcmaster18 --quality 30

For central crops of the first images of a folder, compressed with Pillow at one quality, this
prints, at several times t of an Euler-Maruyama run (the authors' grid, as `driftrec restore`):

- ``sampler``: Tweedie's denoised estimate x̂0 = (x_t + σ_t² S − (1 − a_t) y) / a_t
  (`sde.denoise`) of the sampler's own state x_t;
- ``forward``: the same estimate from the *true* forward marginal x_t = a_t x0 + (1 − a_t) y + σ_t z,

each as mean LPIPS ×100 and PSNR against the original, and ``hp``: the standard deviation of the
3×3 high-pass (image minus its 3×3 box mean) relative to the original's, pooled over the crops
(1.0 = as much pixel-scale variation as the original). The last rows are the sampler's output
(colour-corrected and clipped, the same images as `samplers.sample` with PRNGKey(seed)) and the
JPEG.

``forward`` rows say how well the network denoises when its input holds the truth at that noise
level; ``sampler`` rows say when the sampler commits to its content: once they stop changing,
the later steps only refine what is there. Run it with several ``--steps`` to see how much of
a model's error is the discretisation's.
"""

from __future__ import annotations

import argparse
from functools import partial


def high_pass_ratio(x, x0) -> float:
    """std of x − box3(x) over std of x0 − box3(x0), pooled over the batch (NHWC arrays)."""
    import numpy as np
    from scipy.ndimage import uniform_filter

    def hp(a):
        a = np.asarray(a, np.float64)
        return (a - uniform_filter(a, size=(1, 3, 3, 1)))[:, 1:-1, 1:-1]

    return float(hp(x).std() / hp(x0).std())


def trajectory(task, params, x0, y, *, steps: int, eps: float = 0.03, seed: int = 0, reports: int = 8):
    """Run Euler-Maruyama exactly as `samplers.sample(..., sampler="em")` with key
    PRNGKey(seed), and return ([(t, σ_t, x̂0 of the sampler's x_t, x̂0 of a true-marginal x_t)
    at `reports` times], the colour-corrected, clipped output). Batches are NHWC in [0, 1]."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from driftrec_jax import samplers

    sde = task.sde
    score = jax.jit(task.score_fn())

    def denoise(x, t):
        return sde.denoise(x, y, t, score(params, x, y, t))

    dt = 1.0 / steps

    @jax.jit
    def em_step(x, t, k):  # one step of samplers.euler_maruyama, keeping the state for reports
        x_mean = x - samplers.reverse_drift(partial(score, params), sde, x, y, t) * dt
        return x_mean + sde.diffusion(t) * jnp.sqrt(dt) * jax.random.normal(k, x.shape), x_mean

    # The same key use as samplers.euler_maruyama, so the output is the sampler's.
    key = jax.random.PRNGKey(seed)
    key_prior, key_steps = jax.random.split(key)
    key_fwd = jax.random.fold_in(key, 1)
    x = sde.prior_sample(key_prior, y)
    keys = jax.random.split(key_steps, steps)
    ts = jnp.linspace(1.0, eps, steps)
    report_at = set(np.linspace(0, steps - 1, reports).round().astype(int).tolist())
    out, x_mean = [], x
    for i in range(steps):
        t = ts[i]
        if i in report_at:
            mean, std = sde.marginal(x0, y, t)
            x_fwd = mean + std * jax.random.normal(jax.random.fold_in(key_fwd, i), x0.shape)
            out.append((float(t), float(std), denoise(x, t), denoise(x_fwd, t)))
        x, x_mean = em_step(x, t, keys[i])
    return out, jnp.clip(samplers.color_correct(x_mean, y), 0.0, 1.0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="folder of original images (sorted; the first --max-images are used)")
    p.add_argument("--checkpoint", default=None, help="model file or training workdir (default: the bundled model)")
    p.add_argument("--quality", type=int, default=30, help="JPEG quality (Pillow, 4:2:0; default 30)")
    p.add_argument("--max-images", type=int, default=3, help="images used (default 3)")
    p.add_argument("--crop", type=int, default=128, help="central crop size in pixels (default 128)")
    p.add_argument("--steps", type=int, default=100, help="Euler-Maruyama steps (default 100, the paper's)")
    p.add_argument("--eps", type=float, default=0.03, help="last time of the sampler (default 0.03)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--reports", type=int, default=8, help="how many times along the run to report (default 8)")
    args = p.parse_args(argv)
    if not 0 <= args.quality <= 100:
        p.error(f"--quality must be in 0..100, got {args.quality}")
    if args.steps < 1 or args.reports < 1 or args.max_images < 1 or args.crop < 8:
        p.error("--steps, --reports and --max-images must be positive and --crop at least 8")

    import jax.numpy as jnp
    import numpy as np

    from driftrec_jax import metrics
    from driftrec_jax.data import jpeg_roundtrip
    from driftrec_jax.validation import center_crops
    from driftrec_jax.models import ModelLoadError, bundled_model_path, load_model

    try:
        task, params, _ = load_model(args.checkpoint or bundled_model_path())
        originals = center_crops(args.folder, args.max_images, args.crop)
    except (ModelLoadError, OSError, ValueError) as e:
        raise SystemExit(f"trajectory_diagnostic: {e}")
    if getattr(task, "sde", None) is None:  # only DriftRec models have an SDE to follow
        raise SystemExit("trajectory_diagnostic: the model is a regression baseline, not a DriftRec score model")

    x0 = jnp.asarray(originals, jnp.float32) / 255.0
    y = jnp.asarray(np.stack([jpeg_roundtrip(a, args.quality) for a in originals]), jnp.float32) / 255.0

    def row(name, x):
        x = jnp.clip(x, 0.0, 1.0)
        lp = float(np.mean(np.asarray(metrics.lpips(x, x0)))) * 100
        ps = float(np.mean(np.asarray(metrics.psnr(x, x0))))
        return f"{name:>26s} | LPIPS {lp:5.1f} | PSNR {ps:5.2f} | hp {high_pass_ratio(x, x0):4.2f}"

    print(f"{args.folder}: {x0.shape[0]} crops of {args.crop}², JPEG quality {args.quality}, "
          f"EM {args.steps} steps, seed {args.seed}")
    reports, output = trajectory(task, params, x0, y, steps=args.steps, eps=args.eps,
                                 seed=args.seed, reports=args.reports)
    for t, sigma, from_sampler, from_forward in reports:
        print(f"t = {t:.3f}, sigma = {sigma:.4f}")
        print(row("sampler", from_sampler))
        print(row("forward", from_forward))
    print(row("sampler output", output))
    print(row("JPEG", y))


if __name__ == "__main__":
    main()
