"""Tables and plots of a quality-against-NFE study made with `driftrec evaluate`.

    driftrec evaluate -c DriftRec=MODEL -d kodak24/ mcmaster18/ cbsd68/ -q 10 20 30 --crop 128 \\
        --tile 128 --batch-size 1 --sampler-settings ddim:3 ddim:5 dpm2m:5 em:100 ... --out OUT
    python scripts/sampler_study.py OUT [OUT2 ...] --reference em:100 [--plots docs/figures] [--md OUT/study.md]

Reads OUT/per_image.csv (or with --cache every result in OUT/cache.jsonl: all the runs made into
OUT, a running one too); with several folders or CSV files (e.g. one evaluate run per stage of a
study), their rows together, where a later input's row replaces an earlier one of the same setting
and image. Writes, as Markdown (to stdout, or with --md to a file):

1. one table over every (set, quality, image) that all settings were run on: per setting the
   network calls, mean PSNR / SSIM / PSNR-B / LPIPS / BEF, and the per-image differences to the
   reference setting and to the JPEG as mean ± standard deviation with the count of images where
   the setting is better — so a reader sees which differences exceed the image-to-image spread;
2. the same means per set and quality.

With --plots, PSNR and LPIPS against NFE and the perception–distortion plane (LPIPS against PSNR),
one line per sampler family, as PNGs.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout
    sys.path.insert(0, ROOT)

from driftrec_jax.eval_metrics import image_metrics, ordered  # noqa: E402
from driftrec_jax.images import atomic_write  # noqa: E402

# The per-image metrics of evaluate's registry, PSNR first; ΔPSNR and ΔLPIPS are this study's.
METRICS = ordered(image_metrics(), first=("psnr",))


def read_rows(out: str, cache: bool = False) -> list[dict]:
    """Per-image rows of an evaluate --out folder: per_image.csv (the last finished run), or with
    `cache` (or no per_image.csv yet) every result in its cache.jsonl, a running job's too."""
    path = out if os.path.isfile(out) else os.path.join(out, "per_image.csv")
    if os.path.exists(path) and (not cache or path == out):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = []
        with open(os.path.join(out, "cache.jsonl")) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a killed run
                    pass
    for r in rows:
        for m in METRICS:
            r[m.name] = float(r[m.name]) if r.get(m.name) not in (None, "") else math.nan
        r["nfe"] = float(r["nfe"]) if r.get("nfe") not in (None, "") else math.nan
        r["seconds"] = float(r["seconds"]) if r.get("seconds") not in (None, "") else math.nan
        r["setting"] = r.get("setting") or ("JPEG" if r.get("kind") == "jpeg" else r.get("method", ""))
    return rows


def _image_id(r: dict) -> tuple:
    return (r["dataset"], r["protocol"], r["image"])


def _mean(v):
    return sum(v) / len(v) if v else math.nan


def _std(v):
    if len(v) < 2:
        return math.nan
    m = _mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def paired(rows: list[dict], reference: str) -> tuple[list[str], dict]:
    """(settings in order, {setting: {image id: row}}) over the images every setting was run on."""
    by: dict[str, dict] = collections.defaultdict(dict)
    for r in rows:
        by[r["setting"]][_image_id(r)] = r
    if reference not in by:
        raise SystemExit(f"sampler_study: no rows of the reference setting {reference!r}")
    if "JPEG" not in by:
        raise SystemExit("sampler_study: no JPEG rows")
    common = set.intersection(*(set(v) for v in by.values()))
    if not common:
        raise SystemExit("sampler_study: no image was run with every setting yet")
    order = sorted(by, key=lambda s: (s != "JPEG", _family(s), _nfe(by[s])))
    return order, {s: {i: by[s][i] for i in common} for s in order}


def _nfe(per_image: dict) -> float:
    return _mean([r["nfe"] for r in per_image.values()])


def _family(setting: str) -> str:
    return re.sub(r":[0-9.e-]+", "", setting.split("x")[0], count=1)


def _fmt(v, spec=".2f"):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def overall_table(order: list[str], data: dict, reference: str) -> list[str]:
    ids = sorted(next(iter(data.values())))
    out = [f"{len(ids)} images (set × quality × image). Δ: mean ± standard deviation over images of the "
           f"per-image difference; 'better' counts the images where the setting beats the reference "
           f"({reference}) or the JPEG.", "",
           "| setting | NFE | " + " | ".join(m.compact for m in METRICS) + " | ΔPSNR vs ref | better | "
           "ΔLPIPS×100 vs ref | better | ΔPSNR vs JPEG | better | ΔLPIPS×100 vs JPEG | better | s/img |",
           "|---|---:|" + "---:|" * len(METRICS) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref, jpeg = data[reference], data["JPEG"]
    for s in order:
        d = data[s]
        means = [format(_mean([m.display(d[i][m.name]) for i in ids]), m.fmt) for m in METRICS]
        cells = []
        for base in (ref, jpeg):
            if s in ("JPEG",) or d is base:
                cells += ["", "", "", ""]
                continue
            dp = [d[i]["psnr"] - base[i]["psnr"] for i in ids]
            dl = [100 * (d[i]["lpips"] - base[i]["lpips"]) for i in ids]
            cells += [f"{_mean(dp):+.2f} ± {_std(dp):.2f}", f"{sum(x > 0 for x in dp)}/{len(ids)}",
                      f"{_mean(dl):+.2f} ± {_std(dl):.2f}", f"{sum(x < 0 for x in dl)}/{len(ids)}"]
        nfe = _nfe(d)
        sec = _mean([d[i]["seconds"] for i in ids])
        out.append(f"| {s} | {_fmt(nfe, '.0f')} | " + " | ".join(means) + " | " + " | ".join(cells) + f" | {_fmt(sec)} |")
    return out


def per_block_table(order: list[str], data: dict) -> list[str]:
    ids = sorted(next(iter(data.values())))
    blocks = sorted({(i[0], i[1]) for i in ids}, key=lambda b: (b[0], int(re.sub(r"\D", "", b[1]) or 0)))
    out = ["| setting | " + " | ".join(f"{d} {p.upper()}" for d, p in blocks) + " |",
           "|---|" + "---:|" * len(blocks)]
    for s in order:
        cells = []
        for b in blocks:
            rows = [data[s][i] for i in ids if (i[0], i[1]) == b]
            cells.append(f"{_mean([r['psnr'] for r in rows]):.2f} / {100 * _mean([r['lpips'] for r in rows]):.1f}")
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    counts = collections.Counter((i[0], i[1]) for i in ids)
    out.append("")
    out.append("Cells: PSNR dB / LPIPS×100; images per cell: "
               + ", ".join(f"{d} {p.upper()} {counts[(d, p)]}" for d, p in blocks) + ".")
    return out


def plots(order: list[str], data: dict, reference: str, out_dir: str, prefix: str = "sampler_study") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from driftrec_jax.plots import save_figure

    ids = sorted(next(iter(data.values())))
    fams: dict[str, list] = collections.defaultdict(list)
    for s in order:
        if s == "JPEG":
            continue
        d = data[s]
        fams[_family(s)].append((_nfe(d), _mean([d[i]["psnr"] for i in ids]), 100 * _mean([d[i]["lpips"] for i in ids]), s))
    jpeg = data["JPEG"]
    j_psnr, j_lpips = _mean([jpeg[i]["psnr"] for i in ids]), 100 * _mean([jpeg[i]["lpips"] for i in ids])
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for fam, pts in sorted(fams.items()):
        pts.sort()
        style = dict(marker="o") if len(pts) > 1 else dict(marker="s", linestyle="none")
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], label=fam, **style)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], label=fam, **style)
    for ax, v, name in ((axes[0], j_psnr, "PSNR (dB) ↑"), (axes[1], j_lpips, "LPIPS ×100 ↓")):
        ax.axhline(v, color="gray", linestyle="--", label="JPEG")
        ax.set_xscale("log")
        ax.set_xlabel("network calls per image (NFE)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Quality against network calls ({len(ids)} images)", fontsize=10)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{prefix}_nfe.png"))
    save_figure(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for fam, pts in sorted(fams.items()):
        pts.sort()
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=fam)
        for p in pts:
            ax.annotate(f"{p[0]:.0f}", (p[1], p[2]), fontsize=6, textcoords="offset points", xytext=(3, 3))
    ax.plot([j_psnr], [j_lpips], "k*", markersize=10, label="JPEG")
    ax.set_xlabel("PSNR (dB) → better")
    ax.set_ylabel("LPIPS ×100 ↓ better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Perception–distortion (labels: NFE)", fontsize=10)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{prefix}_pd.png"))
    save_figure(fig, paths[-1])
    plt.close(fig)
    return paths


CSV_COLUMNS = ("dataset", "protocol", "image", "setting", "nfe")


def write_csv(rows: list[dict], path: str) -> None:
    """The per-image rows, sorted by set, quality, image and setting, written whole (tmp + rename)."""
    cols = CSV_COLUMNS + tuple(m.name for m in METRICS) + ("seconds",)
    with atomic_write(path, text=True, newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in sorted(rows, key=lambda r: _image_id(r) + (r["setting"],)):
            w.writerow(["" if isinstance(r[c], float) and math.isnan(r[c]) else
                        (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in cols])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="+",
                    help="the --out folder of a driftrec evaluate run, or a per-image CSV file with its columns "
                         "(e.g. bench/results/sampler_study_per_image.csv); several: their rows together, a later "
                         "input's row replacing an earlier one of the same setting and image")
    ap.add_argument("--reference", default="em:100", help="setting the others are compared with (default em:100)")
    ap.add_argument("--plots", metavar="DIR", help="also write the two plots into DIR")
    ap.add_argument("--prefix", default="sampler_study", help="file name prefix of the plots")
    ap.add_argument("--cache", action="store_true",
                    help="read every result in OUT/cache.jsonl instead of the last run's per_image.csv")
    ap.add_argument("--md", metavar="FILE", help="write the tables to FILE (replaced whole, never half-written) "
                                                 "instead of stdout")
    ap.add_argument("--csv", metavar="FILE", help="also write the per-image rows the tables use (every setting on the "
                                                  "images they all share) to FILE, with the columns of "
                                                  "bench/results/sampler_study_per_image.csv")
    ap.add_argument("--only", nargs="+", metavar="SETTING",
                    help="only these settings (and the JPEG), so that the images they share are all counted")
    args = ap.parse_args(argv)
    merged: dict = {}
    for out in args.out:
        try:
            rows = read_rows(out, args.cache)
        except OSError as err:
            print(f"sampler_study: cannot read {out}: {err.strerror}", file=sys.stderr)
            return 2
        merged.update(((r["setting"],) + _image_id(r), r) for r in rows)
    rows = list(merged.values())
    if args.only:
        keep = set(args.only) | {"JPEG", args.reference}
        rows = [r for r in rows if r["setting"] in keep]
    order, data = paired(rows, args.reference)
    if args.csv:  # the rows the tables use: every setting on the images they all share
        write_csv([r for s in order for r in data[s].values()], args.csv)
    lines = ["#### All images", ""] + overall_table(order, data, args.reference)
    lines += ["", "#### Per set and quality", ""] + per_block_table(order, data)
    if args.md:
        with atomic_write(args.md, text=True) as f:
            f.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        for p in plots(order, data, args.reference, args.plots, args.prefix):
            print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
