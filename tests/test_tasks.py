"""The methods as tasks (driftrec_jax/tasks.py): one face for DriftRec, regression, DDRM and I²SB.

Kind checks live in tasks.py only; each task's settings, spec round trip and restorer contract;
I²SB with an oracle network (exact x0, exact network calls) and trained from a config for two
steps, then restored by `driftrec restore` and `driftrec evaluate`. The I²SB run uses the 'tiny'
network cut to one level (as test_train.py) and one 32-px tile everywhere, so that training's
sample grid, the direct call and evaluate share one compiled restorer.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from driftrec_jax import config_lib, engine, models, restore_cli, sampler_settings, tasks
from driftrec_jax.i2sb import I2SB
from driftrec_jax.sampler_settings import SamplerSetting, parse_setting

ROOT = Path(__file__).resolve().parents[1]
MINI = {"ch_mult": [1], "num_res_blocks": 1, "attn_resolutions": []}
SPECS = {
    "score": {"sde": {"name": "ouve", "gamma": 1.0, "sigma_min": 0.01, "sigma_max": 1.0}},
    "regression": {},
    "ddrm_eps": {"ddrm": {"max_train_timestep": 300}},
    "i2sb": {"i2sb": {"n_steps": 100, "beta_min": 1e-4, "beta_max": 0.2, "cond_y": False}},
}


def _spec(variant):
    return {"network": "tiny", "overrides": dict(MINI), "variant": variant, "dtype": "float32", **SPECS[variant]}


def test_no_kind_checks_outside_tasks():
    """Which kind of model a task is decides nothing outside tasks.py: no is_regression /
    is_ddrm, no `.sde is None`, no isinstance tests of task classes, no comparisons of task.kind."""
    patterns = [r"\bis_regression\b", r"\bis_ddrm\b", r"\.sde\s+is\s+(not\s+)?None", r"isinstance\([^)]*Task\b",
                r"task\.kind\s*[!=]=", r"task\.method\s*==\s*['\"]"]
    found = []
    for path in sorted((ROOT / "driftrec_jax").rglob("*.py")):
        if path.name == "tasks.py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(re.search(p, line) for p in patterns):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("variant, cls, channels", [("score", tasks.DriftRecTask, 6), ("regression", tasks.RegressionTask, 3),
                                                    ("ddrm_eps", tasks.DDRMTask, 3), ("i2sb", tasks.I2SBTask, 3)])
def test_each_variant_builds_its_task_and_its_model_file_round_trips(variant, cls, channels, tmp_path):
    spec = _spec(variant)
    task = models.build_task(spec)
    assert type(task) is cls and task.variant == variant and task.input_channels() == channels
    params = models.random_params(task, seed=1)
    models.save_model(str(tmp_path / "m.msgpack"), spec, params)
    loaded, got, got_spec = models.load_model(str(tmp_path / "m.msgpack"))
    assert loaded == task and got_spec == spec
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if variant == "i2sb":
        assert loaded.process == I2SB(n_steps=100, beta_min=1e-4, beta_max=0.2) and not loaded.cond_y
        with pytest.raises(ValueError, match=r"unknown i2sb field\(s\) \['gamma'\]; allowed: n_steps"):
            models.build_task(dict(spec, i2sb=dict(spec["i2sb"], gamma=1.0)))
    with pytest.raises(ValueError, match="unknown model variant"):
        models.build_task(dict(spec, variant="nope"))


def test_sampler_settings_each_task_accepts():
    d, r, e, i = (models.build_task(_spec(v)) for v in ("score", "regression", "ddrm_eps", "i2sb"))
    assert d.default_setting() == sampler_settings.default_setting()
    assert e.default_setting() == SamplerSetting("ddrm", steps=20)
    assert i.default_setting() == SamplerSetting("i2sb", steps=sampler_settings.DEFAULT_STEPS["i2sb"])
    assert r.default_setting() is None and r.check_setting(parse_setting("em:3")) is None  # no sampler
    for task, wrong in ((d, "ddrm"), (d, "i2sb"), (e, "em"), (i, "ddim")):
        with pytest.raises(ValueError, match=f"not {wrong}"):
            task.check_setting(parse_setting(wrong))
    asked = [parse_setting(t) for t in ("em:2", "ddim:3x4", "i2sb:5")]
    assert d.evaluation_settings(asked) == asked[:2]
    assert i.evaluation_settings(asked) == asked[2:]
    assert r.evaluation_settings(asked) == [None]
    # Without a setting of its own, DDRM gets its default with every K asked for; DriftRec refuses.
    assert [s.key for s in e.evaluation_settings(asked)] == ["ddrm:20", "ddrm:20x4"]
    with pytest.raises(ValueError, match="DriftRec model"):
        d.evaluation_settings([parse_setting("ddrm:20")])
    assert i.setting_from_config(config_lib.load_config("small_i2sb").sample) == SamplerSetting("i2sb", steps=10)
    assert e.setting_from_config(config_lib.load_config("ddrm_uncond_small").sample) == e.default_setting()
    assert d.describe(parse_setting("em:100")) == "EM 100 steps" and r.describe(None) == "regression (1 network pass)"
    assert e.describe(parse_setting("ddrm:3x2")) == "DDRM-JPEG 3 steps, mean of 2 samples"
    assert i.describe(parse_setting("i2sb:4")) == "I²SB 4 calls"
    # Restorers are memoised per task and setting; regression's ignores the setting.
    assert d.tile_restorer(asked[0]) is d.tile_restorer(parse_setting("em:2"))
    assert d.tile_restorer(asked[0]) is not d.tile_restorer(asked[0], eps=0.05)
    assert r.tile_restorer(None) is r.tile_restorer(asked[0], eps=0.1)
    with pytest.raises(ValueError, match="subsampling"):
        e.tile_restorer(None)


CALLS = []


class _Oracle(nn.Module):
    """An I²SB network that knows x0 = `value` everywhere (in [0, 1]): it returns (x_n − x0)/σ_n
    on the [−1, 1] scale, counting its calls (one per batch, on the host)."""

    value: float

    @nn.compact
    def __call__(self, x, sigma):
        w = self.param("w", nn.initializers.ones, ())
        jax.debug.callback(lambda: CALLS.append(1))
        x_n = x[..., :3]
        return w * (x_n - (2.0 * self.value - 1.0)) / sigma[:, None, None, None]


def test_i2sb_oracle_loss_is_zero_sampler_returns_x0_with_exact_calls():
    task = tasks.I2SBTask(model=_Oracle(0.3), process=I2SB())
    y = jnp.asarray(np.random.default_rng(0).random((1, 8, 8, 3)), jnp.float32)
    batch = {"clean": jnp.full_like(y, 0.3), "jpeg": y}
    loss = jax.jit(task.loss)
    assert float(loss({"params": {"w": jnp.ones(())}}, batch, jax.random.PRNGKey(0))) < 1e-6
    assert float(loss({"params": {"w": jnp.asarray(2.0)}}, batch, jax.random.PRNGKey(0))) > 1.0

    fn = task.tile_restorer(parse_setting("i2sb:7x2"))
    CALLS.clear()
    x, nfe = jax.block_until_ready(fn({"params": {"w": jnp.ones(())}}, y, jax.random.PRNGKey(1)[None], None))
    np.testing.assert_allclose(np.asarray(x), 0.3, atol=1e-5)
    assert nfe.dtype == jnp.int32 and nfe.tolist() == [7]
    assert len(CALLS) == 7  # 7 network calls per tile (the 2 samples share each call)


def test_training_does_not_import_the_evaluate_command_nor_restoring_the_optimiser():
    code = ("import sys\n"
            "from driftrec_jax import models, tasks, restore_cli\n"
            "assert 'optax' not in sys.modules and 'driftrec_jax.train_lib' not in sys.modules\n"
            "import driftrec_jax.train_cli\n"
            "assert 'driftrec_jax.evaluate' not in sys.modules, 'training imported the evaluate command'\n"
            "print('OK')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-2000:]


def test_i2sb_trains_from_a_config_and_restore_and_evaluate_run_it(tmp_path, capsys):
    from driftrec_jax import evaluate as E
    from driftrec_jax.train_cli import train

    rng = np.random.default_rng(5)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        yy, xx = np.mgrid[:40, :44]
        img = 0.5 + 0.3 * np.sin(xx / (3 + i))[..., None] * np.cos(yy[..., None] / 4 + np.arange(3))
        Image.fromarray(np.clip(img * 255 + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)).save(photos / f"p{i}.png")

    c = config_lib.load_config("small_i2sb")
    tiny = config_lib.load_config("tiny_test")
    c.model.network, c.model.overrides = "tiny", dict(MINI)
    c.data, c.optim = tiny.data, tiny.optim
    c.data.source, c.data.jpeg_backend, c.data.pipeline = str(photos), "pillow", "numpy"
    c.train.num_steps = c.train.checkpoint_every = c.train.sample_every = 2
    c.train.async_checkpoints = False
    c.train.num_sample_images = 1  # one 32-px tile: the grid's compiled restorer serves the rest
    c.sample.steps = 2
    start = models.random_params(models.task_from_config(c), seed=3)
    models.save_model(str(tmp_path / "start.msgpack"), models.model_spec(c), start)
    c.train.init_from = str(tmp_path / "start.msgpack")
    work = tmp_path / "work"
    state = train(c, str(work), progress=False)
    assert int(state.step) == 2
    changed = [not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(state.params))]
    assert np.mean(changed) > 0.5
    logged = [line for line in (work / "train_log.jsonl").read_text().splitlines() if '"log"' in line]
    assert logged and all(np.isfinite(float(re.search(r'"loss": ([^,]+)', line).group(1))) for line in logged)
    grid = np.asarray(Image.open(work / "samples" / "step_0000002.png"))
    assert grid.shape == (32, 96, 3)

    task, params, spec = models.load_model(str(work))
    assert type(task) is tasks.I2SBTask and spec["i2sb"] == dict(config_lib.i2sb_bridge())
    assert task.cond_y and task.input_channels() == 6

    # driftrec restore: the model's own sampler (i2sb, --steps network calls) and the documented key.
    src = tmp_path / "in"
    src.mkdir()
    Image.open(photos / "p0.png").crop((0, 0, 32, 32)).save(src / "tile.jpg", quality=20)
    capsys.readouterr()
    rc = restore_cli.main([str(src / "tile.jpg"), "-o", str(tmp_path / "out"), "--checkpoint", str(work),
                           "--steps", "2", "--tile", "32", "--overlap", "16", "--no-compile-cache"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "I²SB 2 calls" in err and "2 network evaluations per tile" in err
    y = np.asarray(Image.open(src / "tile.jpg"), np.float32)[None] / 255
    key = engine.tile_key(0, "tile.jpg", 0)
    x, nfe = task.tile_restorer(parse_setting("i2sb:2"))(params, y, key[None], None)
    want = np.floor(np.clip(np.asarray(x[0]), 0, 1) * 255 + 0.5)
    got = np.asarray(Image.open(tmp_path / "out" / "tile.png")).astype(np.int64)
    assert int(nfe[0]) == 2 and np.abs(got - want).max() <= 1
    rc = restore_cli.main([str(src / "tile.jpg"), "-o", str(tmp_path / "o2"), "--checkpoint", str(work),
                           "--sampler", "em", "--no-compile-cache"])
    assert rc == 2 and "I²SB models sample with i2sb" in capsys.readouterr().err

    # driftrec evaluate: an I²SB row with its own setting (em:2 does not apply to it).
    res = E.evaluate([E.Checkpoint("I2SB", str(work))], [str(src)], [E.Protocol(20)],
                     [parse_setting("em:2"), parse_setting("i2sb:2")], str(tmp_path / "eval"), tile=32, overlap=16,
                     batch_size=1, progress=False, lpips=False)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"JPEG", "I2SB"}
    assert rows["I2SB"]["kind"] == "i2sb" and rows["I2SB"]["setting"] == "i2sb:2" and rows["I2SB"]["nfe"] == 2
    assert np.isfinite(rows["I2SB"]["psnr"])
