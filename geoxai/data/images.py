"""Reading images as RGB whatever their mode, with one clear error for files that cannot be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geoxai.errors import UnreadableImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` fully decoded as an RGB PIL image.

    Grayscale, palette, RGBA (composited on white) and CMYK are converted. Truncated or corrupt
    files raise ``UnreadableImageError`` naming the file, so callers can skip and count them.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnreadableImageError(f"{path}: unreadable image ({reason}); re-download or remove it") from None


def unreadable_path(message: str) -> str:
    """The path an ``UnreadableImageError`` message is about (its text before ``: unreadable image``)."""
    return message.split(": unreadable image", 1)[0]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a float tensor [3, H, W] in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def load_tensor(path: str | Path) -> torch.Tensor:
    """``load_rgb`` then ``to_tensor``."""
    return to_tensor(load_rgb(path))
