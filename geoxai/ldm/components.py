"""What sampling needs from a trained descriptor-conditioned LDM, whichever file it came from.

``LDMComponents`` is built by ``geoxai.ldm.loading`` from a Lightning checkpoint or an exported
folder, and by a live ``LatentDiffusion`` for training previews; the pipeline only sees this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from geoxai.ldm.conditioning import DescriptorConditioner


@dataclass
class LDMComponents:
    """What sampling needs from a trained model."""

    unet: UNet2DConditionModel
    conditioner: DescriptorConditioner
    scale_factor: float
    config: dict[str, Any]
    noise_scheduler_config: dict[str, Any]
    context_dim: int
    source: str = field(default="", repr=False)
    # identities of the frozen models the UNet was trained with (embedder, autoencoder); empty for
    # checkpoints written before they were recorded
    identities: dict[str, str] = field(default_factory=dict, repr=False)
    # the guidance scale chosen for this model on validation places (an export's `guidance:`), if any
    guidance: float | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "LDMComponents":
        self.unet.to(device=device, dtype=dtype)
        self.conditioner.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "LDMComponents":
        self.unet.eval()
        self.conditioner.eval()
        return self

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, t: torch.Tensor | int | float, descriptors: torch.Tensor,
                      guidance: float = 1.0) -> torch.Tensor:
        """The model output (noise, or v for v_prediction models) with classifier-free guidance.

        ``uncond + g * (cond - uncond)`` with the zero descriptor as the null condition, both
        branches in one batched UNet call; ``g == 1`` is one plain conditional call.
        """
        batch = latents.shape[0]
        descriptors = descriptors.to(latents.device)
        self.conditioner.check_dim(descriptors)
        t = torch.as_tensor(t, device=latents.device)
        t = t.expand(batch) if t.ndim == 0 else t.to(latents.device)
        if guidance == 1.0:
            return self.unet(latents, t, **self.conditioner(descriptors)).sample
        null = torch.zeros_like(descriptors)
        both = self.unet(torch.cat([latents, latents]), torch.cat([t, t]),
                         **self.conditioner(torch.cat([null, descriptors]))).sample
        uncond, cond = both.chunk(2)
        return uncond + guidance * (cond - uncond)
