"""Train several variants of a config for the same CPU budget, then evaluate them side by side.

    python scripts/compare_training.py --data data/train --val data/val/kodak24 data/val/mcmaster18 \
        --cpu-minutes 240 --out compare/small_vs_cpu_vs_edm

Each variant is the config (``--config``, default small_ouve) plus ``--config.FIELD=VALUE``
overrides; the defaults compare the issue's three (docs/TRAINING.md, "Comparing at equal CPU time"):

    small   the config as it is (the 'small' network, the paper's loss, eq. (15))
    cpu     model.network=cpu (space-to-depth stem, docs/NETWORK.md)
    edm     model.preconditioning=edm (EDM-style preconditioning, docs/TRAINING.md)

Every variant trains in its own process from the same seeds (train.seed, data.seed: the same
crops and qualities in the same order) until ``train.max_cpu_minutes`` of that process's CPU time
(all threads, compilation and the input pipeline included) have been used; the CPU is what is
equal, so the variants can run one after another on a machine shared with other work. Then one
``driftrec evaluate`` restores every whole validation folder with each variant's EMA weights (the
default few-step sampler unless ``--sampler-settings``; central ``--crop`` pixels, one tile each)
and writes its tables to OUT/eval/results.md. OUT/summary.md lists each variant's steps, CPU and
wall seconds, and points to those tables.

A variant whose workdir already exists resumes there (training's own resume) and stops at the
same budget, counted anew for the new process: give a new --out for a new comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VARIANTS = ("small=", "cpu=model.network=cpu", "edm=model.preconditioning=edm")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME=FIELD=VALUE,FIELD=VALUE' (or 'NAME=' for the config as it is) → (name, overrides)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"bad variant {text!r}: expected NAME=FIELD=VALUE[,FIELD=VALUE...] or NAME=")
    overrides = []
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"bad override {item!r} in variant {name!r}: expected FIELD=VALUE")
        overrides.append(f"--config.{item}")
    return name, overrides


def _end_row(workdir: str) -> dict:
    with open(os.path.join(workdir, "train_log.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    ends = [r for r in rows if r.get("event") == "end"]
    return ends[-1] if ends else {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training images (--config.data.source)")
    p.add_argument("--val", nargs="+", required=True, help="validation folder(s), evaluated whole")
    p.add_argument("--cpu-minutes", type=float, required=True,
                   help="CPU minutes per variant (train.max_cpu_minutes: the process's CPU time, all threads)")
    p.add_argument("--out", required=True, help="output folder: one workdir per variant, eval/, summary.md")
    p.add_argument("--config", default="small_ouve", help="base config (default %(default)s)")
    p.add_argument("--variants", nargs="+", type=parse_variant, default=[parse_variant(v) for v in DEFAULT_VARIANTS],
                   metavar="NAME=OVERRIDES",
                   help="variants as NAME=FIELD=VALUE[,FIELD=VALUE...] (config fields; NAME= for the config as "
                        "it is); default: " + " ".join(DEFAULT_VARIANTS))
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="overrides for every variant (e.g. data.crop_size=32 for a smoke run)")
    p.add_argument("--quality", nargs="+", type=int, default=[10, 20, 30], help="JPEG qualities (default 10 20 30)")
    p.add_argument("--crop", type=int, default=128, help="central crop side of each image (default 128)")
    p.add_argument("--sampler-settings", nargs="*", default=[],
                   help="sampler settings for evaluate (default: its default few-step sampler)")
    p.add_argument("--max-images", type=int, default=0, help="only the first N images of each folder (0: all)")
    args = p.parse_args(argv)
    if not args.cpu_minutes > 0:
        p.error("--cpu-minutes must be positive")
    names = [n for n, _ in args.variants]
    if len(set(names)) != len(names):
        p.error(f"variant names repeat: {names}")
    for folder in [args.data, *args.val]:
        if not os.path.exists(folder):
            p.error(f"{folder}: not found")
    os.makedirs(args.out, exist_ok=True)

    common = [f"--config.{s}" for s in args.set] + [
        f"--config.data.source={args.data}", f"--config.train.max_cpu_minutes={args.cpu_minutes}",
        "--config.train.num_steps=100000000", "--config.train.checkpoint_every=100000000",
        "--config.train.sample_every=0", "--config.train.eval_every=0"]
    summary = []
    for name, overrides in args.variants:
        workdir = os.path.join(args.out, name)
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", args.config, "--workdir", workdir,
               *common, *overrides]
        print(f"[{name}] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc:
            print(f"compare_training: training {name} failed (exit status {rc})", file=sys.stderr)
            return rc
        end = _end_row(workdir)
        summary.append((name, overrides, end, time.perf_counter() - t0))

    cmd = [sys.executable, "-m", "driftrec_jax.cli", "evaluate", *[a for n, _ in args.variants for a in ("-c", f"{n}={os.path.join(args.out, n)}")],
           "-d", *args.val, "-q", *map(str, args.quality), "--crop", str(args.crop), "--tile", str(args.crop),
           "--batch-size", "1", "--out", os.path.join(args.out, "eval"), "--overwrite"]
    if args.sampler_settings:
        cmd += ["--sampler-settings", *args.sampler_settings]
    if args.max_images:
        cmd += ["--max-images", str(args.max_images)]
    print(f"[evaluate] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc:
        print(f"compare_training: evaluate failed (exit status {rc})", file=sys.stderr)
        return rc

    lines = [f"# Equal-CPU comparison: {args.config}, {args.cpu_minutes:g} CPU minutes per variant\n",
             "| variant | overrides | steps | CPU s | wall s | pairs/s after the first call |",
             "|---|---|---:|---:|---:|---:|"]
    for name, overrides, end, wall in summary:
        ov = " ".join(o[len("--config."):] for o in overrides) or "(config as it is)"
        lines.append(f"| {name} | {ov} | {end.get('step', '?')} | {end.get('cpu_s', float('nan')):.0f} | {wall:.0f} | "
                     f"{end.get('pairs_per_s') or float('nan'):.2f} |")
    lines.append(f"\nQuality: {os.path.join(args.out, 'eval', 'results.md')} (driftrec evaluate, central "
                 f"{args.crop}² crops, QF {' '.join(map(str, args.quality))}).\n")
    sys.path.insert(0, ROOT)
    from driftrec_jax.images import atomic_write

    with atomic_write(os.path.join(args.out, "summary.md"), text=True) as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
