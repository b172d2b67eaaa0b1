"""Region comparison shared by the semantic plugins: what a pair of label maps keeps and changes.

The thesis' qualitative findings about scene content (F2 sky, F3 buildings and roads, F5 windows,
F6 facade colours, F7 vehicles and pedestrians, F8 signs and poles) are all statements about
*regions* of the original and of an image made from its descriptor. Every semantic plugin
(``geoxai_plugins.semantic``) reads them through this module, so that "present", "kept", an IoU or
a colour difference mean the same thing in every plugin:

- **Geometry.** The two label maps of a pair are brought to one size the way
  ``EvaluationContext.aligned`` brings images: the original's map is centre-cropped to the image's
  aspect ratio and the image's map is resized to that crop, with nearest-neighbour sampling (labels
  are never interpolated). Same-size pairs are compared as they are.
- **Presence.** A class is present in an image when it covers at least ``min_area`` of it (0.1 %
  by default, a class attribute of each plugin), so that a stray pixel of a segmenter does not count.
- **Instances.** Objects are 4-connected components of a class (``scipy.ndimage.label``) of at
  least ``min_instance_area`` of the image (0.1 % by default; windows, small and often clipped by
  the frame, 0.02 %).
- **Colour.** CIELAB (D65, scikit-image) and CIEDE2000 (``skimage.color.deltaE_ciede2000``).
- **Segmenter ceiling.** For originals with a ground-truth label map
  (``geoxai.segmentation.groundtruth.label_path``), the IoU of the evaluation segmenter's map with
  the ground truth: how well the segmenter itself can do, so a class IoU can also be read as a
  fraction of it (with ``--segmenter groundtruth`` the ceiling is 1).

``RegionPlugin`` turns this into the plugin contract: a subclass names its ``regions`` (metric
prefix -> canonical ids) and adds its own per-pair metrics in ``compare``; the per-class metrics,
the ceiling, the skips and their notices come from here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from geoxai.evaluation import Metric, Pair, Plugin, Skip
from geoxai.segmentation import labels as L

MIN_AREA = 0.001  # fraction of the image a class must cover to count as present (and an instance as one)
DILATION_AT_128 = 2  # pixels of tolerance for "same position" at 128 px, scaled with the image size
DOMINANT_CLUSTERS = 3  # k of the k-means that finds a facade's dominant colour
MAX_CLUSTER_PIXELS = 4096  # pixels drawn (seeded) for the k-means; enough for three centres
MIN_QUERIES = 3  # fewer queries give no meaningful rank correlation
LABEL_RESIZE_NOTICE = ("label maps of images of another size than their original are compared after centre-cropping "
                       "the original's map to the image's aspect ratio and resizing the image's map to that crop "
                       "(nearest neighbour)")
MAP_SIZE_NOTICE = ("label maps of another size than their image were resized to the image (nearest neighbour) "
                   "before comparing colours inside them")


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
    from PIL import Image

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


def region_values(original: np.ndarray, other: np.ndarray, name: str, ids: Sequence[int],
                  min_area: float = MIN_AREA) -> dict[str, float | Skip]:
    """The per-class metrics of one aligned pair of label maps (see ``region_metrics``)."""
    a, b = np.isin(original, ids), np.isin(other, ids)
    in_original, in_other = present(a, min_area), present(b, min_area)
    values: dict[str, float | Skip] = {f"{name}_area_original": area_fraction(a),
                                       f"{name}_area_image": area_fraction(b)}
    overlap = iou(a, b) if (in_original or in_other) else None
    values[f"{name}_iou"] = absent_from_both(name) if overlap is None else overlap
    values[f"{name}_kept"] = float(in_other) if in_original else Skip(f"{name} absent from the original")
    values[f"{name}_added"] = float(in_other) if not in_original else Skip(f"{name} present in the original")
    return values


def absent_from_both(name: str) -> Skip:
    """The skip of a class IoU that is undefined (the class is in neither image)."""
    return Skip(f"class absent from both images ({name})")


def region_metrics(name: str, what: str, note: str = "") -> dict[str, Metric]:
    """Definitions of the per-class metrics ``region_values`` and ``RegionPlugin`` record for region ``name``
    (``what``: how definitions call it; ``note``: what the region is made of, when more than one class)."""
    made_of = f" ({note})" if note else ""
    return {
        f"{name}_iou": Metric(f"intersection over union of the {what} masks{made_of} of original and image (skipped "
                              f"when {what} is present in neither)", True),
        f"{name}_area_original": Metric(f"share of the original covered by {what}", None),
        f"{name}_area_image": Metric(f"share of the image covered by {what}", None),
        f"{name}_kept": Metric(f"of pairs whose original shows {what} (present: at least 0.1% of the image), the "
                               "share whose image shows it too", True),
        f"{name}_added": Metric(f"of pairs whose original shows no {what}, the share whose image shows it", None),
        f"{name}_iou_ceiling": Metric(f"IoU of the segmenter's {what} mask with the ground truth on the originals "
                                      f"(one value per original, sample -1): how well {name}_iou can be measured with "
                                      "this segmenter; 1 with the groundtruth segmenter", True),
        f"{name}_iou_vs_ceiling": Metric(f"{name}_iou divided by the mean {name}_iou_ceiling: the IoU as a fraction "
                                         "of what the segmenter itself achieves", True),
    }


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


def as_instance_map(found: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """An instance segmenter's answer for the first image of a batch as an id map [H, W] (0: background).

    Accepts an id map [H, W], a stack of masks [K, H, W], a batch of either ([1, H, W] ids,
    [B, K, H, W] masks, or a list per image), or a list of SAM-style dicts with a ``segmentation``
    mask. None when the answer has none of these forms.
    """
    if isinstance(found, (list, tuple)):
        if found and all(isinstance(item, Mapping) and "segmentation" in item for item in found):
            found = np.stack([np.asarray(item["segmentation"], dtype=bool) for item in found])
        elif found:
            return as_instance_map(found[0], shape)
        else:
            return None
    array = np.asarray(found.detach().cpu().numpy() if hasattr(found, "detach") else found)
    if array.ndim == 4:  # a batch of mask stacks
        array = array[0]
    if array.ndim == 3 and array.shape[0] == 1 and array.dtype != bool:  # a batch of one id map
        array = array[0]
    if array.ndim == 3:  # a stack of masks: later masks over earlier ones
        ids = np.zeros(array.shape[1:], dtype=np.int64)
        for k, mask in enumerate(array.astype(bool), start=1):
            ids[mask] = k
        array = ids
    if array.ndim != 2 or array.dtype == object:
        return None
    return resize_labels(array.astype(np.int64), shape)


# ---------------------------------------------------------------------------------- colour
def mean_lab(lab: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Mean CIELAB colour [3] of the pixels under ``mask``; None when the mask is empty."""
    if not mask.any():
        return None
    return lab[mask].mean(axis=0)


def ciede2000(first: np.ndarray, second: np.ndarray) -> float:
    """CIEDE2000 colour difference of two CIELAB colours (about 1: just noticeable; above 10: another colour)."""
    from skimage.color import deltaE_ciede2000

    return float(deltaE_ciede2000(np.asarray(first, np.float64), np.asarray(second, np.float64)))


def lightness_spread(lab: np.ndarray, mask: np.ndarray) -> float | None:
    """Standard deviation of L* under ``mask`` (texture: clouds in a sky, shading); None when empty."""
    return float(lab[..., 0][mask].std()) if mask.any() else None


def dominant_colour(pixels: np.ndarray, seed: int, k: int = DOMINANT_CLUSTERS) -> np.ndarray | None:
    """Centre of the largest of ``k`` k-means clusters (k-means++, seeded) of CIELAB ``pixels`` [N, 3].

    Pixels beyond ``MAX_CLUSTER_PIXELS`` are subsampled with the same seed, so identical pixel sets give
    identical centres. None without pixels; with fewer distinct colours than ``k``, the most frequent one.
    """
    from scipy.cluster.vq import kmeans2

    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    if len(pixels) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(pixels) > MAX_CLUSTER_PIXELS:
        pixels = pixels[rng.choice(len(pixels), MAX_CLUSTER_PIXELS, replace=False)]
    distinct, counts = np.unique(pixels, axis=0, return_counts=True)
    if len(distinct) <= k:
        return distinct[int(np.argmax(counts))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty cluster is harmless here: the largest one is kept
        centres, assigned = kmeans2(pixels, k, minit="++", seed=rng)
    return centres[int(np.argmax(np.bincount(assigned, minlength=k)))]


# ---------------------------------------------------------------------------------- a pair
@dataclass
class PairMaps:
    """One pair's label maps (and, when asked for, RGB images) aligned to one size."""

    pair: Pair
    original: np.ndarray  # canonical ids [H, W]
    other: np.ndarray
    original_rgb: np.ndarray | None = None  # [H, W, 3] in [0, 1]
    other_rgb: np.ndarray | None = None
    _lab: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.original.shape[:2]

    def min_pixels(self, min_area: float = MIN_AREA) -> int:
        return min_pixels(self.shape, min_area)

    def masks(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks of ``ids`` in the original's and the image's map."""
        return np.isin(self.original, ids), np.isin(self.other, ids)

    def lab(self, which: str) -> np.ndarray:
        """CIELAB [H, W, 3] of ``original`` or ``other`` (computed once per pair)."""
        if which not in self._lab:
            from geoxai.evaluation.artifacts import rgb_to_lab

            rgb = self.original_rgb if which == "original" else self.other_rgb
            if rgb is None:
                raise ValueError("this pair was loaded without images")
            self._lab[which] = rgb_to_lab(rgb)
        return self._lab[which]


def load_pair(ctx: Any, pair: Pair, images: bool = False) -> PairMaps | Skip:
    """The aligned label maps of a pair (and its aligned images when ``images``), or a ``Skip``.

    Maps follow the images' geometry (``ctx.aligned``); a map of another size than its own image is
    first resized to it. Both resizes are said once per evaluation in a notice.
    """
    first, second = ctx.segmentation(pair.original), ctx.segmentation(pair.other)
    if first is None or second is None:
        return Skip(f"no label map for {(pair.original if first is None else pair.other).name}")
    rgb = None
    if images:
        rgb = ctx.aligned(pair.original, pair.other)
        if rgb is None:
            return Skip("one of the images could not be read")
        same = first.shape[:2] == second.shape[:2] == rgb[0].shape[:2] == rgb[1].shape[:2]
        shapes = [first.shape[:2], second.shape[:2]] if same else \
            [ctx.image(path).shape[:2] for path in (pair.original, pair.other)]
        if first.shape[:2] != shapes[0] or second.shape[:2] != shapes[1]:
            ctx.notice(MAP_SIZE_NOTICE)
            first, second = resize_labels(first, shapes[0]), resize_labels(second, shapes[1])
    if first.shape[:2] != second.shape[:2]:
        ctx.notice(LABEL_RESIZE_NOTICE)
    original, other = align_labels(first, second)
    if rgb is None:
        return PairMaps(pair, original, other)
    if rgb[0].shape[:2] != original.shape:  # rounding of a crop: keep maps and pixels registered
        original, other = resize_labels(original, rgb[0].shape[:2]), resize_labels(other, rgb[0].shape[:2])
    return PairMaps(pair, original, other, rgb[0], rgb[1])


# ---------------------------------------------------------------------------------- pair comparisons
def appearance_values(maps: PairMaps, name: str, ids: Sequence[int],
                      min_area: float = MIN_AREA) -> dict[str, float | Skip]:
    """Colour and texture change inside a region (each image's own mask): CIEDE2000 of the mean CIELAB
    colours (``{name}_colour_change``) and the absolute change of the L* standard deviation
    (``{name}_texture_change``: clouds appearing or vanishing in a sky)."""
    a, b = maps.masks(ids)
    if not (present(a, min_area) and present(b, min_area)):
        skip = Skip(f"no {name} in the {'original' if not present(a, min_area) else 'image'}")
        return {f"{name}_colour_change": skip, f"{name}_texture_change": skip}
    first, second = maps.lab("original"), maps.lab("other")
    return {f"{name}_colour_change": ciede2000(mean_lab(first, a), mean_lab(second, b)),
            f"{name}_texture_change": abs(lightness_spread(second, b) - lightness_spread(first, a))}


def removal_values(maps: PairMaps, name: str, ids: Sequence[int],
                   min_area: float = MIN_AREA) -> dict[str, float | Skip]:
    """``{name}_removed``: share of the original's instances with no overlapping instance in the image."""
    a, b = maps.masks(ids)
    rate = removal_rate(a, b, maps.min_pixels(min_area))
    return {f"{name}_removed": Skip(f"no {name} in the original") if rate is None else rate}


def position_values(maps: PairMaps, name: str, ids: Sequence[int],
                    min_area: float = MIN_AREA) -> dict[str, float | Skip]:
    """``{name}_position_kept``: IoU of the region after a dilation of ``dilation_radius`` pixels, so a
    thing at the same place with another outline (a re-drawn sign) still counts as kept."""
    a, b = maps.masks(ids)
    if not (present(a, min_area) or present(b, min_area)):
        return {f"{name}_position_kept": absent_from_both(name)}
    return {f"{name}_position_kept": dilated_iou(a, b, dilation_radius(maps.shape))}


def matched_appearance_values(maps: PairMaps, name: str, ids: Sequence[int],
                              min_area: float = MIN_AREA) -> dict[str, float | Skip]:
    """``{name}_appearance_change``: over the original's instances that an instance of the image overlaps,
    the mean CIEDE2000 between the instance's mean colour and that of the overlapping instances."""
    a, b = maps.masks(ids)
    size = maps.min_pixels(min_area)
    ours, count = instances(a, size)
    theirs, _ = instances(b, size)
    if count == 0:
        return {f"{name}_appearance_change": Skip(f"no {name} in the original")}
    first, second = maps.lab("original"), maps.lab("other")
    changes = []
    for k in range(1, count + 1):
        mine = ours == k
        matched = np.isin(theirs, np.unique(theirs[mine & (theirs > 0)]))  # whole instances of the image
        if matched.any():
            changes.append(ciede2000(mean_lab(first, mine), mean_lab(second, matched)))
    if not changes:
        return {f"{name}_appearance_change": Skip(f"no {name} of the original has an overlapping {name} in the image")}
    return {f"{name}_appearance_change": float(np.mean(changes))}


def count_values(maps: PairMaps, name: str, ids: Sequence[int], min_area: float = MIN_AREA,
                 instance_maps: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float | Skip]:
    """Objects counted in each image (``count_instances``) and how far the image's count is from the
    original's: ``{name}s_original``, ``{name}s_image``, ``{name}_count_error`` (absolute),
    ``{name}_count_error_rel`` (divided by the original's count), ``{name}_count_exact`` (1 when equal)."""
    a, b = maps.masks(ids)
    size = maps.min_pixels(min_area)
    first = count_instances(a, size, None if instance_maps is None else instance_maps[0])
    second = count_instances(b, size, None if instance_maps is None else instance_maps[1])
    error = abs(second - first)
    return {f"{name}s_original": float(first), f"{name}s_image": float(second), f"{name}_count_error": float(error),
            f"{name}_count_error_rel": error / first if first else Skip(f"no {name} in the original"),
            f"{name}_count_exact": float(first == second)}


def segmenter_instance_maps(ctx: Any, maps: PairMaps, class_id: int,
                            cache: dict[Path, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray] | None:
    """Instance maps of both images from the segmenter's ``instances(images, class_id[, semantic_maps])``
    (the ``sam`` backend), aligned like the label maps; None when the segmenter has none or it fails
    (said once). The evaluation's own label map is passed where the method takes one, so instances
    split exactly the regions the other metrics read."""
    import inspect

    method = getattr(ctx.segmenter, "instances", None)
    if not callable(method):
        return None
    try:
        takes_maps = len([p for p in inspect.signature(method).parameters.values()
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 3
    except (TypeError, ValueError):
        takes_maps = False
    found = []
    for path in (maps.pair.original, maps.pair.other):
        if path not in cache:
            cache[path] = None
            image, labels = ctx.image(path), ctx.segmentation(path)
            if image is not None and labels is not None:
                try:
                    import torch

                    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
                    given = (torch.from_numpy(resize_labels(labels, image.shape[:2]).astype(np.int64))[None],) \
                        if takes_maps else ()
                    cache[path] = as_instance_map(method(tensor, int(class_id), *given), labels.shape[:2])
                except Exception as exc:  # an optional refinement: fall back to connected components
                    reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                    ctx.notice(f"the segmenter's instances() failed ({reason}); {class_name(class_id)}s are counted "
                               "as connected components of the label map")
        found.append(cache[path])
    if found[0] is None or found[1] is None:
        return None
    ctx.notice(f"{class_name(class_id)}s are counted as the segmenter's instances inside each connected component "
               "of the label map")
    first, second = align_labels(found[0], found[1])
    return resize_labels(first, maps.shape), resize_labels(second, maps.shape)


def facade_values(maps: PairMaps, ids: Sequence[int], seed: int, min_area: float = MIN_AREA) -> dict[str, float | Skip]:
    """Facade colour change between the building pixels of each image: ``facade_colour_change`` (CIEDE2000
    of the mean CIELAB colours) and ``facade_dominant_change`` (CIEDE2000 of the centres of the largest of
    three k-means clusters: the main facade colour, robust to windows' frames, doors and shade)."""
    a, b = maps.masks(ids)
    if not (present(a, min_area) and present(b, min_area)):
        skip = Skip(f"no building in the {'original' if not present(a, min_area) else 'image'}")
        return {"facade_colour_change": skip, "facade_dominant_change": skip}
    first, second = maps.lab("original"), maps.lab("other")
    return {"facade_colour_change": ciede2000(mean_lab(first, a), mean_lab(second, b)),
            "facade_dominant_change": ciede2000(dominant_colour(first[a], seed), dominant_colour(second[b], seed))}


def class_flip_values(maps: PairMaps, classes: Sequence[int], min_area: float = MIN_AREA) -> dict[str, float]:
    """How many of ``classes`` change presence between original and image: ``classes_changed`` (either
    way; the analogue of MNAC), ``classes_removed`` (present only in the original), ``classes_added``."""
    removed = added = 0
    for class_id in classes:
        a, b = maps.masks((class_id,))
        in_original, in_other = present(a, min_area), present(b, min_area)
        removed += in_original and not in_other
        added += in_other and not in_original
    return {"classes_changed": float(removed + added), "classes_removed": float(removed),
            "classes_added": float(added)}


# ---------------------------------------------------------------------------------- ceiling
def ground_truth(path: Path) -> np.ndarray | None:
    """The ground-truth label map of an image (SynthCity worlds, reference runs), None when there is none."""
    from geoxai.data.images import load_label_map
    from geoxai.segmentation.groundtruth import label_path

    found = label_path(path)
    if found is None:
        return None
    return load_label_map(found)


@dataclass
class Ceiling:
    """Per region: the segmenter's IoU against ground truth on each original, and their mean."""

    per_original: dict[str, dict[Path, float | Skip]]
    mean: dict[str, float]  # NaN where no original has ground truth with the region
    with_truth: int  # originals that have a ground-truth label map
    originals: int


def segmenter_ceiling(ctx: Any, originals: Iterable[Path], regions: Mapping[str, Sequence[int]],
                      min_area: float = MIN_AREA) -> Ceiling:
    """IoU of the evaluation segmenter's map with the ground truth on every original that has one,
    per region (skipped where the region is in neither map, or without ground truth)."""
    per: dict[str, dict[Path, float | Skip]] = {name: {} for name in regions}
    originals = sorted(set(originals))
    with_truth = 0
    for path in originals:
        predicted, truth = ctx.segmentation(path), ground_truth(path)
        if predicted is None or truth is None:
            reason = Skip("no ground-truth label map for the original" if truth is None else
                          "no label map of the segmenter for the original")
            for name in regions:
                per[name][path] = reason
            continue
        with_truth += 1
        predicted = resize_labels(predicted, truth.shape[:2])
        for name, ids in regions.items():
            a, b = np.isin(predicted, ids), np.isin(truth, ids)
            value = iou(a, b) if (present(a, min_area) or present(b, min_area)) else None
            per[name][path] = Skip(f"{name} absent from the original and its ground truth") if value is None else value
    mean = {}
    for name in regions:
        found = [v for v in per[name].values() if not isinstance(v, Skip)]
        mean[name] = float(np.mean(found)) if found else float("nan")
    return Ceiling(per, mean, with_truth, len(originals))


# ---------------------------------------------------------------------------------- the plugin base
class RegionPlugin(Plugin):
    """A semantic plugin: per-class region metrics for ``regions`` plus the subclass's ``compare``.

    ``regions`` maps a metric prefix to the canonical ids whose union is the region (e.g.
    ``{"building": (BUILDING, WINDOW)}``); each gets ``region_metrics`` and the segmenter ceiling.
    ``summary_only`` names metrics that exist only as summary rows (``extra_rows``).
    """

    needs = ("segmentation",)
    regions: ClassVar[Mapping[str, tuple[int, ...]]] = {}
    min_area: ClassVar[float] = MIN_AREA  # share of the image a class must cover to be present
    min_instance_area: ClassVar[float] = MIN_AREA  # share of the image an object (component) must cover
    uses_images: ClassVar[bool] = False  # whether ``compare`` reads colours (the pair's aligned images)
    summary_only: ClassVar[tuple[str, ...]] = ()

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        """The plugin's own metrics of one aligned pair (beside the per-class ones)."""
        return {}

    def extra_rows(self, records: pd.DataFrame, ctx: Any) -> list[dict[str, Any]]:
        """Summary rows beyond the default per-metric means (set-level statistics)."""
        return []

    # ------------------------------------------------------------------------------ score
    def _pair_metrics(self) -> list[str]:
        ceiling = {f"{name}_iou_ceiling" for name in self.regions}
        return [m for m in self.metrics if m not in ceiling and m not in self.summary_only]

    def score(self, pairs: list[Pair], ctx: Any) -> list[dict[str, Any]]:
        ceiling = segmenter_ceiling(ctx, (p.original for p in pairs), self.regions, self.min_area) \
            if self.regions else None
        records, absent = [], {name: {} for name in self.regions}
        for pair in pairs:
            maps = load_pair(ctx, pair, images=self.uses_images)
            if isinstance(maps, Skip):
                records.append(pair.record(**{m: maps for m in self._pair_metrics()}))
                continue
            values: dict[str, float | Skip] = {}
            for name, ids in self.regions.items():
                values.update(region_values(maps.original, maps.other, name, ids, self.min_area))
                overlap = values[f"{name}_iou"]
                if isinstance(overlap, Skip):
                    absent[name][pair.pairing] = absent[name].get(pair.pairing, 0) + 1
                values[f"{name}_iou_vs_ceiling"] = self._versus_ceiling(overlap, ceiling.mean[name])
            values.update(self.compare(maps, ctx))
            records.append(pair.record(**values))
        if ceiling is not None:
            records.extend(self._ceiling_records(pairs, ceiling, ctx))
        for name, by_pairing in absent.items():
            if by_pairing:
                counts = ", ".join(f"{p} {by_pairing.get(p, 0)}" for p in ("generated", "shuffled", "reference"))
                ctx.notice(f"{self.name}: {name} IoU skipped for {sum(by_pairing.values())} of {len(pairs)} pairs "
                           f"({counts}): class absent from both images (below {100 * self.min_area:g}% of the image)")
        return records

    @staticmethod
    def _versus_ceiling(overlap: float | Skip, ceiling: float) -> float | Skip:
        if isinstance(overlap, Skip):
            return overlap
        if not np.isfinite(ceiling):
            return Skip("no segmenter ceiling: no original has a ground-truth label map with this class")
        if ceiling <= 0:
            return Skip("the segmenter ceiling is 0 (it never finds this class where the ground truth has it)")
        return float(overlap) / ceiling

    def _ceiling_records(self, pairs: list[Pair], ceiling: Ceiling, ctx: Any) -> list[dict[str, Any]]:
        """One record per original (pairing generated, sample -1) with its ceiling IoU per region."""
        query_of: dict[Path, str] = {}
        for pair in pairs:
            query_of.setdefault(pair.original, pair.query_id)
        if ceiling.with_truth == 0:
            ctx.notice(f"{self.name}: no original has a ground-truth label map, so the segmenter ceiling and "
                       "iou_vs_ceiling are skipped")
        else:
            shown = ", ".join(f"{name} {value:.3f}" if np.isfinite(value) else f"{name} — (in no ground truth)"
                              for name, value in ceiling.mean.items())
            ctx.notice(f"{self.name}: segmenter ceiling (IoU of the segmenter's maps with ground truth on "
                       f"{ceiling.with_truth} of {ceiling.originals} originals): {shown}")
        return [{"query_id": query_of[path], "sample": -1, "pairing": "generated",
                 **{f"{name}_iou_ceiling": ceiling.per_original[name][path] for name in self.regions}}
                for path in sorted(query_of)]

    # ------------------------------------------------------------------------------ summary
    def summarize(self, records: pd.DataFrame, ctx: Any) -> pd.DataFrame:
        """The default rows (per query the mean over samples, then mean and 95% bootstrap CI over
        queries) plus the plugin's set-level rows."""
        from geoxai.evaluation.statistics import summarize_records

        summary = summarize_records(records, seed=ctx.seed)
        extra = self.extra_rows(records, ctx)
        if not extra:
            return summary
        return pd.concat([summary, pd.DataFrame(extra, columns=summary.columns)], ignore_index=True)


def class_name(class_id: int) -> str:
    """The canonical name of an id."""
    return L.NAMES[int(class_id)]
