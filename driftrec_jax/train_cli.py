"""The training loop behind `train.py` and `driftrec train`.

    python train.py --config configs/small_ouve.py --workdir workdirs/small_ouve [--config.FIELD=VALUE ...]

Resumes from the workdir's latest checkpoint by itself (parameters, EMA, optimiser state, step,
RNG and data position). A new workdir can start from trained weights instead of random ones with
``--config.train.init_from=MODEL.msgpack`` (fine-tuning, or continuing a released model whose
checkpoints are gone): parameters and EMA start from those weights, the optimiser afresh. Writes to the workdir:

  checkpoints/     orbax checkpoints (last ``train.keep_checkpoints``)
  model.msgpack    the EMA weights + model description, for `driftrec restore --checkpoint`
  train_log.jsonl  one JSON object a line: each run's start (command, devices), its loss, lr,
                   gradient norm, steps/s, pairs/s, wall and CPU seconds every ``train.log_every``
                   steps, and its end (steps, why it stopped, average pairs/s after compilation)
  tensorboard/     loss, lr, gradient norm, steps/s, pairs/s, sample grids, validation metrics
                   (through tf.summary: only with ``data.pipeline='tf'``, never importing TensorFlow otherwise)
  samples/         sample grids (JPEG | restored | clean) as PNG
  config.json      the resolved config

Nothing is written outside the workdir (``train.init_from`` is only read). The workdir is
training's own once it has checkpoints/ (a rerun resumes there); a folder without checkpoints/
that already holds model.msgpack, config.json, samples/, tensorboard/ or train_log.jsonl (say, a downloaded
model file) is refused before anything is compiled, unless --overwrite. Model files and sample
PNGs are written atomically (`images.atomic_write`).

``train.max_minutes`` (0: none) stops a run after that many minutes of wall time (counted from the
start, compilation included; the step under way and a final checkpoint are finished first), which
the same command later resumes. ``train.max_cpu_minutes`` (0: none) does the same for CPU time
(``time.process_time()``: every thread of the process, compilation and the input pipeline
included), so that runs on a shared machine can be compared at an equal CPU budget
(scripts/compare_training.py). A progress bar runs when tqdm is installed; otherwise, or with
``progress="lines"``, a line is printed every ``train.log_every`` steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import time
import traceback

import jax
import numpy as np

from . import checkpoint, config_lib, models, parallel, train_lib
from .images import save_png


# `driftrec train` passes --config.FIELD=VALUE arguments through as overrides.
ACCEPTS_OVERRIDES = True


class TrainingDiverged(RuntimeError):
    pass


class WorkdirError(ValueError):
    """The workdir is a file, or a folder that training did not make but would overwrite files in."""


class DataPathError(ValueError):
    """``data.source`` is empty or missing, or ``train.eval_folder`` is set but missing."""


def check_data_paths(config) -> None:
    """Refuse (DataPathError, one line) a run without training data before anything is built:
    ``data.source`` empty or not found (tensorflow-datasets sources are not checked here), or a
    ``train.eval_folder`` that is given but not found. Configs leave both to the command line."""
    source = config.data.get("source", "")
    if source is None or (isinstance(source, str) and not source.strip()):
        raise DataPathError("no training data: give --config.data.source=PATH (a folder of photos, a text file "
                            "listing them, or tfds:NAME)")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.startswith("tfds:") and not os.path.exists(path):
            raise DataPathError(f"--config.data.source={path}: not found (a folder of photos, a text file "
                                "listing them, or tfds:NAME)")
    folder = config.train.get("eval_folder", "")
    if folder and not os.path.isdir(folder):
        raise DataPathError(f"--config.train.eval_folder={folder}: no such folder (give a folder of validation "
                            "images, or leave it empty for no validation)")


# Files and folders `train` writes into its workdir besides checkpoints/.
WORKDIR_NAMES = ("model.msgpack", "config.json", "samples", "tensorboard", "train_log.jsonl")


def check_workdir(workdir: str, overwrite: bool = False) -> None:
    """Refuse (WorkdirError, one line) a workdir that is a file, or a folder without checkpoints/
    (not a training workdir) that holds one of WORKDIR_NAMES, unless `overwrite`."""
    from .images import foreign_outputs

    try:
        clash = foreign_outputs(workdir, "checkpoints", WORKDIR_NAMES)
    except NotADirectoryError:
        raise WorkdirError(f"--workdir {workdir} exists and is not a folder") from None
    if clash and not overwrite:
        raise WorkdirError(f"--workdir {workdir} is not a training workdir (no checkpoints/) and already holds "
                           f"{', '.join(clash)}: not replaced (--overwrite writes there anyway; or choose "
                           "another --workdir)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="config name (e.g. small_ouve, ouve_d2kf2k) or path to a configs/*.py file")
    parser.add_argument("--workdir", required=True,
                        help="folder for checkpoints, logs, samples and model.msgpack; training resumes from it")
    parser.add_argument("--overwrite", action="store_true",
                        help="start in a --workdir without checkpoints/ even where it holds model.msgpack, "
                             "config.json, samples/, tensorboard/ or train_log.jsonl, replacing them (default: "
                             "refuse, one line, exit status 2)")
    parser.epilog = ("Override any config field with --config.FIELD=VALUE, e.g. --config.train.num_steps=200 "
                     "--config.data.source=/data/photos --config.sde.name=cosve. Multi-host: launch one process "
                     "per host (SLURM, TPU pods: jax.distributed.initialize() finds the others); several "
                     "processes on one machine: python -m driftrec_jax.launch. See docs/TRAINING.md.")


class _Logger:
    """TensorBoard scalars and images (process 0 only), through tf.summary."""

    def __init__(self, logdir: str | None):
        self.writer = None
        if logdir:
            import tensorflow as tf

            self.tf = tf
            self.writer = tf.summary.create_file_writer(logdir)

    def scalars(self, step: int, values: dict) -> None:
        if self.writer:
            with self.writer.as_default(step=step):
                for k, v in values.items():
                    self.tf.summary.scalar(k, float(v))

    def image(self, step: int, name: str, img: np.ndarray) -> None:
        if self.writer:
            with self.writer.as_default(step=step):
                self.tf.summary.image(name, img[None], max_outputs=1)

    def flush(self):
        if self.writer:
            self.writer.flush()


class _RunLog:
    """``train_log.jsonl`` (process 0 only): appended, one JSON object a line, so that every run
    and resumption of a workdir stays on record with its wall-clock and CPU seconds."""

    def __init__(self, path: str | None, t0: float, cpu0: float):
        self.path = path
        self.t0, self.cpu0 = t0, cpu0  # wall and CPU seconds (all threads of this process) from the start

    def write(self, event: str, **fields) -> None:
        if not self.path:
            return
        row = {"event": event, **fields, "wall_s": round(time.perf_counter() - self.t0, 3),
               "cpu_s": round(time.process_time() - self.cpu0, 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def _sample_grid(task, params, batch, sample_cfg, key, n: int) -> np.ndarray:
    """Rows of JPEG | restored | clean for the first n images of a batch.

    The tile engine restores them on this process's devices (`parallel.local_mesh`; training calls
    this on process 0 only), each image one tile, image i the source str(i) under `key`
    (`engine.tile_key(key, str(i), 0)`), with the setting of the config's `sample` block
    (`Task.setting_from_config`). A task that needs the JPEG's tables (DDRM) gets those of each
    image's training quality (the pipeline's JPEGs are libjpeg's, 4:2:0)."""
    from . import engine
    from .sampler_settings import DEFAULT_EPS

    y = np.asarray(batch["jpeg"][:n], np.float32)
    m = y.shape[0]
    tables, subsampling = [None] * m, None
    if task.needs_tables:
        from .ddrm import pillow_tables

        tables = [pillow_tables(q)[0] for q in np.asarray(batch["quality"][:m])]
        subsampling = "4:2:0"
    eps = DEFAULT_EPS if sample_cfg is None else float(sample_cfg.eps)
    fn = task.tile_restorer(task.setting_from_config(sample_cfg), eps=eps, color_correction=True,
                            subsampling=subsampling)  # memoised: one compilation per run
    eng = engine.TileEngine(fn, params, mesh=parallel.local_mesh(), tile=max(y.shape[1], y.shape[2], 16), overlap=0,
                            batch_size=m, max_tiles=m, tables=task.needs_tables)
    x = [r.image for r in eng.run((engine.Source(str(i), y[i], tables[i]) for i in range(m)), seed=key)]
    rows = [np.concatenate([y[i], x[i], np.asarray(batch["clean"][i])], axis=1) for i in range(m)]
    return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)


def train(config, workdir: str, progress: bool | str = True, overwrite: bool = False) -> train_lib.TrainState:
    """Train (or resume) ``config`` in ``workdir``; returns the final state. A workdir that is
    not training's own is refused first (`check_workdir`).

    ``progress``: True (a tqdm bar if tqdm is installed, else lines), "lines" (a line to stderr every
    ``train.log_every`` steps) or False. Missing data paths are refused first too (`check_data_paths`)."""
    from . import data

    t_start, cpu_start = time.perf_counter(), time.process_time()
    max_minutes = float(config.train.get("max_minutes", 0) or 0)
    deadline = t_start + 60.0 * max_minutes if max_minutes > 0 else None
    max_cpu_minutes = float(config.train.get("max_cpu_minutes", 0) or 0)
    cpu_deadline = cpu_start + 60.0 * max_cpu_minutes if max_cpu_minutes > 0 else None
    check_data_paths(config)
    check_workdir(workdir, overwrite)
    parallel.initialize_distributed()
    mesh = parallel.make_mesh()
    main = parallel.is_main_process()
    os.makedirs(workdir, exist_ok=True)
    local_batch = parallel.check_batch_size(config.data.batch_size, mesh)
    spec = models.model_spec(config)
    task = models.build_task(spec)
    tx = train_lib.make_optimizer(config.optim)
    k = config.train.steps_per_call
    if config.train.checkpoint_every % k or config.train.num_steps % k:
        raise ValueError("train.checkpoint_every and train.num_steps must be multiples of train.steps_per_call")

    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints,
                                      config.train.async_checkpoints)
    latest = manager.latest_step()
    warm = None
    if latest is None and config.train.init_from:
        warm = _read_init_weights(config.train.init_from, spec)  # before compiling anything: fails fast
    init = train_lib.make_init_state(task, tx, config.data.crop_size, mesh)
    state = init(jax.random.PRNGKey(config.train.seed), warm)
    del warm  # the state holds them now: no second copy of the weights kept for the whole run
    start = 0
    if latest is not None:
        state, meta = checkpoint.restore(manager, state)
        start = int(meta["step"])
        if main:
            print(f"resuming from step {start} in {workdir}", file=sys.stderr)
    elif config.train.init_from:
        if main:
            print(f"starting from the weights in {config.train.init_from}", file=sys.stderr)
    if main:
        from .images import atomic_write

        with atomic_write(os.path.join(workdir, "config.json"), text=True) as f:
            f.write(config.to_json_best_effort(indent=2))

    data_config = dict(config.data.to_dict(), batch_size=local_batch)  # config holds the global batch
    batches = data.make_train_iterator(data_config, process_index=jax.process_index(),
                                       process_count=jax.process_count(), start_batch=start)
    step_fn = train_lib.make_train_step(task, tx, config.optim, mesh, k)
    use_tf = config.data.get("pipeline", "tf") == "tf"  # the numpy pipeline is for hosts without TensorFlow
    logger = _Logger(os.path.join(workdir, "tensorboard") if main and use_tf else None)
    runlog = _RunLog(os.path.join(workdir, "train_log.jsonl") if main else None, t_start, cpu_start)
    runlog.write("start", time=datetime.datetime.now().isoformat(timespec="seconds"), argv=sys.argv, step=start,
                 num_steps=config.train.num_steps, max_minutes=max_minutes,
                 max_cpu_minutes=max_cpu_minutes, global_batch=config.data.batch_size,
                 crop_size=config.data.crop_size, pipeline=config.data.get("pipeline", "tf"),
                 init_from=config.train.init_from if latest is None else "", jax=jax.__version__,
                 devices=f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})",
                 processes=jax.process_count())
    sample_batch = None
    if config.train.sample_every and main:
        os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)

    def save(step: int) -> None:
        checkpoint.save(manager, step, state, {"step": step, "data_position": step, "config": config.to_dict()})
        if main:
            models.save_model(os.path.join(workdir, "model.msgpack"), spec, state.ema_params)

    kill_at = int(os.environ.get("DRIFTREC_FAULT_KILL_AT_STEP", "-1"))
    kill_here = int(os.environ.get("DRIFTREC_FAULT_KILL_PROCESS", jax.process_index())) == jax.process_index()
    bar = None
    if main and progress is True:
        try:
            from tqdm import tqdm
        except ImportError:  # e.g. a bare accelerator host: lines instead
            progress = "lines"
        else:
            bar = tqdm(total=config.train.num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    lines = main and progress == "lines"
    step, t_last, s_last = start, time.perf_counter(), start
    t_first = None  # end of the first call (compilation included)
    reason = "num_steps"
    while step < config.train.num_steps:
        local = [next(batches) for _ in range(k)]
        if sample_batch is None:
            sample_batch = local[0]
        local = local[0] if k == 1 else train_lib.stack_batches(local)
        batch = train_lib.global_batches({"clean": local["clean"], "jpeg": local["jpeg"]}, mesh, k)
        state, metrics = step_fn(state, batch)
        loss = np.asarray(metrics["loss"]).reshape(-1)
        step += k
        t_step = time.perf_counter()  # the loss is on the host: the step has finished
        if t_first is None:
            t_first = t_step
        if not np.all(np.isfinite(loss)):
            bad = step - k + int(np.argmin(np.isfinite(loss)))
            manager.wait_until_finished()
            raise TrainingDiverged(
                f"loss became {loss[~np.isfinite(loss)][0]} at step {bad}; stopped without saving "
                f"(last good checkpoint: step {manager.latest_step()}). Try a lower --config.optim.lr "
                f"or --config.optim.grad_clip=1.0")
        if bar:
            bar.update(k)
            bar.set_postfix(loss=f"{loss[-1]:.4g}")
        if step % config.train.log_every < k or step == config.train.num_steps:
            now = time.perf_counter()
            rate = (step - s_last) / max(now - t_last, 1e-9)
            t_last, s_last = now, step
            scalars = {"loss": loss[-1], "grad_norm": np.asarray(metrics["grad_norm"]).reshape(-1)[-1],
                       "lr": np.asarray(metrics["lr"]).reshape(-1)[-1], "steps_per_s": rate,
                       "pairs_per_s": rate * config.data.batch_size}
            logger.scalars(step, scalars)
            runlog.write("log", step=step, **{k_: round(float(v), 6) for k_, v in scalars.items()})
            if lines:
                print(f"step {step}/{config.train.num_steps}  loss {loss[-1]:.4g}  {rate:.3g} steps/s  "
                      f"{rate * config.data.batch_size:.4g} pairs/s  {now - t_start:.0f} s", file=sys.stderr, flush=True)
        if config.train.sample_every and main and step % config.train.sample_every < k:
            grid = _sample_grid(task, parallel.local_copy(state.ema_params), sample_batch, config.sample,
                                jax.random.PRNGKey(step), config.train.num_sample_images)
            save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
            logger.image(step, "samples/jpeg_restored_clean", grid)
        if config.train.eval_every and step % config.train.eval_every < k:
            _validate(task, parallel.local_copy(state.ema_params), config, step, logger)
        saved = step % config.train.checkpoint_every == 0 or step == config.train.num_steps
        if saved:
            save(step)
        if step == kill_at and kill_here:  # fault injection for the resume tests: die like a preempted host
            os.kill(os.getpid(), signal.SIGKILL)
        logger.flush()
        up = None
        if (deadline is not None or cpu_deadline is not None) and step < config.train.num_steps:
            up = _time_is_up(deadline, cpu_deadline)
        if up:
            reason = up
            if not saved:
                save(step)
            break
    manager.wait_until_finished()
    batches.close()
    if bar:
        bar.close()
    t_end = time.perf_counter()
    timed = step - start - k  # steps after the first call, whose time includes compilation
    pairs_per_s = timed * config.data.batch_size / max(t_step - t_first, 1e-9) if timed > 0 else None
    runlog.write("end", step=step, reason=reason, steps=step - start,
                 first_call_s=None if t_first is None else round(t_first - t_start, 3),
                 pairs_per_s=None if pairs_per_s is None else round(pairs_per_s, 3),
                 model_file=os.path.join(workdir, "model.msgpack"))
    if main and (lines or deadline is not None or cpu_deadline is not None):
        rate = "" if pairs_per_s is None else f", {pairs_per_s:.4g} pairs/s after the first call"
        print(f"stopped at step {step} ({reason}): {step - start} steps in {t_end - t_start:.0f} s{rate}; "
              f"model file {os.path.join(workdir, 'model.msgpack')}", file=sys.stderr, flush=True)
    return state


_LIMITS = ("", "time limit", "cpu time limit")


def _time_is_up(deadline: float | None, cpu_deadline: float | None = None) -> str:
    """'time limit' if ``train.max_minutes`` (wall) has run out, 'cpu time limit' if
    ``train.max_cpu_minutes`` (this process's CPU time) has, else ''. With several processes,
    process 0's clocks decide for all, so that every host stops after the same step."""
    code = 0
    if deadline is not None and time.perf_counter() >= deadline:
        code = 1
    elif cpu_deadline is not None and time.process_time() >= cpu_deadline:
        code = 2
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        code = int(multihost_utils.broadcast_one_to_all(np.asarray(code, np.int32)))
    return _LIMITS[code]


def _read_init_weights(path: str, spec: dict):
    """The weights of a model file (or workdir) for ``train.init_from``, checked to be the model
    ``spec`` describes (the compute dtype may differ). A run started from them gets them as
    parameters and EMA, a fresh optimiser state and step 0 (so the warm-up runs again)."""
    _, params, file_spec = models.load_model(path)
    mine = {k: v for k, v in spec.items() if k != "dtype"}
    theirs = {k: v for k, v in file_spec.items() if k != "dtype"}
    if json.dumps(mine, sort_keys=True, default=list) != json.dumps(theirs, sort_keys=True, default=list):
        raise models.ModelLoadError(
            f"{path} holds a different model than the config describes: {theirs} vs {mine}")
    return params


def _validate(task, params, config, step: int, logger) -> None:
    """PSNR / SSIM / LPIPS of EMA restorations on the first images of ``train.eval_folder``."""
    from . import validation

    if not config.train.eval_folder or not parallel.is_main_process():
        return
    results = validation.quick_validation(task, params, config, config.train.eval_folder,
                                        config.train.eval_images, config.train.eval_quality)
    logger.scalars(step, {f"val/{k}": v for k, v in results.items()})


def run(args) -> int:
    return main_with_overrides(args.config, args.workdir, getattr(args, "overrides", []),
                               getattr(args, "overwrite", False))


def main_with_overrides(config_name: str, workdir: str, overrides: list[str], overwrite: bool = False) -> int:
    try:
        config = config_lib.load_config(config_name)
        config_lib.apply_overrides(config, config_lib.parse_overrides(overrides))
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"driftrec train: {err}", file=sys.stderr)
        return 2
    try:
        train(config, workdir, overwrite=overwrite)
    except (WorkdirError, DataPathError) as err:
        print(f"driftrec train: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"driftrec train: {err}", file=sys.stderr)
        return 3
    except models.ModelLoadError as err:
        print(f"driftrec train: {err}", file=sys.stderr)
        return 2
    except BaseException:
        if not jax.distributed.is_initialized():
            raise
        # One process of several: the others wait for it in a collective, and a normal exit would
        # wait for them at JAX's shutdown barrier (minutes). Stop now; the others follow.
        traceback.print_exc()
        print(f"driftrec train: process {jax.process_index()} of {jax.process_count()} failed (above); "
              "stopping it now. Run the same command on every process again to resume from the last "
              "checkpoint.", file=sys.stderr, flush=True)
        os._exit(1)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description="Train a DriftRec, regression, DDRM ε or I²SB model.")
    configure(parser)
    args, rest = parser.parse_known_args(argv)
    return main_with_overrides(args.config, args.workdir, rest, args.overwrite)
