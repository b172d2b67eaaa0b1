"""``RegionPlugin``: the base of plugins that compare regions of label maps (``needs = ("segmentation",)``).

The thesis' qualitative findings about scene content (F2 sky, F3 buildings and roads, F5 windows,
F6 facade colours, F7 vehicles and pedestrians, F8 signs and poles) are statements about *regions*
of the original and of an image made from its descriptor. The built-in semantic plugins
(``geoxai_plugins.semantic``) and third-party ones subclass ``RegionPlugin``: a subclass names its
``regions`` (metric prefix -> canonical ids) and adds its own per-pair metrics in ``compare``; the
per-class metrics (IoU, areas, kept, added), the segmenter ceiling, the skips and their notices come
from here. The maths on the maps themselves is ``geoxai.segmentation.regions`` (geometry, presence,
instances) and ``geoxai.segmentation.colour`` (CIELAB, CIEDE2000).

- **A pair.** ``load_pair`` reads both label maps through ``ctx.segmentation`` and aligns them like
  ``ctx.aligned`` aligns images (``PairMaps``); the ``*_values`` helpers turn aligned maps into
  metric values or ``Skip``s with their reasons.
- **Segmenter ceiling.** For originals with a ground-truth label map
  (``geoxai.segmentation.groundtruth.label_path``), the IoU of the evaluation segmenter's map with
  the ground truth: how well the segmenter itself can do, so a class IoU can also be read as a
  fraction of it (with ``--segmenter groundtruth`` the ceiling is 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from geoxai import labels as L
from geoxai.data.images import load_label_map
from geoxai.evaluation.artifacts import rgb_to_lab
from geoxai.evaluation.plugin import Metric, Pair, Plugin, Skip
from geoxai.segmentation.base import has_instances, instance_ids
from geoxai.segmentation.colour import ciede2000, dominant_colour, lightness_spread, mean_lab
from geoxai.segmentation.groundtruth import label_path
from geoxai.segmentation.regions import (
    MIN_AREA,
    align_labels,
    area_fraction,
    count_instances,
    dilated_iou,
    dilation_radius,
    instances,
    iou,
    min_pixels,
    present,
    removal_rate,
    resize_labels,
)
from geoxai.statistics import summarize_records

LABEL_RESIZE_NOTICE = ("label maps of images of another size than their original are compared after centre-cropping "
                       "the original's map to the image's aspect ratio and resizing the image's map to that crop "
                       "(nearest neighbour)")
MAP_SIZE_NOTICE = ("label maps of another size than their image were resized to the image (nearest neighbour) "
                   "before comparing colours inside them")


# ---------------------------------------------------------------------------------- per-class metrics
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
    """Instance maps of both images from the segmenter's ``instances(images, class_id, semantic_maps)``
    (the ``sam`` backend), aligned like the label maps; None when the segmenter has none or it fails
    (said once). The evaluation's own label map is passed, so instances split exactly the regions the
    other metrics read. An answer of another form than the declared one is an error naming the backend."""
    segmenter = ctx.segmenter
    if segmenter is None or not has_instances(segmenter):
        return None
    found = []
    for path in (maps.pair.original, maps.pair.other):
        if path not in cache:
            cache[path] = None
            image, labels = ctx.image(path), ctx.segmentation(path)
            if image is not None and labels is not None:
                tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
                given = torch.from_numpy(resize_labels(labels, image.shape[:2]).astype(np.int64))[None]
                try:
                    answer = segmenter.instances(tensor, int(class_id), given)
                except Exception as exc:  # an optional refinement: fall back to connected components
                    reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                    ctx.notice(f"the segmenter's instances() failed ({reason}); {class_name(class_id)}s are counted "
                               "as connected components of the label map")
                else:
                    cache[path] = resize_labels(instance_ids(segmenter, answer, tensor)[0], labels.shape[:2])
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
        summary = summarize_records(records, seed=ctx.seed)
        extra = self.extra_rows(records, ctx)
        if not extra:
            return summary
        return pd.concat([summary, pd.DataFrame(extra, columns=summary.columns)], ignore_index=True)


def class_name(class_id: int) -> str:
    """The canonical name of an id."""
    return L.NAMES[int(class_id)]
