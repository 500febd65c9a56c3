"""External check of the metric code: FBCNN's published JPEG rows on grayscale Classic5.

FBCNN (Jiang et al., ICCV 2021), Table 1, rows "JPEG" on Classic5 (PSNR | SSIM | PSNR-B, FBCNN's
conventions, docs/EVALUATE.md): QF10 27.82 | 0.760 | 25.21, QF20 30.12 | 0.834 | 27.50,
QF30 31.48 | 0.867 | 28.94. This script JPEG-compresses the five 512x512 grayscale images with
Pillow (whose decodes equal OpenCV's, which FBCNN uses: EVALUATION.md), measures them with
driftrec_jax.metrics and prints the averages next to the published values. Exit status 0 when all nine numbers agree to
the printed precision (0.01 dB, 0.001 SSIM), 1 otherwise.

    python scripts/check_classic5.py [--data data/val/classic5_gray]

Classic5 is public (README.md says where the evaluation sets come from).
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys

import numpy as np
from PIL import Image

PUBLISHED = {  # QF: (PSNR, SSIM, PSNR-B)
    10: (27.82, 0.760, 25.21),
    20: (30.12, 0.834, 27.50),
    30: (31.48, 0.867, 28.94),
}
DEFAULT_DATA = pathlib.Path("data") / "val" / "classic5_gray"


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode a uint8 grayscale image with Pillow's JPEG encoder at `quality` and decode it."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def evaluate(paths, quality: int) -> dict[str, np.ndarray]:
    """Per-image PSNR, SSIM (FBCNN convention), PSNR-B (FBCNN convention) of the JPEG images."""
    from driftrec_jax import metrics

    rows = {"psnr": [], "ssim": [], "psnrb": []}
    for path in paths:
        clean = np.asarray(Image.open(path).convert("L"))
        decoded = jpeg_roundtrip(clean, quality)
        x = decoded[..., None].astype(np.float32) / 255.0  # restored = the JPEG itself
        y = clean[..., None].astype(np.float32) / 255.0
        rows["psnr"].append(float(metrics.psnr(x, y)))
        rows["ssim"].append(float(metrics.ssim(x, y, convention="fbcnn")))
        rows["psnrb"].append(float(metrics.psnrb(x, y, convention="fbcnn")))
    return {k: np.asarray(v) for k, v in rows.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA,
                        help=f"folder with the five Classic5 grayscale PNGs (default: {DEFAULT_DATA})")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"check_classic5: no folder {args.data} (give --data FOLDER of the Classic5 PNGs)", file=sys.stderr)
        return 2
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".png", ".bmp", ".tif"))
    if not paths:
        print(f"no images found in {args.data}", file=sys.stderr)
        return 2

    print(f"Classic5 ({len(paths)} images from {args.data}), Pillow JPEG, FBCNN conventions")
    print(f"{'QF':>3} | {'PSNR ours':>9} {'FBCNN':>6} | {'SSIM ours':>9} {'FBCNN':>6} | "
          f"{'PSNR-B ours':>11} {'FBCNN':>6} | match")
    all_ok = True
    for quality, (p_ref, s_ref, b_ref) in PUBLISHED.items():
        r = evaluate(paths, quality)
        p, s, b = r["psnr"].mean(), r["ssim"].mean(), r["psnrb"].mean()
        ok = (round(p, 2) == p_ref) and (round(s, 3) == s_ref) and (round(b, 2) == b_ref)
        all_ok &= ok
        print(f"{quality:>3} | {p:9.4f} {p_ref:6.2f} | {s:9.5f} {s_ref:6.3f} | {b:11.4f} {b_ref:6.2f} | "
              f"{'yes' if ok else 'NO'}")
    print("all published values reproduced" if all_ok else "MISMATCH with the published values")
    return 0 if all_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout
    sys.exit(main())
