"""Restoring files: JPEG photos of any size (files or folders) to PNG, the library under `driftrec restore`.

    from driftrec_jax import restoring

    status = restoring.restore_files(["photo.jpg", "scans/"], "restored/", model="workdirs/small_ouve",
                                     sampler="em", steps=100, seed=0)

`restore_files` is the whole file pipeline; `driftrec restore` (driftrec_jax.restore_cli) only
parses its command line into these keyword options, and `driftrec_jax.load(...).restore_files`
calls it with a loaded model. It never parses argv nor exits: a usage error (no images found,
a missing model file, bad tiling options, an output folder that is a file or cannot be written,
...) raises `UsageError`, a ValueError with a one-line message; otherwise it returns the exit
status of the command, 0 when every image was restored (or skipped with skip_existing=True), 1
when some input failed or its output exists (one line each on stderr,
``driftrec restore: <path>: <reason>``; the others are still restored).

Every image is cut into overlapping tiles and restored by the tile engine (`engine.TileEngine`,
on every device: batches sharded over the ('data',) mesh); the tiles of consecutive images share
fixed-shape batches that go through one compiled restorer, the model's `Task.tile_restorer`
(driftrec_jax.tasks). For a DriftRec model that is `samplers.sample`: the few-step
exact-transition samplers of docs/SAMPLERS.md, the paper's Euler–Maruyama/Heun with N steps to ε
(Sec. IV-F), or the probability-flow ODE with Dormand–Prince 5(4) at rtol = atol = tol
(Sec. IV-G); k-sample averaging, colour correction. A regression model makes one network pass
per tile; an I²SB model runs I²SB's posterior sampler with `steps` network calls. With a DDRM ε
model (DDRM-JPEG) every tile is restored with the quantisation tables read from its own file (so
DDRM inputs must be JPEG files, 4:2:0, 4:4:4 or gray); files are grouped by chroma layout, one
compilation each. The blended result is written as a PNG named so that it is never an input
(`images.output_paths`), atomically (`images.atomic_write`), and replacing an existing file only
with overwrite=True. docs/RESTORE.md is the user guide.

Noise and seeds: the random key of tile number k (row-major order) of an input file named NAME is
the engine's rule (`engine.tile_key`, source id = the base name)

    fold_in(fold_in(PRNGKey(seed), crc32(NAME) & 0x7FFFFFFF), k)

so the same seed gives the same image whatever else is restored in the same run, in whatever
order, with whatever batch size, on however many devices and processes (each tile is sampled
on its own under `jax.vmap`; the ODE solver adapts its step size per tile).

Several processes (`python -m driftrec_jax.launch`, SLURM, a TPU pod): every process calls
`restore_files` with the same arguments, lists the inputs, takes every P-th file
(`parallel.share`), checks, restores and writes those; the batches are sharded over the devices
of all processes; process 0 shows the progress of its files and prints the summary of all.

Start-up: nothing here imports TensorFlow, and JAX's persistent compilation cache is kept in
`compile_cache_dir()`, so a second run with the same model architecture and settings loads the
compiled sampler instead of compiling it. JAX itself is imported only when a restoration starts.

Order of work: every input is opened and checked first (header, size against max_pixels, pixel
format) and its output looked up, so bad inputs and existing outputs are reported before the
model is loaded or anything is compiled (a run left with nothing to do compiles nothing).

Messages name the options as `driftrec restore` spells them (--tile, --overwrite, ...): each is
the keyword option of the same name here (--max-pixels is max_pixels, --checkpoint is model).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import engine, sampler_settings
from .image_files import list_image_folder
from .sampler_settings import SamplerSetting

__all__ = ["restore_files", "UsageError", "find_images", "compile_cache_dir", "sampler_setting", "exists_message"]

PROG = "driftrec restore"  # the prefix of the lines written to stderr
METHODS = ("driftrec", "ddrm", "i2sb")  # `tasks.Task.method` of the model classes
# DDRM chroma layouts (ddrm.file_tables; gray files are 4:4:4), restored in this order.
DDRM_LAYOUTS = ("4:2:0", "4:4:4")


class UsageError(ValueError):
    """A mistake in the options (`driftrec restore` exits with status 2); one line."""


def restore_files(inputs: Sequence, outdir, *, model: Any = None, method: str | None = None,
                  sampler: str | SamplerSetting | None = None, steps: int | None = None, eta: float | None = None,
                  grid: str | None = None, tol: float = sampler_settings.DEFAULT_TOL, num_samples: int = 1,
                  seed: int = 0, batch_size: int | None = None, devices: int | None = None, tile: int = 256,
                  overlap: int = 32, eps: float = sampler_settings.DEFAULT_EPS, color_correction: bool = True,
                  compile_cache: bool = True, skip_existing: bool = False, overwrite: bool = False,
                  max_pixels: int | None = None) -> int:
    """Restore the images of `inputs` (files, or folders searched recursively) into `outdir`
    (module docstring); returns the exit status (0, or 1 when some input failed), raises
    UsageError. The options are those of `driftrec restore --help`:

    model: a loaded model (`driftrec_jax.load`), a model file or training workdir, or None for
        the model bundled for `method`; method: 'driftrec', 'ddrm' or 'i2sb', checked against the
        model (None: whatever it is).
    sampler: None (the model's default), a sampler name with `steps`, `eta`, `grid`, `tol` and
        `num_samples` as the command's options, or a whole setting: its text form ('em:100x4',
        `sampler_settings.parse_setting`) or a `SamplerSetting` (then leave those five unset).
    seed, batch_size (tiles per device and call; None: `engine.default_batch_size`), devices (the
        first N devices of this one process; None: every device of every process), tile, overlap,
        eps, color_correction, compile_cache (JAX's persistent cache in `compile_cache_dir()`),
        skip_existing / overwrite (what to do with an output that exists: by default it is one
        failed input), max_pixels (largest width x height read; None: Pillow's limit, 0: none).
    """
    from PIL import Image

    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        return _restore_files(
            inputs, outdir, model=model, method=method,
            sampler_options=dict(sampler=sampler, steps=steps, eta=eta, grid=grid, tol=tol, num_samples=num_samples),
            seed=seed, batch_size=batch_size, devices=devices, tile=tile, overlap=overlap, eps=eps,
            color_correction=color_correction, compile_cache=compile_cache, skip_existing=skip_existing,
            overwrite=overwrite, max_pixels=max_pixels)
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


# --------------------------------------------------------------------------------------------
# Inputs, cache folder


def find_images(inputs, exclude=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand the inputs into image files: (files, [(input, reason), ...] not usable).

    A file is taken as given (whatever its extension; reading it decides). A folder is listed by
    `image_files.list_image_folder` (as training and evaluation list folders): searched recursively for
    files with an IMAGE_EXTENSIONS suffix, skipping hidden files and folders and everything under
    `exclude` (the output folder, so a re-run does not restore its own outputs; not applied when
    `exclude` is the input folder itself); each folder's files are sorted by relative path. A
    path that does not exist is reported, not raised. Files named twice are kept once.
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
    """Folder of JAX's persistent compilation cache for restoring.

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


# --------------------------------------------------------------------------------------------
# The sampler setting


def sampler_setting(default: SamplerSetting | None = None, *, sampler: str | SamplerSetting | None = None,
                    steps: int | None = None, eta: float | None = None, grid: str | None = None,
                    tol: float = sampler_settings.DEFAULT_TOL, num_samples: int = 1) -> SamplerSetting:
    """The sampler setting of the options (those of `restore_files`); `default` (the model's,
    else DriftRec's default setting) when none is named. UsageError for options that do not go
    together."""
    if isinstance(sampler, str) and sampler not in sampler_settings.SAMPLERS:
        try:
            sampler = sampler_settings.parse_setting(sampler)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if isinstance(sampler, SamplerSetting):
        if (steps, eta, grid, tol, num_samples) != (None, None, None, sampler_settings.DEFAULT_TOL, 1):
            raise UsageError(f"sampler={sampler.key!r} is a whole setting: give its steps, η, grid, tolerance "
                             "and samples in it, not as options")
        return sampler
    default = default or sampler_settings.default_setting()
    name = sampler or default.sampler
    if eta is not None and name != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim, not {name}")
    if grid is not None and name not in sampler_settings.FEW_STEP:
        raise UsageError(f"--grid applies to {', '.join(sampler_settings.FEW_STEP)}, not {name}")
    if name == "ode":
        return SamplerSetting("ode", tol=tol, num_samples=num_samples)
    if sampler is None and steps is None and eta is None and grid is None:
        return dataclasses.replace(default, num_samples=num_samples)
    return SamplerSetting(name, steps=steps or sampler_settings.DEFAULT_STEPS[name], eta=eta, grid=grid,
                          num_samples=num_samples)


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


# --------------------------------------------------------------------------------------------
# The pipeline


def _restore_files(inputs, outdir, *, model, method, sampler_options, seed, batch_size, devices, tile, overlap,
                   eps, color_correction, compile_cache, skip_existing, overwrite, max_pixels) -> int:
    from PIL import Image

    from . import images

    try:
        images._check_tiling(tile, overlap, batch_size or 1)
    except ValueError as err:
        raise UsageError(str(err)) from None

    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output folder {outdir} exists and is not a folder")
    files, problems = find_images(inputs, exclude=outdir)
    if not files:
        reasons = "; ".join(f"{p}: {r}" for p, r in problems)
        raise UsageError("no images found in the inputs" + (f" ({reasons})" if reasons else ""))

    # Several processes (a pod; python -m driftrec_jax.launch): each checks, restores and writes its
    # share of the files (every process lists them all, in the same order); process 0 reports.
    from . import parallel

    parallel.initialize_distributed()
    main, several = parallel.is_main_process(), parallel.process_count() > 1
    if several and devices is not None:
        raise UsageError("--devices applies to a single process; several processes use all their devices")

    loaded = model if hasattr(model, "task") and hasattr(model, "params") else None  # an api.Restorer
    checkpoint = getattr(model, "path", None) if loaded is not None else model
    if checkpoint is not None and loaded is None:
        checkpoint = os.fspath(checkpoint)
    if loaded is None and checkpoint is None:
        from . import models

        checkpoint = models.bundled_model_path(method or "driftrec")
        if not os.path.exists(checkpoint):
            what = "DDRM model" if method == "ddrm" else "model"
            raise UsageError(f"this installation has no bundled {what} ({checkpoint} is missing); "
                             "pass --checkpoint MODEL_FILE_OR_WORKDIR")
    elif loaded is None and not os.path.exists(checkpoint):
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
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else (max_pixels or None)
    Image.MAX_IMAGE_PIXELS = limit  # what load_image enforces below: the files checked here pass
    out_of = images.output_paths(files, outdir)
    sizes: dict = {}  # path -> (width, height) from the header
    todo, skipped = [], 0
    for path in parallel.share(files):
        out = out_of[path]
        if os.path.lexists(out) and not overwrite:
            if skip_existing:
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
    _setup_compile_cache(compile_cache, write)
    try:
        mesh = parallel.make_mesh(devices)
    except ValueError as err:
        raise UsageError(f"--devices {devices}: {err}") from None

    import numpy as np

    from . import models

    try:
        if loaded is None:
            task, params, spec = models.load_model(checkpoint)
        else:
            task, params, spec = loaded.task, loaded.params, loaded.spec
    except models.ModelLoadError as err:
        raise UsageError(str(err)) from None
    except (KeyError, TypeError, ValueError) as err:  # a model file with a description we cannot build
        raise UsageError(f"{checkpoint}: unusable model description ({type(err).__name__}: {err})") from None
    from . import tasks

    if method is not None and method != task.method:
        raise UsageError(f"--method {method} needs {tasks.METHOD_MODELS[method]}; {checkpoint} is a "
                         f"{task.title} model: restore it with --method {task.method}")
    asked = sampler_setting(task.default_setting(), **sampler_options)  # the task's default when none is named
    try:
        setting = task.check_setting(asked)
    except ValueError as err:
        raise UsageError(f"--sampler {asked.sampler}: {err}") from None
    factor = task.model.multiple  # the network's total downsampling, its stem included
    if tile % factor:
        raise UsageError(f"--tile {tile} must be a multiple of {factor} for this model's network")
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
    tiles_of = {p: images.count_tiles(sizes[p][1], sizes[p][0], tile, overlap) for p in todo}
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
                loaded_image = images.load_image(path)
            except images.ImageReadError as err:
                unread(path, _reason(err, path))
                continue
            except MemoryError:
                unread(path, "not enough memory to read this image")
                continue
            # Keep the format facts for writing, not the pixels (a zero-stride placeholder).
            like = dataclasses.replace(loaded_image, rgb=np.broadcast_to(np.float32(0), loaded_image.rgb.shape))
            rgb = loaded_image.rgb
            del loaded_image
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
            fn = _tile_fn(task, setting, eps, color_correction, layout)
            eng = engine.TileEngine(fn, params, mesh=mesh, tile=tile, overlap=overlap,
                                    batch_size=batch_size, max_tiles=int(all_tiles[:, g].sum()),
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
            for result in eng.run(stream(group), seed=seed, progress=bar, calls=calls):
                path, like = result.source.tag
                tiles_done += result.tiles
                nfe_total += result.nfe * result.tiles
                nfe_max = max(nfe_max, result.nfe_max)
                try:
                    images.save_image(out_of[path], result.image, like, overwrite=overwrite)
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
    summary += (f"; {tiles_done} tiles of {tile}px, {what}{nfe_text}; "
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
