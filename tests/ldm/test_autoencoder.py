"""The frozen autoencoder: loading from folders, CompVis single files and hub ids; training a small one."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from geoxai.errors import GeoxaiError
from geoxai.ldm.autoencoder import autoencoder_identity, decode, encode_moments, load_autoencoder, sample_latents

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """Widths of 32 because CompVis configs always use GroupNorm(32)."""
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                         norm_num_groups=32).eval()


def to_compvis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> the original CompVis first-stage layout (the inverse of diffusers'
    ``convert_ldm_vae_checkpoint``), so a single-file checkpoint can be made offline."""
    levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out = {}
    for key, value in state.items():
        k = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)", r"down.\1.block.\2", key)
        k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample", k)
        k = re.sub(r"up_blocks\.(\d+)\.resnets\.(\d+)", lambda m: f"up.{levels - 1 - int(m[1])}.block.{m[2]}", k)
        k = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{levels - 1 - int(m[1])}.upsample", k)
        k = k.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        k = k.replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm")
        for new, old in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            k = k.replace(f"mid_block.attentions.0.{new}", f"mid.attn_1.{old}")
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if ".attn_1." in k and value.ndim == 2:
            value = value[:, :, None, None]  # CompVis attention projections are 1x1 convolutions
        out[k] = value.contiguous()
    return out


def test_folder_loads_frozen_and_round_trips_shapes(tmp_path):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "pipeline" / "vae")  # a pipeline folder: the vae/ subfolder is found
    loaded = load_autoencoder({"path": str(tmp_path / "pipeline")})
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    images = torch.rand(2, 3, 32, 32)
    moments = encode_moments(loaded, images)
    assert moments.shape == (2, 8, 16, 16)
    assert torch.equal(moments, encode_moments(vae, images))
    latents = sample_latents(moments, torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 16, 16)
    out = decode(loaded, latents)
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_sample_latents_draws_mean_plus_std_times_noise():
    mean, logvar = torch.randn(64, 4, 8, 8), torch.full((64, 4, 8, 8), np.log(0.25))
    z = sample_latents(torch.cat([mean, logvar], 1), torch.Generator().manual_seed(0))
    assert (z - mean).std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("layout", ["safetensors", "lightning_ckpt"])
def test_compvis_single_file_loads_offline_without_a_config(tmp_path, layout):
    vae = tiny_vae()
    compvis = to_compvis(vae.state_dict())
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "kl.safetensors"
        save_file(compvis, str(path))
    else:  # a whole-LDM Lightning checkpoint: autoencoder keys under first_stage_model.
        path = tmp_path / "model.ckpt"
        torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in compvis.items()}}, path)
    loaded = load_autoencoder({"path": str(path)})
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(encode_moments(loaded, images), encode_moments(vae, images), atol=1e-6)
    latents = torch.randn(1, 4, 16, 16)
    assert torch.allclose(decode(loaded, latents), decode(vae, latents), atol=1e-6)


def test_single_file_with_a_diffusers_config_folder(tmp_path):
    from safetensors.torch import save_file

    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "config_only")
    save_file(to_compvis(vae.state_dict()), str(tmp_path / "kl.safetensors"))
    loaded = load_autoencoder({"path": str(tmp_path / "kl.safetensors"), "config": str(tmp_path / "config_only")})
    images = torch.rand(1, 3, 32, 32)
    assert torch.allclose(encode_moments(loaded, images), encode_moments(vae, images), atol=1e-6)


def test_hub_id_offline_names_the_files_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GEOXAI_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GeoxaiError) as info:
        load_autoencoder({"path": "stabilityai/sd-vae-ft-mse"})
    message = str(info.value)
    assert "\n" not in message
    assert "diffusion_pytorch_model.safetensors" in message and "config.json" in message
    assert str(tmp_path / "cache" / "autoencoders" / "stabilityai--sd-vae-ft-mse") in message
    # Once the files are in that folder it loads without any network.
    tiny_vae().save_pretrained(tmp_path / "cache" / "autoencoders" / "stabilityai--sd-vae-ft-mse")
    assert load_autoencoder({"path": "stabilityai/sd-vae-ft-mse"}).config.latent_channels == 4


def test_bad_paths_and_keys_are_one_line_errors(tmp_path):
    with pytest.raises(GeoxaiError, match="no such folder or file"):
        load_autoencoder({"path": str(tmp_path / "missing" / "vae")})
    with pytest.raises(GeoxaiError, match="unknown key 'pth'"):
        load_autoencoder({"pth": "x"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeoxaiError, match="no config.json"):
        load_autoencoder({"path": str(tmp_path / "empty")})
    torch.save({"state_dict": {"encoder.something": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(GeoxaiError, match="not a CompVis KL autoencoder"):
        load_autoencoder({"path": str(tmp_path / "other.ckpt")})
    import argparse

    torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=1)}, tmp_path / "pickled.ckpt")
    with pytest.raises(GeoxaiError, match="holds Python objects besides tensors"):  # never unpickled
        load_autoencoder({"path": str(tmp_path / "pickled.ckpt")})


def test_identity_follows_weights_not_paths(tmp_path):
    tiny_vae(0).save_pretrained(tmp_path / "a")
    tiny_vae(0).save_pretrained(tmp_path / "b")
    tiny_vae(1).save_pretrained(tmp_path / "c")
    ids = [autoencoder_identity({"path": str(tmp_path / name)}) for name in "abc"]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith("kl-f2-z4-")


def test_training_a_small_autoencoder_saves_a_loadable_folder_and_reports_psnr(tmp_path, capsys):
    from geoxai.ldm.autoencoder_training import train

    rng = np.random.default_rng(0)
    for folder, count in (("train", 6), ("queries", 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            block = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(np.kron(block, np.ones((8, 8, 1), dtype=np.uint8))).save(tmp_path / folder / f"{i}.png")
    config = {"stage": "autoencoder", "output_dir": str(tmp_path / "ae"),
              "data": {"train_dirs": [str(tmp_path / "train")], "val_dir": str(tmp_path / "queries"),
                       "image_size": 32, "crop_size": 16, "batch_size": 4},
              "model": {"block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 8},
              "optim": {"lr": 1e-3}, "trainer": {"max_steps": 3, "accelerator": "cpu", "devices": 1}}
    out = train(config)
    assert out == tmp_path / "ae" / "vae"
    vae = load_autoencoder({"path": str(out)})
    metrics = json.loads((tmp_path / "ae" / "metrics.json").read_text())
    assert metrics["val_images"] == 2 and metrics["steps"] == 3 and np.isfinite(metrics["psnr_db"])
    assert vae.config.scaling_factor == pytest.approx(1 / metrics["latent_std"], rel=1e-4)
    assert "held-out reconstruction PSNR" in capsys.readouterr().out
    with pytest.raises(GeoxaiError, match="already holds a training run"):
        train(config)
    with pytest.raises(GeoxaiError, match="crop_size 15 is not a positive multiple"):
        train({**config, "output_dir": str(tmp_path / "other"), "data": {**config["data"], "crop_size": 15}})
