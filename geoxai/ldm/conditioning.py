"""How a VPR descriptor enters the UNet: the keyword arguments of ``UNet2DConditionModel.forward``.

Four modes, one interface (``conditioner(descriptors) -> dict(encoder_hidden_states, class_labels)``):

- ``crossattn`` (the thesis): the descriptor itself is the one context token ``[B, 1, D]``. With one
  key the attention softmax is 1 everywhere, so each cross-attention layer adds the same projection
  of the descriptor at every position: a learned per-layer bias, spatially uniform.
- ``bias``: what ``crossattn`` computes, written out: each cross-attention layer adds
  ``to_out(to_v(descriptor))`` at every position, without queries, keys or a softmax
  (``DescriptorBiasProcessor``). Same parameters and same function as ``crossattn`` (a test checks
  they agree numerically), cheaper per step; ``to_q``/``to_k`` stay in the state dict, frozen, so the
  weights load into either mode and into a plain ``UNet2DConditionModel``.
- ``tokens``: an MLP maps the descriptor to ``K`` context tokens ``[B, K, D]``; with several keys the
  attention weights vary over positions, so different image regions can read different tokens.
- ``film``: the descriptor is projected into the time embedding (``class_embed_type="projection"``),
  which scales and shifts every res-block, as RCDM does; cross-attention sees a learned constant
  null token so the UNet keeps its layout.

The zero descriptor is the null condition of classifier-free guidance in every mode (descriptors
are L2-normalised, so zero never occurs as a real one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geoxai.errors import GeoxaiError, did_you_mean

MODES = ("crossattn", "bias", "tokens", "film")


class DescriptorBiasProcessor:
    """Cross-attention with a single context token, computed as what it is: a per-layer additive bias.

    With one key the softmax is 1 at every query, so attention returns the token's value at every
    position; this processor skips queries, keys and the softmax and adds ``to_out(to_v(token))``.
    A drop-in diffusers attention processor for the ``attn2`` layers of ``UNet2DConditionModel``.
    """

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1:
            raise GeoxaiError("conditioning.mode bias: cross-attention needs exactly one context token "
                              f"(got {None if encoder_hidden_states is None else encoder_hidden_states.shape[1]})")
        residual = hidden_states
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        bias = attn.to_out[1](attn.to_out[0](attn.to_v(encoder_hidden_states)))  # [B, 1, C]
        if hidden_states.ndim == 4:  # [B, C, H, W] inputs (not used by the UNet's transformer blocks)
            out = bias.transpose(1, 2)[..., None].expand_as(hidden_states)
        else:
            out = bias.expand(-1, hidden_states.shape[1], -1)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class DescriptorConditioner(nn.Module):
    """Turns descriptors ``[B, D]`` into the UNet's conditioning keyword arguments."""

    def __init__(self, mode: str = "crossattn", descriptor_dim: int = 512, num_tokens: int = 4,
                 hidden_dim: int | None = None):
        super().__init__()
        if mode not in MODES:

            raise GeoxaiError(f"conditioning.mode {mode!r}: use one of {', '.join(MODES)}."
                              f"{did_you_mean(str(mode), list(MODES))}")
        if mode == "tokens" and int(num_tokens) < 1:
            raise GeoxaiError(f"conditioning.num_tokens {num_tokens}: must be at least 1 in tokens mode")
        self.mode = mode
        self.descriptor_dim = int(descriptor_dim)
        self.num_tokens = int(num_tokens) if mode == "tokens" else 1
        self.hidden_dim = int(hidden_dim or descriptor_dim)
        # Follows .to(device) so null descriptors land on the model's device even without parameters.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        if mode == "tokens":
            self.to_tokens = nn.Sequential(
                nn.Linear(self.descriptor_dim, self.hidden_dim),
                nn.SiLU(),
                nn.Linear(self.hidden_dim, self.num_tokens * self.descriptor_dim),
            )
            # A learned per-token offset keeps the tokens distinct even for similar descriptors.
            self.token_embedding = nn.Parameter(torch.randn(self.num_tokens, self.descriptor_dim) * 0.02)
        elif mode == "film":
            self.null_context = nn.Parameter(torch.randn(1, 1, self.descriptor_dim) * 0.02)

    @property
    def context_dim(self) -> int:
        """Width of the cross-attention context (the UNet's ``cross_attention_dim``)."""
        return self.descriptor_dim

    @property
    def class_embed_dim(self) -> int | None:
        """Width of ``class_labels`` the UNet must project (FiLM mode), else None."""
        return self.descriptor_dim if self.mode == "film" else None

    def config(self) -> dict[str, Any]:
        """Constructor arguments (saved beside the weights on export)."""
        return {"mode": self.mode, "descriptor_dim": self.descriptor_dim, "num_tokens": self.num_tokens,
                "hidden_dim": self.hidden_dim}

    def null_descriptors(self, batch_size: int) -> torch.Tensor:
        """The null condition: zero descriptors ``[batch_size, D]``."""
        return torch.zeros(batch_size, self.descriptor_dim, device=self._anchor.device)

    def check_dim(self, descriptors: torch.Tensor) -> None:
        if descriptors.ndim != 2 or descriptors.shape[-1] != self.descriptor_dim:
            raise GeoxaiError(f"descriptor dim {descriptors.shape[-1] if descriptors.ndim else 0} "
                              f"(shape {tuple(descriptors.shape)}) differs from the model's context dim "
                              f"{self.descriptor_dim}; use the embedder the model was trained with")

    def prepare_unet(self, unet: nn.Module) -> nn.Module:
        """Fit ``unet`` to this mode: in ``bias`` mode every cross-attention layer gets the
        ``DescriptorBiasProcessor`` and its query/key projections are frozen (they never receive a
        gradient from one token anyway). Other modes leave the UNet as it is. Returns ``unet``."""
        if self.mode != "bias":
            return unet
        processors = {name: (DescriptorBiasProcessor() if name.endswith("attn2.processor") else processor)
                      for name, processor in unet.attn_processors.items()}
        unet.set_attn_processor(processors)
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                for projection in (module.to_q, module.to_k):
                    projection.requires_grad_(False)
        return unet

    def forward(self, descriptors: torch.Tensor) -> dict[str, torch.Tensor | None]:
        self.check_dim(descriptors)
        if self.mode in ("crossattn", "bias"):
            return {"encoder_hidden_states": descriptors[:, None, :], "class_labels": None}
        if self.mode == "tokens":
            tokens = self.to_tokens(descriptors).view(-1, self.num_tokens, self.descriptor_dim)
            return {"encoder_hidden_states": tokens + self.token_embedding.to(tokens.dtype),
                    "class_labels": None}
        context = self.null_context.to(descriptors.dtype).expand(descriptors.shape[0], -1, -1)
        return {"encoder_hidden_states": context, "class_labels": descriptors}
