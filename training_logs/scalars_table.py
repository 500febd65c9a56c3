"""Print a training run's TensorBoard scalars as a Markdown table (the logs in this folder).

    python training_logs/scalars_table.py workdirs/small_ouve --every 100

Reads every events file under WORKDIR/tensorboard (a resumed run appends a new file) and prints
one row per logged step that is a multiple of --every: loss, gradient norm, learning rate and
steps/s (the last value logged for that step).
"""

from __future__ import annotations

import argparse
import glob
import os

COLUMNS = ("loss", "grad_norm", "lr", "steps_per_s")


def read_scalars(workdir: str) -> dict[int, dict[str, float]]:
    import tensorflow as tf

    rows: dict[int, dict[str, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag in COLUMNS:
                    rows.setdefault(int(event.step), {})[value.tag] = float(tf.make_ndarray(value.tensor))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", help="a training workdir (holds tensorboard/)")
    p.add_argument("--every", type=int, default=100, help="print steps that are multiples of this (default 100)")
    args = p.parse_args()
    rows = read_scalars(args.workdir)
    print("| step | loss | grad norm | lr | steps/s |")
    print("|---|---|---|---|---|")
    for step in sorted(s for s in rows if s % args.every == 0):
        r = rows[step]
        print(f"| {step} | {r.get('loss', float('nan')):.1f} | {r.get('grad_norm', float('nan')):.1f} | "
              f"{r.get('lr', float('nan')):.2e} | {r.get('steps_per_s', float('nan')):.3f} |")


if __name__ == "__main__":
    main()
