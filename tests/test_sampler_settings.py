"""Sampler settings: one text form for restore, evaluate and training configs."""

import ml_collections
import pytest

from driftrec_jax import config_lib, samplers
from driftrec_jax.sampler_settings import (DEFAULT_SETTING, DIFFUSION_SAMPLERS, SamplerSetting, default_setting,
                                           from_config, parse_setting)


def test_names_are_the_samplers():
    assert DIFFUSION_SAMPLERS == tuple(samplers.SAMPLERS)


@pytest.mark.parametrize("text, setting", [
    ("em", SamplerSetting("em", steps=100)),
    ("em:100", SamplerSetting("em", steps=100)),
    ("heun", SamplerSetting("heun", steps=50)),
    ("ode:1e-5x4", SamplerSetting("ode", tol=1e-5, num_samples=4)),
    ("ddim:6", SamplerSetting("ddim", steps=6)),
    ("ddim:6:1", SamplerSetting("ddim", steps=6)),  # η = 1 is ddim's default: one canonical form
    ("ddim:10:0", SamplerSetting("ddim", steps=10, eta=0.0)),
    ("ddim:10:0.5@lambda", SamplerSetting("ddim", steps=10, eta=0.5, grid="lambda")),
    ("dpm2m:5@lambda", SamplerSetting("dpm2m", steps=5)),  # λ is dpm2m's default grid
    ("dpm2m:5@edm", SamplerSetting("dpm2m", steps=5, grid="edm")),
    ("sde-dpm2m:3x2", SamplerSetting("sde-dpm2m", steps=3, num_samples=2)),
    ("ddrm:20x8", SamplerSetting("ddrm", steps=20, num_samples=8)),
])
def test_parse_and_key_round_trip(text, setting):
    assert parse_setting(text) == setting
    assert parse_setting(setting.key) == setting


def test_keys_of_earlier_settings_are_unchanged():
    """evaluate's cache is keyed by these texts: results of earlier runs stay valid."""
    assert [parse_setting(t).key for t in ("em:100", "ode:1e-3", "heun:50", "em:100x4")] == [
        "em:100", "ode:0.001", "heun:50", "em:100x4"]
    assert parse_setting("em:100").label == "EM 100 steps"


def test_options_for_samplers_sample():
    assert parse_setting("ddim:4:0@edm").options(0.05) == {
        "sampler": "ddim", "num_samples": 1, "eps": 0.05, "steps": 4, "eta": 0.0, "grid": "edm"}
    assert parse_setting("sde-dpm2m:6").options() == {
        "sampler": "sde-dpm2m", "num_samples": 1, "eps": 0.03, "steps": 6, "grid": "lambda"}
    assert parse_setting("ode:1e-2").options()["rtol"] == 0.01
    assert parse_setting("heun:50").nfe == 100 and parse_setting("ddim:6").nfe == 6
    assert parse_setting("ode").nfe is None
    with pytest.raises(ValueError, match="ddrm"):
        parse_setting("ddrm:20").options()


@pytest.mark.parametrize("bad", ["em:abc", "sde:10", "em:0", "ode:-1", "em:100:0", "ddim:6:2", "ddim:6@log",
                                 "em:100@t", "ddim:0"])
def test_bad_settings_are_one_clear_error(bad):
    with pytest.raises(ValueError, match="bad sampler setting"):
        parse_setting(bad)


def test_default_setting_and_training_configs():
    assert default_setting() == parse_setting(DEFAULT_SETTING)
    assert default_setting().nfe <= 10  # the few-step default; the paper's em:100 is one flag away
    c = config_lib.default_config()
    assert from_config(c.sample) == SamplerSetting(c.sample.sampler, steps=c.sample.steps)
    s = ml_collections.ConfigDict({"sampler": "ddim", "steps": 5, "eta": 0.0, "grid": "edm", "eps": 0.03})
    assert from_config(s) == SamplerSetting("ddim", steps=5, eta=0.0, grid="edm")
    s = ml_collections.ConfigDict({"sampler": "em", "steps": 30, "eta": 1.0, "grid": "", "eps": 0.03})
    assert from_config(s) == SamplerSetting("em", steps=30)  # η and grid belong to other samplers
    s = ml_collections.ConfigDict({"sampler": "ode", "steps": 30, "tol": 1e-2, "eps": 0.03})
    assert from_config(s) == SamplerSetting("ode", tol=1e-2)
