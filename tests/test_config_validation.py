"""Numeric config values are checked against each stage's rule table before any work starts: NaN,
infinities, negatives, text and yes/no values are one line naming the config file and key, and
nothing is written."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from geoxai.cli import cli
from geoxai.config import Number, check_values
from geoxai.errors import GeoxaiError
from geoxai.stages import STAGES as REGISTRY

# stage -> (module, its rule table, its defaults), as the stage registry declares them
STAGES = {stage.name: (stage.module, stage.rules, stage.defaults) for stage in REGISTRY.values()}

BAD = [
    ("ldm", "trainer.max_steps=-5", r"trainer.max_steps: -5 is negative; give a whole number >= 1 or -1 \(no limit\)"),
    ("ldm", "trainer.max_time=.nan", r"trainer.max_time: nan is not a number \(NaN\)"),
    ("ldm", "trainer.max_time=nan", "trainer.max_time: 'nan' is text, not a number"),
    ("ldm", "optim.base_lr=.inf", "optim.base_lr: inf is not finite; give a number > 0"),
    ("ldm", "optim.base_lr=1e-5", "optim.base_lr: '1e-5' is text, not a number .*write 1.0e-5"),
    ("ldm", "optim.base_lr=0", "optim.base_lr: 0 is too small; give a number > 0"),
    ("ldm", "logging.guidance=-1", "logging.guidance: -1 is negative"),
    ("ldm", "conditioning.p_uncond=1.5", r"conditioning.p_uncond: 1.5 is too large; give a number >= 0 and < 1"),
    ("ldm", "data.batch_size=abc", "data.batch_size: 'abc' is text, not a number; give a whole number >= 1"),
    ("ldm", "optim.betas=[0.9,1.5]", r"optim.betas\[1\]: 1.5 is too large"),
    ("ldm", "diffusion.beta_end=.nan", "diffusion.beta_end: nan is not a number"),
    ("ldm", "trainer.seed=-1", "trainer.seed: -1 is negative; give a whole number >= 0 and <= 4294967295"),
    ("ldm", "logging.sampler_steps=5000", "logging.sampler_steps: 5000: at most 1000"),
    ("ldm", "logging.sampler_steps=1000", "logging.sampler_steps: 1000: too many for logging.sampler: ddim"),
    ("ldm", "logging.sampler=euler", "logging.sampler: 'euler' is not a sampler; use one of dpm"),
    ("autoencoder", "optim.lr=-1.0e-4", "optim.lr: -0.0001 is negative"),
    ("autoencoder", "data.crop_size=.nan", "data.crop_size: nan is not a number"),
    ("autoencoder", "model.block_out_channels=[64,-1]", r"model.block_out_channels\[1\]: -1 is negative"),
    ("autoencoder", "trainer.max_epochs=2.5", "trainer.max_epochs: 2.5 is not a whole number"),
    ("embedder", "optim.epochs=0", "optim.epochs: 0 is too small; give a whole number >= 1"),
    ("embedder", "eval.radius=.inf", "eval.radius: inf is not finite"),
    ("embedder", "optim.batch_size=true", "optim.batch_size: true is a yes/no value, not a number"),
    ("embedder", "augment.hue=0.9", r"augment.hue: 0.9 is too large; give a number >= 0 and <= 0.5"),
    ("segmenter", "augment.blur=2", "augment.blur: 2 is too large; give a number >= 0 and <= 1"),
    ("segmenter", "threads=0.5", "threads: 0.5 is not a whole number; give a whole number >= 1 or null"),
    ("segmenter", "trainer.accumulate_grad_batches=null", "trainer.accumulate_grad_batches: null is not set"),
    ("segmenter", "augment.blur_sigma=0.5", "augment.blur_sigma: 0.5 is not a list"),
]


@pytest.mark.parametrize("stage, override, message", BAD)
def test_a_bad_config_value_is_one_line_naming_the_file_and_key(tmp_path, stage, override, message):
    config = tmp_path / f"{stage}.yaml"
    out = tmp_path / "out"
    config.write_text(yaml.safe_dump({"stage": stage, "output_dir": str(out)}))
    result = CliRunner().invoke(cli, ["train", "--config", str(config), override])
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: "), result.output
    assert _search(message, lines[0])
    assert not out.exists()  # neither an output folder nor a checkpoint


@pytest.mark.parametrize("stage, override, message", [next(case for case in BAD if case[0] == stage) for stage in STAGES])
def test_a_stage_called_from_python_names_the_key_as_config(tmp_path, stage, override, message):
    from geoxai.config import apply_overrides

    module, _, _ = STAGES[stage]
    config = apply_overrides({"stage": stage, "output_dir": str(tmp_path / "out")}, [override])
    with pytest.raises(GeoxaiError) as info:
        importlib.import_module(module).train(config)
    assert str(info.value).startswith("config: ") and _search(message, str(info.value))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", STAGES)
def test_every_rule_names_a_key_of_the_stage_and_every_default_passes(stage):
    """A misspelt rule would check nothing; a default its own rule refuses would block every run."""
    module_name, rules_name, defaults_name = STAGES[stage]
    module = importlib.import_module(module_name)
    rules, defaults = getattr(module, rules_name), getattr(module, defaults_name)
    for key in rules:
        node = defaults
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{stage}: rule {key} names no key of the defaults"
            node = node[part]
    check_values(defaults, rules)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*/*.yaml")))
def test_the_shipped_configs_pass_their_rules(path):
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or config.get("stage") not in STAGES:
        pytest.skip("not a training config")
    module_name, rules_name, _ = STAGES[config["stage"]]
    check_values(config, getattr(importlib.import_module(module_name), rules_name))


@pytest.mark.parametrize("rule, value, problem", [
    (Number(low=1, whole=True, special=((-1, "no limit"),)), -1, None),
    (Number(low=1, whole=True, special=((-1, "no limit"),)), -2, "is negative"),
    (Number(low=0, low_open=True, text=r"\d+:\d{1,2}:\d{1,2}:\d{1,2}"), "00:12:00:00", None),
    (Number(low=0, low_open=True, text=r"\d+:\d{1,2}:\d{1,2}:\d{1,2}"), "12 hours", "is text, not a number"),
    (Number(low=0), math.nan, "is not a number (NaN)"),
    (Number(low=0), -math.inf, "is not finite"),
    (Number(optional=True), None, None),
    (Number(), [1], "is not a number"),
    (Number(low=0, high=1), 1, None),
    (Number(low=0, high=1, high_open=True), 1, "is too large"),
])
def test_number_rules(rule, value, problem):
    assert rule.problem(value) == problem


def test_the_trainer_section_is_checked_where_the_trainer_is_built():
    from geoxai.trainer import trainer_settings

    with pytest.raises(GeoxaiError, match=r"^config: trainer.log_every_n_steps: 0 is too small"):
        trainer_settings({"log_every_n_steps": 0})


def _search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


@pytest.mark.parametrize("devices, problem", [
    ("auto", None), (2, None), (-1, None), ("0,1", None), ([0, 1], None),
    (0, "is too small"), ([0, -1], "is negative"), ("gpu", "is text, not a number"), (math.nan, "is not a number (NaN)"),
])
def test_trainer_devices_take_lightnings_forms(devices, problem):
    from geoxai.trainer import TRAINER_DEFAULTS, TRAINER_RULES

    config = {"trainer": {**TRAINER_DEFAULTS, "devices": devices}}
    if problem is None:
        check_values(config, TRAINER_RULES)
    else:
        with pytest.raises(GeoxaiError, match=re.escape(problem)):
            check_values(config, TRAINER_RULES)
