"""NCSN++ speed: forward and forward+backward of a network preset (default: the paper's score
network), compile time apart, with XLA's FLOP count and the fraction of the device's peak.

    python bench/bench_network.py                                 # paper: 64² and 256², batch 1 and 8
    python bench/bench_network.py --sizes 64 --batches 1 8 --repeats 5 --json out.json

Forward is ``apply(variables, x, sigma)`` (no gradient); forward+backward is the gradient of
0.5·Σ(σ·out)² with respect to the parameters (the cost shape of a training step, without the
optimiser). Weights are random (values do not change the speed) and made from eval_shape, so no
init has to be compiled. Each case: lower, compile (timed apart), one warm-up call, then
``--repeats`` timed calls (the median is reported; 1 for cases estimated over ``--long-s``).
A case whose estimated run time exceeds ``--max-s``, or whose XLA buffers would not fit in the
available memory, is skipped and reported as such.

On a shared machine pause other work while this runs, e.g. (always resuming it)::

    kill -STOP $(cat /tmp/train.pid); trap 'kill -CONT $(cat /tmp/train.pid)' EXIT; python bench/bench_network.py
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from driftrec_jax.networks import count_params, make_network
from machine_info import machine


def available_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return float(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return float("inf")


def random_variables(net, seed: int = 0):
    """Variables of ``net`` filled with N(0, 0.02²) numbers (Fourier W: N(0, 16²)), no init compiled."""
    x = jax.ShapeDtypeStruct((1, net.multiple, net.multiple, net.in_channels), jnp.float32)
    args = (x, jax.ShapeDtypeStruct((1,), jnp.float32)) if net.conditional else (x,)
    shapes = jax.eval_shape(net.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(lambda a: (0.02 * rng.standard_normal(a.shape)).astype(np.float32), shapes)
    if "constants" in variables:
        variables["constants"] = jax.tree.map(lambda a: a * 800.0, variables["constants"])
    return jax.device_put(variables)


def make_fns(net):
    def forward(variables, x, sigma):
        return net.apply(variables, x, sigma) if net.conditional else net.apply(variables, x)

    def forward_backward(variables, x, sigma):
        def loss(params):
            out = forward({**variables, "params": params}, x, sigma)
            scaled = out * sigma[:, None, None, None] if net.scale_by_sigma else out
            return 0.5 * jnp.sum(jnp.square(scaled))
        return jax.grad(loss)(variables["params"])

    return {"forward": jax.jit(forward), "forward+backward": jax.jit(forward_backward)}


def bench_case(fn, variables, size: int, batch: int, in_channels: int, repeats: int, long_s: float,
               max_s: float, estimate_s: float | None) -> dict:
    row: dict = {}
    if estimate_s is not None and estimate_s > max_s:
        return {"skipped": f"estimated {estimate_s:.0f} s per call > --max-s {max_s:.0f}"}
    rng = np.random.default_rng(1)
    x = jax.device_put(rng.random((batch, size, size, in_channels), dtype=np.float32))
    sigma = jax.device_put(np.full((batch,), 0.5, np.float32))
    t0 = time.perf_counter()
    lowered = fn.lower(variables, x, sigma)
    row["lower_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    row["compile_s"] = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    row["gflop"] = float(cost.get("flops", float("nan"))) / 1e9 if cost else float("nan")
    try:
        mem = compiled.memory_analysis()
        row["temp_gib"] = mem.temp_size_in_bytes / 2**30
        if mem.temp_size_in_bytes > 0.9 * available_bytes():
            row["skipped"] = f"needs {row['temp_gib']:.1f} GiB of buffers, {available_bytes() / 2**30:.1f} GiB available"
            return row
    except Exception:  # noqa: BLE001 - not every backend reports it
        pass
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(variables, x, sigma))  # warm-up
    row["first_call_s"] = time.perf_counter() - t0
    n = 1 if row["first_call_s"] > long_s else repeats
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(variables, x, sigma))
        times.append(time.perf_counter() - t0)
    row["repeats"] = n
    row["time_s"] = float(np.median(times))
    row["min_s"] = float(np.min(times))
    row["gflops_per_s"] = row["gflop"] / row["time_s"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="paper", help="network preset (default: paper)")
    p.add_argument("--variant", default="score", choices=("score", "regression"))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--modes", nargs="+", default=["forward", "forward+backward"],
                   choices=("forward", "forward+backward"))
    p.add_argument("--repeats", type=int, default=3, help="timed calls per case after one warm-up (median)")
    p.add_argument("--long-s", type=float, default=20.0, help="a warm-up longer than this: time 1 call only")
    p.add_argument("--max-s", type=float, default=180.0,
                   help="skip a case whose estimated call time (batch 1 time × batch) exceeds this")
    p.add_argument("--peak-gflops", type=float, default=190.0,
                   help="device fp32 peak in GFLOP/s (default 190: the 2-core AVX2 CPU of docs/STACK.md)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    args = p.parse_args()

    net = make_network(args.network, args.variant, dtype={"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype])
    variables = random_variables(net)
    fns = make_fns(net)
    print(f"machine: {machine()}")
    print(f"network: {args.network} ({args.variant}, {args.dtype} compute), {count_params(variables):,} parameters")
    results = []
    per_image: dict = {}
    for size in args.sizes:
        for mode in args.modes:
            for batch in sorted(args.batches):
                est = per_image.get((size, mode))
                est = None if est is None else est * batch
                row = bench_case(fns[mode], variables, size, batch, net.in_channels, args.repeats,
                                 args.long_s, args.max_s, est)
                row.update(size=size, batch=batch, mode=mode)
                if "time_s" in row:
                    per_image.setdefault((size, mode), row["time_s"] / batch)
                    row["peak_fraction"] = row["gflops_per_s"] / args.peak_gflops
                results.append(row)
                print(json.dumps(row), flush=True)

    print()
    print(f"| size | batch | pass | compile s | time s (median) | s / image | GFLOP | GFLOP/s | % of {args.peak_gflops:g} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "time_s" not in r:
            print(f"| {r['size']}² | {r['batch']} | {r['mode']} | {r.get('compile_s', float('nan')):.1f} | "
                  f"skipped: {r['skipped']} | | {r.get('gflop', float('nan')):.1f} | | |")
            continue
        print(f"| {r['size']}² | {r['batch']} | {r['mode']} | {r['compile_s']:.1f} | {r['time_s']:.3f} "
              f"({r['repeats']}×) | {r['time_s'] / r['batch']:.3f} | {r['gflop']:.1f} | {r['gflops_per_s']:.1f} | "
              f"{100 * r['peak_fraction']:.0f} % |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "network": args.network, "variant": args.variant,
                       "dtype": args.dtype, "peak_gflops": args.peak_gflops, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
