"""DDRM dequantisation with a trained ε model: PSNR / LPIPS of b-bit images before and after.

    python bench/ddrm_dequant.py [--model PATH] [--folder DIR] [--images 3] [--crop 128] [--bits 3 4]

Central crops of the first images of a folder are quantised to b bits per channel
(`ddrm.quantize`: bin centres) and restored by DDRM in 'quant' mode (20 steps from t = 285, one
sample, seed 0). Prints a Markdown table; the bundled prior is the default model.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="DDRM ε model file or workdir (default: the bundled prior)")
    p.add_argument("--folder", default="data/val/kodak24", help="folder of clean images (default: %(default)s)")
    p.add_argument("--images", type=int, default=3, help="number of images (sorted by name)")
    p.add_argument("--crop", type=int, default=128, help="central crop size in pixels")
    p.add_argument("--bits", type=int, nargs="+", default=[3, 4], help="bits per channel to test")
    args = p.parse_args()

    import jax

    from driftrec_jax import ddrm, evaluate, models

    task, params, _ = models.load_model(args.model or models.bundled_model_path("ddrm"))
    clean = evaluate.center_crops(args.folder, args.images, args.crop).astype(np.float32) / 255.0
    print(f"| bits | input PSNR | DDRM PSNR | input LPIPS ×100 | DDRM LPIPS ×100 |\n|---:|---:|---:|---:|---:|")
    for bits in args.bits:
        y = np.asarray(ddrm.quantize(clean, bits))
        restore = task.make_restorer(mode="quant", bits=bits)
        x, _ = restore(params, y, None, jax.random.PRNGKey(0))
        x = np.asarray(x)
        before = [evaluate.measure(y[i], clean[i]) for i in range(len(clean))]
        after = [evaluate.measure(x[i], clean[i]) for i in range(len(clean))]
        mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        print(f"| {bits} | {mean(before, 'psnr'):.2f} | {mean(after, 'psnr'):.2f} | "
              f"{100 * mean(before, 'lpips'):.1f} | {100 * mean(after, 'lpips'):.1f} |")


if __name__ == "__main__":
    main()
