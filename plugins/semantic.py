"""Semantic plugins: which scene content the generations keep, move, re-colour or drop.

Each plugin measures one qualitative finding of the thesis (``THESIS.md``) on label maps of the
evaluation's segmenter (``--segmenter``), over all three pairings (``generated``; ``shuffled``, the
chance level; ``reference``, a real re-visit):

- ``sky`` (F2, "the sky differs a lot: clouds appear or vanish"): sky region kept, and the change of
  colour and texture inside it;
- ``buildings`` (F3, "buildings and roads keep their relative positions"): building and road IoU,
  read against the shuffled chance level;
- ``vehicles`` (F7, "cars and pedestrians are usually removed"): vehicle and person regions and the
  share of the original's vehicles and persons with nothing left at their place;
- ``signs`` (F8, "road signs and lamp posts keep their position but change appearance"): sign and
  pole regions, position kept up to a small shift, colour change of the signs that stayed;
- ``windows`` (F5, "number and placement of windows are not kept"): windows counted per image, count
  errors and the rank correlation of counts, window IoU for their placement;
- ``colours`` (F6, "building colours sometimes change, e.g. orange -> red"): facade colour change;
- ``classes`` (the scene as a whole): how many classes appear or vanish, the analogue of MNAC.

The classes here only declare what they read and measure; the shared region logic lives in the
library: ``geoxai.evaluation.RegionPlugin`` and its helpers (``geoxai.evaluation.region_plugin``:
pairs, per-class metrics, segmenter ceiling, skips) on the maths of ``geoxai.segmentation.regions``
(alignment, presence, instances) and ``geoxai.segmentation.colour`` (CIELAB, CIEDE2000).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from geoxai import labels as L
from geoxai.evaluation import Metric, RegionPlugin, Skip
from geoxai.evaluation.region_plugin import (
    PairMaps,
    appearance_values,
    class_flip_values,
    count_values,
    facade_values,
    matched_appearance_values,
    position_values,
    region_metrics,
    removal_values,
    segmenter_instance_maps,
)
from geoxai.statistics import rank_correlation_row

DELTA_E = "ΔE00"


class SkyPlugin(RegionPlugin):
    """F2: is the sky kept, and how much do its colour and clouds change?"""

    name = "sky"
    headline = ("sky_iou", "sky_colour_change")  # what the report's summary shows
    version = "1"
    description = "Sky region kept (IoU, kept, added) and sky appearance change: CIEDE2000 colour, L* texture (F2)"
    regions = {"sky": (L.SKY,)}
    segmentation_classes = (L.SKY,)
    uses_images = True
    metrics = {
        **region_metrics("sky", "sky"),
        "sky_colour_change": Metric("CIEDE2000 between the mean CIELAB colours of the sky in original and image "
                                    "(skipped when either has no sky)", None, DELTA_E),
        "sky_texture_change": Metric("absolute difference of the L* standard deviation inside the sky of original "
                                     "and image: clouds appearing or vanishing", None, "L*"),
    }

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        return appearance_values(maps, "sky", self.regions["sky"], self.min_area)


class BuildingsPlugin(RegionPlugin):
    """F3: do buildings and roads stay where they were?"""

    name = "buildings"
    headline = ("building_iou", "road_iou")  # what the report's summary shows
    version = "1"
    description = "Building (with its windows) and road regions: IoU, area, kept, added, against chance (F3)"
    regions = {"building": (L.BUILDING, L.WINDOW), "road": (L.ROAD,)}
    segmentation_classes = (L.BUILDING, L.ROAD)  # a segmenter without window puts windows in building
    metrics = {**region_metrics("building", "building", "building and window pixels: a segmenter without window "
                                                        "labels windows as building"),
               **region_metrics("road", "road")}


class VehiclesPlugin(RegionPlugin):
    """F7: are cars and pedestrians removed?"""

    name = "vehicles"
    headline = ("vehicle_removed", "person_removed")  # what the report's summary shows
    version = "1"
    description = "Vehicle and person regions and removal rates of their instances (F7)"
    regions = {"vehicle": (L.VEHICLE,), "person": (L.PERSON,)}
    segmentation_classes = (L.VEHICLE, L.PERSON)
    metrics = {
        **region_metrics("vehicle", "vehicle"),
        **region_metrics("person", "person"),
        "vehicle_removed": Metric("share of the original's vehicles (connected components above the minimum area) "
                                  "that no vehicle of the image overlaps", None),
        "person_removed": Metric("share of the original's persons (connected components above the minimum area) "
                                 "that no person of the image overlaps", None),
    }

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        return {**removal_values(maps, "vehicle", self.regions["vehicle"], self.min_instance_area),
                **removal_values(maps, "person", self.regions["person"], self.min_instance_area)}


class SignsPlugin(RegionPlugin):
    """F8: do signs and poles keep their place while their look changes?"""

    name = "signs"
    headline = ("sign_position_kept", "sign_appearance_change")  # what the report's summary shows
    version = "1"
    description = "Sign and pole regions, position kept up to a small shift, colour change of kept signs (F8)"
    regions = {"sign": (L.SIGN,), "pole": (L.POLE,)}
    segmentation_classes = (L.SIGN, L.POLE)
    uses_images = True
    metrics = {
        **region_metrics("sign", "sign"),
        **region_metrics("pole", "pole"),
        "sign_position_kept": Metric("IoU of the sign masks after dilating both by 2 px per 128 px of image side: "
                                     "signs at the same place whatever their outline", True),
        "pole_position_kept": Metric("IoU of the pole masks after dilating both by 2 px per 128 px of image side",
                                     True),
        "sign_appearance_change": Metric("mean over the original's signs that a sign of the image overlaps of the "
                                         "CIEDE2000 between their mean CIELAB colours", None, DELTA_E),
    }

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        return {**position_values(maps, "sign", self.regions["sign"], self.min_area),
                **position_values(maps, "pole", self.regions["pole"], self.min_area),
                **matched_appearance_values(maps, "sign", self.regions["sign"], self.min_instance_area)}


class WindowsPlugin(RegionPlugin):
    """F5: are the number and placement of windows kept?"""

    name = "windows"
    headline = ("window_count_error", "window_iou")  # what the report's summary shows
    version = "1"
    description = "Windows counted per image (4-connected components, split by the segmenter's instances when it " \
                  "has them): count errors, exact matches, rank correlation; window IoU for placement (F5)"
    regions = {"window": (L.WINDOW,)}
    segmentation_classes = (L.WINDOW,)
    min_instance_area = 0.0002  # a window clipped by the frame still counts (SynthCity's window_count agrees)
    summary_only = ("window_count_spearman",)
    metrics = {
        **region_metrics("window", "window"),
        "windows_original": Metric("windows counted in the original (4-connected components of class window of at "
                                   "least 0.02% of the image)", None, "windows"),
        "windows_image": Metric("windows counted in the image", None, "windows"),
        "window_count_error": Metric("absolute difference of the window counts of image and original", False,
                                     "windows"),
        "window_count_error_rel": Metric("window_count_error divided by the original's count (skipped when it has no "
                                         "window)", False),
        "window_count_exact": Metric("share of images with exactly the original's number of windows", True),
        "window_count_spearman": Metric("Spearman rank correlation of windows_original and windows_image over the "
                                        "pairing's pairs (CI: bootstrap over queries); 1: counts ranked alike", True),
    }

    def __init__(self) -> None:
        super().__init__()
        self._instances: dict[Any, Any] = {}  # image -> the segmenter's instance map (when it has instances())

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        split = segmenter_instance_maps(ctx, maps, L.WINDOW, self._instances)
        return count_values(maps, "window", self.regions["window"], self.min_instance_area, split)

    def extra_rows(self, records: pd.DataFrame, ctx: Any) -> list[dict[str, Any]]:
        rows = (rank_correlation_row(records, "windows_original", "windows_image", pairing, ctx.seed,
                                     "window_count_spearman") for pairing in ("generated", "shuffled", "reference"))
        return [row for row in rows if row is not None]


class ColoursPlugin(RegionPlugin):
    """F6: do facade colours change?"""

    name = "colours"
    headline = ("facade_colour_change", "facade_dominant_change")  # what the report's summary shows
    version = "1"
    description = "Facade colour change: CIEDE2000 of mean and of dominant (k-means) building colours (F6)"
    segmentation_classes = (L.BUILDING,)
    uses_images = True
    metrics = {
        "facade_colour_change": Metric("CIEDE2000 between the mean CIELAB colours of the building pixels (windows "
                                       "excluded) of original and image", None, DELTA_E),
        "facade_dominant_change": Metric("CIEDE2000 between the dominant facade colours of original and image: the "
                                         "centre of the largest of 3 k-means clusters of building pixels in CIELAB",
                                         None, DELTA_E),
    }

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        return facade_values(maps, (L.BUILDING,), ctx.seed, self.min_area)


class ClassesPlugin(RegionPlugin):
    """The whole scene: how many classes appear or vanish per generation (the analogue of MNAC)."""

    name = "classes"
    headline = ("classes_changed", "classes_added")  # what the report's summary shows
    version = "1"
    description = "Classes whose presence flips between original and image (MNAC analogue), every class but other"
    segmentation_classes = ()  # it counts whichever classes the segmenter expresses
    metrics = {
        "classes_changed": Metric("number of classes (every class the segmenter expresses but other) present in "
                                  "exactly one of original and image", None, "classes"),
        "classes_removed": Metric("number of classes present in the original and absent from the image", None,
                                  "classes"),
        "classes_added": Metric("number of classes present in the image and absent from the original", None,
                                "classes"),
    }

    def compare(self, maps: PairMaps, ctx: Any) -> dict[str, float | Skip]:
        expressed = getattr(ctx.segmenter, "classes", None) or tuple(L.NAMES)
        counted = tuple(c for c in expressed if c != L.OTHER)
        ctx.notice(f"classes: presence flips counted over {len(counted)} classes "
                   f"({', '.join(L.NAMES[c] for c in counted)})")
        return class_flip_values(maps, counted, self.min_area)
