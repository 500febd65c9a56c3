"""Training throughput: steps/s and images/s of the jitted train step, compile time apart, with XLA's
FLOP count and the model FLOP utilisation (MFU) against a given peak.

    python bench/bench_train.py                       # small @ 64² batch 8, paper @ 64² batch 8
    python bench/bench_train.py --cases small:64:8 paper:256:1 --peak-gflops 190 --repeats 3

Each case is NETWORK:SIZE:BATCH (global batch, split over all devices). "CPU s/step" is the
process's CPU time per step (all threads; on a CPU backend it is the figure that other jobs on a
shared machine change least, and "images per CPU s" the throughput an equal CPU budget buys). Results are printed as a
Markdown table and written as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from driftrec_jax import config_lib, models, parallel, train_lib
from machine_info import machine


def step_setup(c, size: int, batch: int):
    """(task, state, global batch of random pixels, sharded train step) of config `c` for
    size² crops in batches of `batch` (also used by profile_train_step.py)."""
    task = models.task_from_config(c)
    tx = train_lib.make_optimizer(c.optim)
    mesh = parallel.make_mesh()
    state = jax.jit(lambda k: train_lib.create_train_state(task, tx, k, size),
                    out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    local = {"clean": rng.random((batch, size, size, 3), dtype=np.float32),
             "jpeg": rng.random((batch, size, size, 3), dtype=np.float32)}
    return task, state, parallel.global_batch(local, mesh), train_lib.make_train_step(task, tx, c.optim, mesh)


def bench_case(network: str, size: int, batch: int, repeats: int, variant: str = "score") -> dict:
    c = config_lib.default_config()
    c.model.network = network
    c.model.variant = variant
    task, state, gb, step = step_setup(c, size, batch)
    t0 = time.perf_counter()
    compiled = step.lower(state, gb).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, m = compiled(state, gb)  # warm-up
    jax.block_until_ready(m)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        state, m = compiled(state, gb)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    t = float(np.median(times))
    cpu_s = float(np.median(cpu))
    return {"network": network, "variant": variant, "size": size, "batch": batch, "compile_s": compile_s,
            "step_s": t, "steps_per_s": 1 / t, "images_per_s": batch / t,
            "cpu_s_per_step": cpu_s, "images_per_cpu_s": batch / cpu_s, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / 1e9 / t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["small:64:8", "paper:64:8"],
                   help="NETWORK:SIZE:BATCH cases (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per case after one warm-up (median)")
    p.add_argument("--peak-gflops", type=float, default=190.0,
                   help="device peak in GFLOP/s for MFU (default 190: the 2-core AVX2 CPU; H100 SXM fp32 ~67000, "
                        "bf16 dense ~989000)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    args = p.parse_args()
    results = []
    print(f"machine: {machine()}")
    print("| network | size | batch | compile s | s/step | steps/s | images/s | CPU s/step | images per CPU s | "
          "GFLOP/step | GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        net, size, batch = case.split(":")
        r = bench_case(net, int(size), int(batch), args.repeats)
        r["mfu"] = r["achieved_gflops"] / args.peak_gflops
        results.append(r)
        print(f"| {net} | {size}² | {batch} | {r['compile_s']:.1f} | {r['step_s']:.3f} | {r['steps_per_s']:.2f} | "
              f"{r['images_per_s']:.1f} | {r['cpu_s_per_step']:.3f} | {r['images_per_cpu_s']:.2f} | {r['gflop_per_step']:.1f} | {r['achieved_gflops']:.1f} | {100 * r['mfu']:.1f} % |",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "peak_gflops": args.peak_gflops, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
