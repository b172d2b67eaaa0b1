"""Reading images for models: RGB whatever the file's mode, one clear error for files that cannot be
read, and a record of how much each image had to be reshaped to fit a model's square input.

Models take a square input (CosPlace 512 px, the LDM 128 or 256 px): an image is resized so that its
shorter side fits, then centre-cropped. A 16 x 16 thumbnail is then scaled up 32x and a 4000 x 300
panorama keeps 7.5% of its width; both still give a descriptor, so ``ReshapeReport`` counts such
images and says so once per run instead of letting them pass unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from geoxai.errors import GeoxaiError, UnreadableImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HEAVY_CROP = 0.5  # a centre crop that keeps less than half of the image is reported
MAX_PIXELS_VARIABLE = "GEOXAI_MAX_IMAGE_PIXELS"  # raises Pillow's decompression-bomb limit for huge panoramas


def max_image_pixels() -> int:
    """The most pixels an image may have: ``GEOXAI_MAX_IMAGE_PIXELS`` when set, else Pillow's limit
    (``Image.MAX_IMAGE_PIXELS``, 89,478,485 by default: a 9459 x 9459 image, 256 MB of RGB)."""
    raw = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not raw:
        return int(Image.MAX_IMAGE_PIXELS)
    if not raw.isdigit() or int(raw) < 1:
        raise GeoxaiError(f"{MAX_PIXELS_VARIABLE}={raw!r}: give a positive whole number of pixels")
    Image.MAX_IMAGE_PIXELS = int(raw)  # Pillow's own check (on open) uses the same limit
    return int(raw)


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``path`` opened by Pillow (header read, pixels decoded on ``load()``), every failure inside the
    block an ``UnreadableImageError`` naming the file, so callers skip and count it.

    Decompression bombs included: an image of more than ``Image.MAX_IMAGE_PIXELS`` pixels
    (``GEOXAI_MAX_IMAGE_PIXELS``, else Pillow's default of about 89 million) is unreadable, whether
    Pillow would only warn (up to twice the limit) or refuse.
    """
    path = Path(path)
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > limit:  # also when another thread reset the filter
                    raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels")
                yield image
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            reason = (f"more than {limit} pixels, refused as a possible decompression bomb; "
                      f"set {MAX_PIXELS_VARIABLE} higher if the image is genuine")
        raise UnreadableImageError(f"{path}: unreadable image ({reason}); re-download or remove it") from None


def _oriented(image: Image.Image) -> Image.Image:
    """The decoded image turned upright by its EXIF orientation tag (as a phone's viewer shows it)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth grayscale as 8-bit ``L``, scaled by the range of its format, never clipped to white.

    ``I;16*``: /257. ``I`` (32-bit int): values within 0..65535 are 16-bit data in a 32-bit container
    (how PNG and TIFF decoders hand them over), scaled /257; wider ranges by the image's own maximum.
    ``F`` (float): [0, 1] when the maximum is at most 1, else by the image's maximum. Negative
    values and NaN become 0.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or (image.mode == "I" and peak <= 65535):
        scale = 255.0 / 65535.0
    elif image.mode == "F" and peak <= 1.0:
        scale = 255.0
    else:
        scale = 255.0 / peak if peak > 0 else 0.0
    return Image.fromarray((values * scale).round().clip(0, 255).astype(np.uint8), mode="L")


HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` fully decoded as an upright RGB PIL image: the one decoder of every command.

    Grayscale, palette, RGBA (composited on white) and CMYK are converted; 16-bit, 32-bit and float
    images are scaled to 8 bits (``_to_8bit``); the EXIF orientation is applied. Truncated, corrupt
    or oversized files raise ``UnreadableImageError`` naming the file, so callers can skip and count them.
    """
    with open_image(path) as image:
        image.load()
        image = _oriented(image)
        if image.mode in HIGH_DEPTH_MODES:
            return _to_8bit(image).convert("RGB")
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def load_label_map(path: str | Path) -> np.ndarray:
    """A label map (one channel of class ids) as a uint8 array [H, W], values as stored: no colour
    conversion, only the decoding checks and the EXIF orientation of ``load_rgb``."""
    with open_image(path) as image:
        image.load()
        labels = np.asarray(_oriented(image))
    if labels.ndim != 2:
        raise UnreadableImageError(f"{path}: unreadable image (a label map has one channel, this has "
                                   f"{labels.shape[-1]}); re-render it")
    return labels.astype(np.uint8, copy=False)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as ``load_rgb`` returns it, from the header alone (no decoding)."""
    with open_image(path) as image:
        width, height = image.size
        if image.format == "PNG":  # getexif() would decode the pixels to look for an eXIf chunk after them
            exif = Image.Exif()
            if image.info.get("exif"):
                exif.load(image.info["exif"])
        else:
            exif = image.getexif()
        turned = exif.get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    return (height, width) if turned else (width, height)


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


# --------------------------------------------------------------------------- square inputs
def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased), then crop the centre ``size`` x ``size``.

    Smaller images are scaled up, so any input yields a full crop. Images already at ``size`` x
    ``size`` come back untouched, which lets a data loader apply this per image (to batch mixed
    sizes) before a model applies it again.
    """
    if tuple(images.shape[-2:]) == (size, size):
        return images
    images = TF.resize(images, [size], antialias=True)
    return TF.center_crop(images, [size, size])


def kept_fraction(height: int, width: int) -> float:
    """The share of an image's area that a square centre crop keeps (1 for a square image)."""
    return min(height, width) / max(height, width)


@dataclass
class ReshapeReport:
    """How many images had to be scaled up, or lost more than half their area, to fit a square input."""

    size: int
    images: int = 0
    upscaled: int = 0
    heavily_cropped: int = 0
    upscaled_example: tuple[str, int, int] | None = None  # (path, height, width)
    cropped_example: tuple[str, int, int] | None = None

    def add(self, path: str | Path, height: int, width: int) -> None:
        self.images += 1
        if min(height, width) < self.size:
            self.upscaled += 1
            self.upscaled_example = self.upscaled_example or (str(path), height, width)
        if kept_fraction(height, width) < HEAVY_CROP:
            self.heavily_cropped += 1
            self.cropped_example = self.cropped_example or (str(path), height, width)

    def merge(self, other: ReshapeReport) -> None:
        self.images += other.images
        self.upscaled += other.upscaled
        self.heavily_cropped += other.heavily_cropped
        self.upscaled_example = self.upscaled_example or other.upscaled_example
        self.cropped_example = self.cropped_example or other.cropped_example

    def notices(self, what: str = "images") -> list[str]:
        """One line per kind of reshaping that happened (none when every image fitted)."""
        lines = []
        if self.upscaled:
            path, h, w = self.upscaled_example
            lines.append(f"{self.upscaled} of {self.images} {what} are smaller than the {self.size} px input and "
                         f"were scaled up (e.g. {Path(path).name}, {w}x{h}); their descriptors see blur, not detail")
        if self.heavily_cropped:
            path, h, w = self.cropped_example
            lines.append(f"{self.heavily_cropped} of {self.images} {what} lost more than half of their area to the "
                         f"square centre crop (e.g. {Path(path).name}, {w}x{h} keeps {100 * kept_fraction(h, w):.1f}%); "
                         "split panoramas into views first")
        return lines


class ImageDataset(Dataset):
    """Images as float tensors [3, H, W] in [0, 1], with their size on disk.

    An unreadable file yields ``image=None`` and its error, so callers skip and count it.
    """

    def __init__(self, paths: Sequence[str | Path],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = to_tensor(load_rgb(self.paths[index]))
        except UnreadableImageError as exc:
            return {"index": index, "image": None, "error": str(exc), "size": None}
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if self.transform is not None:
            image = self.transform(image)
        return {"index": index, "image": image, "error": None, "size": size}


def collate_images(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable items of a batch; unreadable ones go to ``skipped`` as (index, error).

    ``sizes`` holds each readable item's (height, width) on disk, in the order of ``index``.
    """
    good = [item for item in batch if item["image"] is not None]
    skipped = [(item["index"], item["error"]) for item in batch if item["image"] is None]
    index = torch.tensor([item["index"] for item in good], dtype=torch.long)
    sizes = [item.get("size") for item in good]
    if not good:
        return {"index": index, "image": None, "skipped": skipped, "sizes": sizes}
    shapes = sorted({tuple(item["image"].shape) for item in good})
    if len(shapes) > 1:
        raise GeoxaiError(
            f"images in one batch have different sizes {shapes[:3]}; set a resize / image size "
            "(a transform or the embedder's image_size) so they can be stacked"
        )
    return {"index": index, "image": torch.stack([item["image"] for item in good]), "skipped": skipped,
            "sizes": sizes}
