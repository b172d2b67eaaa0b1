"""Canonical semantic labels shared by SynthCity, every segmenter backend and the plugins.

Backends map their own classes onto these ids so that a plugin never depends on one model's
label set.
"""

from __future__ import annotations

import numpy as np

OTHER = 0
SKY = 1
BUILDING = 2
WINDOW = 3
ROAD = 4
SIDEWALK = 5
VEGETATION = 6
VEHICLE = 7
PERSON = 8
SIGN = 9
POLE = 10

NAMES: dict[int, str] = {
    OTHER: "other",
    SKY: "sky",
    BUILDING: "building",
    WINDOW: "window",
    ROAD: "road",
    SIDEWALK: "sidewalk",
    VEGETATION: "vegetation",
    VEHICLE: "vehicle",
    PERSON: "person",
    SIGN: "sign",
    POLE: "pole",
}
IDS: dict[str, int] = {name: idx for idx, name in NAMES.items()}
NUM_CLASSES = len(NAMES)

# Cityscapes-like colours so label PNGs are readable by eye.
PALETTE = np.array(
    [
        (0, 0, 0),  # other
        (70, 130, 180),  # sky
        (70, 70, 70),  # building
        (250, 170, 160),  # window
        (128, 64, 128),  # road
        (244, 35, 232),  # sidewalk
        (107, 142, 35),  # vegetation
        (0, 0, 142),  # vehicle
        (220, 20, 60),  # person
        (220, 220, 0),  # sign
        (153, 153, 153),  # pole
    ],
    dtype=np.uint8,
)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Return an RGB uint8 image of a label map using ``PALETTE``."""
    return PALETTE[np.clip(labels, 0, NUM_CLASSES - 1)]


def label_id(name: str) -> int:
    """Look up a canonical id by name, with the valid names in the error."""
    try:
        return IDS[name]
    except KeyError:
        raise KeyError(f"unknown label {name!r}; valid labels: {', '.join(IDS)}") from None
