"""The colours and kinds SynthCity samples from (facades, roofs, cars, signs)."""

from __future__ import annotations

import colorsys


def hsv_rgb(h: float, s: float, v: float) -> list[float]:
    """RGB in [0, 1] (4 decimals) of a hue taken modulo 1 and a saturation and value clipped to [0, 1]."""
    return [round(c, 4) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))]


FACADE_FAMILIES = (  # (hue range, saturation range, value range)
    ((0.09, 0.13), (0.15, 0.35), (0.72, 0.92)),  # cream, beige
    ((0.03, 0.08), (0.45, 0.70), (0.55, 0.80)),  # terracotta, orange
    ((0.98, 1.03), (0.50, 0.70), (0.40, 0.60)),  # brick red
    ((0.11, 0.15), (0.45, 0.70), (0.70, 0.90)),  # ochre, yellow
    ((0.53, 0.62), (0.15, 0.40), (0.60, 0.85)),  # pastel blue
    ((0.22, 0.38), (0.15, 0.40), (0.50, 0.75)),  # sage green
    ((0.00, 1.00), (0.00, 0.06), (0.45, 0.80)),  # grey, concrete
    ((0.00, 1.00), (0.00, 0.05), (0.85, 0.95)),  # white
    ((0.05, 0.09), (0.35, 0.55), (0.30, 0.45)),  # brown
    ((0.93, 0.99), (0.20, 0.40), (0.70, 0.90)),  # pink
    ((0.55, 0.70), (0.10, 0.30), (0.22, 0.35)),  # dark slate
)
MATERIALS = ("plaster", "brick", "panel", "siding")
ROOFS = ("flat", "cornice", "parapet", "gable", "mansard")
CAR_COLOURS = ([0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.63, 0.65], [0.38, 0.39, 0.41],
                [0.70, 0.08, 0.08], [0.10, 0.20, 0.55], [0.12, 0.30, 0.18], [0.95, 0.75, 0.10],
                [0.80, 0.74, 0.62], [0.30, 0.45, 0.70])
SIGN_KINDS = {  # kind -> (outer colour, inner colour)
    "round": ([0.80, 0.08, 0.08], [0.95, 0.95, 0.95]),
    "blue_round": ([0.95, 0.95, 0.95], [0.10, 0.30, 0.75]),
    "triangle": ([0.80, 0.08, 0.08], [0.97, 0.97, 0.97]),
    "diamond": ([0.10, 0.10, 0.10], [0.98, 0.80, 0.10]),
    "rect": ([0.95, 0.95, 0.95], [0.08, 0.35, 0.70]),
    "street_name": ([0.95, 0.95, 0.95], [0.05, 0.45, 0.20]),
    "traffic_light": ([0.12, 0.12, 0.12], [0.20, 0.20, 0.20]),
}
POLE_SIGN_KINDS = ("round", "blue_round", "triangle", "diamond", "rect", "street_name", "traffic_light")
