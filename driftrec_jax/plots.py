"""Plots of `driftrec evaluate` results (PNG, matplotlib's Agg backend).

  perception_distortion   LPIPS and PSNR against the number of averaged samples (paper Fig. 7)
  nfe_curves              LPIPS and PSNR against the number of network evaluations, a line per
                          sampler (the paper's Table VI as a plot)
  example_crops           crops side by side: JPEG | baseline | DDRM-JPEG | DriftRec | original
  make_all(out)           all of them from OUT/results.json and OUT/images/, into OUT/plots/

Everything reads the files `driftrec_jax.evaluate` writes, so plots can be redrawn without
restoring anything. matplotlib is an optional dependency (`pip install matplotlib`); only this
module needs it, and only when a plot is drawn.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from .eval_metrics import METRICS

__all__ = ["example_path", "save_figure", "perception_distortion", "nfe_curves", "crop_columns", "example_crops", "make_all"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def example_path(out: str, dataset: str, protocol: str, method: str, name: str) -> str:
    """Where `evaluate --save-images` puts one image: OUT/images/DATASET/PROTOCOL/METHOD/NAME.png.
    METHOD is "JPEG", "original", a baseline's label, or "LABEL SETTING" (e.g. "ouve em:100")."""
    return os.path.join(out, "images", _slug(dataset), protocol, _slug(method),
                        os.path.splitext(name.replace("/", "_"))[0] + ".png")


def save_figure(fig, path: str, dpi: int = 120) -> str:
    """Save a matplotlib figure (Agg canvas) as an RGBA PNG of `dpi` dots per inch through the
    package's one PNG writer, `images.write_png` (atomic: a crash mid-write never leaves a
    truncated plot). Returns the path."""
    from .images import write_png

    fig.set_dpi(dpi)
    fig.canvas.draw()
    write_png(path, np.asarray(fig.canvas.buffer_rgba()))
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# The two axes of the curves: perception (LPIPS) and distortion (PSNR), scaled and titled as in the tables.
_CURVES = ("lpips", "psnr")


def _value(r: dict, name: str) -> float:
    return METRICS[name].display(r[name])


# Rows of sampled restorations (DriftRec samplers and DDRM-JPEG): the ones drawn as curves.
_SAMPLED = ("driftrec", "ddrm")


def _base_setting(setting: str) -> str:
    return setting.split("x")[0]


def _family(setting: str) -> tuple[str, str]:
    """(sampler family, step argument) of a setting key: 'ddim:10:0' -> ('ddim:0', '10'),
    'dpm2m:6@edm' -> ('dpm2m@edm', '6'), 'em:100' -> ('em', '100')."""
    name, _, rest = _base_setting(setting).partition(":")
    grid = ""
    if "@" in rest:
        rest, grid = rest.split("@", 1)
        grid = "@" + grid
    arg, _, eta = rest.partition(":")
    return name + (f":{eta}" if eta else "") + grid, arg


def _blocks(rows: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["protocol"]), []).append(r)
    return out


def _null_formatter():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _reference_lines(axes, items: Sequence[dict]) -> None:
    """Dashed horizontal lines for the JPEG input (grey) and the regression baselines (black)."""
    for r in items:
        if r["kind"] in ("jpeg", "regression"):
            style = dict(color="0.6" if r["kind"] == "jpeg" else "0.1", ls="--" if r["kind"] == "jpeg" else ":", lw=1)
            for ax, name in zip(axes, _CURVES):
                ax.axhline(_value(r, name), **style, label=r["method"])


def _finish(plt, fig, axes, ticks, xlabel: str, log_base: int, title: str, path: str) -> None:
    """Log-scaled x axis with a labelled tick at each value run, axis labels (LPIPS left, PSNR
    right), legend, title; saved to PATH and closed."""
    for ax, name in zip(axes, (METRICS[n].axis_label for n in _CURVES)):
        ax.set_xscale("log", base=log_base)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(_null_formatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def perception_distortion(rows: Sequence[dict], out_dir: str) -> list[str]:
    """One PNG per folder x protocol: LPIPS x 100 and PSNR against K, the number of averaged
    samples, a line per checkpoint and sampler setting (paper Fig. 7: PSNR rises with K, LPIPS
    gets worse). Drawn only where some setting was run with at least two values of K."""
    plt = _pyplot()
    written = []
    for (dataset, protocol), items in _blocks(rows).items():
        curves: dict[tuple[str, str], list[dict]] = {}
        for r in items:
            if r["kind"] in _SAMPLED:
                curves.setdefault((r["method"], _base_setting(r["setting"])), []).append(r)
        curves = {k: sorted(v, key=lambda r: r["num_samples"]) for k, v in curves.items()
                  if len({r["num_samples"] for r in v}) >= 2}
        if not curves:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for (method, setting), pts in curves.items():
            k = [r["num_samples"] for r in pts]
            for ax, name in zip(axes, _CURVES):
                ax.plot(k, [_value(r, name) for r in pts], "o-", label=f"{method} {setting}")
        _reference_lines(axes, items)
        ks = sorted({r["num_samples"] for pts in curves.values() for r in pts})
        path = os.path.join(out_dir, f"perception_distortion_{_slug(dataset)}_{protocol}.png")
        _finish(plt, fig, axes, ks, "samples averaged", 2,
                f"Perception–distortion: {dataset}, {items[0]['protocol_label']}", path)
        written.append(path)
    return written


def nfe_curves(rows: Sequence[dict], out_dir: str) -> list[str]:
    """One PNG per folder x protocol: LPIPS x 100 and PSNR against the mean NFE per image, a line
    per checkpoint and sampler (single samples only), like the paper's Table VI. Drawn where at
    least two settings of one checkpoint were run."""
    plt = _pyplot()
    written = []
    for (dataset, protocol), items in _blocks(rows).items():
        lines: dict[tuple[str, str], list[dict]] = {}
        for r in items:
            if r["kind"] in _SAMPLED and r["num_samples"] == 1:
                lines.setdefault((r["method"], _family(r["setting"])[0]), []).append(r)
        if sum(len(v) for v in lines.values()) < 2:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for (method, sampler), pts in sorted(lines.items()):
            pts = sorted(pts, key=lambda r: r["nfe"])
            label = f"{method} {sampler if sampler != 'heun' else 'Heun'}"
            for ax, name in zip(axes, _CURVES):
                ax.plot([r["nfe"] for r in pts], [_value(r, name) for r in pts], "o-", label=label)
            for r in pts:
                axes[0].annotate(_family(r["setting"])[1], (r["nfe"], _value(r, _CURVES[0])), fontsize=6,
                                 textcoords="offset points", xytext=(3, 3))
        _reference_lines(axes, items)
        nfes = sorted({round(r["nfe"]) for pts in lines.values() for r in pts})
        path = os.path.join(out_dir, f"nfe_{_slug(dataset)}_{protocol}.png")
        _finish(plt, fig, axes, nfes, "network evaluations (NFE) per image", 10,
                f"Quality against NFE: {dataset}, {items[0]['protocol_label']}", path)
        written.append(path)
    return written


def _load(path: str) -> np.ndarray:
    from .images import load_rgb8

    return load_rgb8(path).astype(np.float32) / 255.0


def _crop_box(jpeg: np.ndarray, clean: np.ndarray, size: int) -> tuple[int, int, int]:
    """The size x size window (on the 16-px grid) where the JPEG differs most from the original."""
    h, w = clean.shape[:2]
    size = min(size, h, w)
    err = np.square(jpeg - clean).sum(-1)
    best, box = -1.0, (0, 0)
    step = max(16, size // 2)
    for t in list(range(0, h - size + 1, step)) + [h - size]:
        for l in list(range(0, w - size + 1, step)) + [w - size]:
            e = float(err[t:t + size, l:l + size].sum())
            if e > best:
                best, box = e, (t, l)
    return box[0], box[1], size


def crop_columns(items: Sequence[dict]) -> list[tuple[str, str]]:
    """The columns of `example_crops` for the rows of one folder x protocol, as (image folder
    name, title): JPEG, the first regression baseline, the single-sample DDRM-JPEG row and the
    single-sample DriftRec row with the lowest mean LPIPS each (sampler in the title), original.
    Methods without rows are left out."""
    columns = [("JPEG", "JPEG")]
    baseline = next((r for r in items if r["kind"] == "regression"), None)
    if baseline is not None:
        columns.append((baseline["method"], baseline["method"]))
    for kind in ("ddrm", "driftrec"):
        single = [r for r in items if r["kind"] == kind and r["num_samples"] == 1]
        if single:
            r = min(single, key=lambda r: r["lpips"])
            columns.append((f"{r['method']} {r['setting']}", f"{r['method']} ({r['sampler']})"))
    return columns + [("original", "original")]


def example_crops(out: str, rows: Sequence[dict], out_dir: str, crop: int = 96) -> list[str]:
    """One PNG per folder x protocol with saved images: crops of JPEG | baseline | DDRM-JPEG |
    DriftRec | original (`crop_columns`) of the first saved image, in the window with the largest
    JPEG error, at 8-bit resolution without interpolation."""
    plt = _pyplot()
    written = []
    for (dataset, protocol), items in _blocks(rows).items():
        folder = os.path.join(out, "images", _slug(dataset), protocol)
        jpeg_dir = os.path.join(folder, "JPEG")
        if not os.path.isdir(jpeg_dir) or not os.listdir(jpeg_dir):
            continue
        name = sorted(os.listdir(jpeg_dir))[0]
        columns = crop_columns(items)
        paths = [(os.path.join(folder, _slug(m), name), title) for m, title in columns]
        paths = [(p, t) for p, t in paths if os.path.isfile(p)]
        if len(paths) < 2:
            continue
        imgs = [_load(p) for p, _ in paths]
        t, l, s = _crop_box(imgs[0], imgs[-1], crop)
        fig, axes = plt.subplots(1, len(imgs), figsize=(2.4 * len(imgs), 2.7))
        for ax, img, (_, title) in zip(np.atleast_1d(axes), imgs, paths):
            ax.imshow(img[t:t + s, l:l + s], interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.suptitle(f"{dataset}, {items[0]['protocol_label']}: {name} [{t}:{t + s}, {l}:{l + s}]", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, f"crops_{_slug(dataset)}_{protocol}.png")
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def make_all(out: str, crop: int = 96) -> list[str]:
    """Every plot that OUT/results.json (and OUT/images/) supports, written to OUT/plots/."""
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    out_dir = os.path.join(out, "plots")
    os.makedirs(out_dir, exist_ok=True)
    return (perception_distortion(rows, out_dir) + nfe_curves(rows, out_dir)
            + example_crops(out, rows, out_dir, crop))
