"""Region maths on label maps: geometry, masks, overlap and object instances.

Pure functions on numpy arrays (canonical label maps [H, W] of ``geoxai.labels`` and
boolean masks), shared by the semantic plugins and usable by any third-party plugin, so that
"present", an IoU or an object count mean the same thing everywhere:

- **Geometry.** Two label maps are brought to one size the way ``EvaluationContext.aligned`` brings
  images: the original's map is centre-cropped to the other's aspect ratio and the other's map is
  resized to that crop with nearest-neighbour sampling (labels are never interpolated).
- **Presence.** A class is present when it covers at least ``min_area`` of the image (``MIN_AREA``,
  0.1 %, by default), so that a stray pixel of a segmenter does not count.
- **Instances.** Objects are 4-connected components of a mask (``scipy.ndimage.label``) of at least
  a minimum number of pixels; an instance segmenter's id map can split merged components.

Colour maths (CIELAB, CIEDE2000) is in ``geoxai.segmentation.colour``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

MIN_AREA = 0.001  # fraction of the image a class must cover to count as present (and an instance as one)
DILATION_AT_128 = 2  # pixels of tolerance for "same position" at 128 px, scaled with the image size


# ---------------------------------------------------------------------------------- geometry
def crop_box(original: tuple[int, int], other: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop of an ``original``-shaped map to the aspect ratio
    of ``other`` — the geometry of ``EvaluationContext.aligned``, so maps and images stay registered."""
    ha, wa = original
    hb, wb = other
    if (ha, wa) == (hb, wb):
        return 0, 0, ha, wa
    target = hb / wb
    if ha / wa > target:
        h, w = int(round(wa * target)), wa
    else:
        h, w = ha, int(round(ha / target))
    return (ha - h) // 2, (wa - w) // 2, h, w


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label or instance map with PIL (as images are resized): ids stay ids."""
    h, w = int(shape[0]), int(shape[1])
    if labels.shape[:2] == (h, w):
        return labels
    if labels.dtype == np.uint8:
        return np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))
    resized = Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(labels.dtype)


def align_labels(original: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps at one size: the original's centre-cropped to ``other``'s aspect ratio, ``other``'s
    resized (nearest neighbour) to that crop."""
    top, left, h, w = crop_box(original.shape[:2], other.shape[:2])
    return original[top:top + h, left:left + w], resize_labels(other, (h, w))


# ---------------------------------------------------------------------------------- masks
def area_fraction(mask: np.ndarray) -> float:
    """Share of the image a boolean mask covers."""
    return float(mask.mean()) if mask.size else 0.0


def min_pixels(shape: tuple[int, ...], min_area: float = MIN_AREA) -> int:
    """The smallest pixel count that is ``min_area`` of an image of ``shape`` (at least one pixel)."""
    return max(1, int(math.ceil(min_area * shape[0] * shape[1] - 1e-9)))


def present(mask: np.ndarray, min_area: float = MIN_AREA) -> bool:
    """Whether a mask covers at least ``min_area`` of the image (a stray pixel is not a class)."""
    return int(mask.sum()) >= min_pixels(mask.shape, min_area)


def iou(a: np.ndarray, b: np.ndarray) -> float | None:
    """Intersection over union of two boolean masks; None when both are empty (undefined)."""
    union = int(np.count_nonzero(a | b))
    return None if union == 0 else int(np.count_nonzero(a & b)) / union


def dilation_radius(shape: tuple[int, ...]) -> int:
    """Pixels of positional tolerance: ``DILATION_AT_128`` at 128 px, scaled with the image side."""
    return max(1, int(round(DILATION_AT_128 * min(shape[0], shape[1]) / 128.0)))


def dilated_iou(a: np.ndarray, b: np.ndarray, radius: int) -> float | None:
    """IoU after dilating both masks by ``radius`` pixels (a square neighbourhood): the same position
    up to a small shift or a change of outline."""
    if radius > 0:
        structure = np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)
        a = ndimage.binary_dilation(a, structure=structure)
        b = ndimage.binary_dilation(b, structure=structure)
    return iou(a, b)


# ---------------------------------------------------------------------------------- instances
def instances(mask: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    """4-connected components of ``mask`` with at least ``min_size`` pixels, numbered 1..n (0: none)."""
    components, count = ndimage.label(mask)
    if count == 0:
        return components, 0
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    renumber = np.zeros(count + 1, dtype=np.int64)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    return renumber[components], int(keep.sum())


def removal_rate(original: np.ndarray, other: np.ndarray, min_size: int) -> float | None:
    """Share of the original's instances (``instances``) that no instance of ``other`` overlaps by a
    pixel; None when the original has none."""
    ours, count = instances(original, min_size)
    if count == 0:
        return None
    theirs, _ = instances(other, min_size)
    matched = np.unique(ours[(ours > 0) & (theirs > 0)])
    return 1.0 - len(matched) / count


def count_instances(mask: np.ndarray, min_size: int, instance_map: np.ndarray | None = None) -> int:
    """Objects of a class in one image: its 4-connected components of at least ``min_size`` pixels.

    With an ``instance_map`` (ids > 0 from an instance segmenter such as SAM, same shape) a component
    counts as the number of instances that cover at least ``min_size`` of its pixels (at least one):
    two windows merged into one blob by the semantic map are counted as two.
    """
    components, count = instances(mask, min_size)
    if instance_map is None or count == 0:
        return count
    inside = (components > 0) & (instance_map > 0)
    pairs, sizes = np.unique(np.stack([components[inside], instance_map[inside].astype(np.int64)]), axis=1,
                             return_counts=True)
    split = np.bincount(pairs[0][sizes >= min_size], minlength=count + 1)[1:]
    return int(np.maximum(split, 1).sum())
