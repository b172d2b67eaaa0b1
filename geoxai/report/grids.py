"""Image grids for reports: each original photo beside the images generated from its descriptor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

ImageLike = torch.Tensor | Image.Image


def _size(image: ImageLike) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return (image.height, image.width)
    return (int(image.shape[-2]), int(image.shape[-1]))


def _as_tensor(image: ImageLike, size: tuple[int, int]) -> torch.Tensor:
    """A float [3, H, W] tensor in [0, 1] at ``size`` (PIL, uint8 and float tensors accepted)."""
    if isinstance(image, Image.Image):
        image = pil_to_tensor(image.convert("RGB"))
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    image = image.detach().float().cpu()
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [3, H, W] (got shape {tuple(image.shape)})")
    image = image.expand(3, -1, -1)
    if tuple(image.shape[1:]) != size:
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                              align_corners=False)[0]
    return image.clamp(0, 1)


def _label(tile: torch.Tensor, text: str) -> torch.Tensor:
    """``text`` on a dark band at the top of ``tile`` (so ids stay readable on any photo)."""
    pil = to_pil_image(tile)
    draw = ImageDraw.Draw(pil)
    box = draw.textbbox((2, 1), text)
    draw.rectangle((0, 0, pil.width, box[3] + 2), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))
    return pil_to_tensor(pil).float() / 255.0


def original_vs_generations_grid(originals: Sequence[ImageLike] | torch.Tensor,
                                 generations_per_original: Sequence[Sequence[ImageLike] | torch.Tensor],
                                 ncols: int, labels: Sequence[str] | None = None,
                                 padding: int = 2) -> Image.Image:
    """One row per original: the original, then its first ``ncols`` generations.

    Every tile is resized to the first original's size; a row with fewer generations is padded with
    white tiles, so a grid always shows what is missing. ``labels`` (one per row, e.g. query ids)
    are written on the original's tile when tiles are at least 32 px tall (smaller ones would be
    covered by the text).
    """
    if len(originals) != len(generations_per_original):
        raise ValueError(f"{len(originals)} originals but {len(generations_per_original)} lists of generations")
    if len(originals) == 0:
        raise ValueError("no originals to show")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1 (got {ncols})")
    if labels is not None and len(labels) != len(originals):
        raise ValueError(f"{len(labels)} labels for {len(originals)} rows")
    size = _size(originals[0])
    tiles = []
    for row, (original, generations) in enumerate(zip(originals, generations_per_original)):
        tile = _as_tensor(original, size)
        tiles.append(_label(tile, str(labels[row])) if labels is not None and size[0] >= 32 else tile)
        shown = [_as_tensor(g, size) for g in list(generations)[:ncols]]
        tiles.extend(shown + [torch.ones(3, *size)] * (ncols - len(shown)))
    grid = make_grid(torch.stack(tiles), nrow=ncols + 1, padding=padding, pad_value=1.0)
    return to_pil_image(grid.mul(255).round().to(torch.uint8))
