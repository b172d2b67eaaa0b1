"""Sampling images from VPR descriptors: the diffusers-style pipeline over a trained geoxai LDM.

Models (UNet, conditioner, VAE), schedulers and the sampling loop are separate, as in diffusers: the
pipeline only wires a scheduler built on the training noise schedule to the trained networks.

Schedulers are built ``from_config`` on the checkpoint's noise schedule (CompVis "linear" =
diffusers ``scaled_linear``, 0.0015..0.0155, 1000 steps). Choices per sampler:

- ``dpm++``: DPM-Solver++ (2M), ``timestep_spacing="linspace"`` so the first step starts at the
  last training timestep (999, where the initial N(0, I) noise really lives), ``lower_order_final``
  (stable below 15 steps) and ``final_sigmas_type="zero"`` (the last step returns the clean x0).
- ``ddim``: eta 0 with CompVis' own discretisation, so 200 steps reproduce the thesis' sampler:
  ``timestep_spacing="leading"`` + ``steps_offset=1`` gives t = 1 + k * (1000 // steps), and
  ``set_alpha_to_one=False`` makes the last step land on alpha_cumprod[0] (CompVis' ``alphas_prev``).
  Identical to CompVis whenever ``steps`` divides 1000 (otherwise CompVis' ``range(0, 1000, c)``
  takes more steps than asked for, diffusers exactly ``steps``).
- ``ddpm``: ancestral sampling, ``timestep_spacing="trailing"`` (1000 steps = CompVis'
  999..0 chain exactly; fewer steps are respaced and still start at t = 999), posterior variance
  ``fixed_small`` (CompVis ``v_posterior=0``).
Latents are not bounded to [-1, 1], so ``clip_sample``/``thresholding`` are off everywhere.

Determinism: each item has its own ``torch.Generator``; its initial noise (and, for ``ddpm``, its
per-step noise) is drawn from that generator alone, on the generator's device (CPU by default) and
then moved. An image therefore depends only on (descriptor, generator seed), not on the batch it was
generated in, nor on the device the noise was drawn for.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torchvision.transforms.functional import to_pil_image
from tqdm.auto import tqdm

from geoxai.devices import autocast, resolve_device
from geoxai.errors import GeoxaiError, setting
from geoxai.ldm.autoencoder import decode, downsampling_factor

SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "dpm++": (DPMSolverMultistepScheduler, dict(
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", timestep_spacing="linspace", steps_offset=0,
        use_karras_sigmas=False, thresholding=False)),
    "ddim": (DDIMScheduler, dict(
        timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, clip_sample=False,
        thresholding=False)),
    "ddpm": (DDPMScheduler, dict(
        timestep_spacing="trailing", steps_offset=0, variance_type="fixed_small", clip_sample=False,
        thresholding=False)),
}
# The noise-schedule keys shared with training; everything else comes from SAMPLERS.
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type")


class NonFiniteGeneration(GeoxaiError):
    """A batch whose latents or images hold NaN or infinities: stopped before anything is returned,
    so a NaN never becomes a run of black images."""


def build_scheduler(sampler: str, noise_scheduler_config: dict[str, Any]) -> SchedulerMixin:
    """The inference scheduler ``sampler`` on the training noise schedule."""
    if sampler not in SAMPLERS:
        raise GeoxaiError(f"{setting('sampler')} {sampler!r}: unknown; use one of {', '.join(SAMPLERS)}")
    cls, options = SAMPLERS[sampler]
    schedule = {k: v for k, v in noise_scheduler_config.items() if k in _SCHEDULE_KEYS}
    return cls.from_config({**schedule, **options})


def set_timesteps(scheduler: SchedulerMixin, steps: int, device: str | torch.device | None = None) -> None:
    """``scheduler.set_timesteps``, without numpy 2's notice about ``torch.Tensor.__array__`` that
    DPM-Solver's ``np.array(tensor)`` triggers in every call (harmless: the array is copied)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        scheduler.set_timesteps(steps, device=device)


def check_steps(scheduler: SchedulerMixin, steps: int, sampler: str = "", names: tuple[str, str] | None = None,
                ) -> None:
    """Refuse step counts the scheduler cannot discretise (a one-line error, not an IndexError).

    ``names``: how the step and sampler settings are spelled in the error (default ``--steps`` and
    ``--sampler`` on the command line; a training config passes its ``logging.*`` keys)."""
    steps_name, sampler_name = names or (setting("steps"), setting("sampler"))
    train_steps = scheduler.config.num_train_timesteps
    if steps < 1:
        raise GeoxaiError(f"{steps_name} {steps}: must be at least 1")
    if steps > train_steps:
        raise GeoxaiError(f"{steps_name} {steps}: at most {train_steps} (the training timesteps)")
    set_timesteps(scheduler, steps)
    if int(scheduler.timesteps.max()) >= train_steps:  # DDIM's CompVis offset at steps = train_steps
        raise GeoxaiError(f"{steps_name} {steps}: too many for {sampler_name} {sampler or 'this sampler'} "
                          f"(its spacing overshoots t={train_steps - 1}); use fewer steps or ddpm")


def _generators(generator: torch.Generator | Sequence[torch.Generator] | None,
                batch: int) -> list[torch.Generator] | None:
    if generator is None or isinstance(generator, torch.Generator):
        return None if generator is None else [generator] * batch
    generators = list(generator)
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for {batch} descriptors; pass one per item")
    return generators


def initial_noise(shape: Sequence[int], generators: list[torch.Generator] | None,
                  device: torch.device) -> torch.Tensor:
    """N(0, I) latents [B, *shape], item i drawn from ``generators[i]`` on its own device, then moved."""
    batch = shape[0]
    if generators is None:
        return torch.randn(tuple(shape), device=device)
    noise = [torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in generators[:batch]]
    return torch.stack(noise).to(device)


class DescriptorDiffusionPipeline:
    """Generate images from descriptors [B, D] with a trained descriptor-conditioned LDM.

    ``predict_noise(latents, t, descriptors, guidance)`` is the conditioned noise prediction
    (classifier-free guidance included) of ``geoxai.ldm.module.LDMComponents``; the pipeline only
    runs the scheduler loop around it and decodes with the frozen VAE. A plain class rather than a
    ``diffusers.DiffusionPipeline`` subclass: the conditioner is an ordinary ``nn.Module``, which
    diffusers' device and offloading machinery does not expect.
    """

    def __init__(self, unet: torch.nn.Module, conditioner: torch.nn.Module, vae: torch.nn.Module,
                 scheduler: SchedulerMixin, scale_factor: float, image_size: int,
                 predict_noise: Callable[..., torch.Tensor], progress: bool = False) -> None:
        self.unet, self.conditioner, self.vae, self.scheduler = unet, conditioner, vae, scheduler
        self.scale_factor, self.image_size = float(scale_factor), int(image_size)
        self.predict_noise = predict_noise
        self.progress = progress

    @classmethod
    def from_components(cls, components: Any, vae: torch.nn.Module, sampler: str = "dpm++",
                        device: str | torch.device = "cpu", progress: bool = False,
                        ) -> "DescriptorDiffusionPipeline":
        """A pipeline from ``load_components(...)`` plus the frozen VAE, on ``device``."""
        pipeline = cls(unet=components.unet, conditioner=components.conditioner, vae=vae,
                       scheduler=build_scheduler(sampler, components.noise_scheduler_config),
                       scale_factor=components.scale_factor,
                       image_size=int(components.config["data"]["image_size"]),
                       predict_noise=components.predict_noise, progress=progress)
        return pipeline.to(device)

    def to(self, device: str | torch.device) -> "DescriptorDiffusionPipeline":
        """Move the networks (eval mode, frozen); channels_last on CUDA for faster bf16 convolutions."""
        device = resolve_device(device)
        memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        for module in (self.unet, self.conditioner, self.vae):
            module.eval().requires_grad_(False).to(device)
        for module in (self.unet, self.vae):
            module.to(memory_format=memory_format)
        return self

    @property
    def device(self) -> torch.device:
        """Where the UNet (hence the sampling loop) runs."""
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, h, w) of the latents the UNet denoises for ``image_size`` images."""
        factor, size = downsampling_factor(self.vae), self.image_size
        if size <= 0 or size % factor:
            raise GeoxaiError(f"image size {size}: must be a positive multiple of the autoencoder's "
                              f"downsampling factor {factor} (data.image_size in the training config)")
        return (self.unet.config.in_channels, size // factor, size // factor)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in the UNet's (scaled) space -> images [B, 3, H, W] in [0, 1]."""
        return decode(self.vae, latents / self.scale_factor).float().clamp(0, 1)

    @torch.no_grad()
    def __call__(self, descriptors: torch.Tensor, num_inference_steps: int = 20, guidance: float = 1.0,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 output: Literal["pt", "pil"] = "pt") -> torch.Tensor | list:
        """Images generated from ``descriptors`` [B, D]: float [B, 3, H, W] in [0, 1] on the CPU
        (``output="pt"``) or PIL images (``"pil"``).

        ``generator``: one ``torch.Generator`` per item makes each image independent of the batch.
        ``guidance``: classifier-free guidance scale; 1 is the plain conditional model.
        """
        if output not in ("pt", "pil"):
            raise ValueError(f"output must be 'pt' or 'pil' (got {output!r})")
        if not math.isfinite(guidance):
            raise GeoxaiError(f"{setting('guidance')} {guidance}: must be a finite number (1 is the plain "
                              "conditional model)")
        device = self.device
        descriptors = descriptors.to(device=device, dtype=torch.float32)
        batch = descriptors.shape[0]
        generators = _generators(generator, batch)

        set_timesteps(self.scheduler, num_inference_steps, device=device)
        latents = initial_noise((batch, *self.latent_shape), generators, device)
        latents = latents * self.scheduler.init_noise_sigma
        if device.type == "cuda":
            latents = latents.contiguous(memory_format=torch.channels_last)

        for t in tqdm(self.scheduler.timesteps, desc="denoising", leave=False, disable=not self.progress):
            model_input = self.scheduler.scale_model_input(latents, t)
            with autocast(device):
                noise = self.predict_noise(model_input, t, descriptors, guidance)
            # The solver update stays in float32 (bf16 rounding compounds over the steps).
            latents = self.scheduler.step(noise.float(), t, latents, generator=generators).prev_sample

        if not torch.isfinite(latents).all():  # one check per batch, not per step (each is a device sync)
            raise NonFiniteGeneration(
                f"generation gave NaN or infinite latents (guidance {guidance}, "
                f"{num_inference_steps} steps): the model's weights or its noise schedule (diffusion.* in its "
                "training config) hold non-finite values; check the checkpoint")
        with autocast(device):
            images = self.decode_latents(latents)
        images = images.float().cpu()
        if not torch.isfinite(images).all():
            raise NonFiniteGeneration("the autoencoder decoded NaN or infinite pixels from finite latents: its "
                                      "weights (autoencoder.path in the training config) or the latent scale "
                                      f"factor ({self.scale_factor}) are not finite or not usable")
        if output == "pil":
            return [to_pil_image(image) for image in images.mul(255).round().to(torch.uint8)]
        return images
