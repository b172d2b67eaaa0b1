"""The stage registry and the steps every stage shares: unknown stages are one line with a suggestion,
listing the stages imports no torch, ``--resume`` continues a run, a NaN loss stops on one line that
names the checkpoint kept, and the autoencoder's warm-up keeps its schedule."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.errors import GeoxaiError
from geoxai.stages import STAGES, get_stage, run_stage, stage_names

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stage, hint", [("lmd", "did you mean 'ldm'?"), ("autoencodr", "did you mean 'autoencoder'?"),
                                         (None, "(got None)."), ([1], "(got [1]).")])
def test_an_unknown_stage_is_one_line_naming_the_file_and_the_stages(tmp_path, stage, hint):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"stage": stage, "output_dir": str(tmp_path / "out")}))
    result = CliRunner().invoke(cli, ["train", "--config", str(config)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith(f"error: {config}: `stage:` must be one of "
                                                "embedder, autoencoder, ldm, segmenter")
    assert line.endswith(hint)
    assert not (tmp_path / "out").exists()


def test_every_registered_stage_declares_its_trainer_defaults_and_rules():
    assert stage_names() == ["embedder", "autoencoder", "ldm", "segmenter"]
    for name, stage in STAGES.items():
        assert callable(stage.attribute(stage.checked)) and callable(stage.attribute(stage.fit))
        assert stage.attribute("train").__module__ == stage.module
        assert stage.default_config()["stage"] == name
        defaults = stage.default_config()
        for key in stage.rule_table():
            node = defaults
            for part in key.split("."):
                assert part in node, f"{name}: rule {key} names no key of its defaults"
                node = node[part]
    with pytest.raises(GeoxaiError, match=r"^runs\.yaml: `stage:` must be one of .* did you mean 'embedder'"):
        get_stage("embeder", "runs.yaml")


def test_finding_a_stage_imports_no_torch():
    code = ("import sys; from geoxai.stages import get_stage, stage_names; get_stage('ldm'); stage_names(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.fixture
def autoencoder_config(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    for i in range(4):
        block = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(np.kron(block, np.ones((8, 8, 1), dtype=np.uint8))).save(tmp_path / "train" / f"{i}.png")
    return {"stage": "autoencoder", "output_dir": str(tmp_path / "ae"),
            "data": {"train_dirs": [str(tmp_path / "train")], "image_size": 32, "crop_size": 16, "batch_size": 4,
                     "val_limit": 2},
            "model": {"block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 8},
            "optim": {"lr": 1e-3}, "checkpoint_every_n_steps": 1,
            "trainer": {"max_steps": 2, "accelerator": "cpu", "devices": 1}}


def test_a_stage_run_by_name_saves_its_config_and_resumes_to_more_steps(tmp_path, autoencoder_config):
    out = tmp_path / "ae"
    assert run_stage(autoencoder_config) == out / "vae"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 2 and saved["optim"]["warmup_steps"] == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    with pytest.raises(GeoxaiError, match="already holds a training run"):
        run_stage(autoencoder_config)
    longer = {**autoencoder_config, "trainer": {**autoencoder_config["trainer"], "max_steps": 4}}
    run_stage(longer, resume=True)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    with pytest.raises(GeoxaiError, match=r"--resume: no checkpoint at .*; start without --resume"):
        run_stage({**autoencoder_config, "output_dir": str(tmp_path / "fresh")}, resume=True)


def test_a_nan_loss_stops_on_one_line_naming_the_last_good_checkpoint(tmp_path, autoencoder_config, monkeypatch):
    from geoxai.ldm import autoencoder_training

    real = autoencoder_training.AutoencoderTraining.training_step

    def poisoned(self, batch, batch_idx):
        if self.global_step >= 1:
            batch = {**batch, "image": batch["image"] * float("nan")}
        return real(self, batch, batch_idx)

    monkeypatch.setattr(autoencoder_training.AutoencoderTraining, "training_step", poisoned)
    with pytest.raises(GeoxaiError) as info:
        run_stage({**autoencoder_config, "trainer": {**autoencoder_config["trainer"], "max_steps": 5}})
    message = str(info.value)
    last = tmp_path / "ae" / "checkpoints" / "last.ckpt"
    assert message.startswith("autoencoder: training loss is nan at step 1; training stopped")
    assert f"the last good checkpoint is kept: {last} (step 1)" in message
    assert message.endswith("lower optim.lr, then continue with --resume") and "\n" not in message
    assert not (tmp_path / "ae" / "vae").exists()


@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_the_autoencoder_warm_up_runs_step_s_at_s_plus_1_over_warmup_plus_1(autoencoder_config, warmup):
    from geoxai.ldm.autoencoder_training import AutoencoderTraining, resolve_config

    config = resolve_config({**autoencoder_config, "optim": {"lr": 1e-3, "warmup_steps": warmup}})
    setup = AutoencoderTraining(config).configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(warmup + 3):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-3 * min(1.0, (step + 1) / (warmup + 1)) for step in range(warmup + 3)]
    assert rates == pytest.approx(expected, rel=1e-12)
