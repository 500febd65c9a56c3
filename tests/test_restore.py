"""Tests of `driftrec restore` / sample.py (driftrec_jax.restore_cli on driftrec_jax.restoring).

A miniature model file (the 'tiny' NCSN++ with one resolution level and no attention, random
weights: it compiles in seconds) restores a folder of small images in 32-pixel tiles with 3
Euler–Maruyama steps. The folder run happens once per module; most tests look at its outputs.
Two subprocess runs (cold, then warm compilation cache) check that TensorFlow is never imported,
that the cache is filled and then used, and that another process gives the same pixels.
"""

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import driftrec_jax
from driftrec_jax import engine, models, restore_cli, restoring, sampler_settings, samplers

ROOT = Path(__file__).resolve().parents[1]
SDE = {"name": "ouve", "gamma": 1.0, "sigma_min": 0.01, "sigma_max": 1.0}
MINI = {"ch_mult": [1], "attn_resolutions": []}  # 'tiny' cut to one level: fast to compile
# One tile per device: 8 tiles per call on the suite's 8 simulated devices (one compilation shared
# by the runs of every size below).
TILING = ["--tile", "32", "--overlap", "16", "--steps", "3", "--batch-size", "1", "--no-compile-cache"]
GOOD = {"rgb": ("RGB", (40, 56)), "gray": ("L", (33, 20)), "rgba": ("RGBA", (24, 40)), "photo": ("RGB", (48, 48))}


def _run(argv) -> tuple[int, str]:
    """restore_cli.main in this process; returns (exit status, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = restore_cli.main([str(a) for a in argv])
    return rc, err.getvalue()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("driftrec restore: ")]


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model files (score and regression) and an input folder of good and bad images."""
    root = tmp_path_factory.mktemp("restore")
    paths = {}
    for variant in ("score", "regression"):
        spec = {"network": "tiny", "overrides": MINI, "variant": variant, "dtype": "float32"}
        if variant == "score":
            spec["sde"] = SDE
        task = models.build_task(spec)
        paths[variant] = root / f"mini_{variant}.msgpack"
        models.save_model(str(paths[variant]), spec, models.random_params(task, seed=len(paths)))

    rng = np.random.default_rng(7)
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(src / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (33, 20), dtype=np.uint8)).save(src / "gray.png")
    Image.fromarray(rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)).save(src / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(src / "sub" / "photo.jpg", quality=30)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 8)
    whole = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole, format="PNG")
    (src / "truncated.png").write_bytes(whole.getvalue()[:300])  # header fine, pixel data cut
    (src / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / ".hidden" / "skip.png")
    paths["in"] = src
    paths["root"] = root
    return paths


@pytest.fixture(scope="module")
def folder_run(files):
    out = files["root"] / "out"
    rc, stderr = _run([files["in"], "-o", out, "--checkpoint", files["score"], *TILING])
    return rc, stderr, out


# ---------------------------------------------------------------------------------------------
# Options


def test_options_match_samplers_and_help_gives_defaults():
    # DriftRec's samplers, then those of the other methods (the model's task decides which apply).
    assert restore_cli.SAMPLER_NAMES == tuple(samplers.SAMPLERS) + ("ddrm", "i2sb")
    assert sampler_settings.DEFAULT_STEPS["em"] == samplers.DEFAULT_STEPS
    assert restore_cli.DEFAULT_EPS == samplers.DEFAULT_EPS
    from driftrec_jax import ddrm

    assert restore_cli.DDRM_DEFAULT_STEPS == ddrm.NUM_STEPS
    parser = restore_cli.build_parser()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
            assert ("required" if action.required else "default") in action.help, action.dest
    for option in ("--checkpoint", "--sampler", "--steps", "--eta", "--grid", "--tol", "--num-samples", "--seed",
                   "--batch-size",
                   "--tile", "--overlap", "--no-color-correction", "--no-compile-cache"):
        assert option in text
    assert "fold_in(fold_in(PRNGKey(seed), crc32(NAME) & 0x7FFFFFFF), k)" in text


def test_sample_py_is_the_same_command():
    proc = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: sample.py")
    assert "--num-samples" in proc.stdout and "--no-compile-cache" in proc.stdout


def test_sampler_settings():
    parse = restore_cli.build_parser().parse_args

    def settings(argv):  # the command's options -> restore_files's keywords -> samplers.sample's
        opts = restore_cli.options(parse(["x", "-o", "y", *argv]))
        keys = ("sampler", "steps", "eta", "grid", "tol", "num_samples")
        setting = restoring.sampler_setting(**{k: opts[k] for k in keys})
        return dict(setting.options(opts["eps"]), color_correction=opts["color_correction"])

    default = settings([])
    assert default == dict(sampler_settings.default_setting().options(0.03), color_correction=True)
    em = settings(["--sampler", "em"])
    assert em == {"sampler": "em", "num_samples": 1, "color_correction": True, "eps": 0.03, "steps": 100}
    ode = settings(["--sampler", "ode", "--tol", "0.01", "--no-color-correction", "--num-samples", "3"])
    assert ode == {"sampler": "ode", "num_samples": 3, "color_correction": False, "eps": 0.03,
                   "rtol": 0.01, "atol": 0.01}
    ddim = settings(["--sampler", "ddim", "--eta", "0", "--grid", "edm", "--steps", "4"])
    assert ddim == {"sampler": "ddim", "num_samples": 1, "color_correction": True, "eps": 0.03, "steps": 4,
                    "eta": 0.0, "grid": "edm"}
    dpm = settings(["--sampler", "sde-dpm2m"])
    assert dpm["steps"] == sampler_settings.DEFAULT_STEPS["sde-dpm2m"] and dpm["grid"] == "lambda"
    for argv, option in ((["--sampler", "em", "--eta", "0"], "--eta"), (["--sampler", "ode", "--grid", "t"], "--grid")):
        with pytest.raises(restoring.UsageError, match=option):
            settings(argv)
    # The library also takes a whole setting, as text or a SamplerSetting, and then no sampler options.
    em4 = sampler_settings.SamplerSetting("em", steps=3, num_samples=4)
    assert restoring.sampler_setting(sampler="em:3x4") == em4 == restoring.sampler_setting(sampler=em4)
    with pytest.raises(restoring.UsageError, match="whole setting"):
        restoring.sampler_setting(sampler="em:3", num_samples=4)
    with pytest.raises(restoring.UsageError, match="bad sampler setting"):
        restoring.sampler_setting(sampler="em:many")


def test_tiles_are_multiples_of_the_networks_downsampling(files, tmp_path):
    def task(network, overrides):
        return models.build_task({"network": network, "overrides": overrides, "variant": "score",
                                  "dtype": "float32", "sde": SDE})

    assert task("tiny", {}).model.multiple == 4
    assert task("paper", {}).model.multiple == 64
    assert task("tiny", MINI).model.multiple == 1
    # A space-to-depth stem counts: tiny's 3 levels after a stem of 8 downsample by 32.
    stem = task("tiny", {"stem": 8})
    assert stem.model.multiple == 32
    path = tmp_path / "stem.msgpack"
    models.save_model(str(path), {"network": "tiny", "overrides": {"stem": 8}, "variant": "score",
                                  "dtype": "float32", "sde": SDE}, models.random_params(stem, seed=0))
    with pytest.raises(restoring.UsageError, match="--tile 48 must be a multiple of 32 for this model's network"):
        restoring.restore_files([files["in"] / "rgb.png"], tmp_path / "out", model=path, tile=48, overlap=16)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="tile 48 must be a multiple of 32 for this model's network"):
        driftrec_jax.load(str(path)).restore(np.zeros((40, 56, 3), np.uint8), tile=48, overlap=16)


def test_find_images(files, tmp_path):
    src = files["in"]
    out_inside = src / "sub" / "restored"
    out_inside.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out_inside / "old.png")
    try:
        found, problems = restoring.find_images([src, src / "rgb.png", tmp_path / "nope.jpg"], exclude=out_inside)
    finally:
        (out_inside / "old.png").unlink()
        out_inside.rmdir()
    names = [os.path.relpath(p, src) for p in found]
    assert names == ["broken.jpg", "gray.png", "rgb.png", "rgba.png", os.path.join("sub", "photo.jpg"),
                     "truncated.png"]  # sorted, recursive, no .txt, no hidden, no output folder, no repeats
    assert problems == [(str(tmp_path / "nope.jpg"), "no such file or folder")]
    # A file named explicitly is tried whatever its extension.
    assert restoring.find_images([src / "notes.txt"])[0] == [str(src / "notes.txt")]


def test_compile_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DRIFTREC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert restoring.compile_cache_dir() == tmp_path / "xdg" / "driftrec_jax" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert restoring.compile_cache_dir() == tmp_path / "home" / ".cache" / "driftrec_jax" / "jax"
    monkeypatch.setenv("DRIFTREC_CACHE_DIR", str(tmp_path / "mine"))
    assert restoring.compile_cache_dir() == tmp_path / "mine"


def test_python_api_gives_the_cli_images(files, folder_run, tmp_path):
    """driftrec_jax.load(...).restore on arrays named like the files, and .restore_files, give
    exactly the PNGs of the command line (same engine, seed, sampler and tiling)."""
    import driftrec_jax

    _, _, out = folder_run
    r = driftrec_jax.load(str(files["score"]))
    assert r.method == "driftrec"
    opts = dict(sampler="sde-dpm2m:3", seed=0, tile=32, overlap=16, batch_size=1)  # TILING's
    rgb, gray = (np.asarray(Image.open(files["in"] / n)) for n in ("rgb.png", "gray.png"))
    got = r.restore([rgb, gray], names=["rgb.png", "gray.png"], **opts)
    assert got[0].dtype == np.uint8 and got[0].shape == rgb.shape and got[1].shape == gray.shape
    np.testing.assert_array_equal(got[0], _pixels(out / "rgb.png"))
    np.testing.assert_array_equal(got[1], _pixels(out / "gray.png"))  # gray in, gray out
    one = r.restore(jnp.asarray(rgb, jnp.float32) / 255, names=["rgb.png"], **opts)  # one float image (JAX)
    assert one.dtype == np.float32 and one.shape == rgb.shape
    np.testing.assert_array_equal(np.floor(one * 255 + 0.5), _pixels(out / "rgb.png"))
    assert np.abs(r.restore(rgb, **opts).astype(int) - got[0]).mean() > 1  # named "0": other noise

    assert r.restore_files([files["in"] / "rgb.png"], tmp_path / "api", **opts, compile_cache=False) == 0
    np.testing.assert_array_equal(_pixels(tmp_path / "api" / "rgb.png"), _pixels(out / "rgb.png"))
    with pytest.raises(ValueError, match="no images found"):
        r.restore_files([tmp_path / "api" / "none"], tmp_path / "o", **opts)
    with pytest.raises(ValueError, match="not ddrm"):
        r.restore(rgb, sampler="ddrm:20")
    assert driftrec_jax.load("driftrec").path == models.bundled_model_path("driftrec")


def test_library_under_the_command_line(files, folder_run, tmp_path, capsys):
    """The file pipeline is a library function, `restoring.restore_files`, with one keyword option
    per command-line option; the command line and the API call it. Neither the library nor the API
    parse argv, import the command line or exit; the command line imports nothing that restores."""
    import ast
    import inspect

    def imports_and_calls(module):
        tree = ast.parse(Path(module.__file__).read_text())
        names, attrs = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update([node.module] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.Attribute):
                attrs.add(node.attr)
            elif isinstance(node, ast.Name):
                attrs.add(node.id)
        return names, attrs

    from driftrec_jax import api

    for module in (api, restoring):
        names, attrs = imports_and_calls(module)
        assert not names & {"argparse", "restore_cli", "cli", "driftrec_jax.restore_cli"}, module.__name__
        assert not attrs & {"exit", "SystemExit", "parse_args", "Namespace", "argv"}, module.__name__
    names, _ = imports_and_calls(restore_cli)
    assert names <= {"__future__", "argparse", "sys", "engine", "sampler_settings", "image_files", "restoring"}, names

    parser = restore_cli.build_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    keywords = set(inspect.signature(restoring.restore_files).parameters)
    assert {"model" if d == "checkpoint" else d for d in dests} == keywords  # every option, and only those
    assert set(restore_cli.options(parser.parse_args(["x", "-o", "y"]))) == keywords - {"inputs", "outdir"}

    # Called with keyword options, the library writes the command's PNG (same compiled restorer).
    _, _, out = folder_run
    lib = tmp_path / "lib"
    assert restoring.restore_files([files["in"] / "rgb.png"], lib, model=files["score"], steps=3, tile=32,
                                   overlap=16, batch_size=1, compile_cache=False) == 0
    np.testing.assert_array_equal(_pixels(lib / "rgb.png"), _pixels(out / "rgb.png"))
    assert "restored 1 of 1 inputs" in capsys.readouterr().err
    # A usage error is an exception (a ValueError), nothing printed, nothing exits.
    with pytest.raises(restoring.UsageError, match="overlap"):
        restoring.restore_files([files["in"]], tmp_path / "o", model=files["score"], tile=32, overlap=24)
    assert issubclass(restoring.UsageError, ValueError) and capsys.readouterr().err == ""
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Usage errors (exit status 2, one line; nothing is compiled)


def test_missing_checkpoint_is_a_one_line_usage_error(files, tmp_path, monkeypatch):
    rc, err = _run([files["in"], "-o", tmp_path / "o", "--checkpoint", tmp_path / "none.msgpack"])
    assert rc == 2 and err.splitlines() == [f"driftrec restore: --checkpoint {tmp_path / 'none.msgpack'}: no such file or folder"]

    monkeypatch.setattr(models, "bundled_model_path", lambda method="driftrec": str(tmp_path / "assets" / "absent.msgpack"))
    rc, err = _run([files["in"], "-o", tmp_path / "o"])
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no bundled model" in err and "--checkpoint" in err

    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"\x00\x01 not a model")
    rc, err = _run([files["in"], "-o", tmp_path / "o", "--checkpoint", garbage])
    assert rc == 2 and len(err.splitlines()) == 1 and "not a driftrec_jax model file" in err
    assert not (tmp_path / "o").exists()


def test_other_usage_errors(files, tmp_path):
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        restore_cli.main(["-o", str(tmp_path / "o")])  # no inputs
    assert exc.value.code == 2
    (tmp_path / "empty").mkdir()
    rc, err = _run([tmp_path / "empty", "-o", tmp_path / "o", "--checkpoint", files["score"]])
    assert rc == 2 and err.startswith("driftrec restore: no images found") and len(err.splitlines()) == 1
    rc, err = _run([files["in"], "-o", tmp_path / "o", "--checkpoint", files["score"], "--tile", "32", "--overlap", "24"])
    assert rc == 2 and "overlap" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Restoring a folder


def test_folder_outputs_keep_format(files, folder_run):
    rc, stderr, out = folder_run
    assert rc == 1  # two inputs failed
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in GOOD)  # no temp files left
    for name, (mode, (h, w)) in GOOD.items():
        im = Image.open(out / f"{name}.png")
        assert im.format == "PNG" and im.mode == mode and im.size == (w, h), name
    src_alpha = np.asarray(Image.open(files["in"] / "rgba.png"))[..., 3]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "rgba.png"))[..., 3], src_alpha)
    # Restored, not copied: the network changed the pixels.
    assert np.abs(_pixels(out / "rgb.png") - _pixels(files["in"] / "rgb.png")).mean() > 1


def test_each_bad_file_is_one_error_line(files, folder_run):
    rc, stderr, out = folder_run
    lines = _error_lines(stderr)
    assert len(lines) == 2, stderr
    broken, truncated = sorted(lines)
    assert broken.startswith(f"driftrec restore: {files['in'] / 'broken.jpg'}: ")
    assert truncated.startswith(f"driftrec restore: {files['in'] / 'truncated.png'}: ")
    assert all(len(line.split(": ", 2)[2]) > 5 for line in lines)  # a reason follows
    assert "Traceback" not in stderr
    assert "restored 4 of 6 inputs" in stderr and "(2 failed)" in stderr
    assert "on 8 devices" in stderr  # the suite's 8 simulated CPU devices, all used by default


def test_same_seed_same_image_whatever_the_batch_and_devices(files, folder_run, tmp_path, monkeypatch):
    """Tile keys depend on (seed, file name, tile number) only: the folder restored on one device
    (one tile per call) gives exactly the PNGs it got on the suite's 8 devices (8 tiles per call,
    the last call padded); one file alone gives the pixels it got inside the folder, whatever its
    batch neighbours; another seed does not."""
    rc, _, out = folder_run
    one = tmp_path / "one_device"
    rc1, err = _run([files["in"], "-o", one, "--checkpoint", files["score"], *TILING, "--devices", "1"])
    assert rc1 == rc == 1 and "on 8 devices" not in err
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in out.iterdir())
    for name in GOOD:
        np.testing.assert_array_equal(_pixels(one / f"{name}.png"), _pixels(out / f"{name}.png"), err_msg=name)

    updates = []

    import tqdm

    class Recorder(tqdm.tqdm):
        def __init__(self, *a, **k):
            k.update(disable=False, file=io.StringIO())
            super().__init__(*a, **k)

        def update(self, n=1):
            updates.append((self.total, n))
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    argv = [files["in"] / "rgb.png", "-o", tmp_path / "alone", "--checkpoint", files["score"], *TILING, "--devices", "1"]
    rc, _ = _run(argv)
    assert rc == 0
    np.testing.assert_array_equal(_pixels(tmp_path / "alone" / "rgb.png"), _pixels(out / "rgb.png"))
    assert updates == [(6, 1)] * 6  # progress over tiles: 6 tiles of 32 px in a 40x56 image

    rc, _ = _run(argv[:2] + [tmp_path / "seed1"] + argv[3:] + ["--seed", "1"])
    assert rc == 0
    assert np.abs(_pixels(tmp_path / "seed1" / "rgb.png") - _pixels(out / "rgb.png")).mean() > 1


def test_skip_existing(files, folder_run):
    _, _, out = folder_run
    before = (out / "rgb.png").stat().st_mtime_ns
    rc, err = _run([files["in"] / "rgb.png", "-o", out, "--checkpoint", files["score"], *TILING, "--skip-existing"])
    assert rc == 0 and "1 skipped" in err
    assert (out / "rgb.png").stat().st_mtime_ns == before


def test_missing_input_is_one_error_line_the_rest_is_restored(files, tmp_path):
    missing = tmp_path / "gone.jpg"
    rc, err = _run([missing, files["in"] / "rgb.png", "-o", tmp_path / "o", "--checkpoint", files["score"], *TILING])
    assert rc == 1
    assert _error_lines(err) == [f"driftrec restore: {missing}: no such file or folder"]
    assert Image.open(tmp_path / "o" / "rgb.png").size == (56, 40)


def test_out_of_memory_is_one_line(files, tmp_path, monkeypatch):
    def exhausted(params, tiles, keys, aux):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes.\nmore detail")

    monkeypatch.setattr(restoring, "_tile_fn", lambda *a: exhausted)
    rc, err = _run([files["in"] / "rgb.png", "-o", tmp_path / "o", "--checkpoint", files["score"], *TILING])
    assert rc == 1
    assert err.splitlines() == ["driftrec restore: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating "
                                "123 bytes.); try a smaller --batch-size or --tile"]


def test_regression_model_one_pass_never_overwrites_input(files, tmp_path):
    src = tmp_path / "pngs"
    src.mkdir()
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src / "face.png")
    rc, err = _run([src, "-o", src, "--checkpoint", files["regression"], *TILING])
    assert rc == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(src / "face.png")), rgb)  # input untouched
    got = _pixels(src / "face_restored.png")
    # One tile exactly: the output is the network's single prediction, clipped and rounded.
    task, params, _ = models.load_model(str(files["regression"]))
    pred = jax.jit(task.apply)(params, jnp.asarray(rgb[None] / np.float32(255)), None)[0]
    want = np.floor(np.clip(np.asarray(pred), 0, 1) * 255 + 0.5)
    assert np.abs(got - want).max() <= 1
    assert "regression (1 network pass)" in err


# ---------------------------------------------------------------------------------------------
# A fresh process: no TensorFlow nor training code, compilation cache written then used, same pixels

PROBE = """
import json, runpy, sys
from jax import monitoring
events = {}
monitoring.register_event_listener(lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1))
argv = json.loads(sys.argv[1])
if sys.argv[2] == "sample.py":
    sys.argv = ["sample.py"] + argv
    try:
        runpy.run_path("sample.py", run_name="__main__")
    except SystemExit as exc:
        rc = exc.code
else:
    from driftrec_jax.cli import main
    rc = main(["restore"] + argv)
print("PROBE" + json.dumps({"rc": rc, "tensorflow": any(m.split(".")[0] == "tensorflow" for m in sys.modules),
      "training": sorted(m for m in ("optax", "driftrec_jax.train_lib", "driftrec_jax.train_cli") if m in sys.modules),
      "hits": events.get("/jax/compilation_cache/cache_hits", 0),
      "misses": events.get("/jax/compilation_cache/cache_misses", 0)}))
"""


def _probe(argv, entry, cache):
    env = dict(os.environ, DRIFTREC_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in argv]), entry],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][5:])


def test_fresh_process_no_tensorflow_and_compile_cache(files, folder_run, tmp_path):
    cache = tmp_path / "cache"
    tiling = [a for a in TILING if a != "--no-compile-cache"]
    cold = _probe([files["in"], "-o", tmp_path / "cold", "--checkpoint", files["score"], *tiling], "sample.py", cache)
    assert cold["rc"] == 1 and not cold["tensorflow"]
    assert cold["training"] == []  # restoring never imports the optimiser or the training code
    assert cold["misses"] > 0 and cold["hits"] == 0
    entries = [p for p in cache.iterdir() if p.name.startswith("jit_restore")]
    assert entries and all(p.stat().st_size > 0 for p in entries)

    warm = _probe([files["in"], "-o", tmp_path / "warm", "--checkpoint", files["score"], *tiling], "driftrec", cache)
    assert warm["rc"] == 1 and not warm["tensorflow"]
    assert warm["misses"] == 0 and warm["hits"] > 0  # nothing compiled again

    _, _, out = folder_run
    for name in GOOD:
        np.testing.assert_array_equal(_pixels(tmp_path / "cold" / f"{name}.png"), _pixels(out / f"{name}.png"))
        np.testing.assert_array_equal(_pixels(tmp_path / "warm" / f"{name}.png"), _pixels(out / f"{name}.png"))


# ---------------------------------------------------------------------------------------------
# --method ddrm


@pytest.fixture(scope="module")
def ddrm_files(tmp_path_factory):
    """A miniature DDRM ε model file and JPEGs of the layouts DDRM handles, plus two it cannot."""
    root = tmp_path_factory.mktemp("ddrm")
    spec = {"network": "tiny", "overrides": MINI, "variant": "ddrm_eps", "dtype": "float32", "ddrm": {}}
    task = models.build_task(spec)
    model = root / "mini_ddrm.msgpack"
    models.save_model(str(model), spec, models.random_params(task, seed=5))
    rng = np.random.default_rng(11)
    src = root / "in"
    src.mkdir()
    smooth = np.cumsum(rng.integers(-6, 7, (48, 40, 3)), axis=1) + 128
    photo = np.clip(smooth, 0, 255).astype(np.uint8)
    Image.fromarray(photo[:32, :32]).save(src / "a420.jpg", quality=15)  # one 32-px tile
    Image.fromarray(photo).save(src / "b444.jpg", quality=25, subsampling=0)
    Image.fromarray(photo[..., 0]).save(src / "c_gray.jpg", quality=20)
    Image.fromarray(photo).save(src / "d.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(src / "e_rotated.jpg", quality=40, exif=exif)
    return {"model": model, "in": src, "root": root, "task": task}


DDRM_ARGS = ["--tile", "32", "--overlap", "16", "--steps", "3", "--batch-size", "1", "--no-compile-cache"]


def test_ddrm_restores_jpegs_with_their_own_tables(ddrm_files, tmp_path):
    from driftrec_jax import ddrm, jpeg

    out = tmp_path / "out"
    rc, err = _run([ddrm_files["in"], "-o", out, "--checkpoint", ddrm_files["model"], "--method", "ddrm", *DDRM_ARGS])
    assert rc == 1, err  # the PNG and the rotated JPEG fail, one line each
    lines = sorted(_error_lines(err))
    assert len(lines) == 2, err
    assert lines[0].startswith(f"driftrec restore: {ddrm_files['in'] / 'd.png'}: not a JPEG file")
    assert lines[1].startswith(f"driftrec restore: {ddrm_files['in'] / 'e_rotated.jpg'}: EXIF orientation 6")
    assert sorted(p.name for p in out.iterdir()) == ["a420.png", "b444.png", "c_gray.png"]
    assert Image.open(out / "c_gray.png").mode == "L"
    assert Image.open(out / "b444.png").size == (40, 48)
    assert "DDRM-JPEG 3 steps" in err and "3 network evaluations per tile" in err

    # The single-tile file equals a direct call of the DDRM sampler with the file's 4:2:0 tables
    # and the documented key of tile 0.
    task, params, _ = models.load_model(str(ddrm_files["model"]))
    y, tables, subsampling = ddrm.load_jpeg(ddrm_files["in"] / "a420.jpg")
    assert subsampling == "4:2:0"
    np.testing.assert_array_equal(tables[0], jpeg.quality_to_tables(15)[0])
    key = engine.tile_key(0, "a420.jpg", 0)
    x, nfe = task.make_restorer(num_steps=3).tiles(params, y[None], tuple(t[None] for t in tables), key[None], "4:2:0")
    want = np.floor(np.clip(np.asarray(x[0]), 0, 1) * 255 + 0.5)
    assert np.abs(_pixels(out / "a420.png") - want).max() <= 1
    assert int(nfe[0]) == 3


def test_ddrm_method_and_model_must_agree(files, ddrm_files, tmp_path):
    jpg = ddrm_files["in"] / "a420.jpg"
    rc, err = _run([jpg, "-o", tmp_path / "o", "--checkpoint", files["score"], "--method", "ddrm", *DDRM_ARGS])
    assert rc == 2 and len(err.splitlines()) == 1 and "needs a DDRM ε model" in err
    rc, err = _run([jpg, "-o", tmp_path / "o", "--checkpoint", ddrm_files["model"], "--method", "driftrec", *DDRM_ARGS])
    assert rc == 2 and len(err.splitlines()) == 1 and "--method ddrm" in err
    rc, err = _run([jpg, "-o", tmp_path / "o", "--checkpoint", ddrm_files["model"], "--sampler", "ode", *DDRM_ARGS])
    assert rc == 2 and len(err.splitlines()) == 1 and "--sampler" in err
    assert not (tmp_path / "o").exists()
    # A DDRM model file without --method restores with DDRM.
    rc, err = _run([jpg, "-o", tmp_path / "auto", "--checkpoint", ddrm_files["model"], *DDRM_ARGS])
    assert rc == 0 and "DDRM-JPEG" in err


def test_default_batch_is_one_tile_on_the_cpu(files, tmp_path, monkeypatch):
    """Without --batch-size the CPU backend restores one tile per device at a time (its fastest
    setting)."""
    seen = []
    monkeypatch.setattr(restoring, "_tile_fn", lambda *a: lambda params, tiles, keys, aux: (
        tiles, jnp.ones(tiles.shape[0], jnp.int32)))
    made = engine.TileEngine.__init__

    def record(self, *a, **k):
        made(self, *a, **k)
        seen.append(self.batch_size)

    monkeypatch.setattr(engine.TileEngine, "__init__", record)
    argv = [files["in"] / "rgb.png", "-o", tmp_path / "o", "--checkpoint", files["score"], "--tile", "32",
            "--overlap", "16", "--steps", "2", "--no-compile-cache"]
    rc, err = _run(argv)
    assert rc == 0, err
    assert jax.default_backend() == "cpu" and seen == [restore_cli.DEFAULT_BATCH_CPU] == [1]
    rc, err = _run(argv[:2] + [tmp_path / "o2"] + argv[3:] + ["--batch-size", "4", "--devices", "1"])
    assert rc == 0 and seen[-1] == 4


@pytest.mark.parametrize("method, variant, size_mb", [("driftrec", "score", 25), ("ddrm", "ddrm_eps", 25)])
def test_bundled_models_ship_and_load(method, variant, size_mb):
    """Each bundled model is in the package, under the size limit, of the method it is the
    default of, and its weights are finite and trained (not an initialisation)."""
    path = models.bundled_model_path(method)
    assert os.path.getsize(path) < size_mb * 1e6
    task, params, spec = models.load_model(path)
    assert spec["variant"] == variant and spec["network"] == "small"
    if method == "driftrec":
        assert spec["sde"]["name"] == "ouve"
    leaves = jax.tree.leaves(params)
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
    # Trained weights: no longer the numpy draw of the same shapes, nor Flax's init (norm scales 1).
    scales = [np.asarray(x) for kp, x in jax.tree_util.tree_leaves_with_path(params)
              if jax.tree_util.keystr(kp[-1:]) == "['scale']"]
    assert scales and not all(np.allclose(s, 1.0) for s in scales)


# ---------------------------------------------------------------------------------------------
# Never lose a file: existing outputs, early input checks, atomic writes (docs/RESTORE.md's table
# "Bad inputs and situations"). Most of these swap the compiled sampler for the identity (or for
# one that fails the test when called), so they cost no compilation.


_COMPILE = engine.TileEngine.compile


def _identity_sampler(monkeypatch, on_call=None):
    """The restorer of every batch is the identity; `on_call` runs before each batch's call."""
    def fake(task, setting, eps, color_correction, subsampling):
        return lambda params, tiles, keys, aux: (tiles, jnp.ones(tiles.shape[0], jnp.int32))

    monkeypatch.setattr(restoring, "_tile_fn", fake)
    monkeypatch.setattr(engine.TileEngine, "compile", _COMPILE)  # after _never_compiled
    if on_call is not None:
        run = engine.TileEngine.run

        def calling(self, sources, **kw):
            def observed():
                for src in sources:
                    on_call()
                    yield src
            return run(self, observed(), **kw)

        monkeypatch.setattr(engine.TileEngine, "run", calling)


def _never_compiled(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("compiled although nothing was to be restored")

    monkeypatch.setattr(restoring, "_tile_fn", fail)
    monkeypatch.setattr(engine.TileEngine, "compile", fail)


def _snapshot(folder) -> dict:
    """{relative path: bytes} of every file under `folder`, hidden ones included."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


FAST = ["--tile", "32", "--overlap", "16", "--no-compile-cache"]


def test_existing_output_is_kept_unless_overwrite(files, tmp_path, monkeypatch):
    """The user's photo.png beside photo.jpg, and `restore photo.jpg -o .`: the PNG survives."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = np.random.default_rng(5).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "photo.png")
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=20)
    before = _snapshot(folder)
    _never_compiled(monkeypatch)
    argv = [folder / "photo.jpg", "-o", folder, "--checkpoint", files["score"], *FAST]
    rc, err = _run(argv)
    assert rc == 1
    assert _error_lines(err) == [f"driftrec restore: {folder / 'photo.jpg'}: {restoring.exists_message(folder / 'photo.png')}"]
    assert "--overwrite" in err and "--skip-existing" in err
    assert _snapshot(folder) == before  # nothing touched, no temp file
    rc, err = _run(argv + ["--skip-existing"])
    assert rc == 0 and "1 skipped" in err and _snapshot(folder) == before
    _identity_sampler(monkeypatch)
    rc, err = _run(argv + ["--overwrite"])
    assert rc == 0, err
    assert _snapshot(folder).keys() == before.keys()  # replaced in place, no temp file left
    assert (folder / "photo.png").read_bytes() != before["photo.png"]
    assert (folder / "photo.jpg").read_bytes() == before["photo.jpg"]
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        restore_cli.main([str(folder / "photo.jpg"), "-o", str(folder), "--overwrite", "--skip-existing"])


def test_output_appearing_during_the_run_is_not_replaced(files, tmp_path, monkeypatch):
    """The no-clobber rename: a file that appears between the check and the write survives."""
    out = tmp_path / "o"

    def someone_writes():
        if not (out / "rgb.png").exists():
            (out / "rgb.png").write_bytes(b"another program's file")

    _identity_sampler(monkeypatch, someone_writes)
    rc, err = _run([files["in"] / "rgb.png", files["in"] / "gray.png", "-o", out, "--checkpoint", files["score"], *FAST])
    assert rc == 1
    assert _error_lines(err) == [f"driftrec restore: {files['in'] / 'rgb.png'}: {restoring.exists_message(out / 'rgb.png')}"]
    assert (out / "rgb.png").read_bytes() == b"another program's file"
    assert sorted(p.name for p in out.iterdir()) == ["gray.png", "rgb.png"]


def test_no_usable_input_exits_without_compiling(files, tmp_path, monkeypatch):
    _never_compiled(monkeypatch)
    out = tmp_path / "o"
    bad = [files["in"] / "broken.jpg", files["in"] / "notes.txt", tmp_path / "gone.jpg"]
    rc, err = _run([*bad, "-o", out, "--checkpoint", files["score"], *FAST])
    assert rc == 1
    lines = _error_lines(err)
    assert [line.split(": ")[1] for line in lines] == [str(bad[2]), str(bad[0]), str(bad[1])]
    assert "restored 0 of 3 inputs" in err and "nothing to restore" in err
    assert not out.exists()


def test_bad_inputs_are_refused_from_their_header_the_rest_is_restored(files, tmp_path, monkeypatch):
    """A decompression bomb (Pillow's pixel limit, or --max-pixels) and a 32-bit float image are
    one line each, found before anything runs; the others are restored."""
    src = tmp_path / "in"
    src.mkdir()
    ihdr = struct.pack(">IIBBBBB", 30000, 20000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    (src / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(99))))
    Image.fromarray(np.zeros((8, 8), np.float32)).save(src / "float.tif")
    calls = []
    _identity_sampler(monkeypatch, lambda: calls.append(1))
    out = tmp_path / "o"
    rc, err = _run([src, files["in"] / "rgb.png", files["in"] / "gray.png", "-o", out, "--checkpoint", files["score"], *FAST])
    assert rc == 1
    lines = sorted(_error_lines(err))
    assert len(lines) == 2, err
    assert lines[0].startswith(f"driftrec restore: {src / 'bomb.png'}: 30000x20000 is 600.0 megapixels, over the limit")
    assert lines[0].endswith("allow it with --max-pixels 600000000 (0: no limit)")
    assert lines[1] == f"driftrec restore: {src / 'float.tif'}: 32-bit floating-point images are not supported"
    assert sorted(p.name for p in out.iterdir()) == ["gray.png", "rgb.png"] and calls
    # --max-pixels lowers the limit: rgb.png (40 x 56 = 2240 pixels) is refused, gray.png (660) is not.
    rc, err = _run([files["in"] / "rgb.png", files["in"] / "gray.png", "-o", tmp_path / "o2", "--checkpoint",
                    files["score"], *FAST, "--max-pixels", "1000"])
    assert rc == 1 and len(_error_lines(err)) == 1 and "--max-pixels 2240" in err
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["gray.png"]
    from PIL import Image as PILImage

    assert PILImage.MAX_IMAGE_PIXELS == 89478485  # restored after the run


def test_output_folder_that_is_a_file_or_unwritable(files, tmp_path, monkeypatch):
    from driftrec_jax import images

    _never_compiled(monkeypatch)
    a_file = tmp_path / "out.png"
    a_file.write_bytes(b"mine")
    rc, err = _run([files["in"] / "rgb.png", "-o", a_file, "--checkpoint", files["score"], *FAST])
    assert rc == 2 and err.splitlines() == [f"driftrec restore: output folder {a_file} exists and is not a folder"]
    assert a_file.read_bytes() == b"mine"

    def denied(folder, name):  # tests run as root, where chmod does not stop writes
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "_open_temp", denied)
    rc, err = _run([files["in"] / "rgb.png", "-o", tmp_path / "ro", "--checkpoint", files["score"], *FAST])
    assert rc == 2
    assert err.splitlines() == [f"driftrec restore: cannot write to the output folder {tmp_path / 'ro'} "
                                "(Permission denied); choose another -o"]


def test_full_disk_is_one_line_per_file_and_leaves_no_partial_file(files, tmp_path, monkeypatch):
    import errno

    from driftrec_jax import images

    real = images._open_temp

    class Full:
        """A file on a disk that fills up after the first write."""

        def __init__(self, fp):
            self.fp, self.writes = fp, 0

        def write(self, data):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fp.write(data)

        def __getattr__(self, name):
            return getattr(self.fp, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fp.close()

    def open_temp(folder, name):
        fp, tmp = real(folder, name)
        return (Full(fp) if name == "rgb.png" else fp), tmp

    monkeypatch.setattr(images, "_open_temp", open_temp)
    _identity_sampler(monkeypatch)
    out = tmp_path / "o"
    rc, err = _run([files["in"] / "rgb.png", files["in"] / "gray.png", "-o", out, "--checkpoint", files["score"], *FAST])
    assert rc == 1
    assert _error_lines(err) == [f"driftrec restore: {files['in'] / 'rgb.png'}: cannot write {out / 'rgb.png'}: "
                                 "No space left on device"]
    assert sorted(p.name for p in out.iterdir()) == ["gray.png"]  # no temp file, no partial rgb.png


def test_inputs_with_the_same_name_get_numbered_outputs(files, tmp_path, monkeypatch):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(src / "a.jpg")
    Image.fromarray(np.zeros((36, 16), np.uint8)).save(src / "sub" / "a.png")
    _identity_sampler(monkeypatch)
    out = tmp_path / "o"
    rc, err = _run([src, "-o", out, "--checkpoint", files["score"], *FAST])
    assert rc == 0, err
    assert Image.open(out / "a.png").size == (24, 20)  # a.jpg sorts first and keeps the name
    assert Image.open(out / "a_2.png").size == (16, 36) and Image.open(out / "a_2.png").mode == "L"
    # A second run into the same folder replaces neither.
    before = _snapshot(out)
    rc, err = _run([src, "-o", out, "--checkpoint", files["score"], *FAST])
    assert rc == 1 and len(_error_lines(err)) == 2 and _snapshot(out) == before


KILLER = """
import json, sys
from driftrec_jax import images, restore_cli
real = images._open_temp

class Stalls:
    # Writes half of the first chunk it is given, says so on stdout and waits to be killed.
    def __init__(self, fp):
        self.fp = fp
    def write(self, data):
        self.fp.write(data[: len(data) // 2])
        self.fp.flush()
        print("MIDWRITE", flush=True)
        sys.stdin.read()
        raise SystemExit("not killed")
    def __getattr__(self, name):
        return getattr(self.fp, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.fp.close()

def open_temp(folder, name):
    fp, tmp = real(folder, name)
    return (Stalls(fp) if name == "rgb.png" else fp), tmp  # the second output (gray, rgb, rgba)

images._open_temp = open_temp
sys.exit(restore_cli.main(json.loads(sys.argv[1])))
"""


def test_killed_run_leaves_only_complete_pngs(files, tmp_path):
    """SIGKILL while the second PNG is half written (a real tiny model in a fresh process): every
    PNG in the folder decodes fully, the user's files are untouched, and the half-written data
    is in a hidden temporary file only."""
    import signal
    import threading

    src = tmp_path / "in"
    src.mkdir()
    for name in ("gray.png", "rgb.png", "rgba.png"):
        (src / name).write_bytes((files["in"] / name).read_bytes())
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.png").write_bytes((files["in"] / "rgb.png").read_bytes())
    (out / "notes.txt").write_text("the user's notes")
    inputs_before, out_before = _snapshot(src), _snapshot(out)
    argv = [str(src), "-o", str(out), "--checkpoint", str(files["regression"]), *FAST, "--batch-size", "1"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", KILLER, json.dumps(argv)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    timer = threading.Timer(300, proc.kill)  # a safety net only: the test never waits on time
    timer.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == "MIDWRITE", line + proc.stderr.read()
        assert (out / "gray.png").exists()  # the first output appeared before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        timer.cancel()
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    after = _snapshot(out)
    for name, data in out_before.items():
        assert after[name] == data, name
    assert _snapshot(src) == inputs_before
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["gray.png", "keep.png"]  # rgb.png was being written: it is not there at all
    for name in pngs:
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            im.load()
    temps = [n for n in after if n not in out_before and n != "gray.png"]
    assert len(temps) == 1 and temps[0].startswith(".rgb.png.") and temps[0].endswith(".tmp"), temps
