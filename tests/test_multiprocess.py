"""Several JAX processes on one machine, as on a pod: `python -m driftrec_jax.launch` starts them
with CPU devices and cross-process collectives (gloo), and train.py runs in them unchanged.

One chain of runs in one workdir covers training, checkpoints across process counts, a killed
process and the relaunch, against a reference computed here, in this one process with 8 devices,
on the same global batches (the first half of each from process 0's file shard, the second half
from process 1's):

  1. this process, 1 x 8 devices: train() steps 1-2, checkpoint 2;
  2. launch, 2 processes x 4 devices: resume from that checkpoint (written by 1 process), steps
     3-5, checkpoint 4; process 1 kills itself with SIGKILL after step 5;
  3. launch again: resume from checkpoint 4 (written by 2 processes), steps 5-6, checkpoint 6;
  4. this process again: train() resumes from checkpoint 6 (written by 2 processes), steps 7-8.

The launcher's own behaviour (failure, timeout, environment) is tested with tiny commands.

Restoration: `driftrec restore` and `driftrec evaluate` over 2 processes x 4 devices (the tile
engine sharding every call over all 8 devices, each process restoring its share of the files, and
making as many calls as the other) give the PNGs and tables of 1 process x 8 devices.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from driftrec_jax import checkpoint, cli, config_lib, data, launch, models, parallel, train_lib
from driftrec_jax.train_cli import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MINI_NETWORK = {"ch_mult": (1,), "num_res_blocks": 1, "attn_resolutions": ()}
MINI_CONFIG = """
from driftrec_jax.config_lib import load_config


def get_config():
    c = load_config("tiny_test")
    c.model.overrides = {"ch_mult": (1,), "num_res_blocks": 1, "attn_resolutions": ()}
    return c
"""
# The fields every run of the chain shares (train.py gets them as overrides, train() as fields).
FIELDS = {"data.jpeg_backend": "pillow", "train.checkpoint_every": 2, "train.log_every": 1,
          "train.sample_every": 4}
KILL_AT = 5


def _child_env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


# ---------------------------------------------------------------------------------------------
# The launcher with tiny commands (no JAX in the children)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_launcher_environment_success_and_failures(tmp_path, capsys):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_dump_to=/nowhere")
    report = _py("""
        import json, os
        keys = ["JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_BIND_ADDRESS", "JAX_NUM_PROCESSES",
                "JAX_PROCESS_ID", "JAX_NUM_CPU_DEVICES", "JAX_PLATFORMS", "XLA_FLAGS"]
        with open(os.path.join(%r, "env_" + os.environ["JAX_PROCESS_ID"]), "w") as f:
            json.dump({k: os.environ.get(k) for k in keys}, f)
        """ % str(tmp_path))
    assert launch.launch(report, 3, devices_per_process=4, timeout=60, log_dir=str(tmp_path / "ok"),
                         env=env, echo=False) == 0
    seen = [json.loads((tmp_path / f"env_{i}").read_text()) for i in range(3)]
    addresses = {s["JAX_COORDINATOR_ADDRESS"] for s in seen}
    assert len(addresses) == 1 and addresses.pop().startswith("127.0.0.1:")
    assert [s["JAX_PROCESS_ID"] for s in seen] == ["0", "1", "2"]
    for s in seen:
        assert s["JAX_COORDINATOR_BIND_ADDRESS"] == s["JAX_COORDINATOR_ADDRESS"]  # nothing listens outside
        assert (s["JAX_NUM_PROCESSES"], s["JAX_NUM_CPU_DEVICES"], s["JAX_PLATFORMS"]) == ("3", "4", "cpu")
        assert s["XLA_FLAGS"] == "--xla_dump_to=/nowhere"  # the simulated-device flag is scrubbed

    # Process 1 fails at once while process 0 would run for ever: process 0 is stopped after the
    # grace period, both logs are shown, and one line says what happened.
    fail = _py("""
        import os, sys, time
        print("hello from", os.environ["JAX_PROCESS_ID"], flush=True)
        if os.environ["JAX_PROCESS_ID"] == "1":
            print("something broke", flush=True)
            sys.exit(3)
        time.sleep(600)
        """)
    code = launch.launch(fail, 2, timeout=120, grace=1, log_dir=str(tmp_path / "fail"), echo=False)
    err = capsys.readouterr().err
    assert code == 3
    assert "process 0 was stopped by the launcher" in err and "something broke" in err
    last = err.strip().splitlines()[-1]
    assert "process 1 of 2 exited with status 3" in last and "stopped the 1 still running" in last

    # A job that outlives its time limit: everything is stopped, status 124.
    code = launch.launch(_py("import time; time.sleep(600)"), 2, timeout=2, log_dir=str(tmp_path / "slow"),
                         echo=False)
    err = capsys.readouterr().err
    assert code == launch.TIMEOUT_STATUS and "ran out of its 2 s" in err.strip().splitlines()[-1]

    # The command line needs a command after --.
    with pytest.raises(SystemExit):
        launch.main(["-n", "2"])
    assert "put it after --" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Training over 2 processes


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """12 structured colour images of different sizes (6 in each process's shard)."""
    folder = tmp_path_factory.mktemp("pod_images")
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = rng.integers(36, 80, 2)
        yy, xx = np.mgrid[:h, :w]
        base = np.stack([np.sin(xx / (2 + i) + c) * np.cos(yy / (3 + c)) for c in range(3)], -1) * 0.35 + 0.5
        checks = ((xx // (4 + i % 4) + yy // 6) % 2)[..., None] * 0.25
        Image.fromarray((np.clip(base * 0.8 + checks, 0, 1) * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def _config(source, num_steps, sample_every=0):
    """The launched runs' config, with no sample grids for the runs in this process (sampling
    changes no parameter, and would compile a sampler here)."""
    c = config_lib.load_config("tiny_test")
    c.model.overrides = dict(MINI_NETWORK)
    c.data.source = str(source)
    c.train.num_steps = num_steps
    config_lib.apply_overrides(c, FIELDS)
    c.train.sample_every = sample_every
    return c


def _launch(tmp_path, workdir, source, num_steps, name, **env):
    config = tmp_path / "mini_config.py"
    config.write_text(MINI_CONFIG)
    overrides = [f"--config.{k}={v}" for k, v in FIELDS.items()]
    cmd = [sys.executable, "-m", "driftrec_jax.launch", "--num-processes", "2", "--devices-per-process", "4",
           "--timeout", "420", "--grace", "90", "--heartbeat-timeout", "20", "--quiet",
           "--log-dir", str(tmp_path / name), "--",
           os.path.join(ROOT, "train.py"), "--config", str(config), "--workdir", str(workdir),
           f"--config.data.source={source}", f"--config.train.num_steps={num_steps}", *overrides]
    env = _child_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                     JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    logs = [(tmp_path / name / f"process_{i}.log").read_text(errors="replace") for i in range(2)]
    return result, logs


def _event_files(workdir):
    folder = os.path.join(workdir, "tensorboard")
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def _logged_losses(path) -> dict:
    import tensorflow as tf

    out = {}
    for event in tf.compat.v1.train.summary_iterator(str(path)):
        for v in event.summary.value:
            if v.tag == "loss":
                out[event.step] = float(tf.make_ndarray(v.tensor))
    return out


def _two_shard_batches(c, start, n):
    """The global batches of 2 processes: process 0's local batch, then process 1's."""
    local = dict(c.data.to_dict(), batch_size=c.data.batch_size // 2)
    its = [data.make_train_iterator(local, process_index=p, process_count=2, start_batch=start) for p in (0, 1)]
    assert [it.num_images for it in its] == [6, 6]
    out = []
    for _ in range(n):
        parts = [next(it) for it in its]
        out.append({k: np.concatenate([p[k] for p in parts]) for k in ("clean", "jpeg")})
    for it in its:
        it.close()
    return out


def _one_process_batches(c, start, n):
    it = data.make_train_iterator(c.data.to_dict(), start_batch=start)
    out = [{k: v for k, v in next(it).items() if k in ("clean", "jpeg")} for _ in range(n)]
    it.close()
    return out


def _assert_states_close(expected, actual, what):
    leaves_e = jax.tree_util.tree_flatten_with_path(jax.device_get(expected))[0]
    leaves_a = jax.tree.leaves(jax.device_get(actual))
    assert len(leaves_e) == len(leaves_a)
    compared = 0
    for (path, e), a in zip(leaves_e, leaves_a):
        names = [getattr(p, "key", None) for p in path]
        if "NIN_1" in names and names[-1] == "b":
            # The attention key bias adds q·b to every logit of a row, which the softmax cancels:
            # its exact gradient is 0 and the computed one rounding noise, whose sign Adam's
            # normalised update turns into ±lr (as in test_train). Every other entry is compared.
            continue
        compared += 1
        # Adam moves each entry by about lr a step whatever the gradient's size, so where a gradient
        # entry is nearly 0 the summation order of 8 devices in 1 or 2 processes shows at ~1e-6.
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-4, atol=2e-5,
                                   err_msg=f"{what}: {jax.tree_util.keystr(path)}")
    assert compared > 0.9 * len(leaves_e)


def _restore(workdir, target, step):
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), async_save=False)
    state, meta = checkpoint.restore(manager, target, step)
    assert meta["step"] == step
    return state


@pytest.mark.slow
def test_two_processes_train_checkpoint_fail_and_resume_like_one(image_folder, tmp_path, capsys, monkeypatch):
    """2 x 4 devices == 1 x 8 on the same global batches (loss and parameters); each process reads
    its own half of the files; only process 0 writes logs, sample grids and model files; checkpoints
    move between 1 and 2 processes; a process killed with SIGKILL stops the job (the survivor exits
    by itself, non-zero) and relaunching resumes to the reference parameters."""
    work = tmp_path / "run"
    assert jax.device_count() == 8 and jax.process_count() == 1
    # The runs in this process and the reference share one compiled step, and the two runs one
    # compiled init (same config and mesh).
    made, make_step, make_init = {}, train_lib.make_train_step, train_lib.make_init_state

    def shared_step(task, tx, optim_cfg, mesh, steps_per_call=1):
        key = ("step", tuple(d.id for d in mesh.devices.flat), steps_per_call)
        if key not in made:
            made[key] = make_step(task, tx, optim_cfg, mesh, steps_per_call)
        return made[key]

    def shared_init(task, tx, image_size, mesh):
        key = ("init", tuple(d.id for d in mesh.devices.flat), image_size)
        if key not in made:
            made[key] = make_init(task, tx, image_size, mesh)
        return made[key]

    monkeypatch.setattr(train_lib, "make_train_step", shared_step)
    monkeypatch.setattr(train_lib, "make_init_state", shared_init)

    # 1. One process, 8 devices: steps 1-2.
    s2 = train(_config(image_folder, 2), str(work), progress=False)
    assert int(s2.step) == 2 and sorted(os.listdir(work / "checkpoints")) == ["2"]

    # The reference: steps 3-6 on the 2-process global batches, with one compiled step.
    c = _config(image_folder, 6)
    task, tx = models.task_from_config(c), train_lib.make_optimizer(c.optim)
    mesh = parallel.make_mesh(8)
    step = train_lib.make_train_step(task, tx, c.optim, mesh)
    fresh = lambda s: parallel.replicate(jax.tree.map(jnp.array, jax.device_get(s)), mesh)  # the step donates
    st, ref_loss, ref_state = fresh(s2), {}, {}
    for n, b in enumerate(_two_shard_batches(c, 2, 4), start=3):
        st, m = step(st, parallel.global_batch(b, mesh))
        ref_loss[n] = float(m["loss"])
        if n in (3, 4, 6):
            ref_state[n] = jax.device_get(st)
    # Control: had the processes read other files than their shards (here: all of them, as one
    # process does), step 3 would have moved the parameters elsewhere, far beyond the tolerance.
    other, _ = step(fresh(s2), parallel.global_batch(_one_process_batches(c, 2, 1)[0], mesh))
    with pytest.raises(AssertionError):
        _assert_states_close(ref_state[3].params, other.params, "control")

    # 2. Two processes x 4 devices resume the 1-process checkpoint; process 1 dies after step 5.
    events_before = _event_files(work)
    os.remove(work / "model.msgpack")
    killed, logs = _launch(tmp_path, work, image_folder, 6, "killed",
                           DRIFTREC_FAULT_KILL_AT_STEP=str(KILL_AT), DRIFTREC_FAULT_KILL_PROCESS="1")
    assert killed.returncode != 0, killed.stderr[-3000:]
    last = killed.stderr.strip().splitlines()[-1]
    # The survivor exited by itself (JAX's distributed service stops it once its peer is gone), it
    # was not the launcher that had to stop it; one line names the process that died and how.
    assert "process 1 of 2 was killed by SIGKILL" in last and "stopped by themselves" in last, killed.stderr[-3000:]
    assert "process 0 was stopped by the launcher" not in killed.stderr
    assert "resuming from step 2" in logs[0]
    assert sorted(os.listdir(work / "checkpoints")) == ["2", "4"]
    new_events = _event_files(work) - events_before
    assert len(new_events) == 1  # process 0's log only
    losses = _logged_losses(work / "tensorboard" / new_events.pop())
    assert sorted(losses) == [3, 4, 5]
    np.testing.assert_allclose([losses[n] for n in (3, 4, 5)], [ref_loss[n] for n in (3, 4, 5)], rtol=2e-5)
    assert os.listdir(work / "samples") == ["step_0000004.png"]
    _, ema4, _ = models.load_model(str(work))  # written by process 0 at checkpoint 4
    _assert_states_close(ref_state[4].ema_params, ema4, "model.msgpack of step 4")
    # The checkpoint written by 2 processes restores in this one.
    _assert_states_close(ref_state[4], _restore(work, s2, 4), "checkpoint 4 (2 processes)")

    # 3. Relaunch both: resume from checkpoint 4, reach the reference at step 6.
    events_before = _event_files(work)
    resumed, logs = _launch(tmp_path, work, image_folder, 6, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:] + logs[0][-3000:] + logs[1][-3000:]
    assert "resuming from step 4" in logs[0]
    assert sorted(os.listdir(work / "checkpoints")) == ["2", "4", "6"]
    new_events = _event_files(work) - events_before
    assert len(new_events) == 1
    losses = _logged_losses(work / "tensorboard" / new_events.pop())
    np.testing.assert_allclose([losses[5], losses[6]], [ref_loss[5], ref_loss[6]], rtol=2e-5)
    s6 = _restore(work, s2, 6)
    _assert_states_close(ref_state[6], s6, "checkpoint 6 (2 processes, relaunched)")

    # 4. One process resumes the 2-process checkpoint 6: steps 7-8 on its own data stream.
    capsys.readouterr()
    s8 = train(_config(image_folder, 8), str(work), progress=False)
    assert "resuming from step 6" in capsys.readouterr().err
    st = parallel.replicate(jax.tree.map(jnp.array, ref_state[6]), mesh)
    for b in _one_process_batches(c, 6, 2):
        st, _ = step(st, parallel.global_batch(b, mesh))
    assert int(s8.step) == 8
    _assert_states_close(st, s8, "1 process resuming checkpoint 6")


# ---------------------------------------------------------------------------------------------
# Restoration over 2 processes

TWO_JOBS = """
import sys

from driftrec_jax import cli

restore, evaluate = sys.argv[1].split(" "), sys.argv[2].split(" ")
sys.exit(cli.main(["restore", *restore]) or cli.main(["evaluate", *evaluate]))
"""


def test_two_processes_restore_and_evaluate_like_one(tmp_path):
    """`driftrec restore` and `driftrec evaluate` run by 2 processes x 4 devices (one launch, both
    commands in each process) write the PNGs and tables that 1 process x 8 devices writes here.
    Three images of 6, 2 and 4 tiles: process 0 restores the first and third (10 tiles, 3 calls of
    4), process 1 the second (2 tiles) and sends padding for its 2 other calls."""
    assert jax.device_count() == 8 and jax.process_count() == 1
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(11)
    for name, (h, w) in (("a.png", (40, 56)), ("b.png", (32, 20)), ("c.png", (48, 48))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / name)
    spec = {"network": "tiny", "overrides": dict(MINI_NETWORK), "variant": "score", "dtype": "float32",
            "sde": {"name": "ouve", "gamma": 1.0, "sigma_min": 0.01, "sigma_max": 1.0}}
    model = tmp_path / "mini.msgpack"
    models.save_model(str(model), spec, models.random_params(models.build_task(spec), seed=2))
    common = ["--tile", "32", "--overlap", "16", "--steps", "2", "--batch-size", "1", "--seed", "3"]
    restore = [str(src), "--checkpoint", str(model), "--sampler", "em", "--no-compile-cache", *common]
    evaluate = ["-c", f"mini={model}", "-d", str(src), "-q", "10", "--sampler", "em", "--no-lpips", "--quiet",
                *common]

    def outputs(folder):
        pngs = {p.name: np.asarray(Image.open(p)) for p in sorted((folder / "png").iterdir())}
        with open(folder / "eval" / "results.json") as f:
            rows = [{k: v for k, v in r.items() if k != "seconds"} for r in json.load(f)["rows"]]
        with open(folder / "eval" / "per_image.csv") as f:
            per_image = [line.split(",") for line in f.read().splitlines()]
        seconds = per_image[0].index("seconds")
        return pngs, rows, [line[:seconds] + line[seconds + 1:] for line in per_image]

    one = tmp_path / "one"
    assert cli.main(["restore", *restore, "-o", str(one / "png")]) == 0
    assert cli.main(["evaluate", *evaluate, "--out", str(one / "eval")]) == 0

    script = tmp_path / "two_jobs.py"
    script.write_text(TWO_JOBS)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "driftrec_jax.launch", "--num-processes", "2", "--devices-per-process", "4",
           "--timeout", "300", "--grace", "30", "--heartbeat-timeout", "20", "--quiet",
           "--log-dir", str(tmp_path / "logs"), "--", str(script),
           " ".join(restore + ["-o", str(two / "png")]), " ".join(evaluate + ["--out", str(two / "eval")])]
    result = subprocess.run(cmd, cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=360)
    logs = [(tmp_path / "logs" / f"process_{i}.log").read_text(errors="replace") for i in range(2)]
    assert result.returncode == 0, result.stderr[-3000:] + logs[0][-3000:] + logs[1][-3000:]
    assert "restored 3 of 3 inputs" in logs[0] and "on 8 devices in 2 processes" in logs[0]
    assert "restored" not in logs[1] and "| JPEG |" not in logs[1]  # process 0 reports, for all

    want_pngs, want_rows, want_per_image = outputs(one)
    got_pngs, got_rows, got_per_image = outputs(two)
    assert sorted(got_pngs) == ["a.png", "b.png", "c.png"]
    for name in want_pngs:
        np.testing.assert_array_equal(got_pngs[name], want_pngs[name], err_msg=name)
    assert got_rows == want_rows and len(got_rows) == 2
    assert got_per_image == want_per_image and len(got_per_image) == 7
