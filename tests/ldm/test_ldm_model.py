"""The diffusion model itself: UNet mapping, conditioning modes, guidance, schedule, EMA checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from geoxai.errors import GeoxaiError
from geoxai.ldm.conditioning import DescriptorConditioner
from geoxai.ldm.loading import load_components
from geoxai.ldm.module import LambdaLinear, LatentDiffusion, effective_lr
from geoxai.ldm.unet import build_unet, diffusers_unet_kwargs

DIM = 16
TINY_UNET = {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [1, 2], "num_res_blocks": 1,
             "num_heads": 4, "sample_size": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(mode: str = "crossattn", **diffusion) -> dict:
    return {"data": {"batch_size": 4}, "unet": dict(TINY_UNET), "conditioning": {"mode": mode, "num_tokens": 3},
            "diffusion": diffusion, "optim": {"base_lr": 1e-3, "warmup_steps": 0, "ema_decay": 0.9}}


def moments_batch(n: int = 4, seed: int = 0, mean_scale: float = 2.0, logvar: float = -20.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, 4, 8, 8, generator=g) * mean_scale
    descriptors = torch.nn.functional.normalize(torch.randn(n, DIM, generator=g), dim=-1)
    return {"moments": torch.cat([mean, torch.full_like(mean, logvar)], 1), "descriptor": descriptors,
            "index": torch.arange(n)}


class FixedBatches(Dataset):
    def __init__(self, n: int = 8):
        self.batch = moments_batch(n)

    def __len__(self) -> int:
        return len(self.batch["index"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.batch.items()}


# ------------------------------------------------------------------------------ UNet mapping
def test_tiny_config_maps_channels_attention_and_context_dim():
    unet = build_unet(TINY_UNET, context_dim=DIM)
    assert tuple(unet.config.block_out_channels) == (32, 64)
    assert unet.config.cross_attention_dim == DIM
    assert unet.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.resnet_time_scale_shift == "scale_shift"
    assert unet.config.layers_per_block == 1
    # The only attention factor 2 -> level 1 only; level 0 resamples with a res-block.
    kwargs = diffusers_unet_kwargs({**TINY_UNET, "attention_resolutions": [2]}, DIM)
    assert kwargs["down_block_types"] == ("ResnetDownsampleBlock2D", "CrossAttnDownBlock2D")
    assert kwargs["up_block_types"] == ("CrossAttnUpBlock2D", "ResnetUpsampleBlock2D")


def test_thesis_config_maps_to_five_levels_with_cross_attention_at_the_first_four():
    kwargs = diffusers_unet_kwargs({"model_channels": 192, "channel_mult": [1, 2, 2, 4, 4],
                                    "attention_resolutions": [1, 2, 4, 8], "num_res_blocks": 2, "num_heads": 8,
                                    "use_scale_shift_norm": True, "resblock_updown": True, "sample_size": 32}, 512)
    assert kwargs["block_out_channels"] == (192, 384, 384, 768, 768)
    assert kwargs["down_block_types"] == ("CrossAttnDownBlock2D",) * 4 + ("ResnetDownsampleBlock2D",)
    assert kwargs["up_block_types"] == ("ResnetUpsampleBlock2D",) + ("CrossAttnUpBlock2D",) * 4
    assert kwargs["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    assert kwargs["attention_head_dim"] == (8,) * 5  # diffusers' name for the number of heads
    assert kwargs["cross_attention_dim"] == 512 and kwargs["layers_per_block"] == 2
    assert kwargs["resnet_time_scale_shift"] == "scale_shift"
    light = diffusers_unet_kwargs({"model_channels": 160}, 512)
    assert light["block_out_channels"] == (160, 320, 320, 640, 640)


def test_bad_unet_widths_are_one_line_errors():
    with pytest.raises(GeoxaiError, match="norm_num_groups"):
        diffusers_unet_kwargs({**TINY_UNET, "model_channels": 20}, DIM)
    with pytest.raises(GeoxaiError, match="unknown key 'chanel_mult'"):
        diffusers_unet_kwargs({**TINY_UNET, "chanel_mult": [1]}, DIM)


# ------------------------------------------------------------------------------ conditioning
@pytest.mark.parametrize("mode,tokens,labels", [("crossattn", 1, False), ("bias", 1, False), ("tokens", 3, False),
                                                 ("film", 1, True)])
def test_conditioner_outputs_are_unet_kwargs(mode, tokens, labels):
    conditioner = DescriptorConditioner(mode, DIM, num_tokens=3)
    out = conditioner(torch.randn(5, DIM))
    assert out["encoder_hidden_states"].shape == (5, tokens, DIM)
    assert (out["class_labels"] is not None) == labels
    assert torch.equal(conditioner.null_descriptors(5), torch.zeros(5, DIM))


def test_bias_mode_equals_one_token_cross_attention():
    """The additive per-layer bias computes what one-token cross-attention computes, given the same weights."""
    torch.manual_seed(0)
    crossattn = DescriptorConditioner("crossattn", DIM)
    bias = DescriptorConditioner("bias", DIM)
    attention_unet = build_unet(TINY_UNET, context_dim=DIM).eval()
    bias_unet = bias.prepare_unet(build_unet(TINY_UNET, context_dim=DIM)).eval()
    bias_unet.load_state_dict(attention_unet.state_dict())  # same parameters: the state dicts are alike
    processors = bias_unet.attn_processors
    assert sum(type(p).__name__ == "DescriptorBiasProcessor" for p in processors.values()) == \
        sum(name.endswith("attn2.processor") for name in processors) > 0
    latents, steps = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    descriptors = torch.nn.functional.normalize(torch.randn(3, DIM), dim=-1)
    with torch.no_grad():
        reference = attention_unet(latents, steps, **crossattn(descriptors)).sample
        explicit = bias_unet(latents, steps, **bias(descriptors)).sample
        other = bias_unet(latents, steps, **bias(descriptors.flip(0))).sample
    assert torch.allclose(explicit, reference, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(other, reference, atol=1e-3)  # the descriptor does reach the output
    frozen = [n for n, p in bias_unet.named_parameters() if not p.requires_grad]
    assert frozen and all(".attn2.to_q." in n or ".attn2.to_k." in n for n in frozen)


def test_descriptor_dim_mismatch_names_both_dims():
    conditioner = DescriptorConditioner("crossattn", 512)
    with pytest.raises(GeoxaiError, match=r"descriptor dim 256 .* context dim 512"):
        conditioner(torch.randn(2, 256))


# ------------------------------------------------------------------------------ training pieces
def test_lambda_linear_warmup_values():
    warmup = LambdaLinear(100, f_start=1e-6, f_max=1.0)
    assert warmup(0) == pytest.approx(1e-6)
    assert warmup(50) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert warmup(100) == 1.0 and warmup(10_000) == 1.0
    assert LambdaLinear(0)(0) == 1.0


def test_effective_lr_scales_only_when_asked():
    assert effective_lr({"base_lr": 5e-5, "scale_lr": False}, 48, 2, 2) == 5e-5
    assert effective_lr({"base_lr": 5e-5, "scale_lr": True}, 48, 2, 2) == pytest.approx(5e-5 * 48 * 2 * 2)


def test_scale_by_std_sets_one_over_std_of_the_first_batch():
    model = LatentDiffusion(tiny_config(), DIM)
    assert torch.isnan(model.scale_factor)
    first = moments_batch(seed=1, mean_scale=3.0, logvar=-8.0)
    torch.manual_seed(0)
    model.compute_loss(first)
    torch.manual_seed(0)
    from geoxai.ldm.autoencoder import sample_latents

    expected = 1.0 / sample_latents(first["moments"]).flatten().std()
    assert model.scale_factor.item() == pytest.approx(expected.item(), rel=1e-5)
    model.compute_loss(moments_batch(seed=2, mean_scale=10.0))
    assert model.scale_factor.item() == pytest.approx(expected.item(), rel=1e-5)  # set once
    fixed = LatentDiffusion(tiny_config(scale_by_std=False, scale_factor=0.25), DIM)
    assert fixed.scale_factor.item() == 0.25


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_the_definition(prediction):
    from diffusers.training_utils import compute_snr

    model = LatentDiffusion(tiny_config(prediction_type=prediction, snr_gamma=5.0), DIM)
    steps = torch.tensor([0, 100, 400, 999])
    snr = compute_snr(model.noise_scheduler, steps)
    weights = model.loss_weights(steps)
    expected = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1 if prediction == "v_prediction" else snr)
    assert torch.allclose(weights, expected.float())
    assert weights[0] < weights[-1] if prediction == "epsilon" else weights[0] < 1  # low noise is down-weighted
    uniform = LatentDiffusion(tiny_config(prediction_type=prediction), DIM)
    assert torch.equal(uniform.loss_weights(steps), torch.ones(4))


def test_min_snr_loss_is_the_weighted_per_sample_loss():
    torch.manual_seed(0)
    model = LatentDiffusion(tiny_config(snr_gamma=1.0, loss="l2"), DIM)
    plain = LatentDiffusion(tiny_config(loss="l2"), DIM)
    plain.load_state_dict(model.state_dict())
    batch = moments_batch()
    torch.manual_seed(3)
    weighted = model.compute_loss(batch)
    torch.manual_seed(3)
    unweighted = plain.compute_loss(batch)
    assert not torch.isclose(weighted, unweighted)  # gamma 1 changes every weight below 1


def test_bad_snr_gamma_is_a_one_line_error():
    with pytest.raises(GeoxaiError, match="snr_gamma"):
        LatentDiffusion(tiny_config(snr_gamma=0), DIM)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = LatentDiffusion(tiny_config(), DIM)
    batch = moments_batch()
    optimizer = torch.optim.Adam(model.denoiser_parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        torch.manual_seed(0)  # the same noise and timesteps each step: one batch to memorise
        loss = model.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


def test_guidance_one_is_the_plain_conditional_prediction_and_g_mixes_linearly():
    torch.manual_seed(0)
    model = LatentDiffusion(tiny_config("tokens"), DIM)
    with torch.no_grad():  # a non-zero null branch, so the mixing is visible
        for p in model.unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    components = model.components().eval()
    latents, t = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 900])
    descriptors = torch.nn.functional.normalize(torch.randn(3, DIM), dim=-1)
    with torch.no_grad():
        cond = model.unet(latents, t, **model.conditioner(descriptors)).sample
        uncond = model.unet(latents, t, **model.conditioner(torch.zeros(3, DIM))).sample
    assert torch.equal(components.predict_noise(latents, t, descriptors, 1.0), cond)
    guided = components.predict_noise(latents, t, descriptors, 3.0)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(guided, cond, atol=1e-4)
    scalar = components.predict_noise(latents, 500, descriptors, 1.0)  # a plain int timestep works too
    assert scalar.shape == latents.shape


def _fit(tmp_path, config, steps=3):
    from geoxai.trainer import build_trainer

    model = LatentDiffusion(config, DIM)
    loader = torch.utils.data.DataLoader(FixedBatches(), batch_size=4, shuffle=True)
    trainer = build_trainer({"max_steps": steps, "accelerator": "cpu", "devices": 1}, tmp_path, logger=False,
                            enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, train_dataloaders=loader)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return model, path


@pytest.mark.parametrize("mode", ["crossattn", "bias", "tokens", "film"])
def test_each_mode_trains_and_loads_with_ema_weights(tmp_path, mode):
    model, path = _fit(tmp_path, tiny_config(mode), steps=3)
    assert model.ema.optimization_step == 3  # one EMA update per optimizer step
    components = load_components(path)
    assert components.context_dim == DIM and components.conditioner.mode == mode
    assert components.scale_factor == pytest.approx(model.scale_factor.item())
    assert components.noise_scheduler_config == {"num_train_timesteps": 1000, "beta_start": 0.0015,
                                                 "beta_end": 0.0155, "beta_schedule": "scaled_linear",
                                                 "prediction_type": "epsilon"}
    # EMA weights, not the trained ones, are what load_components returns.
    shadow = model.ema.shadow_params[0]
    assert torch.equal(next(components.unet.parameters()), shadow.cpu())
    assert not torch.equal(next(components.unet.parameters()), next(model.unet.parameters()).detach())
    out = components.predict_noise(torch.randn(2, 4, 8, 8), torch.tensor([1, 999]),
                                   torch.nn.functional.normalize(torch.randn(2, DIM), dim=-1), guidance=2.0)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_v_prediction_and_l2_train(tmp_path):
    model, path = _fit(tmp_path, tiny_config(prediction_type="v_prediction", loss="l2"), steps=2)
    assert load_components(path).noise_scheduler_config["prediction_type"] == "v_prediction"


def test_checkpoint_from_another_config_is_a_one_line_error(tmp_path):
    _, path = _fit(tmp_path, tiny_config(), steps=1)
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["config"]["unet"]["model_channels"] = 64  # the weights are 32 wide
    torch.save(state, tmp_path / "other.ckpt")
    with pytest.raises(GeoxaiError) as info:
        load_components(tmp_path / "other.ckpt")
    message = str(info.value)
    assert "\n" not in message and "do not fit the model" in message and "shape mismatches" in message
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, tmp_path / "embedder.ckpt")
    with pytest.raises(GeoxaiError, match="not a geoxai latent diffusion checkpoint"):
        load_components(tmp_path / "embedder.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(GeoxaiError, match="not readable as weights"):
        load_components(tmp_path / "junk.ckpt")


@pytest.mark.parametrize("name", ["pitts30k-cosplace-r50-256", "pitts30k-cosplace-r50-160ch-128", "synthcity"])
def test_shipped_ldm_configs_validate_and_map(name):
    from pathlib import Path

    from geoxai.config import load_config
    from geoxai.ldm.training import resolve_config

    config = resolve_config(load_config(Path(__file__).parents[2] / "configs" / "ldm" / f"{name}.yaml"))
    kwargs = diffusers_unet_kwargs(config["unet"], config["embedder"]["dim"])
    assert kwargs["sample_size"] * 8 == config["data"]["image_size"]  # kl-f8 latents
    if name.startswith("pitts30k"):
        assert config["optim"]["base_lr"] == 5e-5 and not config["optim"]["scale_lr"]
        assert config["conditioning"]["mode"] == "crossattn" and config["diffusion"]["loss"] == "l1"
        assert len(kwargs["down_block_types"]) == 5


def test_shipped_autoencoder_config_validates():
    from pathlib import Path

    from geoxai.config import load_config
    from geoxai.ldm.autoencoder_training import build_autoencoder, resolve_config

    config = resolve_config(load_config(Path(__file__).parents[2] / "configs" / "autoencoder" / "synthcity.yaml"))
    vae = build_autoencoder(config["model"])
    ldm = load_config(Path(__file__).parents[2] / "configs" / "ldm" / "synthcity.yaml")
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    assert vae.config.latent_channels == ldm["unet"]["in_channels"]  # the two SynthCity configs agree


def test_speed_settings_are_checked_and_channels_last_trains(tmp_path):
    from geoxai.ldm.module import model_settings

    with pytest.raises(GeoxaiError, match="speed.compile 'yes': use true or false"):
        model_settings({**tiny_config(), "speed": {"compile": "yes"}})
    with pytest.raises(GeoxaiError, match="speed.channels_last 'always'"):
        model_settings({**tiny_config(), "speed": {"channels_last": "always"}})
    model, path = _fit(tmp_path, {**tiny_config(), "speed": {"channels_last": True}}, steps=2)
    assert model.channels_last  # on a CPU only when asked for ("auto" means a GPU)
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    components = load_components(path)  # the checkpoint's keys are the plain UNet's
    assert not LatentDiffusion(tiny_config(), DIM).channels_last
    assert components.unet.conv_in.weight.shape == model.unet.conv_in.weight.shape
