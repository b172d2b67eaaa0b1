"""``geoxai train`` for ``stage: ldm`` end to end on tiny local models: outputs, resume, errors, export."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from geoxai.errors import GeoxaiError

DIM = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Images, a tiny autoencoder (f=4) and a tiny embedder saved to disk, and a config using them."""
    from diffusers import AutoencoderKL

    from geoxai.embedders import from_spec

    root = tmp_path_factory.mktemp("ldm")
    rng = np.random.default_rng(0)
    for folder, count in (("train", 10), ("queries", 2)):
        (root / folder).mkdir()
        for i in range(count):
            image = np.repeat(np.repeat(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), 8, 0), 8, 1)
            Image.fromarray(image).save(root / folder / f"{i:02d}.png")
    Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(root / "train" / "wide.png")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4,
                  norm_num_groups=8).save_pretrained(root / "vae")
    embedder = from_spec({"name": "cosplace", "backbone": "resnet18", "dim": DIM, "image_size": 32}, device="cpu")
    embedder.save(root / "embedder" / "cosplace_resnet18_16.pth")
    config = {
        "stage": "ldm", "output_dir": str(root / "run"),
        "data": {"train_dirs": [str(root / "train")], "image_size": 32, "flip": True, "batch_size": 4,
                 "num_workers": 0, "val_queries": str(root / "queries"), "cache_dir": str(root / "cache"),
                 "encode_batch_size": 8},
        "embedder": {"name": "cosplace", "backbone": "resnet18", "dim": DIM, "image_size": 32,
                     "weights": str(root / "embedder" / "cosplace_resnet18_16.pth")},
        "autoencoder": {"path": str(root / "vae")},
        "unet": {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2], "num_res_blocks": 1,
                 "num_heads": 4},
        "conditioning": {"mode": "crossattn", "p_uncond": 0.2},
        "optim": {"base_lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.9},
        "logging": {"image_every_n_steps": 2, "num_images": 2, "sampler_steps": 2, "checkpoint_every_n_steps": 2},
        "trainer": {"max_steps": 4, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1},
    }
    return root, config


@pytest.fixture(scope="module")
def trained(setup):
    from geoxai.ldm.training import train

    root, config = setup
    last = train(config)  # the 40x32 image is resized and cropped to 32x32 (80% kept: no notice)
    return root, config, last


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_checkpoints_previews_loss_curve_and_config(trained):
    root, config, last = trained
    run = root / "run"
    assert last == run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == 4
    assert state["hyper_parameters"]["config"]["unet"]["sample_size"] == 8  # 32 px / f4, filled in
    assert {p.name for p in (run / "checkpoints").glob("step_*.ckpt")} == {"step_000002.ckpt", "step_000004.ckpt"}
    assert sorted(p.name for p in (run / "images").glob("*.png")) == ["step_000002.png", "step_000004.png"]
    grid = Image.open(run / "images" / "step_000004.png")
    assert grid.size == (2 + 2 * 34, 2 + 2 * 34)  # two originals over two generations, 2 px padding
    rows = _rows(run / "loss.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    # LambdaLinear warm-up over 2 steps: step 1 runs at f_start, step 2 at half, then the full rate.
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-9, 5e-4, 1e-3, 1e-3], rel=1e-3)
    assert (run / "config.yaml").is_file()
    scale = float(state["state_dict"]["scale_factor"])
    assert np.isfinite(scale) and scale > 0


def test_effective_lr_is_logged(trained):
    root, _, _ = trained
    rows = _rows(next((root / "run" / "logs").glob("version_*/metrics.csv")))
    logged = [float(r["optim/lr_effective"]) for r in rows if r.get("optim/lr_effective")]
    assert logged == [pytest.approx(1e-3)]


def test_resume_continues_from_the_checkpoint_step(trained):
    from geoxai.ldm.training import train

    root, config, last = trained
    with pytest.raises(GeoxaiError, match="already holds a training run"):
        train(config)
    longer = {**config, "trainer": {**config["trainer"], "max_steps": 6}, "logging": {**config["logging"],
                                                                                      "image_every_n_steps": 0}}
    train(longer, resume=True)
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == 6
    assert state["ema"]["optimization_step"] == 6  # the EMA resumed too
    assert [int(r["step"]) for r in _rows(root / "run" / "loss.csv")] == [1, 2, 3, 4, 5, 6]


def test_resume_with_another_embedder_dim_or_unet_is_a_one_line_error(trained):
    from geoxai.ldm.training import train

    root, config, _ = trained
    other_dim = {**config, "embedder": {"name": "cosplace", "backbone": "resnet18", "dim": 8, "image_size": 32,
                                        "weights": "random"}}
    with pytest.raises(GeoxaiError, match=r"8-d descriptors .* context dim 16"):
        train(other_dim, resume=True)
    wider = {**config, "unet": {**config["unet"], "model_channels": 64}}
    with pytest.raises(GeoxaiError, match="do not fit the model") as info:
        train(wider, resume=True)
    assert "\n" not in str(info.value)


def test_export_then_reload_gives_identical_outputs(trained, tmp_path):
    from diffusers import UNet2DConditionModel

    from geoxai.ldm.export import export_pipeline
    from geoxai.ldm.loading import load_components

    _, _, last = trained
    out = export_pipeline(last, tmp_path / "pipeline")
    assert {p.name for p in out.iterdir()} == {"unet", "vae", "conditioner", "scheduler", "geoxai.yaml"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    original, exported = load_components(last), load_components(out)
    plain = UNet2DConditionModel.from_pretrained(out / "unet").eval()
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 700])
    descriptors = torch.nn.functional.normalize(torch.randn(2, DIM), dim=-1)
    expected = original.predict_noise(latents, t, descriptors, 2.0)
    assert torch.equal(exported.predict_noise(latents, t, descriptors, 2.0), expected)
    with torch.no_grad():
        assert torch.equal(plain(latents, t, encoder_hidden_states=descriptors[:, None]).sample,
                           original.predict_noise(latents, t, descriptors, 1.0))
    assert exported.scale_factor == original.scale_factor
    assert exported.config["autoencoder"]["path"] == str((out / "vae").resolve())
    export_pipeline(last, out)  # overwriting an earlier export is fine
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(GeoxaiError, match="not an exported pipeline"):
        export_pipeline(last, tmp_path / "notes")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(setup, monkeypatch):
    from geoxai.ldm import module
    from geoxai.ldm.training import train

    root, config = setup
    real = module.LatentDiffusion.compute_loss

    def poisoned(self, batch):
        loss = real(self, batch)
        return loss * float("nan") if self.global_step >= 3 else loss

    monkeypatch.setattr(module.LatentDiffusion, "compute_loss", poisoned)
    config = {**config, "output_dir": str(root / "nan"), "logging": {**config["logging"], "image_every_n_steps": 0}}
    with pytest.raises(GeoxaiError) as info:
        train(config)
    message = str(info.value)
    assert "at step 3" in message and "last.ckpt (step 2)" in message and "\n" not in message
    assert torch.load(root / "nan" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
