"""The denoising UNet: CompVis ``UNetModel`` settings mapped onto diffusers' ``UNet2DConditionModel``.

Configs keep the CompVis vocabulary of the thesis (``model_channels``, ``channel_mult``,
``attention_resolutions`` as downsampling factors, ...) so a latent-diffusion yaml translates line by
line; the model itself is diffusers', so the weights export to and load from the standard layout.

The mapping, level by level (level ``i`` works at downsampling factor ``2**i``):
- width ``model_channels * channel_mult[i]`` -> ``block_out_channels[i]``;
- attention when ``2**i`` is in ``attention_resolutions`` -> ``CrossAttnDownBlock2D`` /
  ``CrossAttnUpBlock2D`` (a SpatialTransformer: self-attention, cross-attention to the context,
  feed-forward), else ``DownBlock2D`` / ``UpBlock2D``; the middle is ``UNetMidBlock2DCrossAttn``;
- ``num_res_blocks`` -> ``layers_per_block`` (the up path has one more, in both libraries);
- ``num_heads`` (or ``num_head_channels``) -> heads per level, which diffusers, for historical
  reasons, reads from ``attention_head_dim``;
- ``use_scale_shift_norm`` -> ``resnet_time_scale_shift="scale_shift"``;
- ``resblock_updown`` -> ``ResnetDownsampleBlock2D`` / ``ResnetUpsampleBlock2D`` at levels
  without attention. Gap: diffusers has no block with both a SpatialTransformer and res-block
  resampling, so attention levels resample with a strided / nearest+conv layer as in
  ``resblock_updown: false``. The conditioning path is unchanged; the resampler differs.
Attention runs through PyTorch SDPA (diffusers' default ``AttnProcessor2_0``).
"""

from __future__ import annotations

from typing import Any, Mapping

from diffusers import UNet2DConditionModel

from geoxai.errors import GeoxaiError

UNET_DEFAULTS: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": None,  # default: in_channels
    "sample_size": None,  # latent side; default: data.image_size / autoencoder downsampling
    "model_channels": 192,
    "channel_mult": [1, 2, 2, 4, 4],
    "attention_resolutions": [1, 2, 4, 8],  # downsampling factors, not pixel sizes
    "num_res_blocks": 2,
    "num_heads": 8,
    "num_head_channels": -1,  # > 0: heads = width // num_head_channels (overrides num_heads)
    "transformer_depth": 1,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_linear_in_transformer": False,
    "norm_num_groups": 32,
    "dropout": 0.0,
}


def unet_settings(config: Mapping[str, Any] | None, where: str = "unet") -> dict[str, Any]:
    """Validate a ``unet:`` section (unknown keys are errors)."""
    from geoxai.config import merge

    return merge(UNET_DEFAULTS, dict(config or {}), where)


def attention_levels(settings: Mapping[str, Any]) -> list[bool]:
    """Per level, whether it has (cross-)attention: its downsampling factor is listed."""
    factors = {int(f) for f in settings["attention_resolutions"]}
    return [2**level in factors for level in range(len(settings["channel_mult"]))]


def diffusers_unet_kwargs(unet_config: Mapping[str, Any], context_dim: int,
                          class_embed_dim: int | None = None) -> dict[str, Any]:
    """``UNet2DConditionModel`` constructor arguments for a CompVis-style ``unet:`` section."""
    s = unet_settings(unet_config)
    widths = [int(s["model_channels"]) * int(m) for m in s["channel_mult"]]
    groups = int(s["norm_num_groups"])
    for width in widths:
        if width % groups:
            raise GeoxaiError(f"unet: width {width} (model_channels x channel_mult) is not divisible by "
                              f"norm_num_groups {groups}; change unet.model_channels or unet.norm_num_groups")
    if int(s["num_head_channels"]) > 0:
        heads = [max(1, w // int(s["num_head_channels"])) for w in widths]
    else:
        heads = [int(s["num_heads"])] * len(widths)
    attention = attention_levels(s)
    for width, head, attn in zip(widths, heads, attention, strict=True):
        if attn and width % head:
            raise GeoxaiError(f"unet: width {width} is not divisible into {head} attention heads; "
                              "change unet.num_heads or unet.num_head_channels")
    plain_down = "ResnetDownsampleBlock2D" if s["resblock_updown"] else "DownBlock2D"
    plain_up = "ResnetUpsampleBlock2D" if s["resblock_updown"] else "UpBlock2D"
    down = tuple("CrossAttnDownBlock2D" if a else plain_down for a in attention)
    up = tuple("CrossAttnUpBlock2D" if a else plain_up for a in reversed(attention))
    kwargs: dict[str, Any] = dict(
        sample_size=s["sample_size"],
        in_channels=int(s["in_channels"]),
        out_channels=int(s["out_channels"] or s["in_channels"]),
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(widths),
        layers_per_block=int(s["num_res_blocks"]),
        transformer_layers_per_block=int(s["transformer_depth"]),
        attention_head_dim=tuple(heads),  # diffusers' name for the number of heads
        cross_attention_dim=int(context_dim),
        resnet_time_scale_shift="scale_shift" if s["use_scale_shift_norm"] else "default",
        use_linear_projection=bool(s["use_linear_in_transformer"]),
        norm_num_groups=groups,
        dropout=float(s["dropout"]),
    )
    if class_embed_dim is not None:
        kwargs.update(class_embed_type="projection", projection_class_embeddings_input_dim=int(class_embed_dim))
    return kwargs


def build_unet(unet_config: Mapping[str, Any], context_dim: int,
               class_embed_dim: int | None = None) -> UNet2DConditionModel:
    """A randomly initialised ``UNet2DConditionModel`` whose cross-attention reads ``context_dim``.

    ``class_embed_dim`` adds a projection of a ``class_labels`` vector to the time embedding (FiLM
    conditioning of every res-block, as RCDM does).
    """
    return UNet2DConditionModel(**diffusers_unet_kwargs(unet_config, context_dim, class_embed_dim))
