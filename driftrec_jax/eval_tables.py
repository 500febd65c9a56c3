"""The tables of `driftrec evaluate`: per-row means of the per-image results and the files
results.md / results.csv / results.json / per_image.csv. Their metric columns are those of
`eval_metrics.METRICS`, in its order (docs/EVALUATE.md)."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterable, Sequence

import numpy as np

from .eval_cache import cache_key
from .eval_metrics import format_value, image_metrics, row_metrics

__all__ = ["GROUP", "aggregate", "markdown_table", "csv_columns", "image_columns", "write_tables"]

# The per-image results with equal values of these make one table row.
GROUP = ("dataset", "protocol", "method", "kind", "setting")


def aggregate(per_image: Iterable[dict], features=None) -> list[dict]:
    """Mean of every per-image metric, NFE and seconds over the images of each table row (paper
    Sec. IV); with `features` (an `eval_cache.Features`), also the per-row metrics (FID, KID: raw,
    not x 100) of the row's images against the originals; NaN without. A result without a metric
    counts as NaN for it."""
    groups: dict[tuple, list[dict]] = {}
    for r in per_image:
        groups.setdefault(tuple(r[k] for k in GROUP), []).append(r)
    nan = float("nan")
    rows = []
    for items in groups.values():
        first = items[0]
        row = {k: first[k] for k in GROUP}
        row.update(protocol_label=first["protocol_label"], sampler=first["sampler"], convention=first["convention"],
                   num_samples=first["num_samples"], images=len(items), crop=first.get("crop", 0))
        for k in [m.name for m in image_metrics()] + ["nfe", "seconds"]:
            row[k] = float(np.mean([it.get(k, nan) for it in items]))
        per_row = row_metrics()
        for m in per_row:
            row[m.name] = nan
        if features is not None and per_row and len(items) >= 2:
            fx = np.stack([features.load(it["key"]) for it in items])
            fy = np.stack([features.load(cache_key("original", it["folder"], it["protocol"], it["image"]))
                           for it in items])
            for m in per_row:
                row[m.name] = m.row(fx, fy)
        rows.append(row)
    return rows


def _cell(m, value) -> str:
    return format_value(None if value is None else m.display(value), m.fmt)


def markdown_table(rows: Sequence[dict]) -> str:
    """One Markdown table per folder x protocol, laid out like the paper's Tables II-III: the
    per-image metrics (SSIM, PSNR, PSNR-B up; LPIPS x 100 and BEF x 10^4 down), the per-row ones
    (FID, KID x 100) where some row of the table has them; NFE and seconds per image."""
    out = []
    blocks: dict[tuple, list[dict]] = {}
    for r in rows:
        blocks.setdefault((r["dataset"], r["protocol"]), []).append(r)
    for (dataset, _), items in blocks.items():
        items = sorted(items, key=lambda r: (r["kind"] != "jpeg", r["kind"] != "regression", r["method"], r["setting"]))
        first = items[0]
        shown = image_metrics() + [m for m in row_metrics()
                                   if any(math.isfinite(r.get(m.name, float("nan"))) for r in items)]
        crop = f", central {first['crop']}² crops" if first.get("crop") else ""
        out.append(f"### {dataset}, {first['protocol_label']} ({first['images']} images{crop}, "
                   f"{first['convention']} metric convention)\n")
        out.append("| Method | Sampler | NFE | " + " | ".join(m.header for m in shown) + " | s/img |")
        out.append("|---|---|---:|" + "---:|" * len(shown) + "---:|")
        for r in items:
            nfe = "" if r["kind"] == "jpeg" else format_value(r["nfe"], ".0f")
            secs = "" if r["kind"] == "jpeg" else format_value(r["seconds"], ".3g")
            cells = [r["method"], r["sampler"] or "—", nfe] + [_cell(m, r.get(m.name)) for m in shown] + [secs]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def csv_columns() -> tuple[str, ...]:
    """Columns of results.csv (one line per table row)."""
    return (("dataset", "protocol", "crop", "method", "kind", "setting", "sampler", "num_samples", "images",
             "nfe", "seconds") + tuple(m.name for m in image_metrics()) + tuple(m.name for m in row_metrics())
            + ("convention",))


def image_columns() -> tuple[str, ...]:
    """Columns of per_image.csv (one line per measured image)."""
    return (("dataset", "protocol", "crop", "method", "kind", "setting", "image", "height", "width", "nfe",
             "seconds") + tuple(m.name for m in image_metrics()) + ("convention",))


def write_tables(rows: Sequence[dict], per_image: Sequence[dict], out: str) -> None:
    """results.md / results.csv / results.json and per_image.csv in `out` (raw metric values in
    the CSV and JSON files: LPIPS not x 100, BEF on the [0, 1] scale, not x 10^4). Each file is
    written atomically: a killed run leaves the previous tables, never half a file."""
    from .images import atomic_write

    with atomic_write(os.path.join(out, "results.md"), text=True) as f:
        f.write(markdown_table(rows))
    for name, data, cols in (("results.csv", rows, csv_columns()), ("per_image.csv", per_image, image_columns())):
        with atomic_write(os.path.join(out, name), text=True, newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(data)
    with atomic_write(os.path.join(out, "results.json"), text=True) as f:
        json.dump({"rows": list(rows)}, f, indent=1)
