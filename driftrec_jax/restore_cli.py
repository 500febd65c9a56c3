"""`driftrec restore` (and `python sample.py`): restore JPEG photos of any size to PNG.

    driftrec restore INPUT... -o OUTDIR [--checkpoint MODEL] [--sampler ddim|dpm2m|sde-dpm2m|em|heun|ode]
                     [--steps N] [--eta E] [--grid t|lambda|edm] ...
    driftrec restore photo.jpg -o OUTDIR --method ddrm [--checkpoint DDRM_MODEL] [--num-samples K]
    driftrec restore photo.jpg -o OUTDIR --checkpoint I2SB_MODEL [--steps N] [--num-samples K]

INPUTs are image files or folders (searched recursively for image extensions). Every image is
cut into overlapping tiles and restored by the tile engine (`engine.TileEngine`, on every device:
batches sharded over the ('data',) mesh); the tiles of consecutive images share fixed-shape
batches that go through one compiled restorer, the model's `Task.tile_restorer`
(driftrec_jax.tasks). For a DriftRec model that is `samplers.sample`: the few-step
exact-transition samplers of docs/SAMPLERS.md, the paper's Euler–Maruyama/Heun with N steps to ε
(Sec. IV-F), or the probability-flow ODE with Dormand–Prince 5(4) at rtol = atol = --tol
(Sec. IV-G); k-sample averaging, colour correction. A regression model makes one network pass
per tile; an I²SB model (`--method i2sb`) runs I²SB's posterior sampler with --steps network
calls. With a DDRM ε model (`--method ddrm`, DDRM-JPEG) every tile is restored with the
quantisation tables read from its own file (so DDRM inputs must be JPEG files, 4:2:0, 4:4:4 or
gray); files are grouped by chroma layout, one compilation each. The blended result is written as
a PNG named so that it is never an input (`images.output_paths`), atomically
(`images.atomic_write`), and replacing an existing file only with --overwrite. docs/RESTORE.md is
the user guide.

Noise and seeds: the random key of tile number k (row-major order) of an input file named NAME is
the engine's rule (`engine.tile_key`, source id = the base name)

    fold_in(fold_in(PRNGKey(seed), crc32(NAME) & 0x7FFFFFFF), k)

so the same seed gives the same image whatever else is restored in the same run, in whatever
order, with whatever --batch-size, on however many devices and processes (each tile is sampled
on its own under `jax.vmap`; the ODE solver adapts its step size per tile).

Several processes (`python -m driftrec_jax.launch`, SLURM, a TPU pod): every process lists the
inputs, takes every P-th file (`parallel.share`), checks, restores and writes those; the batches
are sharded over the devices of all processes; process 0 shows the progress of its files and
prints the summary of all.

Start-up: nothing here imports TensorFlow, and JAX's persistent compilation cache is kept in
$DRIFTREC_CACHE_DIR, else $XDG_CACHE_HOME/driftrec_jax/jax, else ~/.cache/driftrec_jax/jax, so a
second run with the same model architecture and settings loads the compiled sampler instead of
compiling it. JAX itself is imported only when a restoration starts (`--help` stays instant).

Order of work: every input is opened and checked first (header, size against --max-pixels, pixel
format) and its output looked up, so bad inputs and existing outputs are reported before the
model is loaded or anything is compiled (a run left with nothing to do compiles nothing).

Exit status: 0 when every image was restored (or skipped with --skip-existing); 1 when some input
failed or its output exists (one line each on stderr, ``driftrec restore: <path>: <reason>``; the
others are still restored); 2 for usage errors (no inputs, no images found, missing or unreadable
model file, bad tiling options, an output folder that is a file or cannot be written).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from . import engine, sampler_settings
from .image_files import IMAGE_EXTENSIONS, list_image_folder

PROG = "driftrec restore"

# Sampler names, defaults and text forms: driftrec_jax.sampler_settings (no JAX import), shared
# with `driftrec evaluate` and the training configs.
SAMPLER_NAMES = tuple(sampler_settings.SAMPLERS)  # which apply to a model: its task decides
DEFAULT_EPS = sampler_settings.DEFAULT_EPS
DEFAULT_TOL = sampler_settings.DEFAULT_TOL  # paper Table VI: about 26 network evaluations at 1e-3
METHODS = ("driftrec", "ddrm", "i2sb")  # `tasks.Task.method` of the model classes
# Tiles per device and call when --batch-size is not given (driftrec_jax.engine).
DEFAULT_BATCH_ACCELERATOR = engine.DEFAULT_BATCH_ACCELERATOR
DEFAULT_BATCH_CPU = engine.DEFAULT_BATCH_CPU
# DDRM chroma layouts (ddrm.file_tables; gray files are 4:4:4), restored in this order.
DDRM_LAYOUTS = ("4:2:0", "4:4:4")
DDRM_DEFAULT_STEPS = sampler_settings.DEFAULT_STEPS["ddrm"]  # = ddrm.NUM_STEPS (DDRM-JPEG paper Sec. 4)

# File extensions picked up when an input is a folder (case-insensitive): IMAGE_EXTENSIONS of
# driftrec_jax.image_files, the same for training and evaluation. Files named explicitly are
# always tried, whatever their extension.

class UsageError(Exception):
    """A mistake in the command line (exit status 2)."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of `driftrec restore` / `python sample.py` to `parser`."""
    parser.description = (
        "Restore JPEG-compressed photos (any size, gray, alpha, 16-bit) with a DriftRec model\n"
        "and write one PNG per input into OUTDIR. No existing file is replaced unless you pass\n"
        "--overwrite, and input files never are. Every input is checked (header, size, pixel\n"
        "format) before the model is compiled; outputs are written atomically (no half PNG).")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "exit status: 0 all restored (or skipped); 1 some input failed or its output exists\n"
        "  (one line each on stderr, the rest is restored); 2 usage error.\n"
        "seeds: tile k (row-major) of a file named NAME uses the random key\n"
        "  fold_in(fold_in(PRNGKey(seed), crc32(NAME) & 0x7FFFFFFF), k) (driftrec_jax.engine).\n"
        "devices: every device of every process (a pod, or python -m driftrec_jax.launch);\n"
        "  each process restores its share of the files (docs/RESTORE.md).\n"
        "compilation cache: $DRIFTREC_CACHE_DIR, else $XDG_CACHE_HOME/driftrec_jax/jax,\n"
        "  else ~/.cache/driftrec_jax/jax.\n"
        "samplers (network calls per tile; docs/RESTORE.md compares them):\n"
        + sampler_settings.help_lines() + "\n"
        "See docs/RESTORE.md.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, or folders searched recursively for images "
                             f"({', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))})")
    parser.add_argument("-o", "--outdir", required=True,
                        help="required: folder for the restored PNGs (created if needed); outputs are "
                             "named after the inputs (NAME.png), never replace an input file, and replace "
                             "another existing file only with --overwrite")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="a model file (.msgpack) or a training workdir "
                             "(default: the model bundled with the package for --method: a small "
                             "DriftRec-OUVE, or with --method ddrm a small DDRM prior)")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="driftrec (a DriftRec or regression model), ddrm (DDRM-JPEG with an "
                             "unconditional ε model; needs JPEG inputs, whose quantisation tables it "
                             "reads) or i2sb (an I²SB model); default: whatever the model file is")
    default = sampler_settings.default_setting()
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, default=None,
                        help=f"reverse-time sampler, one line each below (default: {default.label} for DriftRec "
                             "models, the paper's is --sampler em --steps 100; ddrm and i2sb for their models)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="steps of the sampler: network calls for ddim, dpm2m and sde-dpm2m; em 1 call "
                             "each, heun 2; ignored by ode (defaults: "
                             + ", ".join(f"{k} {v}" for k, v in sampler_settings.DEFAULT_STEPS.items() if k != "ddrm")
                             + f"); DDRM steps from t = 285 (default {DDRM_DEFAULT_STEPS}); i2sb network calls")
    parser.add_argument("--eta", type=_closed_unit_float, default=None,
                        help="ddim only: η in [0, 1]; 1 draws each step from the exact posterior (default), "
                             "0 is deterministic (smoother, blurrier)")
    parser.add_argument("--grid", choices=sampler_settings.GRIDS, default=None,
                        help="ddim, dpm2m, sde-dpm2m: grid of the network calls in time, uniform in t, in "
                             "λ = log(a/σ) or EDM's ρ = 7 noise levels (defaults: ddim t, dpm2m and "
                             "sde-dpm2m lambda)")
    parser.add_argument("--eps", type=_unit_float, default=DEFAULT_EPS,
                        help="last time ε the samplers integrate down to (default: %(default)s)")
    parser.add_argument("--tol", type=_positive_float, default=DEFAULT_TOL,
                        help="driftrec ode only: relative and absolute tolerance of the adaptive step size "
                             "(paper: 1e-1..1e-4 give 20..50 evaluations; default: %(default)s)")
    parser.add_argument("--num-samples", type=_positive_int, default=1, metavar="K",
                        help="average K independent samples per image: higher PSNR, less detail "
                             "(paper Fig. 7; DDRM's 'Ours (A)'; costs K times the compute; "
                             "default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives the same images (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="tiles per device restored at once (N times the number of devices per call); "
                             "on a GPU/TPU more is faster per tile but needs more memory; on a CPU one at a "
                             "time is fastest (lowered when there are fewer tiles; default: "
                             f"{DEFAULT_BATCH_ACCELERATOR} on a GPU/TPU, {DEFAULT_BATCH_CPU} on a CPU)")
    parser.add_argument("--devices", type=_positive_int, default=None, metavar="N",
                        help="restore on the first N devices only (one process; default: every device of "
                             "every process)")
    parser.add_argument("--tile", type=_positive_int, default=256, metavar="PIXELS",
                        help="side of the square tiles the network sees; a multiple of 16 and of the "
                             "network's downsampling factor (default: %(default)s)")
    parser.add_argument("--overlap", type=_nonnegative_int, default=32, metavar="PIXELS",
                        help="least overlap of neighbouring tiles, cross-faded to hide seams "
                             "(default: %(default)s)")
    parser.add_argument("--no-color-correction", dest="color_correction", action="store_false",
                        help="do not shift each colour channel's mean back to the JPEG's "
                             "(the DriftRec paper's colour correction of DriftRec models; by default it is on, "
                             "per tile; DDRM and I²SB have none)")
    parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                        help="do not read or write JAX's persistent compilation cache "
                             "(by default it is used, so later runs start faster)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave inputs whose output PNG already exists alone and count them as "
                               "skipped, not failed (useful to resume a folder; default: off, see --overwrite)")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace output PNGs that already exist (default: off: an input whose output "
                               "exists is reported in one line, not restored, and the exit status is 1; "
                               "input files are never replaced either way)")
    parser.add_argument("--max-pixels", type=_nonnegative_int, default=None, metavar="N",
                        help="largest image (width x height) read; larger ones are refused as possible "
                             "decompression bombs (default: Pillow's limit, Image.MAX_IMAGE_PIXELS, "
                             "89478485 in Pillow 13; 0: no limit)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _closed_unit_float(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    configure(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Parse `argv` (default sys.argv[1:]) and restore; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    return run(args)


# --------------------------------------------------------------------------------------------
# Inputs, cache folder


def find_images(inputs, exclude=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand command-line inputs into image files: (files, [(input, reason), ...] not usable).

    A file is taken as given (whatever its extension; reading it decides). A folder is listed by
    `image_files.list_image_folder` (as training and evaluation list folders): searched recursively for
    files with an IMAGE_EXTENSIONS suffix, skipping hidden files and folders and everything under
    `exclude` (the output folder, so a re-run does not restore its own outputs; not applied when
    `exclude` is the input folder itself); each folder's files are sorted by relative path. A path that does not exist is reported, not raised.
    Files named twice are kept once.
    """
    excl = os.path.realpath(exclude) if exclude is not None else None
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        ident = os.path.realpath(path)
        if ident not in seen:
            seen.add(ident)
            files.append(path)

    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            # The output folder is skipped when it lies inside the input folder, not when it is it.
            for path in list_image_folder(item, exclude=excl):
                add(path)
        elif os.path.exists(item):
            add(item)
        else:
            problems.append((item, "no such file or folder"))
    return files, problems


def compile_cache_dir() -> Path:
    """Folder of JAX's persistent compilation cache for `driftrec restore`.

    $DRIFTREC_CACHE_DIR if set, else $XDG_CACHE_HOME/driftrec_jax/jax, else ~/.cache/driftrec_jax/jax.
    """
    explicit = os.environ.get("DRIFTREC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "driftrec_jax" / "jax"


def _setup_compile_cache(enabled: bool, warn) -> Path | None:
    """Point JAX's persistent compilation cache at `compile_cache_dir()` (or switch it off).

    Must run before anything is compiled in this process: JAX decides once per process whether
    the cache is used. Every compilation is cached (minimum compile time 0 s), so the sampler of
    even a tiny model is found again by the next run.
    """
    import jax

    if not enabled:
        if jax.config.jax_compilation_cache_dir:  # e.g. set through JAX_COMPILATION_CACHE_DIR
            jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warn(f"{PROG}: compilation cache off: cannot create {path} ({err.strerror or err})")
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


# --------------------------------------------------------------------------------------------
# The sampler setting


def _setting(args, default=None) -> "sampler_settings.SamplerSetting":
    """The sampler setting of the command-line options; `default` (the model's, else DriftRec's
    default setting) when none is named."""
    default = default or sampler_settings.default_setting()
    name = args.sampler or default.sampler
    if args.eta is not None and name != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim, not {name}")
    if args.grid is not None and name not in sampler_settings.FEW_STEP:
        raise UsageError(f"--grid applies to {', '.join(sampler_settings.FEW_STEP)}, not {name}")
    if name == "ode":
        return sampler_settings.SamplerSetting("ode", tol=args.tol, num_samples=args.num_samples)
    if args.sampler is None and args.steps is None and args.eta is None and args.grid is None:
        return dataclasses.replace(default, num_samples=args.num_samples)
    return sampler_settings.SamplerSetting(name, steps=args.steps or sampler_settings.DEFAULT_STEPS[name],
                                           eta=args.eta, grid=args.grid, num_samples=args.num_samples)


def _sampler_settings(args) -> dict:
    """Keyword arguments of `samplers.sample` for the command-line options (a DriftRec model)."""
    settings = _setting(args).options(args.eps)
    settings["color_correction"] = args.color_correction
    return settings


def _tile_fn(task, setting, eps: float, color_correction: bool, subsampling: str | None):
    """The restorer of one batch of tiles (the task's `tile_restorer`, driftrec_jax.tasks); a
    function of its own so that tests can swap it."""
    return task.tile_restorer(setting, eps=eps, color_correction=color_correction, subsampling=subsampling)


def _ddrm_file_tables(path: str) -> tuple:
    """((luma, chroma), subsampling) of a JPEG file for DDRM; ValueError (one line) otherwise."""
    from PIL import Image

    from . import ddrm

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f"cannot read it ({err.strerror})") from None
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG file: DDRM-JPEG reads the quantisation tables of the input JPEG")
    try:
        tables, subsampling = ddrm.file_tables(data)
        import io

        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(0x0112, 1)
    except Exception as err:  # noqa: BLE001 - a damaged header is this file's problem only
        raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    if orientation not in (None, 1):
        raise ValueError(f"EXIF orientation {orientation}: DDRM-JPEG needs the file's own pixel grid "
                         "(rotate it losslessly, e.g. jpegtran -rotate, or use DriftRec)")
    return tables, subsampling


def _downsampling_factor(spec: dict) -> int:
    """2**(number of resolution levels − 1) of the model's NCSN++: tiles must be multiples of it."""
    from .networks.presets import network_config

    cfg = dict(network_config(spec["network"]), **spec.get("overrides", {}))
    return 2 ** (len(cfg["ch_mult"]) - 1)


# --------------------------------------------------------------------------------------------
# The command


def run(args) -> int:
    """Restore `args.inputs` into `args.outdir` (options of `configure`); returns the exit status."""
    try:
        return restore(args)
    except UsageError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def restore(args, model=None) -> int:
    """The command on parsed options (those of `configure`), with `model` (an `api.Restorer`) in
    place of loading --checkpoint when given; returns the exit status, raises UsageError."""
    from PIL import Image

    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        return _restore(args, model)
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


def exists_message(out: Path) -> str:
    """The one-line reason for an input whose output file already exists."""
    return f"{out} already exists: not replaced (--overwrite replaces it, --skip-existing skips such inputs)"


def _check_outdir(outdir: Path) -> None:
    """Create the output folder and check that a file can be created in it (UsageError if not)."""
    from . import images

    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fp, tmp = images._open_temp(outdir, "driftrec-write-check")
        fp.close()
        tmp.unlink()
    except OSError as err:
        raise UsageError(f"cannot write to the output folder {outdir} ({err.strerror or err}); "
                         "choose another -o") from None


def _restore(args, model=None) -> int:
    from PIL import Image

    from . import images

    try:
        images._check_tiling(args.tile, args.overlap, args.batch_size or 1)
    except ValueError as err:
        raise UsageError(str(err)) from None

    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output folder {outdir} exists and is not a folder")
    files, problems = find_images(args.inputs, exclude=outdir)
    if not files:
        reasons = "; ".join(f"{p}: {r}" for p, r in problems)
        raise UsageError("no images found in the inputs" + (f" ({reasons})" if reasons else ""))

    # Several processes (a pod; python -m driftrec_jax.launch): each checks, restores and writes its
    # share of the files (every process lists them all, in the same order); process 0 reports.
    from . import parallel

    parallel.initialize_distributed()
    main, several = parallel.is_main_process(), parallel.process_count() > 1
    if several and args.devices is not None:
        raise UsageError("--devices applies to a single process; several processes use all their devices")

    checkpoint = args.checkpoint
    if model is None and checkpoint is None:
        from . import models

        checkpoint = models.bundled_model_path(args.method or "driftrec")
        if not os.path.exists(checkpoint):
            what = "DDRM model" if args.method == "ddrm" else "model"
            raise UsageError(f"this installation has no bundled {what} ({checkpoint} is missing); "
                             "pass --checkpoint MODEL_FILE_OR_WORKDIR")
    elif model is None and not os.path.exists(checkpoint):
        raise UsageError(f"--checkpoint {checkpoint}: no such file or folder")

    try:
        from tqdm import tqdm
        write = lambda msg: tqdm.write(msg, file=sys.stderr)  # noqa: E731 - keeps the bar intact
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm, write = None, lambda msg: print(msg, file=sys.stderr)

    failed = 0
    pending_lines: list | None = []  # lines found before the model is checked (usage errors first)

    def fail(path, reason) -> None:
        nonlocal failed
        failed += 1
        if pending_lines is not None:
            pending_lines.append(f"{PROG}: {path}: {reason}")
        else:
            write(f"{PROG}: {path}: {reason}")

    for path, reason in problems if main else ():
        fail(path, reason)

    # Every input is opened and checked (header, size, pixel format) before anything is compiled;
    # the outputs that already exist are found now too.
    limit = Image.MAX_IMAGE_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    Image.MAX_IMAGE_PIXELS = limit  # what load_image enforces below: the files checked here pass
    out_of = images.output_paths(files, outdir)
    sizes: dict = {}  # path -> (width, height) from the header
    todo, skipped = [], 0
    for path in parallel.share(files):
        out = out_of[path]
        if os.path.lexists(out) and not args.overwrite:
            if args.skip_existing:
                skipped += 1
            else:
                fail(path, exists_message(out))
            continue
        try:
            head = images.probe_image(path, max_pixels=limit or 0)
        except images.ImageTooLargeError as err:
            fail(path, f"{_reason(err, path)}; if you trust the file, allow it with --max-pixels {err.pixels} "
                       "(0: no limit)")
            continue
        except images.ImageReadError as err:
            fail(path, _reason(err, path))
            continue
        sizes[path] = (head.width, head.height)
        todo.append(path)
    total_inputs = len(files) + len(problems)

    # Before anything is compiled (JAX decides once per process whether the cache is used).
    _setup_compile_cache(args.compile_cache, write)
    try:
        mesh = parallel.make_mesh(args.devices)
    except ValueError as err:
        raise UsageError(f"--devices {args.devices}: {err}") from None

    import numpy as np

    from . import api, models

    try:
        if model is None:
            model = api.load(checkpoint)
        task, params, spec = model.task, model.params, model.spec
    except models.ModelLoadError as err:
        raise UsageError(str(err)) from None
    except (KeyError, TypeError, ValueError) as err:  # a model file with a description we cannot build
        raise UsageError(f"{checkpoint}: unusable model description ({type(err).__name__}: {err})") from None
    from . import tasks

    if args.method is not None and args.method != task.method:
        raise UsageError(f"--method {args.method} needs {tasks.METHOD_MODELS[args.method]}; {checkpoint} is a "
                         f"{task.title} model: restore it with --method {task.method}")
    asked = _setting(args, task.default_setting())  # the task's default when no sampler option is given
    try:
        setting = task.check_setting(asked)
    except ValueError as err:
        raise UsageError(f"--sampler {asked.sampler}: {err}") from None
    factor = _downsampling_factor(spec)
    if args.tile % factor:
        raise UsageError(f"--tile {args.tile} must be a multiple of {factor} for this model's network")
    for line in pending_lines:  # the model is usable: now the inputs' problems
        write(line)
    pending_lines = None

    tables_of: dict = {}  # DDRM: path -> ((luma, chroma), subsampling) of the file
    if task.needs_tables:
        usable = []
        for path in todo:
            try:
                tables_of[path] = _ddrm_file_tables(path)
                usable.append(path)
            except ValueError as err:
                fail(path, str(err))
        todo = usable
    # Several processes agree on the work (each process's files, failures and tiles per group)
    # with one all-gather; every process compiles the same restorers and makes the same calls.
    layouts = list(DDRM_LAYOUTS) if task.needs_tables else [None]
    group_of = {p: (tables_of[p][1] if task.needs_tables else None) for p in todo}
    tiles_of = {p: images.count_tiles(sizes[p][1], sizes[p][0], args.tile, args.overlap) for p in todo}
    local_tiles = [sum(tiles_of[p] for p in todo if group_of[p] == g) for g in layouts]
    counts = parallel.values_of_processes([len(todo), failed, skipped, *local_tiles])
    all_tiles = counts[:, 3:]
    if not counts[:, 0].sum():  # nothing left to restore: nothing is compiled, no folder created
        if main:
            print(_summary(0, total_inputs, outdir, int(counts[:, 1].sum()), int(counts[:, 2].sum()))
                  + "; nothing to restore", file=sys.stderr)
        return 1 if counts[:, 1].sum() else 0
    _check_outdir(outdir)

    nfe_total = nfe_max = tiles_done = 0

    def unread(path, reason) -> None:
        fail(path, reason)
        if bar is not None:  # its tiles were counted from the header
            bar.total -= tiles_of[path]
            bar.refresh()

    def stream(paths):
        for path in paths:
            try:
                loaded = images.load_image(path)
            except images.ImageReadError as err:
                unread(path, _reason(err, path))
                continue
            except MemoryError:
                unread(path, "not enough memory to read this image")
                continue
            # Keep the format facts for writing, not the pixels (a zero-stride placeholder).
            like = dataclasses.replace(loaded, rgb=np.broadcast_to(np.float32(0), loaded.rgb.shape))
            rgb = loaded.rgb
            del loaded
            tables = tables_of[path][0] if task.needs_tables else None
            yield engine.Source(os.path.basename(path), rgb, tables, (path, like))
            del rgb

    total_tiles = sum(local_tiles)
    bar = None
    if tqdm is not None and main:
        bar = tqdm(total=total_tiles, unit="tile", file=sys.stderr, disable=None, dynamic_ncols=True,
                   desc="compiling")
    restored = 0
    compile_s = run_s = 0.0
    try:
        # One engine (one compiled restorer) per group: DDRM one per chroma layout, restored group
        # after group; every process runs every group that any process has tiles of.
        engines = []
        for g, layout in enumerate(layouts):
            if not all_tiles[:, g].sum():
                continue
            fn = _tile_fn(task, setting, args.eps, args.color_correction, layout)
            eng = engine.TileEngine(fn, params, mesh=mesh, tile=args.tile, overlap=args.overlap,
                                    batch_size=args.batch_size, max_tiles=int(all_tiles[:, g].sum()),
                                    tables=task.needs_tables)
            compile_s += eng.compile()
            calls = int(max(-(-int(n) // eng.rows) for n in all_tiles[:, g])) if several else None
            engines.append((layout, eng, calls))
        if bar is not None:  # restart the clock: the rate excludes compilation
            bar.reset(total=total_tiles)
            bar.set_description("restoring")
        for layout, eng, calls in engines:
            run_start = time.perf_counter()
            group = [p for p in todo if group_of[p] == layout]
            for result in eng.run(stream(group), seed=args.seed, progress=bar, calls=calls):
                path, like = result.source.tag
                tiles_done += result.tiles
                nfe_total += result.nfe * result.tiles
                nfe_max = max(nfe_max, result.nfe_max)
                try:
                    images.save_image(out_of[path], result.image, like, overwrite=args.overwrite)
                    restored += 1
                except FileExistsError:  # it appeared while this run was restoring
                    fail(path, exists_message(out_of[path]))
                except (OSError, ValueError) as err:
                    fail(path, f"cannot write {out_of[path]}: {getattr(err, 'strerror', None) or err}")
                del result
            run_s += time.perf_counter() - run_start
    except Exception as err:
        if "RESOURCE_EXHAUSTED" in str(err) or isinstance(err, MemoryError):
            if bar is not None:
                bar.close()
            detail = (str(err).splitlines() or [type(err).__name__])[0]
            print(f"{PROG}: out of memory ({detail}); try a smaller --batch-size or --tile", file=sys.stderr)
            return 1
        raise
    finally:
        if bar is not None:
            bar.close()

    done = parallel.values_of_processes([restored, failed, skipped, tiles_done, round(nfe_total), nfe_max])
    restored, failed, skipped, tiles_done, nfe_total = (int(v) for v in done[:, :5].sum(0))
    nfe_max = int(done[:, 5].max())
    if not main:
        return 1 if failed else 0
    what = task.describe(setting)
    nfe_text = ""
    if tiles_done and setting is not None:  # (a regression model: one pass, said by `what`)
        mean = nfe_total / tiles_done
        nfe_text = (f", {mean:.0f} network evaluations per tile" if mean == nfe_max
                    else f", {mean:.1f} network evaluations per tile (max {nfe_max})")
    summary = _summary(restored, total_inputs, outdir, failed, skipped)
    summary += (f"; {tiles_done} tiles of {args.tile}px, {what}{nfe_text}; "
                f"compile {compile_s:.1f} s, restore {run_s:.1f} s")
    if mesh.devices.size > 1:
        summary += f" on {mesh.devices.size} devices" + (f" in {parallel.process_count()} processes" if several else "")
    print(summary, file=sys.stderr)
    return 1 if failed else 0


def _reason(err: Exception, path: str) -> str:
    """An ImageReadError's message without its "cannot read PATH: " prefix."""
    return str(err).replace(f"cannot read {path}: ", "", 1)


def _summary(restored: int, total: int, outdir, failed: int, skipped: int) -> str:
    text = f"restored {restored} of {total} inputs into {outdir}"
    if failed:
        text += f" ({failed} failed)"
    if skipped:
        text += f" ({skipped} skipped: output exists)"
    return text
