"""`driftrec restore` (and `python sample.py`): restore JPEG photos of any size to PNG.

    driftrec restore INPUT... -o OUTDIR [--checkpoint MODEL] [--sampler ddim|dpm2m|sde-dpm2m|em|heun|ode]
                     [--steps N] [--eta E] [--grid t|lambda|edm] ...
    driftrec restore photo.jpg -o OUTDIR --method ddrm [--checkpoint DDRM_MODEL] [--num-samples K]
    driftrec restore photo.jpg -o OUTDIR --checkpoint I2SB_MODEL [--steps N] [--num-samples K]

INPUTs are image files or folders (searched recursively for image extensions). Every image is
cut into overlapping tiles (`images.restore_images`); the tiles of consecutive images share
fixed-shape batches that go through one compiled restorer, the model's `Task.tile_restorer`
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

    fold_in(fold_in(PRNGKey(seed), crc32(NAME)), k)

so the same seed gives the same image whatever else is restored in the same run, in whatever
order and with whatever --batch-size (each tile is sampled on its own under `jax.vmap`; the ODE
solver adapts its step size per tile).

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
import collections
import dataclasses
import os
import sys
import time
import zlib
from pathlib import Path

from . import sampler_settings
from .image_files import IMAGE_EXTENSIONS, list_image_folder

PROG = "driftrec restore"

# Sampler names, defaults and text forms: driftrec_jax.sampler_settings (no JAX import), shared
# with `driftrec evaluate` and the training configs.
SAMPLER_NAMES = tuple(sampler_settings.SAMPLERS)  # which apply to a model: its task decides
DEFAULT_EPS = sampler_settings.DEFAULT_EPS
DEFAULT_TOL = sampler_settings.DEFAULT_TOL  # paper Table VI: about 26 network evaluations at 1e-3
METHODS = ("driftrec", "ddrm", "i2sb")  # `tasks.Task.method` of the model classes
# Tiles per batch when --batch-size is not given: on the CPU a batch of one 256² tile runs at the
# highest rate (BENCHMARKS.md: 0.92 vs 0.64 network evaluations/s for 8), on accelerators 8.
DEFAULT_BATCH_ACCELERATOR = 8
DEFAULT_BATCH_CPU = 1
DDRM_DEFAULT_STEPS = sampler_settings.DEFAULT_STEPS["ddrm"]  # = ddrm.NUM_STEPS (DDRM-JPEG paper Sec. 4)

# File extensions picked up when an input is a folder (case-insensitive): IMAGE_EXTENSIONS of
# driftrec_jax.image_files, the same for training and evaluation. Files named explicitly are
# always tried, whatever their extension.

# Compiled restorers of this process, keyed by (task, setting, options, batch shape): a second
# `run` in the same process (tests, notebooks) reuses them.
_COMPILED: dict = {}


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
        "  fold_in(fold_in(PRNGKey(seed), crc32(NAME)), k).\n"
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
                        help="tiles restored at once; on a GPU/TPU more is faster per tile but needs more "
                             "memory; on a CPU one at a time is fastest (lowered to the number of tiles "
                             f"when there are fewer; default: {DEFAULT_BATCH_ACCELERATOR} on a GPU/TPU, "
                             f"{DEFAULT_BATCH_CPU} on a CPU)")
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


def _name_hash(path: str) -> int:
    """crc32 of the file's base name (UTF-8): the per-image part of the random key."""
    return zlib.crc32(os.path.basename(path).encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------------------------
# The compiled restorer


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


def _tile_keys(base_key, ids):
    """The key of every tile: fold_in(fold_in(base_key, id0), id1) for ids (B, 2) uint32 =
    (crc32 of the file name, tile number) (module docstring)."""
    import jax

    fold = _COMPILED.get("tile_keys")
    if fold is None:
        fold = _COMPILED["tile_keys"] = jax.jit(jax.vmap(
            lambda key, i: jax.random.fold_in(jax.random.fold_in(key, i[0]), i[1]), in_axes=(None, 0)))
    return fold(base_key, ids)


def _compiled_restorer(task, params, options: tuple, batch: int, tile: int, subsampling: str | None = None):
    """The task's tile restorer (`Task.tile_restorer`; options = (setting, eps, colour
    correction)) compiled ahead of time for (batch, tile, tile, 3) float32 tiles and (batch, 2)
    keys (memoised per process); returns (compiled, seconds spent compiling, 0 when memoised).
    A task that needs tables (`subsampling` given) takes the per-tile (luma, chroma) tables,
    two (batch, 8, 8) int32 arrays, as its aux argument; the others None."""
    import jax
    import jax.numpy as jnp

    setting, eps, color_correction = options
    memo_key = (task, options, batch, tile, subsampling,
                jax.tree.structure(params), tuple((a.shape, a.dtype) for a in jax.tree.leaves(params)))
    if memo_key in _COMPILED:
        return _COMPILED[memo_key], 0.0
    start = time.perf_counter()
    fn = task.tile_restorer(setting, eps=eps, color_correction=color_correction, subsampling=subsampling)
    aux = None
    if subsampling is not None:
        aux = (jax.ShapeDtypeStruct((batch, 8, 8), jnp.int32),) * 2
    compiled = fn.lower(params, jax.ShapeDtypeStruct((batch, tile, tile, 3), jnp.float32),
                        jax.ShapeDtypeStruct((batch, 2), jnp.uint32), aux).compile()
    _COMPILED[memo_key] = compiled
    return compiled, time.perf_counter() - start


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
        return _run(args)
    except UsageError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    from PIL import Image

    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        return _restore(args)
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


def _restore(args) -> int:
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

    checkpoint = args.checkpoint
    if checkpoint is None:
        from . import models

        checkpoint = models.bundled_model_path(args.method or "driftrec")
        if not os.path.exists(checkpoint):
            what = "DDRM model" if args.method == "ddrm" else "model"
            raise UsageError(f"this installation has no bundled {what} ({checkpoint} is missing); "
                             "pass --checkpoint MODEL_FILE_OR_WORKDIR")
    elif not os.path.exists(checkpoint):
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

    for path, reason in problems:
        fail(path, reason)

    # Every input is opened and checked (header, size, pixel format) before anything is compiled;
    # the outputs that already exist are found now too.
    limit = Image.MAX_IMAGE_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    Image.MAX_IMAGE_PIXELS = limit  # what load_image enforces below: the files checked here pass
    out_of = images.output_paths(files, outdir)
    sizes: dict = {}  # path -> (width, height) from the header
    todo, skipped = [], 0
    for path in files:
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

    import jax
    import numpy as np

    from . import models

    try:
        task, params, spec = models.load_model(checkpoint)
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
    if not todo:  # nothing left to restore: nothing is compiled, no folder created
        print(_summary(0, total_inputs, outdir, failed, skipped) + "; nothing to restore", file=sys.stderr)
        return 1 if failed else 0
    _check_outdir(outdir)

    total_tiles = sum(images.count_tiles(sizes[p][1], sizes[p][0], args.tile, args.overlap) for p in todo)
    requested = args.batch_size
    if requested is None:
        requested = DEFAULT_BATCH_CPU if jax.default_backend() == "cpu" else DEFAULT_BATCH_ACCELERATOR
    batch = max(1, min(requested, total_tiles))
    options = (setting, args.eps, args.color_correction)

    compiled, compile_s = (None, 0.0)
    labels: collections.deque = collections.deque()  # (name hash, tile number) of tiles to come
    written: collections.deque = collections.deque()  # (path, LoadedImage without pixels)
    base_key = jax.random.PRNGKey(args.seed)
    nfe_total = nfe_max = tiles_done = 0

    def unread(path, reason) -> None:
        fail(path, reason)
        if bar is not None and sizes.get(path):  # its tiles were counted from the header
            bar.total -= images.count_tiles(sizes[path][1], sizes[path][0], args.tile, args.overlap)
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
            h, w = loaded.shape
            n = images.count_tiles(h, w, args.tile, args.overlap)
            crc = _name_hash(path)
            tables = tables_of[path][0] if task.needs_tables else None
            labels.extend((crc, k, tables) for k in range(n))
            # Keep the format facts for writing, not the pixels (a zero-stride placeholder).
            placeholder = np.broadcast_to(np.float32(0), loaded.rgb.shape)
            written.append((path, dataclasses.replace(loaded, rgb=placeholder)))
            rgb = loaded.rgb
            del loaded
            yield rgb
            del rgb

    def restore_batch(tiles: np.ndarray) -> np.ndarray:
        nonlocal nfe_total, nfe_max, tiles_done
        real = min(len(labels), tiles.shape[0])
        ids = np.zeros((tiles.shape[0], 2), np.uint32)
        luma = np.ones((tiles.shape[0], 8, 8), np.int32)
        chroma = np.ones((tiles.shape[0], 8, 8), np.int32)
        for k in range(real):
            crc, number, tables = labels.popleft()
            ids[k] = crc, number
            if tables is not None:
                luma[k], chroma[k] = tables
        aux = (luma, chroma) if task.needs_tables else None
        x, nfe = compiled(params, tiles, _tile_keys(base_key, ids), aux)
        nfe = np.asarray(nfe)[:real]
        nfe_total += int(nfe.sum())
        nfe_max = max(nfe_max, int(nfe.max(initial=0)))
        tiles_done += real
        return np.asarray(x)

    bar = None
    if tqdm is not None:
        bar = tqdm(total=total_tiles, unit="tile", file=sys.stderr, disable=None, dynamic_ncols=True,
                   desc="compiling")
    restored = 0
    # Groups of files that share one compiled restorer (DDRM: one per chroma layout, restored
    # group after group).
    groups = [(None, todo)]
    if task.needs_tables:
        layouts = sorted({tables_of[p][1] for p in todo}, key=lambda s: s != "4:2:0")
        groups = [(s, [p for p in todo if tables_of[p][1] == s]) for s in layouts]
    run_s = 0.0
    started = False
    try:
        for subsampling, group in groups:
            if not group:
                continue
            compiled, seconds = _compiled_restorer(task, params, options, batch, args.tile, subsampling)
            compile_s += seconds
            if bar is not None and not started:  # restart the clock: the rate excludes compilation
                bar.reset(total=total_tiles)
                bar.set_description("restoring")
            started = True
            run_start = time.perf_counter()
            results = images.restore_images(stream(group), restore_batch, tile=args.tile, overlap=args.overlap,
                                            batch_size=batch, progress=bar, total_tiles=total_tiles)
            for rgb in results:
                path, like = written.popleft()
                try:
                    images.save_image(out_of[path], rgb, like, overwrite=args.overwrite)
                    restored += 1
                except FileExistsError:  # it appeared while this run was restoring
                    fail(path, exists_message(out_of[path]))
                except (OSError, ValueError) as err:
                    fail(path, f"cannot write {out_of[path]}: {getattr(err, 'strerror', None) or err}")
                del rgb
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

    what = task.describe(setting)
    nfe_text = ""
    if tiles_done and setting is not None:  # (a regression model: one pass, said by `what`)
        mean = nfe_total / tiles_done
        nfe_text = (f", {mean:.0f} network evaluations per tile" if mean == nfe_max
                    else f", {mean:.1f} network evaluations per tile (max {nfe_max})")
    summary = _summary(restored, total_inputs, outdir, failed, skipped)
    summary += (f"; {tiles_done} tiles of {args.tile}px, {what}{nfe_text}; "
                f"compile {compile_s:.1f} s, restore {run_s:.1f} s")
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
