"""The sampling pipeline: samplers, determinism per item, guidance, CompVis-compatible schedules, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from geoxai.errors import GeoxaiError
from geoxai.ldm.module import LatentDiffusion
from geoxai.ldm.pipeline import DescriptorDiffusionPipeline, build_scheduler, check_steps, set_timesteps
from geoxai.report.grids import original_vs_generations_grid

DIM, IMAGE = 8, 16  # descriptor dim; image side (VAE factor 2 -> 8x8 latents)
TINY_UNET = {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [1], "num_res_blocks": 1,
             "num_heads": 2, "norm_num_groups": 8, "resblock_updown": False}
COMPVIS = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0155,
           "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, layers_per_block=1)


@pytest.fixture(scope="module")
def components():
    torch.manual_seed(0)
    config = {"data": {"image_size": IMAGE}, "unet": TINY_UNET, "optim": {"use_ema": False},
              "conditioning": {"mode": "crossattn", "p_uncond": 0.1}, "diffusion": {"scale_by_std": False,
                                                                                    "scale_factor": 0.5}}
    return LatentDiffusion(config, context_dim=DIM).components()


def pipeline_for(components, sampler: str) -> DescriptorDiffusionPipeline:
    return DescriptorDiffusionPipeline.from_components(components, tiny_vae(), sampler=sampler, device="cpu")


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


DESCRIPTORS = torch.nn.functional.normalize(torch.randn(4, DIM, generator=torch.Generator().manual_seed(3)), dim=1)


@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "ddpm"])
def test_each_sampler_is_deterministic_and_independent_of_the_batch(components, sampler):
    pipeline = pipeline_for(components, sampler)
    batch = pipeline(DESCRIPTORS, num_inference_steps=3, generator=generators([10, 11, 12, 13]))
    assert batch.shape == (4, 3, IMAGE, IMAGE) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1 and batch.std() > 0
    again = pipeline(DESCRIPTORS, num_inference_steps=3, generator=generators([10, 11, 12, 13]))
    assert torch.equal(batch, again)
    # Each image depends on its own seed only: alone, or in another batch at another position.
    alone = pipeline(DESCRIPTORS[2:3], num_inference_steps=3, generator=generators([12]))
    torch.testing.assert_close(alone[0], batch[2], atol=1e-5, rtol=0)
    swapped = pipeline(DESCRIPTORS[[3, 0]], num_inference_steps=3, generator=generators([13, 10]))
    torch.testing.assert_close(swapped, batch[[3, 0]], atol=1e-5, rtol=0)
    other = pipeline(DESCRIPTORS[:1], num_inference_steps=3, generator=generators([99]))
    assert (other[0] - batch[0]).abs().max() > 1e-3


def test_guidance_one_is_the_plain_conditional_model(components):
    pipeline = pipeline_for(components, "ddim")
    guided = pipeline(DESCRIPTORS[:2], num_inference_steps=2, guidance=1.0, generator=generators([1, 2]))

    def conditional(latents, t, descriptors, guidance):
        return components.unet(latents, t, **components.conditioner(descriptors)).sample

    plain = DescriptorDiffusionPipeline(pipeline.unet, pipeline.conditioner, pipeline.vae, pipeline.scheduler,
                                        pipeline.scale_factor, pipeline.image_size, conditional)
    torch.testing.assert_close(plain(DESCRIPTORS[:2], num_inference_steps=2, generator=generators([1, 2])), guided)
    strong = pipeline(DESCRIPTORS[:2], num_inference_steps=2, guidance=4.0, generator=generators([1, 2]))
    assert (strong - guided).abs().max() > 1e-4


def test_pil_output_matches_the_tensor(components):
    pipeline = pipeline_for(components, "dpm++")
    images = pipeline(DESCRIPTORS[:1], num_inference_steps=2, generator=generators([5]))
    pil = pipeline(DESCRIPTORS[:1], num_inference_steps=2, generator=generators([5]), output="pil")
    assert pil[0].size == (IMAGE, IMAGE) and pil[0].mode == "RGB"
    expected = (images[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(np.asarray(pil[0], dtype=np.float64) - expected).max() <= 1


def test_schedulers_follow_the_compvis_discretisation():
    ddim = build_scheduler("ddim", COMPVIS)
    compvis_betas = torch.linspace(0.0015**0.5, 0.0155**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(ddim.betas.double(), compvis_betas, rtol=1e-5, atol=1e-7)
    ddim.set_timesteps(200)  # CompVis make_ddim_timesteps(uniform, 200) + 1
    assert ddim.timesteps.tolist() == list(range(996, 0, -5))
    assert float(ddim.final_alpha_cumprod) == pytest.approx(float(ddim.alphas_cumprod[0]))
    dpm = build_scheduler("dpm++", COMPVIS)
    set_timesteps(dpm, 20)
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2
    assert int(dpm.timesteps[0]) == 999 and len(dpm.timesteps) == 20
    ddpm = build_scheduler("ddpm", COMPVIS)
    ddpm.set_timesteps(1000)
    assert ddpm.timesteps.tolist() == list(range(999, -1, -1))
    for scheduler in (ddim, dpm, ddpm):
        assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.0155


def test_step_counts_the_scheduler_cannot_take_are_one_line_errors():
    with pytest.raises(GeoxaiError, match="--steps 1000"):
        check_steps(build_scheduler("ddim", COMPVIS), 1000, "ddim")
    with pytest.raises(GeoxaiError, match="--steps 0"):
        check_steps(build_scheduler("dpm++", COMPVIS), 0, "dpm++")
    with pytest.raises(GeoxaiError, match="--sampler 'euler'"):
        build_scheduler("euler", COMPVIS)
    check_steps(build_scheduler("ddpm", COMPVIS), 1000, "ddpm")


def test_grid_puts_each_original_beside_its_generations():
    originals = torch.zeros(2, 3, 12, 12)
    originals[1] = 0.5
    generations = [torch.ones(3, 3, 12, 12) * torch.tensor([1.0, 0, 0])[:, None, None],
                   [torch.rand(3, 24, 24)]]  # another size is resized; a short row is padded
    grid = np.asarray(original_vs_generations_grid(originals, generations, ncols=3, labels=None, padding=2))
    assert grid.shape == (2 * 14 + 2, 4 * 14 + 2, 3)
    tile = lambda row, col: grid[2 + row * 14:2 + row * 14 + 12, 2 + col * 14:2 + col * 14 + 12]  # noqa: E731
    assert (tile(0, 0) == 0).all() and (tile(1, 0) == 128).all()
    assert (tile(0, 3) == [255, 0, 0]).all()
    assert (tile(1, 3) == 255).all()  # missing generation: white
    black = torch.zeros(1, 3, 40, 40)
    labelled = np.asarray(original_vs_generations_grid(black, [black], ncols=1, labels=["q000007"]))
    assert labelled.shape == (44, 86, 3)
    assert labelled[2:42, 2:42].max() > 200 and labelled[2:42, 44:84].max() == 0  # text on the original only
    with pytest.raises(ValueError):
        original_vs_generations_grid(originals, generations[:1], ncols=3)
