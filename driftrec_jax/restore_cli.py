"""`driftrec restore` (and `python sample.py`): the command line of `restoring.restore_files`.

    driftrec restore INPUT... -o OUTDIR [--checkpoint MODEL] [--sampler ddim|dpm2m|sde-dpm2m|em|heun|ode]
                     [--steps N] [--eta E] [--grid t|lambda|edm] ...
    driftrec restore photo.jpg -o OUTDIR --method ddrm [--checkpoint DDRM_MODEL] [--num-samples K]
    driftrec restore photo.jpg -o OUTDIR --checkpoint I2SB_MODEL [--steps N] [--num-samples K]

This module is a thin shell: it builds the parser (`configure`), maps the parsed options to the
keyword options of `driftrec_jax.restoring.restore_files` (`options`; --checkpoint is `model`, the
others keep their names) and calls it. The file pipeline (input checks, output names, no-clobber
atomic writes, several processes, progress bar, summary) and the seed rule live there, under the
Python API as well (`driftrec_jax.load(...).restore_files`). docs/RESTORE.md is the user guide.

Exit status: what `restore_files` returns, 0 when every image was restored (or skipped with
--skip-existing), 1 when some input failed or its output exists (one line each on stderr,
``driftrec restore: <path>: <reason>``; the others are still restored); 2 for usage errors
(`restoring.UsageError`, one line: no inputs, no images found, missing or unreadable model file,
bad tiling options, an output folder that is a file or cannot be written); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

from . import engine, sampler_settings
from .image_files import IMAGE_EXTENSIONS
from .restoring import METHODS, PROG, UsageError, restore_files

# Sampler names, defaults and text forms: driftrec_jax.sampler_settings (no JAX import), shared
# with `driftrec evaluate` and the training configs.
SAMPLER_NAMES = tuple(sampler_settings.SAMPLERS)  # which apply to a model: its task decides
DEFAULT_EPS = sampler_settings.DEFAULT_EPS
DEFAULT_TOL = sampler_settings.DEFAULT_TOL  # paper Table VI: about 26 network evaluations at 1e-3
# Tiles per device and call when --batch-size is not given (driftrec_jax.engine).
DEFAULT_BATCH_ACCELERATOR = engine.DEFAULT_BATCH_ACCELERATOR
DEFAULT_BATCH_CPU = engine.DEFAULT_BATCH_CPU
DDRM_DEFAULT_STEPS = sampler_settings.DEFAULT_STEPS["ddrm"]  # = ddrm.NUM_STEPS (DDRM-JPEG paper Sec. 4)

# File extensions picked up when an input is a folder (case-insensitive): IMAGE_EXTENSIONS of
# driftrec_jax.image_files, the same for training and evaluation. Files named explicitly are
# always tried, whatever their extension.


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


def options(args) -> dict:
    """The keyword options of `restoring.restore_files` for the parsed options of `configure`."""
    return dict(model=args.checkpoint, method=args.method, sampler=args.sampler, steps=args.steps, eta=args.eta,
                grid=args.grid, tol=args.tol, num_samples=args.num_samples, seed=args.seed,
                batch_size=args.batch_size, devices=args.devices, tile=args.tile, overlap=args.overlap,
                eps=args.eps, color_correction=args.color_correction, compile_cache=args.compile_cache,
                skip_existing=args.skip_existing, overwrite=args.overwrite, max_pixels=args.max_pixels)


def run(args) -> int:
    """Restore `args.inputs` into `args.outdir` (options of `configure`); returns the exit status:
    `restoring.restore_files`'s, 2 for a usage error (one line on stderr), 130 when interrupted."""
    try:
        return restore_files(args.inputs, args.outdir, **options(args))
    except UsageError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
