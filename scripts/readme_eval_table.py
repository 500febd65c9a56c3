#!/usr/bin/env python
"""Print README's combined evaluation table from the results.json of `driftrec evaluate --out DIR`.

    python scripts/readme_eval_table.py eval/bundled/results.json
    python scripts/readme_eval_table.py eval/bundled/results.json --vs-jpeg eval/bundled/per_image.csv

One row per set x quality x method (JPEG, Regression, DDRM-JPEG, DriftRec with the default sampler,
other few-step settings, EM, ODE), in the order of the sets and qualities of the evaluation; `driftrec
evaluate` itself writes one table per set and quality (results.md).

With --vs-jpeg PER_IMAGE_CSV, README's second table instead: per method, the per-image difference to
the JPEG of the same image (mean ± standard deviation over the images, and on how many the method is
better), and in how many set x quality cells its mean beats the JPEG's.
"""

import argparse
import collections
import csv
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout
    sys.path.insert(0, ROOT)

from driftrec_jax.eval_metrics import image_metrics, ordered  # noqa: E402
from driftrec_jax.sampler_settings import DEFAULT_SETTING  # noqa: E402

ORDER = ("jpeg", "regression", "ddrm", "default", "other", "em", "ode")


def label(row: dict) -> tuple[str, str]:
    """(order key, README method name) of a results.json row."""
    setting = row.get("setting") or ""
    if row["kind"] == "jpeg":
        return "jpeg", "JPEG"
    if row["kind"] == "regression":
        return "regression", row["method"]
    if setting.startswith("ddrm"):
        return "ddrm", f"DDRM-JPEG {setting.split(':')[1]} (non-blind)"
    if setting.startswith("em"):
        return "em", f"{row['method']} EM {setting.split(':')[1]}"
    if setting.startswith("ode"):
        tol = f"{float(setting.split(':')[1]):.0e}".replace("e-0", "e-")  # 0.001 -> 1e-3
        return "ode", f"{row['method']} ODE {tol}"
    sampler = row.get("sampler") or setting
    if setting == DEFAULT_SETTING:
        return "default", f"{row['method']} {sampler} (default)"
    return "other", f"{row['method']} {sampler}".strip()


def table(rows: list[dict]) -> str:
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))

    def key(r):
        return sets.index(r["dataset"]), protocols.index(r["protocol"]), ORDER.index(label(r)[0])

    metrics = ordered(image_metrics(), first=("psnr",))  # the registry's columns, PSNR first
    out = ["| set | QF | method | NFE | " + " | ".join(m.header for m in metrics) + " | s/img |",
           "|---|---|---|---:|" + "---:|" * len(metrics) + "---:|"]
    for r in sorted(rows, key=key):
        jpeg = r["kind"] == "jpeg"
        nfe = "" if jpeg else f"{r['nfe']:.0f}"
        secs = "" if jpeg else f"{r['seconds']:.1f}"
        qf = r["protocol_label"].replace("QF ", "")
        values = [format(m.display(r.get(m.name, float("nan"))), m.fmt) for m in metrics]
        out.append(f"| {r['dataset']} | {qf} | {label(r)[1]} | {nfe} | " + " | ".join(values) + f" | {secs} |")
    return "\n".join(out)


VS_JPEG = ("psnr", "psnrb", "lpips", "bef")


def vs_jpeg_table(rows: list[dict], per_image: list[dict], names=VS_JPEG) -> str:
    """Per method of `rows` (results.json), its per-image differences to the JPEG in `per_image`
    (per_image.csv rows): mean ± std (better/images) per metric, then the cells (set x quality)
    whose mean beats the JPEG's. Display scales as in the main table (LPIPS x100, BEF x1e4)."""
    metrics = [m for m in image_metrics() if m.name in names]
    labels = {(r["method"], r.get("setting") or ""): label(r) for r in rows}
    jpeg = {(r["dataset"], r["protocol"], r["image"]): r for r in per_image if r["kind"] == "jpeg"}
    by: dict = collections.defaultdict(list)  # (method, setting) -> [(row, its JPEG's row)]
    for r in per_image:
        ref = jpeg.get((r["dataset"], r["protocol"], r["image"]))
        if r["kind"] != "jpeg" and (r["method"], r["setting"]) in labels and ref is not None:
            by[(r["method"], r["setting"])].append((r, ref))
    out = ["| method | " + " | ".join(m.label for m in metrics) + " | cells better than the JPEG |",
           "|---|" + "---|" * len(metrics) + "---|"]
    for key in sorted(by, key=lambda k: ORDER.index(labels[k][0])):
        pairs = by[key]
        cells, counts = [], []
        for m in metrics:
            sign = 1 if m.higher_is_better else -1
            d = [m.display(float(r[m.name])) - m.display(float(ref[m.name])) for r, ref in pairs]
            better = sum(sign * x > 0 for x in d)
            cells.append(f"{format(statistics.fmean(d), '+' + m.fmt)} ± {format(statistics.stdev(d), m.fmt)} "
                         f"({better}/{len(d)})")
            cell_sums: dict = collections.defaultdict(float)  # a cell's mean beats the JPEG's iff its sum does
            for (r, _), x in zip(pairs, d):
                cell_sums[(r["dataset"], r["protocol"])] += x
            counts.append(f"{m.title} {sum(sign * v > 0 for v in cell_sums.values())}/{len(cell_sums)}")
        out.append(f"| {labels[key][1]} | " + " | ".join(cells) + " | " + ", ".join(counts) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files of `driftrec evaluate` (rows are concatenated)")
    parser.add_argument("--vs-jpeg", metavar="PER_IMAGE_CSV",
                        help="print the per-image comparison with the JPEG from this per_image.csv of the same "
                             "evaluation instead of the main table")
    args = parser.parse_args()
    rows = []
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            rows += json.load(f)["rows"]
    if args.vs_jpeg:
        with open(args.vs_jpeg, newline="", encoding="utf-8") as f:
            print(vs_jpeg_table(rows, list(csv.DictReader(f))))
    else:
        print(table(rows))


if __name__ == "__main__":
    main()
