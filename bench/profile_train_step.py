"""Where the CPU time of one training step goes: the whole jitted step, then its parts timed alone.

    python bench/profile_train_step.py                                   # small_ouve, its crop and batch
    python bench/profile_train_step.py --config small_ouve --network cpu --data data/train
    python bench/profile_train_step.py --batch 8 --size 64 --repeats 5 --json out.json

What each number is (every time is the median of ``--repeats`` calls after a warm-up, compile apart):

* **whole step**: ``train_lib.make_train_step`` (loss, gradients, AdamW, EMA) on random pairs.
* **network forward+backward**: the gradient of the task's loss alone (no optimiser).
* **optimiser + EMA**: AdamW's update and the EMA, jitted on their own, given gradients.
* **per layer kind**: every layer call of the network is recorded while tracing it (Flax method
  interception: 3×3 convolutions through XLA's convolution, 3×3 convolutions of small maps through
  im2col, 1×1 convolutions, group norms, attention blocks, the σ embedding's dense layers) and FIR
  resampling (by wrapping its functions). Each distinct (kind, input shape, width) is then jitted
  *alone* as forward + backward (gradients for its input and its weights, as in training), timed,
  and multiplied by how often the network calls it. Layers inside an attention block count as
  attention.
* **rest** = network forward+backward − the sum of the isolated layer times. Isolated layers
  lose XLA's fusion of neighbouring element-wise work (SiLU, the skip additions, the 1/√2
  scalings, concatenations, the loss) into them, so the split is an estimate: "rest" holds that
  element-wise work and the difference between fused and unfused timing, and can be negative.
* **data** (with ``--data``): pairs that `data.make_train_iterator` delivers per second for the
  config's crop and batch, for the tf.data pipeline and the numpy/Pillow one (after a warm-up pass
  that fills the decoded-image cache), and the seconds of a batch at that rate. The data pipeline
  runs in other threads beside the step, so this is CPU time taken from it, not time added to it.

Times are the process's CPU seconds (``time.process_time``: all threads) unless ``--wall``: on a
shared machine wall times of the same call vary several-fold, CPU times far less. CPU seconds of a
call that uses both cores count both.

Run it on an idle machine; on a shared one the table says the 1-minute load average.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from driftrec_jax import config_lib, train_lib  # noqa: E402
from driftrec_jax.networks import layers, ncsnpp  # noqa: E402
from bench_train import step_setup  # noqa: E402
from machine_info import machine  # noqa: E402

KINDS = ("conv 3×3 (XLA conv)", "conv 3×3 (im2col, ≤8×8 maps)", "conv 1×1", "group norm", "attention block",
         "FIR resampling", "dense (σ embedding)")


# What is timed: process CPU seconds (all threads) by default, which other jobs on a shared
# machine barely change; wall seconds with --wall.
CLOCK = {"fn": time.process_time}


def _median_time(fn, args, repeats: int) -> float:
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = CLOCK["fn"]()
        jax.block_until_ready(fn(*args))
        times.append(CLOCK["fn"]() - t0)
    return float(np.median(times))


def record_layers(task, x_shape, sigma_shape):
    """[(kind, module or function, input shape, extra)] for every layer call of one network pass."""
    calls, stack = [], []

    def interceptor(next_fun, args, kwargs, context):
        name = type(context.module).__name__
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        in_attn = "AttnBlock" in stack
        if name == "AttnBlock":
            calls.append(("attention block", context.module, tuple(args[0].shape)))
        elif not in_attn and name == "Conv":
            k = context.module.kernel_size
            h, w = args[0].shape[1:3]
            kind = "conv 1×1" if k == 1 else ("conv 3×3 (im2col, ≤8×8 maps)" if h * w <= layers.SMALL_MAP_PIXELS
                                            else "conv 3×3 (XLA conv)")
            calls.append((kind, context.module, tuple(args[0].shape)))
        elif not in_attn and name == "GroupNorm":
            calls.append(("group norm", context.module, tuple(args[0].shape)))
        elif name == "Dense":
            calls.append(("dense (σ embedding)", context.module, tuple(args[0].shape)))
        stack.append(name)
        try:
            return next_fun(*args, **kwargs)
        finally:
            stack.pop()

    originals = {}

    def wrap(module, fname):
        fn = getattr(module, fname)
        originals[(module, fname)] = fn

        def recorded(x):
            calls.append(("FIR resampling", originals[(module, fname)], tuple(x.shape)))
            return fn(x)

        setattr(module, fname, recorded)

    for mod in (layers, ncsnpp):
        for fname in ("fir_upsample", "fir_downsample"):
            wrap(mod, fname)
    try:
        import flax.linen as nn

        variables = jax.eval_shape(lambda: task.init_params(jax.random.PRNGKey(0), x_shape[1]))
        x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
        s = None if sigma_shape is None else jax.ShapeDtypeStruct(sigma_shape, jnp.float32)
        with nn.intercept_methods(interceptor):
            jax.eval_shape(task.model.apply, variables, x, s)
    finally:
        for (mod, fname), fn in originals.items():
            setattr(mod, fname, fn)
    return calls


def time_layer(kind, obj, shape, repeats: int) -> float:
    """Forward + backward (input and weight gradients) of one layer alone, jitted."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    if kind == "FIR resampling":
        def loss(x):
            return jnp.sum(obj(x) ** 2)

        return _median_time(jax.jit(jax.grad(loss)), (x,), repeats)
    module = obj.clone(parent=None, name=None)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    variables = jax.tree.map(lambda a: jnp.asarray(0.05 * rng.standard_normal(a.shape), jnp.float32), shapes)

    def loss(v, x):
        return jnp.sum(module.apply(v, x) ** 2)

    return _median_time(jax.jit(jax.grad(loss, argnums=(0, 1))), (variables, x), repeats)


def time_data(cfg: dict, batches: int) -> dict:
    from driftrec_jax import data

    out = {}
    for pipeline in ("tf", "numpy"):
        it = data.make_train_iterator(dict(cfg, pipeline=pipeline))
        warm = max(10, -(-it.num_images // cfg["batch_size"]))  # one pass fills the decoded cache
        for _ in range(warm):
            next(it)
        t0 = CLOCK["fn"]()
        for _ in range(batches):
            next(it)
        dt = CLOCK["fn"]() - t0
        it.close()
        out[pipeline] = batches * cfg["batch_size"] / dt
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small_ouve", help="training config (default %(default)s)")
    p.add_argument("--network", default=None, help="network preset instead of the config's (e.g. cpu)")
    p.add_argument("--size", type=int, default=None, help="crop side (default: the config's data.crop_size)")
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's data.batch_size)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    p.add_argument("--data", default="", help="training images: also time both input pipelines (pairs/s)")
    p.add_argument("--data-batches", type=int, default=40, help="timed batches per pipeline")
    p.add_argument("--wall", action="store_true",
                   help="time wall-clock seconds (default: the process's CPU seconds, all threads, which "
                        "other jobs on a shared machine barely change)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.wall:
        CLOCK["fn"] = time.perf_counter
    unit = "wall s" if args.wall else "CPU s"

    c = config_lib.load_config(args.config)
    if args.network:
        c.model.network = args.network
    size = args.size or c.data.crop_size
    batch = args.batch or c.data.batch_size
    load_before = os.getloadavg()[0]
    task, state, gb, step = step_setup(c, size, batch)
    tx = train_lib.make_optimizer(c.optim)  # the step's optimiser (same config), for the update timed alone

    # The whole step, chained as in training (it donates its state: it runs on a copy).
    chained = jax.tree.map(jnp.copy, state)
    times = []
    for i in range(args.repeats + 1):
        t0 = CLOCK["fn"]()
        chained, m = step(chained, gb)
        jax.block_until_ready(m)
        if i:  # the first call compiles
            times.append(CLOCK["fn"]() - t0)
    whole = float(np.median(times))

    grad_fn = jax.jit(jax.value_and_grad(task.loss))
    key = jax.random.PRNGKey(1)
    net = _median_time(grad_fn, (state.params, gb, key), args.repeats)
    _, grads = grad_fn(state.params, gb, key)

    def opt_ema(st, g):
        updates, opt_state = tx.update(g, st.opt_state, st.params)
        params = jax.tree.map(lambda a, b: a + b, st.params, updates)
        ema = jax.tree.map(lambda e, q: 0.999 * e + 0.001 * q, st.ema_params, params)
        return params, ema, opt_state

    opt = _median_time(jax.jit(opt_ema), (state, grads), args.repeats)

    in_ch = task.input_channels()
    calls = record_layers(task, (batch, size, size, in_ch), (batch,) if task.conditional else None)
    groups = collections.OrderedDict()
    for kind, obj, shape in calls:
        key_ = (kind, shape, getattr(obj, "features", None), getattr(obj, "kernel_size", None),
                getattr(obj, "__name__", None))
        groups.setdefault(key_, [kind, obj, shape, 0])[3] += 1
    per_kind = collections.defaultdict(lambda: [0.0, 0])
    for kind, obj, shape, count in groups.values():
        t = time_layer(kind, obj, shape, args.repeats)
        per_kind[kind][0] += count * t
        per_kind[kind][1] += count
    layer_sum = sum(v[0] for v in per_kind.values())

    data_rates = {}
    if args.data:
        cfg = dict(c.data.to_dict(), source=args.data, batch_size=batch, crop_size=size)
        data_rates = time_data(cfg, args.data_batches)
    load_after = os.getloadavg()[0]

    from driftrec_jax.networks import count_params

    print(f"machine: {machine()}; 1-min load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"config {args.config}, network {c.model.network} ({count_params(state.params):,} parameters, "
          f"{c.model.variant}), {size}² crops, batch {batch}\n")
    print(f"| part | calls/step | {unit}/step | share of the step |")
    print("|---|---:|---:|---:|")
    rows = [("**whole step** (loss, gradients, AdamW, EMA)", "", whole),
            ("network forward+backward (gradient of the loss)", "1", net)]
    for kind in KINDS:
        if kind in per_kind:
            rows.append((f"  {kind}, isolated", str(per_kind[kind][1]), per_kind[kind][0]))
    rows.append(("  rest: element-wise work, loss, fusion (net − isolated layers)", "", net - layer_sum))
    rows.append(("optimiser (AdamW) + EMA update", "1", opt))
    rows.append(("unaccounted (step − net − optimiser)", "", whole - net - opt))
    for name, n, t in rows:
        print(f"| {name} | {n} | {t:.3f} | {100 * t / whole:.0f} % |")
    for pipeline, rate in data_rates.items():
        print(f"| data, {pipeline} pipeline: {rate:.0f} pairs per {unit} | | {batch / rate:.3f} | "
              f"{100 * batch / rate / whole:.0f} % |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "config": args.config, "network": c.model.network, "size": size,
                       "batch": batch, "clock": unit, "load_average": [load_before, load_after], "whole_s": whole, "net_s": net,
                       "optimizer_ema_s": opt, "per_kind": {k: {"s": v[0], "calls": v[1]} for k, v in per_kind.items()},
                       "data_pairs_per_s": data_rates}, f, indent=2)


if __name__ == "__main__":
    main()
