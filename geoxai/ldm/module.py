"""The descriptor-conditioned latent diffusion model: training (LightningModule) and loading.

Training follows the CompVis recipe: each step draws ``z = mean + std * eps`` from cached posterior
moments, scales it (``scale_by_std``: 1/std of the first batch, kept as a buffer), adds noise at a
uniform timestep of the DDPM schedule and regresses the noise (or v) with an L1 / L2 loss. EMA
weights (diffusers ``EMAModel``) are what sampling uses.

Loading a trained model for sampling lives in ``geoxai.ldm.loading``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr

from geoxai.config import merge
from geoxai.errors import GeoxaiError
from geoxai.ldm.autoencoder import sample_latents
from geoxai.ldm.components import LDMComponents
from geoxai.ldm.conditioning import DescriptorConditioner
from geoxai.ldm.unet import UNET_DEFAULTS, build_unet
from geoxai.trainer import check_finite_loss, stage_info

CONDITIONING_DEFAULTS: dict[str, Any] = {
    "mode": "crossattn",  # crossattn (the thesis) | bias | tokens | film
    "num_tokens": 4,  # tokens mode: context tokens made from one descriptor
    "hidden_dim": None,  # tokens mode: MLP width (default: the descriptor dim)
    "p_uncond": 0.0,  # probability of the zero (null) descriptor, for classifier-free guidance
}
DIFFUSION_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0155,
    "beta_schedule": "scaled_linear",  # CompVis "linear": linspace(sqrt(start), sqrt(end)) ** 2
    "prediction_type": "epsilon",  # epsilon | v_prediction
    "loss": "l1",  # l1 | l2
    "snr_gamma": None,  # Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); null = uniform
    "scale_by_std": True,  # scale factor = 1 / std of the first training batch's latents
    "scale_factor": None,  # used when scale_by_std is false (default: the autoencoder's scaling_factor)
}
OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",  # adamw | adam
    "base_lr": 5.0e-5,
    "scale_lr": False,  # true: lr = base_lr x batch x devices x accumulation (CompVis default)
    "warmup_steps": 10000,  # LambdaLinear warm-up, in optimizer steps
    "warmup_start": 1.0e-6,  # LR factor at step 0 (f_start); it rises linearly to 1 (f_max)
    "weight_decay": 0.01,  # torch AdamW default, as in CompVis
    "betas": [0.9, 0.999],
    "use_ema": True,
    "ema_decay": 0.9999,
}
SPEED_DEFAULTS: dict[str, Any] = {
    # How training runs, not what it learns (benchmarks/ldm_throughput.py measures both on a device).
    "channels_last": "auto",  # auto: on a GPU only | true | false
    "compile": False,  # torch.compile the UNet in place (state dict keys unchanged); first steps compile
}
MODEL_SECTIONS = {"unet": UNET_DEFAULTS, "conditioning": CONDITIONING_DEFAULTS,
                  "diffusion": DIFFUSION_DEFAULTS, "optim": OPTIM_DEFAULTS, "speed": SPEED_DEFAULTS}
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")


def model_settings(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The model sections of a config (unet, conditioning, diffusion, optim), validated and filled."""
    out = {name: merge(defaults, dict(config.get(name) or {}), name) for name, defaults in MODEL_SECTIONS.items()}
    diffusion = out["diffusion"]
    if diffusion["prediction_type"] not in ("epsilon", "v_prediction"):
        raise GeoxaiError(f"diffusion.prediction_type {diffusion['prediction_type']!r}: use epsilon or v_prediction")
    if diffusion["loss"] not in ("l1", "l2"):
        raise GeoxaiError(f"diffusion.loss {diffusion['loss']!r}: use l1 or l2")
    if diffusion["snr_gamma"] is not None and not float(diffusion["snr_gamma"]) > 0:
        raise GeoxaiError(f"diffusion.snr_gamma {diffusion['snr_gamma']}: use a positive number (5 is usual) or null")
    if not diffusion["scale_by_std"] and diffusion["scale_factor"] is None:
        raise GeoxaiError("diffusion.scale_factor is not set and diffusion.scale_by_std is false; set one of them")
    if out["optim"]["optimizer"] not in ("adamw", "adam"):
        raise GeoxaiError(f"optim.optimizer {out['optim']['optimizer']!r}: use adamw or adam")
    if out["speed"]["channels_last"] not in ("auto", True, False):
        raise GeoxaiError(f"speed.channels_last {out['speed']['channels_last']!r}: use auto, true or false")
    if not isinstance(out["speed"]["compile"], bool):
        raise GeoxaiError(f"speed.compile {out['speed']['compile']!r}: use true or false")
    if not 0.0 <= float(out["conditioning"]["p_uncond"]) < 1.0:
        raise GeoxaiError(f"conditioning.p_uncond {out['conditioning']['p_uncond']}: must be in [0, 1)")
    return out


def noise_scheduler_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments shared by diffusers' schedulers (DDPM, DDIM, DPM-Solver) for this model."""
    diffusion = model_settings(config)["diffusion"]
    return {key: diffusion[key] for key in SCHEDULER_KEYS}


def make_noise_scheduler(config: Mapping[str, Any]) -> DDPMScheduler:
    """The training schedule; ``clip_sample`` is off because latents are not bounded to [-1, 1]."""
    return DDPMScheduler(**noise_scheduler_config(config), clip_sample=False)


class LambdaLinear:
    """CompVis' LambdaLinearScheduler with one cycle: the LR factor rises linearly from ``f_start``
    to ``f_max`` over ``warmup_steps``, then stays at ``f_max``. A class (not a lambda) so that
    ``LambdaLR.state_dict`` stores its settings.

    Kept rather than a library schedule: diffusers' ``constant_with_warmup`` always starts at 0, and
    torch's ``LinearLR`` refuses ``start_factor`` 0, while ``optim.warmup_start`` may be anything in
    [0, 1]; checkpoints of earlier runs also hold this scheduler's state."""

    def __init__(self, warmup_steps: int, f_start: float = 1e-6, f_max: float = 1.0):
        self.warmup_steps, self.f_start, self.f_max = int(warmup_steps), float(f_start), float(f_max)

    def __call__(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.f_max
        return self.f_start + (self.f_max - self.f_start) * step / self.warmup_steps


def effective_lr(optim: Mapping[str, Any], batch_size: int, devices: int, accumulation: int) -> float:
    """The learning rate actually used: ``base_lr``, times batch x devices x accumulation when
    ``scale_lr`` is on (CompVis' launcher does this by default; it often prevents convergence)."""
    base = float(optim["base_lr"])
    return base * batch_size * devices * accumulation if optim["scale_lr"] else base


class LatentDiffusion(pl.LightningModule):
    """UNet + conditioner trained on cached latent moments and descriptors.

    ``config`` is the full training config (stored in the checkpoint's ``hyper_parameters``);
    ``context_dim`` is the descriptor dimension of the embedder; ``identities`` (embedder and
    autoencoder identity hashes) are stored with it, so sampling and ``--resume`` can refuse a
    weights file that was replaced at the same path.
    """

    def __init__(self, config: dict[str, Any], context_dim: int, identities: dict[str, str] | None = None):
        super().__init__()
        self.save_hyperparameters()
        settings = model_settings(config)
        self.settings = settings
        self.conditioner = build_conditioner(settings["conditioning"], context_dim)
        self.unet = self.conditioner.prepare_unet(
            build_unet(settings["unet"], self.conditioner.context_dim, self.conditioner.class_embed_dim))
        self.noise_scheduler = make_noise_scheduler(config)
        diffusion = settings["diffusion"]
        initial = float("nan") if diffusion["scale_by_std"] else float(diffusion["scale_factor"])
        self.register_buffer("scale_factor", torch.tensor(initial, dtype=torch.float32))
        optim = settings["optim"]
        self.ema = EMAModel(self.denoiser_parameters(), decay=float(optim["ema_decay"])) if optim["use_ema"] else None
        self._ema_step_seen = 0
        self.effective_lr: float | None = None
        self.last_loss: float | None = None  # unscaled loss of the latest micro-batch (loss.csv)

    @property
    def channels_last(self) -> bool:
        """Whether the UNet runs in channels_last memory format (``speed.channels_last``)."""
        choice = self.settings["speed"]["channels_last"]
        return self.device.type == "cuda" if choice == "auto" else bool(choice)

    def denoiser_parameters(self) -> list[torch.nn.Parameter]:
        """Trained parameters in a fixed order (UNet, then conditioner): the EMA's order."""
        return [*self.unet.parameters(), *self.conditioner.parameters()]

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(device=self.device)
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if self.settings["speed"]["compile"]:
            self.unet.compile()  # in place: parameters and checkpoint keys stay the UNet's

    def on_train_start(self) -> None:
        self._ema_step_seen = self.global_step
        for logger in self.loggers:
            logger.log_metrics({"optim/lr_effective": float(self.effective_lr or 0.0)}, step=self.global_step)

    def latents_from_batch(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A fresh posterior sample of the batch's latents, times the scale factor."""
        z = sample_latents(batch["moments"].to(self.device))
        if torch.isnan(self.scale_factor):
            self._set_scale_factor(z)
        z = z * self.scale_factor
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return z

    @torch.no_grad()
    def _set_scale_factor(self, z: torch.Tensor) -> None:
        gathered = self.all_gather(z) if self._trainer is not None and self._trainer.world_size > 1 else z
        std = gathered.float().flatten().std()
        self.scale_factor.copy_(1.0 / std)
        stage_info(f"scale_by_std: latent std {std.item():.4f} -> scale factor "
                                    f"{self.scale_factor.item():.5f}")
        for logger in self.loggers:
            logger.log_metrics({"diffusion/scale_factor": self.scale_factor.item()}, step=self.global_step)

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The denoising loss of one batch (noise, timesteps and condition dropout drawn here)."""
        z = self.latents_from_batch(batch)
        descriptors = batch["descriptor"].to(self.device, torch.float32)
        p_uncond = float(self.settings["conditioning"]["p_uncond"])
        if p_uncond > 0:
            drop = torch.rand(descriptors.shape[0], device=self.device) < p_uncond
            descriptors = torch.where(drop[:, None], torch.zeros_like(descriptors), descriptors)
        noise = torch.randn_like(z)
        steps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (z.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(z, noise, steps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(z, noise, steps)
        else:
            target = noise
        prediction = self.unet(noisy, steps, **self.conditioner(descriptors)).sample
        loss_fn = F.l1_loss if self.settings["diffusion"]["loss"] == "l1" else F.mse_loss
        per_sample = loss_fn(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * self.loss_weights(steps)).mean()

    def loss_weights(self, steps: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weights: 1, or Min-SNR-gamma, which stops the easy low-noise steps from
        dominating the gradient (the paper reports ~3x faster convergence)."""
        gamma = self.settings["diffusion"]["snr_gamma"]
        if gamma is None:
            return torch.ones(steps.shape, device=steps.device)
        snr = compute_snr(self.noise_scheduler, steps).float()
        clipped = torch.clamp(snr, max=float(gamma))
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        check_finite_loss(loss, self.global_step, "", "lower optim.base_lr or check the data")
        self.last_loss = float(loss.detach())
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["descriptor"].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One EMA update per optimizer step (not per micro-batch under gradient accumulation).
        if self.ema is not None and self.global_step != self._ema_step_seen:
            self.ema.step(self.denoiser_parameters())
            self._ema_step_seen = self.global_step

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.settings["optim"]
        trainer = self.trainer
        batch_size = int(self.hparams.config.get("data", {}).get("batch_size", 1))
        self.effective_lr = effective_lr(optim, batch_size, trainer.world_size, trainer.accumulate_grad_batches)
        if optim["scale_lr"]:
            how = (f"base_lr {optim['base_lr']:.2e} x batch {batch_size} x devices {trainer.world_size} "
                   f"x accumulation {trainer.accumulate_grad_batches} (optim.scale_lr: true)")
        else:
            how = "base_lr, not scaled (optim.scale_lr: false)"
        stage_info(f"learning rate: {self.effective_lr:.3e} = {how}")
        cls = torch.optim.AdamW if optim["optimizer"] == "adamw" else torch.optim.Adam
        optimizer = cls(self.denoiser_parameters(), lr=self.effective_lr, betas=tuple(optim["betas"]),
                        weight_decay=float(optim["weight_decay"]))
        warmup = LambdaLinear(int(optim["warmup_steps"]), float(optim["warmup_start"]), 1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            state = self.ema.state_dict()
            state["shadow_params"] = [p.detach().cpu() for p in state["shadow_params"]]
            checkpoint["ema"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    @contextlib.contextmanager
    def ema_scope(self) -> Iterator[None]:
        """Temporarily run with the EMA weights (for previews); the trained weights come back after."""
        if self.ema is None:
            yield
            return
        params = self.denoiser_parameters()
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def components(self) -> LDMComponents:
        """An ``LDMComponents`` view of this module's live UNet and conditioner (no copy)."""
        return LDMComponents(unet=self.unet, conditioner=self.conditioner,
                             scale_factor=float(self.scale_factor.item()), config=dict(self.hparams.config),
                             noise_scheduler_config=noise_scheduler_config(self.hparams.config),
                             context_dim=int(self.hparams.context_dim),
                             identities=dict(self.hparams.get("identities") or {}))


def build_conditioner(conditioning: Mapping[str, Any], context_dim: int) -> DescriptorConditioner:
    return DescriptorConditioner(mode=conditioning["mode"], descriptor_dim=int(context_dim),
                                 num_tokens=int(conditioning["num_tokens"]), hidden_dim=conditioning["hidden_dim"])


