#!/usr/bin/env python
"""Print README's combined evaluation table from the results.json of `driftrec evaluate --out DIR`.

    python scripts/readme_eval_table.py eval/bundled/results.json

One row per set x quality x method (JPEG, Regression, DDRM-JPEG, DriftRec with the default sampler,
other few-step settings, EM, ODE), in the order of the sets and qualities of the evaluation; `driftrec evaluate` itself writes one table per
set and quality (results.md).
"""

import argparse
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files of `driftrec evaluate` (rows are concatenated)")
    args = parser.parse_args()
    rows = []
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            rows += json.load(f)["rows"]
    print(table(rows))


if __name__ == "__main__":
    main()
