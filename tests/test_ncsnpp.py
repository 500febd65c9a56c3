"""NCSN++: the paper config's size and state-dict layout, parity with the authors' network
(tests/fixtures/ncsnpp_parity_small.npz), any H×W, bf16, weight import and model-info."""

import ast
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn
from flax.traverse_util import flatten_dict

from driftrec_jax.networks import NETWORKS, VARIANTS, count_params, make_network, module_plan, network_config
from driftrec_jax.networks import convert, info
from driftrec_jax.networks.layers import fir_downsample, fir_upsample

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PARITY = os.path.join(FIXTURES, "ncsnpp_parity_small.npz")
PAPER_KEYS = os.path.join(FIXTURES, "ncsnpp_paper_state_dict_keys.txt")


# XLA's backend optimisations cost 2-3x the compile time of these small test networks and
# change nothing that is tested here (float32 results agree to ~1e-6).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _call(fn, *args):
    """fn(*args), compiled once for these shapes without XLA's expensive backend passes."""
    return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)(*args)


def _rel(out, ref):
    """Largest absolute error relative to the reference's largest magnitude."""
    return float(np.abs(np.asarray(out, np.float64) - ref).max() / np.abs(ref).max())


# ----------------------------------------------------------------------------- shared state


@pytest.fixture(scope="module")
def parity():
    with np.load(PARITY) as data:
        return {k: data[k] for k in data.files}


def _state_dict(parity, variant):
    prefix = f"{variant}/params/"
    return {k[len(prefix):]: v for k, v in parity.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def fixture_nets(parity):
    """{variant: (net, variables)} of the imported fixture network."""
    out = {}
    for variant in VARIANTS:
        net = make_network("fixture", variant)
        variables = convert.params_from_torch_state_dict(_state_dict(parity, variant), "fixture", variant)
        out[variant] = (net, variables)
    return out


def _run(fixture_nets, parity, variant, case):
    net, variables = fixture_nets[variant]
    pre = f"{variant}/{case}/"
    x = parity[pre + ("x_nchw" if variant == "score" else "y_nchw")].transpose(0, 2, 3, 1)
    ref = parity[pre + "out_nchw"].transpose(0, 2, 3, 1)
    args = (variables, x, parity[pre + "sigma"]) if variant == "score" else (variables, x)
    out = _call(net.apply, *args)
    return np.asarray(out), ref


# ----------------------------------------------------------------------------- paper config


def test_paper_param_count_and_state_dict_layout():
    """65,623,359 parameters (paper Table Ic: 65.6 M) and the authors' 647 names and shapes, in their order."""
    net = make_network("paper", "score")
    shapes = convert.expected_shapes(net)  # eval_shape: nothing allocated
    assert sum(int(np.prod(s)) for s in shapes.values()) == 65_623_359
    with open(PAPER_KEYS) as f:
        want = [(line.split(" ", 1)[0], tuple(ast.literal_eval(line.split(" ", 1)[1])))
                for line in f.read().splitlines() if line.strip()]
    assert len(want) == 647
    assert list(convert.torch_shapes("paper", "score").items()) == want


def test_module_plan_matches_variables():
    for variant in VARIANTS:
        net = make_network("fixture", variant)
        tops = {k[1] for k in convert.expected_shapes(net)}
        plan = [name for name, _ in module_plan(net)]
        assert tops == set(plan)
        assert plan[-1] == "output_layer"


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", ["score", "regression"])
def test_square_parity(fixture_nets, parity, variant):
    """32×32: the imported Flax network reproduces the authors' outputs to 1e-4 relative."""
    out, ref = _run(fixture_nets, parity, variant, "square")
    assert out.shape == ref.shape
    assert _rel(out, ref) < 1e-4


def test_odd_parity(fixture_nets, parity):
    """44×36 (→ 22×18 → 11×9 → 5×4): 'per_level' sizing is the authors' handling of odd sizes.

    Regression and the σ = 0.8 score sample match to 1e-4. The σ = 0.05 score sample matches to
    about 8e-4 of its peak, which is float32 noise for that input: with these random weights a
    1e-7 relative perturbation of the input already moves its output by ~5e-4 (docs/NETWORK.md).
    """
    out, ref = _run(fixture_nets, parity, "regression", "odd")
    assert out.shape == ref.shape == (2, 44, 36, 3)
    assert _rel(out, ref) < 1e-4
    out, ref = _run(fixture_nets, parity, "score", "odd")
    assert out.shape == ref.shape
    assert _rel(out[0], ref[0]) < 1e-4
    assert _rel(out[1], ref[1]) < 3e-3
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-3


# ----------------------------------------------------------------------------- any size, dtypes


# A 2-level network (multiple 2, attention on level 1): the cheapest to compile that still has
# odd sides to floor and pad, and every kind of block.
MICRO = {"preset": "tiny", "ch_mult": (1, 2), "attn_resolutions": (16,)}


@pytest.fixture(scope="module")
def tiny():
    """(net, variables) with random weights of a useful size (init_scale 0 would zero the output)."""
    net = make_network(MICRO, "score")
    shapes = jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4, 4, 6), jnp.float32), 1.0)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32), shapes)
    variables["constants"]["fourier_W"] *= 16.0 / 0.3
    return net, variables


def test_any_size_keeps_height_and_width(tiny):
    """'per_level' (default) and 'pad_input' both return the input's H×W, also below 2^(L−1) = 2;
    on sizes that are not multiples of 2 they are different functions."""
    net, variables = tiny
    sigma = np.array([0.3, 0.7], np.float32)
    rng = np.random.default_rng(2)
    for hw in [(1, 3), (33, 17)]:
        x = rng.uniform(size=(2, *hw, 6)).astype(np.float32)
        out = np.asarray(_call(net.apply, variables, x, sigma))
        assert out.shape == (2, *hw, 3)
        assert np.all(np.isfinite(out))
    other = np.asarray(_call(net.clone(size_mode="pad_input").apply, variables, x, sigma))
    assert other.shape == out.shape
    assert _rel(other, out) > 1e-2


def test_size_modes_agree_on_multiples_sigma_broadcasts_bf16_close(tiny):
    """On even sizes both modes are one function; a scalar σ equals a (B,) σ; bfloat16 compute
    keeps float32 parameters and stays close to float32."""
    net, variables = tiny
    x = np.random.default_rng(3).uniform(size=(1, 12, 8, 6)).astype(np.float32)
    a = np.asarray(_call(net.clone(size_mode="per_level").apply, variables, x, 0.5))  # scalar sigma
    b = np.asarray(_call(net.clone(size_mode="pad_input").apply, variables, x, np.array([0.5], np.float32)))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    net16 = net.clone(dtype=jnp.bfloat16)
    shapes = jax.eval_shape(net16.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4, 4, 6), jnp.float32), 1.0)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    c = _call(net16.apply, variables, x, 0.5)
    assert c.dtype == jnp.float32
    err = np.linalg.norm(np.asarray(c) - a) / np.linalg.norm(a)
    assert 1e-5 < err < 3e-2  # it did compute in bfloat16 (8-bit mantissa), and stayed close


def test_input_errors(tiny):
    net, variables = tiny
    x = jax.ShapeDtypeStruct((2, 8, 8, 6), jnp.float32)
    with pytest.raises(ValueError, match="size_mode"):
        jax.eval_shape(net.clone(size_mode="crop").apply, variables, x, 0.5)
    with pytest.raises(ValueError, match="needs sigma"):
        jax.eval_shape(net.apply, variables, x)
    with pytest.raises(ValueError, match="6 channels"):
        jax.eval_shape(net.apply, variables, jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32), 0.5)
    with pytest.raises(ValueError, match="sigma must be a scalar"):
        jax.eval_shape(net.apply, variables, x, jnp.ones(3))


def test_fir_resampling_matches_upfirdn_reference():
    """FIR [1,3,3,1] down (pad 1,1, stride 2; odd n → n//2) and up (×2, pad 2,1) vs direct sums."""
    k = np.array([1.0, 3.0, 3.0, 1.0])

    def down1(v):
        p = np.pad(v, (1, 1))
        return np.array([p[2 * i:2 * i + 4] @ k / 8 for i in range((len(v) - 2) // 2 + 1)])

    def up1(v):
        z = np.zeros(2 * len(v))
        z[::2] = v
        p = np.pad(z, (2, 1))
        return np.array([p[i:i + 4] @ k[::-1] / 4 for i in range(2 * len(v))])

    rng = np.random.default_rng(0)
    for hw in [(8, 6), (11, 5)]:
        x = rng.normal(size=(1, *hw, 2))
        down, up = _call(lambda a: (fir_downsample(a), fir_upsample(a)), jnp.asarray(x, jnp.float32))
        np.testing.assert_allclose(down, np.apply_along_axis(down1, 2, np.apply_along_axis(down1, 1, x)), atol=1e-6)
        np.testing.assert_allclose(up, np.apply_along_axis(up1, 2, np.apply_along_axis(up1, 1, x)), atol=1e-6)


# ----------------------------------------------------------------------------- variants, presets


def test_regression_variant_is_unconditional():
    net = make_network("fixture", "regression")
    assert net.in_channels == 3 and not net.conditional and not net.scale_by_sigma
    keys = convert.expected_shapes(net)
    assert not any(k[0] == "constants" for k in keys)
    assert not any("embed" in k[1] or "Dense_0" in k for k in keys)
    score_keys = convert.expected_shapes(make_network("fixture", "score"))
    assert any("Dense_0" in k for k in score_keys)


def test_fourier_w_is_a_constant_not_a_param(fixture_nets, parity):
    net, variables = fixture_nets["score"]
    assert set(variables) == {"params", "constants"}
    assert "fourier_W" in variables["constants"] and "fourier_W" not in variables["params"]
    np.testing.assert_array_equal(variables["constants"]["fourier_W"], parity["score/params/all_modules.0.W"])
    with pytest.raises(ValueError, match="constants"):
        net.apply({"params": variables["params"]}, jnp.zeros((1, 8, 8, 6)), 0.5)


def test_network_config_and_make_network_errors():
    assert network_config({"preset": "small", "nf": 16})["nf"] == 16
    assert network_config("paper") == dict(NETWORKS["paper"])
    with pytest.raises(ValueError, match="unknown network preset"):
        network_config("huge")
    with pytest.raises(ValueError, match="widht"):
        network_config({"preset": "small", "widht": 3})
    with pytest.raises(ValueError, match="variant"):
        make_network("tiny", "denoise")


# ----------------------------------------------------------------------------- space-to-depth stem


def test_space_to_depth_layout_and_inverse():
    from driftrec_jax.networks.ncsnpp import depth_to_space, space_to_depth

    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    y = space_to_depth(x, 2)
    assert y.shape == (2, 2, 3, 12)
    # Channel (row·s + column)·C + c of block (i, j) is pixel (s·i + row, s·j + column), channel c.
    np.testing.assert_array_equal(y[1, 1, 2, (1 * 2 + 0) * 3 + 2], x[1, 3, 4, 2])
    np.testing.assert_array_equal(depth_to_space(y, 2), x)


CPU_PARAMS = {"score": 1_730_172, "regression": 1_618_412, "ddrm_eps": 1_707_900}  # docs/NETWORK.md


@pytest.mark.parametrize("variant", sorted(CPU_PARAMS))
def test_cpu_preset_runs_nothing_at_full_resolution(variant):
    net = make_network("cpu", variant)
    assert net.stem == 2 and net.multiple == 16
    sigma = None if variant == "regression" else jax.ShapeDtypeStruct((1,), jnp.float32)
    x = jax.ShapeDtypeStruct((1, 64, 48, net.in_channels), jnp.float32)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x, sigma)
    assert count_params(shapes) == CPU_PARAMS[variant]
    seen = []

    def record(next_fun, args, kwargs, context):
        if type(context.module).__name__ in ("Conv", "NIN", "GroupNorm") and context.method_name == "__call__":
            seen.append(args[0].shape)
        return next_fun(*args, **kwargs)

    for size in ((64, 48), (44, 37)):  # a multiple of 16, and sizes that are not (not even of 2)
        seen.clear()
        x = jax.ShapeDtypeStruct((2, *size, net.in_channels), jnp.float32)
        s2 = None if sigma is None else jax.ShapeDtypeStruct((2,), jnp.float32)
        with nn.intercept_methods(record):
            out = jax.eval_shape(net.apply, shapes, x, s2)
        assert out.shape == (2, *size, 3) and out.dtype == jnp.float32
        assert seen and max(h for _, h, _, _ in seen) <= (size[0] + 1) // 2
        assert max(w for _, _, w, _ in seen) <= (size[1] + 1) // 2


def test_stem_pads_to_its_factor_and_crops_back():
    """Sides that are not multiples of the stem are edge-padded at the bottom/right and the output
    cropped: the result is the padded image's output, cut."""
    net = make_network({"preset": "tiny", "stem": 2, "ch_mult": (1, 2), "num_res_blocks": 1}, "score")
    assert net.multiple == 4
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((1, 17, 11, 6)), jnp.float32)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x, jnp.ones((1,)))  # random weights, no init compiled
    variables = jax.tree.map(lambda a: jnp.asarray(0.2 * rng.standard_normal(a.shape), a.dtype), shapes)
    padded = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    out, ref = jax.jit(lambda v: (net.apply(v, x, 0.3), net.apply(v, padded, 0.3)[:, :17, :11]))(variables)
    assert out.shape == (1, 17, 11, 3) and np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    assert float(jnp.std(out)) > 0


# ----------------------------------------------------------------------------- weight import


def test_npz_round_trip(fixture_nets, parity, tmp_path):
    _, variables = fixture_nets["score"]
    sd = convert.torch_state_dict_from_params(variables, "fixture", "score")
    original = _state_dict(parity, "score")
    assert list(sd) == list(original)
    for name in sd:
        np.testing.assert_array_equal(sd[name], original[name])
    path = tmp_path / "w.npz"
    np.savez(path, **sd)
    back = convert.load_torch_checkpoint(path, "fixture")  # variant inferred from the Fourier W
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)


def _lightning(parity, variant):
    sd = _state_dict(parity, variant)
    state_dict = {"dnn." + k: v for k, v in sd.items()}
    shadow = [v + 1.0 for v in sd.values()]  # the EMA weights, in the module's parameter order
    return {"state_dict": state_dict, "ema": {"decay": 0.999, "num_updates": 5, "shadow_params": shadow}}, sd


def test_lightning_checkpoint_picks_ema(parity):
    ckpt, sd = _lightning(parity, "regression")
    ema = convert.params_from_lightning_checkpoint(ckpt, "fixture")
    raw = convert.params_from_lightning_checkpoint(ckpt, "fixture", use_ema=False)
    flat_ema, flat_raw = flatten_dict(ema), flatten_dict(raw)
    names = convert.torch_names(make_network("fixture", "regression"))
    for key, name in names.items():
        np.testing.assert_allclose(convert._to_torch(key, np.asarray(flat_raw[key])), sd[name])
        np.testing.assert_allclose(convert._to_torch(key, np.asarray(flat_ema[key])), sd[name] + 1.0)


def test_torch_ckpt_file(parity, tmp_path):
    torch = pytest.importorskip("torch")
    ckpt, sd = _lightning(parity, "score")
    ckpt = {"state_dict": {k: torch.from_numpy(v) for k, v in ckpt["state_dict"].items()},
            "ema": {"decay": 0.999, "shadow_params": [torch.from_numpy(v) for v in ckpt["ema"]["shadow_params"]]}}
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    variables = convert.load_torch_checkpoint(path, "fixture")
    np.testing.assert_allclose(variables["constants"]["fourier_W"], sd["all_modules.0.W"] + 1.0)


def test_import_errors_name_the_key(parity):
    sd = _state_dict(parity, "score")
    missing = {k: v for k, v in sd.items() if k != "all_modules.5.Conv_1.bias"}
    with pytest.raises(KeyError, match=r"all_modules\.5\.Conv_1\.bias"):
        convert.params_from_torch_state_dict(missing, "fixture", "score")
    extra = dict(sd, **{"all_modules.5.Conv_9.weight": np.zeros(3, np.float32)})
    with pytest.raises(KeyError, match=r"all_modules\.5\.Conv_9\.weight"):
        convert.params_from_torch_state_dict(extra, "fixture", "score")
    bad = dict(sd, **{"all_modules.3.weight": np.zeros((16, 6, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"all_modules\.3\.weight.*\(16, 6, 1, 1\)"):
        convert.params_from_torch_state_dict(bad, "fixture", "score")
    with pytest.raises(KeyError, match="output_layer.weight"):
        convert.params_from_torch_state_dict({"foo": np.zeros(1)}, "fixture")
    ckpt, _ = _lightning(parity, "score")
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    with pytest.raises(ValueError, match="shadow"):
        convert.params_from_lightning_checkpoint(ckpt, "fixture")


# ----------------------------------------------------------------------------- model-info


def _model_info(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = info.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_model_info_preset_and_config():
    code, out, _ = _model_info("fixture", "--size", "44", "36", "--variant", "regression")
    assert code == 0
    assert "parameters: 568,872" in out
    rows = {line.split()[0] + line.split()[1]: line.split() for line in out.splitlines()
            if line.startswith(("  down", "  up"))}
    assert rows["down3"][2] == "5x4x32" and rows["up2"][2] == "11x9x32" and rows["up2"][3] == "yes"
    total = sum(int(line.split()[-1].replace(",", "")) for line in out.splitlines()[5:])
    assert total == 568_872  # the rows account for every parameter
    code, out, _ = _model_info("tiny_test")  # a training config naming the 'tiny' network
    assert code == 0 and "network 'tiny', score" in out
    n = sum(int(np.prod(shape)) for shape in convert.torch_shapes("tiny", "score").values())
    assert f"parameters: {n:,}" in out


def test_model_info_unknown_config_exits_2():
    code, out, err = _model_info("no_such_network")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no_such_network" in err


def test_model_info_cli_paper():
    """Through the `driftrec` dispatcher, in a fresh process: the paper's count, no weights made."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-m", "driftrec_jax.cli", "model-info", "paper", "--size", "64", "64"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "parameters: 65,623,359 (65,623,231 trained + 128 fixed" in proc.stdout
    assert "4x4x256" in proc.stdout and "1x1x256" in proc.stdout
