"""Restoration speed: start-up of `driftrec restore` (cold vs warm compilation cache), sampler
throughput on batches of 256² tiles, and a 24-megapixel photo end to end.

    python bench/bench_restore.py --parts startup
    python bench/bench_restore.py --parts throughput --batches 1 8 --steps 3
    python bench/bench_restore.py --parts big --big-network tiny --big-steps 1

Parts (each prints a Markdown table; run them one at a time to keep each run short):
  startup     two `driftrec restore` subprocesses on one 64×64 JPEG (--tile 64, 100 EM steps, the
              'small' network with random weights) sharing a fresh DRIFTREC_CACHE_DIR: the first
              compiles and fills the cache, the second loads from it. Wall time of each, and the
              compile / restore seconds the command reports.
  throughput  the jitted tile restorer of `driftrec restore` (Euler–Maruyama, every tile under
              jax.vmap with its own key) and, for comparison, `samplers.make_sampler` on the whole
              batch, for batches of 256² tiles: compile time apart; seconds per batch at --steps
              steps, network evaluations (NFE) per second, and restorations per second at 100 steps
              extrapolated per NFE (the time of a run is its steps × the time of one network call;
              the prior draw and colour correction are negligible).
  big         one 6000×4000 JPEG through `driftrec restore` (default tile 256, overlap 32, batch 8):
              wall time and peak memory (maximum resident set size) of the process.
  devices     the tile engine (`engine.TileEngine`) with --settings[0] on the first N devices for
              each --devices N (default 1 and all): --per-device tiles per device and call, tiles
              and network evaluations per second, speed-up over the first count. On a GPU/TPU
              machine: python bench/bench_restore.py --parts devices --per-device 8
  samplers    the tile restorer of `driftrec restore` for each --settings sampler setting
              (default: the few-step samplers at their default steps and em:100), one batch of --batches[0]
              256² tiles: compile seconds, seconds per tile (whole sampler, not extrapolated),
              network calls and restorations per second.

Random weights: speed does not depend on them. --pause-pid PID stops that process (the
background training run) while benchmarking and always resumes it (also on errors and signals).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine_info import machine

ROOT = Path(__file__).resolve().parents[1]
SDE = {"name": "ouve", "gamma": 1.0, "sigma_min": 0.01, "sigma_max": 1.0}


@contextlib.contextmanager
def paused(pid: int | None):
    """SIGSTOP `pid` for the duration of the block; SIGCONT it afterwards, whatever happens."""
    if not pid:
        yield
        return
    previous = {}

    def resume_and_exit(signum, frame):
        os.kill(pid, signal.SIGCONT)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, resume_and_exit)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def random_model(path: Path, network: str, variant: str = "score", overrides: dict | None = None) -> dict:
    """Write a model file of `network` with random weights (drawn with numpy, no Flax init)."""
    from driftrec_jax import models

    spec = {"network": network, "overrides": dict(overrides or {}), "variant": variant, "dtype": "float32"}
    if variant == "score":
        spec["sde"] = SDE
    task = models.build_task(spec)
    models.save_model(str(path), spec, models.random_params(task, seed=0))
    return spec


def photo(path: Path, height: int, width: int, quality: int = 30) -> None:
    """A smooth random colour image (upsampled noise) saved as JPEG."""
    from PIL import Image

    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path, quality=quality)


def driftrec_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("driftrec")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "driftrec_jax.cli"]


def timed_restore(args: list[str], env: dict) -> dict:
    """Run `driftrec restore ARGS` under /usr/bin/time; wall seconds, peak RSS and its summary."""
    cmd = driftrec_cmd() + ["restore"] + args
    timer = ["/usr/bin/time", "-f", "MAXRSS_KB=%M"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    proc = subprocess.run(timer + cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = next((l for l in proc.stderr.splitlines() if l.startswith("restored ")), "")
    m = re.search(r"compile ([\d.]+) s, restore ([\d.]+) s", summary)
    rss = re.search(r"MAXRSS_KB=(\d+)", proc.stderr)
    return {"wall_s": wall, "compile_s": float(m.group(1)) if m else None,
            "restore_s": float(m.group(2)) if m else None,
            "max_rss_mib": int(rss.group(1)) / 1024 if rss else None, "summary": summary,
            "command": " ".join(["driftrec", "restore"] + args)}


def bench_startup(tmp: Path, network: str) -> list[str]:
    model = tmp / f"{network}.msgpack"
    random_model(model, network)
    img = tmp / "small.jpg"
    photo(img, 64, 64)
    env = dict(os.environ, DRIFTREC_CACHE_DIR=str(tmp / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    rows = []
    for label in ("cold cache", "warm cache"):
        r = timed_restore([str(img), "-o", str(tmp / label.split()[0]), "--checkpoint", str(model), "--tile", "64"], env)
        rows.append(f"| {label} | {r['wall_s']:.1f} | {r['compile_s']:.1f} | {r['restore_s']:.1f} |")
    files = list((tmp / "cache").iterdir())
    size = sum(p.stat().st_size for p in files) / 2**20
    return [f"`{r['command']}` (network `{network}`, random weights; EM 100 steps; one 64×64 JPEG; "
            f"cache then held {len(files)} entries, {size:.1f} MiB)", "",
            "| run | wall s | compile s (reported) | restore s (reported) |", "|---|---|---|---|", *rows]


def bench_throughput(network: str, size: int, batches: list[int], steps: int, repeats: int,
                     compare_plain: bool = True) -> list[str]:
    import jax
    import jax.numpy as jnp

    from driftrec_jax import models, samplers
    from driftrec_jax.sampler_settings import parse_setting
    from driftrec_jax.score import make_score_fn

    with tempfile.TemporaryDirectory() as d:
        random_model(Path(d) / "m.msgpack", network)
        task, params, _ = models.load_model(str(Path(d) / "m.msgpack"))
    settings = {"sampler": "em", "steps": steps, "eps": 0.03, "num_samples": 1, "color_correction": True}
    net_flops = jax.jit(lambda x, s: task.apply(params, x, s)).lower(
        jax.ShapeDtypeStruct((1, size, size, 6), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32)).cost_analysis()
    net_flops = net_flops[0] if isinstance(net_flops, (list, tuple)) else net_flops
    gflop_per_nfe = float(net_flops["flops"]) / 1e9 if net_flops and "flops" in net_flops else float("nan")
    rows = []
    key = jax.random.PRNGKey(0)
    for batch in batches:
        y = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
        keys = jax.random.split(key, batch)
        setting = parse_setting(f"em:{steps}")
        cases = [("per-tile keys (vmap), as `driftrec restore`", task.tile_restorer(setting, eps=0.03),
                  (params, y, keys, None))]
        if batch > 1 and compare_plain:
            plain = samplers.make_sampler(make_score_fn(task.apply, task.sde), task.sde, **settings)
            cases.append(("one key per batch (`samplers.make_sampler`)", plain, (params, y, key)))
        for label, fn, fargs in cases:
            t0 = time.perf_counter()
            compiled = fn.lower(*fargs).compile()
            compile_s = time.perf_counter() - t0
            times = []
            for _ in range(repeats + 1):  # the first run is a warm-up
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(*fargs))
                times.append(time.perf_counter() - t0)
            t = float(np.median(times[1:]))
            nfe_per_s = batch * steps / t
            per_image_100 = t / steps * 100 / batch
            rows.append(f"| {batch} | {label} | {compile_s:.1f} | {t:.2f} | {nfe_per_s:.2f} | "
                        f"{nfe_per_s * gflop_per_nfe:.0f} | {1 / per_image_100:.4f} ({per_image_100:.0f} s/image) |")
    return [f"network `{network}` ({gflop_per_nfe:.3g} GFLOP per {size}² network evaluation, XLA count), "
            f"Euler–Maruyama with {steps} steps timed (median of {repeats} after a warm-up), 100 steps extrapolated", "",
            "| batch | restorer | compile s | s per batch | NFE/s (images × steps) | GFLOP/s | restorations/s at 100 steps |",
            "|---|---|---|---|---|---|---|", *rows]


def bench_devices(network: str, size: int, per_device: int, setting_text: str, calls: int, counts) -> list[str]:
    """The tile engine of `driftrec restore` on meshes of 1 ... all devices: tiles per second."""
    from driftrec_jax import engine, models, parallel
    from driftrec_jax.sampler_settings import parse_setting

    with tempfile.TemporaryDirectory() as d:
        random_model(Path(d) / "m.msgpack", network)
        task, params, _ = models.load_model(str(Path(d) / "m.msgpack"))
    setting = parse_setting(setting_text)
    fn = task.tile_restorer(setting, eps=0.03, color_correction=True)
    rng = np.random.default_rng(0)
    rows = []
    base = None
    for n in counts:
        eng = engine.TileEngine(fn, params, mesh=parallel.make_mesh(n), tile=size, overlap=0, batch_size=per_device)
        compile_s = eng.compile()
        images = rng.random((eng.global_rows, size, size, 3), dtype=np.float32)  # one tile each

        def sources(k):
            return (engine.Source(f"{k}-{i}", images[i]) for i in range(eng.global_rows))

        list(eng.run(sources(-1)))  # warm-up call
        t0 = time.perf_counter()
        nfe = [r.nfe for k in range(calls) for r in eng.run(sources(k))]
        t = time.perf_counter() - t0
        rate = len(nfe) / t
        base = base or rate
        rows.append(f"| {n} | {eng.global_rows} | {compile_s:.1f} | {t / calls:.2f} | {rate:.2f} | "
                    f"{rate * float(np.mean(nfe)):.1f} | {rate / base:.2f} |")
    return [f"network `{network}` (random weights), `{setting.key}`, {size}² tiles, {per_device} per device and call, "
            f"{calls} calls timed after a warm-up call (`engine.TileEngine`: batches sharded over the mesh)", "",
            "| devices | tiles per call | compile s | s per call | tiles/s | NFE/s | speed-up |",
            "|---:|---:|---:|---:|---:|---:|---:|", *rows]


def bench_samplers(network: str, size: int, batch: int, settings: list[str], repeats: int) -> list[str]:
    import jax

    from driftrec_jax import models
    from driftrec_jax.sampler_settings import parse_setting

    with tempfile.TemporaryDirectory() as d:
        random_model(Path(d) / "m.msgpack", network)
        task, params, _ = models.load_model(str(Path(d) / "m.msgpack"))
    y = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    rows = []
    for text in settings:
        setting = parse_setting(text)
        fn = task.tile_restorer(setting, color_correction=True)
        t0 = time.perf_counter()
        compiled = fn.lower(params, y, keys, None).compile()
        compile_s = time.perf_counter() - t0
        times, nfe = [], None
        for _ in range(repeats + 1):  # the first run is a warm-up
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(params, y, keys, None))
            times.append(time.perf_counter() - t0)
            nfe = int(np.max(np.asarray(out[1])))
        t = float(np.median(times[1:]))
        rows.append(f"| `{setting.key}` | {setting.label} | {nfe} | {compile_s:.1f} | {t / batch:.2f} | "
                    f"{batch * nfe / t:.2f} | {batch / t:.3f} |")
    return [f"network `{network}` (random weights), batch of {batch} {size}² tiles through the tile restorer of "
            f"`driftrec restore` (per-tile keys, colour correction), median of {repeats} after a warm-up", "",
            "| setting | sampler | NFE | compile s | s per tile | NFE/s | restorations/s |",
            "|---|---|---:|---:|---:|---:|---:|", *rows]


def bench_big(tmp: Path, network: str, steps: int, batch: int, overrides: dict | None = None) -> list[str]:
    model = tmp / f"{network}.msgpack"
    random_model(model, network, overrides=overrides)
    img = tmp / "big.jpg"
    t0 = time.perf_counter()
    photo(img, 4000, 6000, quality=40)
    make_s = time.perf_counter() - t0
    env = dict(os.environ, DRIFTREC_CACHE_DIR=str(tmp / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    r = timed_restore([str(img), "-o", str(tmp / "out"), "--checkpoint", str(model), "--steps", str(steps),
                       "--batch-size", str(batch)], env)
    return [f"`{r['command']}` (network `{network}` {overrides or ''}, random weights; "
            f"6000×4000 JPEG made in {make_s:.1f} s)", "",
            "| wall s | compile s | restore s (tiles, blending, PNG) | peak RSS MiB |", "|---|---|---|---|",
            f"| {r['wall_s']:.1f} | {r['compile_s']:.1f} | {r['restore_s']:.1f} | {r['max_rss_mib']:.0f} |",
            "", f"summary line: `{r['summary']}`"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="startup,throughput",
                    help="comma-separated: startup, throughput, big, samplers, devices")
    ap.add_argument("--network", default="small", help="network of the startup and throughput parts")
    ap.add_argument("--size", type=int, default=256, help="tile side of the throughput part")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes of the throughput part")
    ap.add_argument("--steps", type=int, default=3, help="EM steps timed in the throughput part")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per case after the warm-up")
    ap.add_argument("--no-plain", action="store_true", help="throughput: skip the make_sampler comparison")
    ap.add_argument("--big-network", default="tiny")
    ap.add_argument("--big-steps", type=int, default=1)
    ap.add_argument("--big-batch", type=int, default=8)
    ap.add_argument("--big-overrides", type=json.loads, default=None,
                    help='network overrides of the big part as JSON, e.g. \'{"ch_mult": [1], "attn_resolutions": []}\'')
    ap.add_argument("--settings", nargs="+", default=["sde-dpm2m:8", "ddim:5", "dpm2m:8", "em:100"],
                    help="sampler settings of the samplers part (driftrec evaluate's text form)")
    ap.add_argument("--devices", type=int, nargs="+", default=None,
                    help="devices part: device counts to time (default: 1 and all)")
    ap.add_argument("--per-device", type=int, default=8, help="devices part: tiles per device and call")
    ap.add_argument("--calls", type=int, default=3, help="devices part: timed calls per device count")
    ap.add_argument("--pause-pid", type=int, default=None, help="process to SIGSTOP while benchmarking")
    args = ap.parse_args()

    out = [f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M %Z')}"]
    with paused(args.pause_pid), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for part in args.parts.split(","):
            out.append("")
            out.append(f"### {part}")
            if part == "startup":
                (tmp / "startup").mkdir()
                out += bench_startup(tmp / "startup", args.network)
            elif part == "throughput":
                out += bench_throughput(args.network, args.size, args.batches, args.steps, args.repeats,
                                        compare_plain=not args.no_plain)
            elif part == "samplers":
                out += bench_samplers(args.network, args.size, args.batches[0], args.settings, args.repeats)
            elif part == "devices":
                import jax

                counts = args.devices or sorted({1, jax.device_count()})
                out += bench_devices(args.network, args.size, args.per_device, args.settings[0], args.calls, counts)
            elif part == "big":
                (tmp / "big").mkdir()
                out += bench_big(tmp / "big", args.big_network, args.big_steps, args.big_batch, args.big_overrides)
            else:
                raise SystemExit(f"unknown part {part!r}")
            print("\n".join(out), flush=True)
            out = []
    return 0


if __name__ == "__main__":
    sys.exit(main())
