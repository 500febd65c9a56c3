"""Fidelity of the JAX JPEG operator (driftrec_jax/jpeg.py) to Pillow's libjpeg, per quality.

For every photo and quality, the image is saved by Pillow (quality q, the given chroma
subsampling) and decoded by Pillow; the operator's D(E(x)) with the same tables is compared
with that decode: PSNR in dB on 0..255 (inf = identical) and the share of identical 8-bit
values, for the integer DCT ('islow', the default) and the float DCT. Also times the jitted
round trip per image.

    python bench/jpeg_fidelity.py                                   # QF 10..90, 4:2:0 and 4:4:4
    python bench/jpeg_fidelity.py --qualities 10 50 --subsampling 4:2:0 --kodak ''   # skimage only

Photos: scikit-image's astronaut, chelsea, coffee, and the PNGs of --kodak (default
data/val/kodak24, skipped when absent; read only). Prints a Markdown table; --json writes the raw numbers.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from driftrec_jax import jpeg
from machine_info import machine

PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:0": 2}


def load_photos(kodak: str) -> dict[str, np.ndarray]:
    import skimage.data

    photos = {name: getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee")}
    if kodak:
        for path in sorted(glob.glob(os.path.join(kodak, "*.png"))):
            photos[os.path.basename(path)[:-4]] = np.asarray(Image.open(path).convert("RGB"))
    return photos


def pillow_decode(img: np.ndarray, quality: int, subsampling: str) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality, subsampling=PIL_SUBSAMPLING[subsampling])
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


_ROUNDTRIPS = {
    dct: jax.jit(lambda x, q, s, dct=dct: jpeg.jpeg_roundtrip(x, jpeg.quality_to_tables_jnp(q), s, dct=dct),
                 static_argnums=2)
    for dct in jpeg.DCT_METHODS
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qualities", type=int, nargs="+", default=list(range(10, 100, 10)))
    p.add_argument("--subsampling", nargs="+", default=["4:2:0", "4:4:4"], choices=sorted(PIL_SUBSAMPLING))
    p.add_argument("--kodak", default="data/val/kodak24", help="folder of Kodak24 PNGs ('': none)")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)

    photos = load_photos(args.kodak)
    rows, times = [], {dct: [] for dct in jpeg.DCT_METHODS}
    for sub in args.subsampling:
        for q in args.qualities:
            row = {"subsampling": sub, "quality": q, "images": len(photos)}
            for dct in jpeg.DCT_METHODS:
                sq_err, count, same, worst = 0.0, 0, 0, float("inf")
                for img in photos.values():
                    ref = pillow_decode(img, q, sub)
                    x = jnp.asarray(img, jnp.float32) / 255.0
                    fn = _ROUNDTRIPS[dct]
                    jax.block_until_ready(fn(x, q, sub))  # compile / warm
                    t0 = time.perf_counter()
                    out = np.asarray(jax.block_until_ready(fn(x, q, sub)))
                    times[dct].append((time.perf_counter() - t0) / (img.shape[0] * img.shape[1] / 1e6))
                    ours = np.round(out * 255.0).astype(np.int32)
                    sq_err += float(np.sum((ours - ref.astype(np.int32)) ** 2))
                    count += ours.size
                    same += int(np.sum(ours == ref))
                    worst = min(worst, psnr(ours, ref))
                pooled = float("inf") if sq_err == 0 else 10 * np.log10(255.0**2 * count / sq_err)
                row[dct] = {"psnr_pooled": pooled, "psnr_min": worst, "identical": same / count}
            rows.append(row)
            print(f"{sub} QF {q}: " + ", ".join(
                f"{d} {row[d]['psnr_pooled']:.2f} dB (min {row[d]['psnr_min']:.2f}, identical {100 * row[d]['identical']:.3f} %)"
                for d in jpeg.DCT_METHODS), flush=True)

    print(f"\nMachine: {machine()}\nPhotos: {', '.join(photos)}\n")
    print("| subsampling | QF | islow PSNR (pooled / worst image) | islow identical values | "
          "float PSNR (pooled / worst image) | float identical values |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        i, f = r["islow"], r["float"]
        print(f"| {r['subsampling']} | {r['quality']} | {i['psnr_pooled']:.2f} / {i['psnr_min']:.2f} | "
              f"{100 * i['identical']:.3f} % | {f['psnr_pooled']:.2f} / {f['psnr_min']:.2f} | {100 * f['identical']:.2f} % |")
    for dct, ts in times.items():
        print(f"\nround trip ({dct}): median {1e3 * np.median(ts):.1f} ms per megapixel")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "photos": list(photos), "rows": rows,
                       "ms_per_megapixel": {d: 1e3 * float(np.median(t)) for d, t in times.items()}}, fh, indent=1)


if __name__ == "__main__":
    main()
