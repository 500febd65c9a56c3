"""Input-pipeline throughput: (clean, JPEG) pairs per second that `data.make_train_iterator` delivers
as numpy batches, the thing the training loop consumes (the augmentation of docs/DATA.md and DriftRec paper Sec. III-A).

    python bench/bench_data.py --source data/train
    python bench/bench_data.py --source DIR --crop-size 256 --batch 8 --batches 150 \
        --cases cache:tf nocache:tf cache:pillow nocache:tf:4

Each case is CACHE:BACKEND[:CROPS_PER_IMAGE] with CACHE in {cache, nocache} and BACKEND in
{tf, pillow}. For every case the iterator is built, `--warmup` batches are drawn (with `cache`,
warm-up defaults to one full pass over the images so the decoded cache is full), then `--batches`
batches are timed; the first pass (decoding every image once) is timed and reported separately.
Results are printed as a Markdown table and optionally written as JSON (--json).

Run it on an otherwise idle machine (pause other CPU jobs): tf.data uses every core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from driftrec_jax import data  # noqa: E402
from machine_info import machine  # noqa: E402


def parse_case(case: str) -> dict:
    parts = case.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("cache", "nocache") or parts[1] not in ("tf", "pillow"):
        raise SystemExit(f"bad case {case!r}: expected CACHE:BACKEND[:CROPS] like cache:tf or nocache:tf:4")
    return {"cache": parts[0] == "cache", "jpeg_backend": parts[1],
            "crops_per_image": int(parts[2]) if len(parts) == 3 else 1}


def bench_case(args, case: str) -> dict:
    opts = parse_case(case)
    cfg = dict(source=args.source, crop_size=args.crop_size, batch_size=args.batch, seed=0, **opts)
    t0 = time.perf_counter()
    it = data.make_train_iterator(cfg)
    build_s = time.perf_counter() - t0
    n_img = it.num_images
    per_pass = math.ceil(n_img / (args.batch / opts["crops_per_image"]))  # batches that decode every image once
    warmup = args.warmup if args.warmup is not None else (per_pass if opts["cache"] else 10)
    t0 = time.perf_counter()
    for _ in range(warmup):
        next(it)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.batches):
        b = next(it)
    dt = time.perf_counter() - t0
    assert b["clean"].shape == (args.batch, args.crop_size, args.crop_size, 3)
    return {"case": case, **opts, "images": n_img, "build_s": build_s, "warmup_batches": warmup,
            "warmup_pairs_per_s": warmup * args.batch / warm_s if warmup else float("nan"),
            "batches": args.batches, "seconds": dt, "pairs_per_s": args.batches * args.batch / dt,
            "unreadable": it.unreadable}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="folder or list file of training images")
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=150, help="timed batches per case")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches first (default: see above)")
    p.add_argument("--cases", nargs="+", default=["cache:tf", "cache:pillow", "nocache:tf", "nocache:tf:4"])
    p.add_argument("--json", default=None, help="write the results here as JSON")
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0]
    results = [bench_case(args, c) for c in args.cases]
    load_after = os.getloadavg()[0]
    print(f"\nmachine: {machine()}; crops {args.crop_size}², batch {args.batch}, "
          f"{results[0]['images']} images in {args.source}; 1-min load average "
          f"{load_before:.1f} before, {load_after:.1f} after (other jobs compete for the cores)\n")
    print("| case | cache | JPEG | crops/image | first pass pairs/s | steady pairs/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {'yes' if r['cache'] else 'no'} | {r['jpeg_backend']} | {r['crops_per_image']} | "
              f"{r['warmup_pairs_per_s']:.0f} ({r['warmup_batches']} batches) | {r['pairs_per_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "args": vars(args), "load_average": [load_before, load_after],
                       "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
