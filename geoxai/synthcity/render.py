"""SynthCity: a procedural street-view world whose every pixel has a known cause.

A place is a stretch of street seen side-on: a row of facades (window grids, doors, roofs), a
sidewalk with trees, street lamps and signs, and a two-lane road. Its *content* is fixed by
``(seed, place)``; each *visit* re-samples the transient factors (sky, lighting, vehicles,
pedestrians, sign appearance, camera jitter) from ``(seed, place, visit)``, one random stream per
factor, so any single factor can be replaced while everything else stays bit-identical. That makes
controlled interventions possible: ``render(p, v, sky=...)`` changes the sky pixels and nothing else.
Two parts of the content can be intervened on the same way (``content_factors(place, variant)``
re-samples each from its own stream): the window grids (``windows=``: how many windows and where;
glass, frame and sills are kept) and the facade colours (``facade_colors=``: pixels only, never
labels). Neither touches the place's own random stream, so the default world stays byte-identical.

Geometry lives on a 128 x 128 "design" canvas (y grows downwards) and is rasterised for any output
size by sampling pixel centres, so labels follow the camera jitter exactly and no pixel is resampled.
Window rules (what makes ``window_count`` a checkable ground truth):

- windows sit on the floors above the ground floor, one rectangle each, at least one pixel apart;
- persistent occluders (tree crowns and trunks, poles and lamps, the largest extent a sign can take)
  hide a window *entirely*: a window whose rectangle touches any occluder pixel is not drawn, so the
  occluder stands in front of plain wall and never cuts a window in two;
- vehicles and pedestrians are clipped below the lowest window row.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from geoxai.errors import GeoxaiError, setting
from geoxai.synthcity.drawing import draw_view
from geoxai.synthcity.factors import (
    FACTOR_KEYS,
    sample_camera,
    sample_lighting,
    sample_pedestrians,
    sample_sign_appearance,
    sample_sky,
    sample_vehicles,
)
from geoxai.synthcity.places import (
    GRID_KEYS,
    HEADING_OFFSET_DEG,
    MAX_SEED,
    MIN_WINDOW_SIDE,
    PLACE_SPACING_M,
    PLACES_PER_STREET,
    POSITION_JITTER_M,
    sample_facade_colour,
    sample_place,
    sample_window_grid,
    seed_origin,
)
from geoxai.synthcity.raster import Textures
from geoxai.synthcity.rng import Rng

CONTENT_KEYS = ("windows", "facade_colors")  # content that can be re-sampled alone (content_factors)
MIN_SIZE = 32
DEGREES_PER_DESIGN_PIXEL = 0.7  # a camera shift of dx design pixels is a yaw of 0.7 * dx degrees


class Render(NamedTuple):
    """One rendered view: RGB image, canonical label map and the factors that produced it."""

    image: np.ndarray  # uint8 [size, size, 3]
    labels: np.ndarray  # uint8 [size, size], geoxai.labels ids
    factors: dict[str, Any]


class SynthCity:
    """A deterministic procedural street world; see the module docstring.

    ``seed`` picks the world, ``size`` the output side in pixels (geometry scales with it).
    """

    def __init__(self, seed: int = 0, size: int = 128):
        if int(seed) != seed or not 0 <= seed <= MAX_SEED:
            raise GeoxaiError(f"{setting('seed')} {seed!r}: a SynthCity world seed is a whole number from 0 to "
                              f"{MAX_SEED} (each seed has its own block of UTM coordinates)")
        if int(size) != size or size < MIN_SIZE:
            raise GeoxaiError(f"{setting('size')} {size!r}: a SynthCity image side is a whole number >= {MIN_SIZE} pixels")
        self.seed = int(seed)
        self.size = int(size)
        self._content_cache: dict[int, dict[str, Any]] = {}
        self._textures: Textures | None = None

    # ----------------------------------------------------------------------- where places are
    def place_utm(self, place: int) -> tuple[float, float]:
        """UTM (east, north) of a place: streets of 40 places, places and streets 30 m apart, in the
        seed's own block (``seed_origin``)."""
        row, col = divmod(int(place), PLACES_PER_STREET)
        east, north = seed_origin(self.seed)
        return east + PLACE_SPACING_M * col, north + PLACE_SPACING_M * row

    def visit_utm(self, place: int, visit: int) -> tuple[float, float]:
        """The camera position of one visit: the place position jittered by at most 2 m."""
        rng = Rng(self.seed, 4, place, visit)
        radius = (POSITION_JITTER_M - 0.01) * math.sqrt(rng.random())  # rounding stays within the radius
        angle = 2 * math.pi * rng.random()
        east, north = self.place_utm(place)
        return round(east + radius * math.cos(angle), 2), round(north + radius * math.sin(angle), 2)

    def place_heading(self, place: int) -> float:
        """Heading in degrees: cameras face the north side of even streets, the south of odd ones."""
        return HEADING_OFFSET_DEG + (0.0 if (int(place) // PLACES_PER_STREET) % 2 == 0 else 180.0)

    def visit_heading(self, place: int, visit: int) -> float:
        """Heading of one visit: the camera's horizontal shift read as a yaw of a few degrees."""
        return self.camera_heading(place, self.visit_factors(place, visit)["camera"])

    def camera_heading(self, place: int, camera: dict[str, Any]) -> float:
        """Heading of a view of ``place`` taken with the ``camera`` factor (its shift is a yaw)."""
        return round((self.place_heading(place) + DEGREES_PER_DESIGN_PIXEL * float(camera["dx"])) % 360.0, 2)

    def is_test_place(self, place: int, test_fraction: float) -> bool:
        """Held-out assignment, evenly spread: among any first N places, about N * fraction are test.

        A place is a test place when ``floor(f * (place + 1) + phase)`` steps up at it, with a phase
        drawn from the seed.
        """
        phase = Rng(self.seed, 3).random()
        return math.floor(test_fraction * (place + 1) + phase) > math.floor(test_fraction * place + phase)

    # --------------------------------------------------------------------- persistent content
    def place_content(self, place: int) -> dict[str, Any]:
        """Everything fixed about a place (facades, street, trees, poles, signs), in design units."""
        import copy

        return copy.deepcopy(self._content(place))

    def _content(self, place: int) -> dict[str, Any]:
        place = int(place)
        if place < 0:
            raise GeoxaiError(f"SynthCity place must be >= 0 (got {place})")
        if place not in self._content_cache:
            if len(self._content_cache) > 512:
                self._content_cache.clear()
            self._content_cache[place] = sample_place(Rng(self.seed, 1, place))
        return self._content_cache[place]

    # ------------------------------------------------------------------------ visit factors
    def visit_factors(self, place: int, visit: int) -> dict[str, Any]:
        """Transient content of one visit: one independent random stream per factor."""
        content = self._content(place)

        def rng(index: int) -> Rng:
            return Rng(self.seed, 2, place, visit, index)

        return {
            "sky": sample_sky(rng(0)),
            "lighting": sample_lighting(rng(1)),
            "vehicles": sample_vehicles(rng(2)),
            "pedestrians": sample_pedestrians(rng(3)),
            "signs": sample_sign_appearance(rng(4), content["signs"]),
            "camera": sample_camera(rng(5)),
        }

    # -------------------------------------------------------------------- re-samplable content
    def content_factors(self, place: int, variant: int | None = None) -> dict[str, Any]:
        """Per building, its window grid (``GRID_KEYS``) and facade colour: the place's own, or new ones.

        ``variant=None`` gives the place's own; an integer draws another version of each key from its
        own stream keyed by ``(seed, place, variant)``, laid out for the same facades, so
        ``render(p, v, windows=content_factors(p, k)["windows"])`` changes the windows and nothing else.
        """
        buildings = self._content(place)["buildings"]
        if variant is None:
            return {"windows": [{key: b["windows"][key] for key in GRID_KEYS} for b in buildings],
                    "facade_colors": [list(b["color"]) for b in buildings]}
        windows, colours = Rng(self.seed, 5, place, variant), Rng(self.seed, 6, place, variant)
        return {
            "windows": [sample_window_grid(windows, b["x1"] - b["x0"], b["height"], b["ground_floor"],
                                            b["floor_height"]) for b in buildings],
            "facade_colors": [sample_facade_colour(colours) for _ in buildings],
        }

    # ------------------------------------------------------------------------------ render
    def render(self, place: int, visit: int, **overrides: Any) -> Render:
        """Render one visit; keyword overrides replace visit factors or re-samplable content, all else fixed."""
        unknown = sorted(set(overrides) - set(FACTOR_KEYS) - set(CONTENT_KEYS))
        if unknown:
            raise GeoxaiError(f"unknown SynthCity factor(s) {', '.join(unknown)}; valid overrides: "
                              f"{', '.join(FACTOR_KEYS + CONTENT_KEYS)}")
        content = self._content(place)
        factors = self.visit_factors(place, visit)
        for key in FACTOR_KEYS:
            if key in overrides:
                _check_override(key, overrides[key], factors[key])
                factors[key] = overrides[key]
        content, grids = _override_content(content, overrides)
        if self._textures is None:
            self._textures = Textures(self.seed, self.size)
        image, labels, window_count = draw_view(content, factors, self.size, self._textures, int(place), grids)
        summary = _place_summary(content, grids)
        return Render(image, labels, {**factors, **summary, "window_count": window_count})


_ITEM_KEYS = {
    "vehicles": ("type", "lane", "x", "length", "height", "color", "facing"),
    "pedestrians": ("x", "depth", "height", "shirt", "trousers", "skin", "hair"),
    "signs": ("visible", "color_jitter", "scale", "dx", "dy", "state"),
}


def _check_override(key: str, value: Any, reference: Any) -> None:
    """Catch overrides of the wrong shape with a message instead of a KeyError deep in rendering."""
    if isinstance(reference, dict):
        missing = set(reference) - set(value) if isinstance(value, dict) else None
        if missing is None or missing:
            need = ", ".join(sorted(reference))
            raise GeoxaiError(f"override {key}= must be a dict with keys {need} "
                              f"(e.g. SynthCity.visit_factors(place, visit)[{key!r}])")
    elif not isinstance(value, (list, tuple)) or not all(isinstance(item, dict) for item in value):
        raise GeoxaiError(f"override {key}= must be a list of dicts "
                          f"(e.g. SynthCity.visit_factors(place, visit)[{key!r}], or [])")
    for item in value if isinstance(value, (list, tuple)) else ():
        missing = sorted(set(_ITEM_KEYS[key]) - set(item))
        if missing:
            raise GeoxaiError(f"override {key}=: an entry lacks {', '.join(missing)}; entries need "
                              f"{', '.join(_ITEM_KEYS[key])}")
    if key == "signs" and len(value) != len(reference):
        raise GeoxaiError(f"override signs= must have one entry per sign of the place ({len(reference)}), "
                          f"got {len(value)}; take it from a visit of the same place")


def _override_content(content: dict[str, Any], overrides: dict[str, Any]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The content to draw and each building's window grid, after ``windows=`` / ``facade_colors=``.

    The grids are kept apart from the buildings so that a facade (its panel joints follow the place's
    own pitch) is drawn the same whatever windows are painted on it.
    """
    buildings = content["buildings"]
    colours = overrides.get("facade_colors")
    if colours is not None:
        _check_list_override("facade_colors", colours, buildings)
        for colour in colours:
            if not isinstance(colour, (list, tuple)) or len(colour) != 3 or not all(
                    isinstance(c, numbers.Real) and 0.0 <= c <= 1.0 for c in colour):
                raise GeoxaiError(f"override facade_colors=: {colour!r} is not an RGB triple in [0, 1]")
        buildings = [{**b, "color": [float(c) for c in colour]} for b, colour in zip(buildings, colours, strict=True)]
        content = {**content, "buildings": buildings}
    grids = [b["windows"] for b in buildings]
    windows = overrides.get("windows")
    if windows is not None:
        _check_list_override("windows", windows, buildings)
        grids = [{**grid, **_checked_grid(new, b)} for grid, new, b in zip(grids, windows, buildings, strict=True)]
    return content, grids


def _check_list_override(key: str, value: Any, buildings: list[dict[str, Any]]) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != len(buildings):
        raise GeoxaiError(f"override {key}= must be a list with one entry per building of the place "
                          f"({len(buildings)}); take it from SynthCity.content_factors(place, variant)")


def _checked_grid(grid: Any, building: dict[str, Any]) -> dict[str, Any]:
    """One building's new window grid, refused unless it fits the facade like a sampled one does."""
    if not isinstance(grid, dict) or set(grid) != set(GRID_KEYS):
        got = ", ".join(sorted(grid)) if isinstance(grid, dict) else type(grid).__name__
        raise GeoxaiError(f"override windows=: each entry must have exactly the keys {', '.join(GRID_KEYS)} "
                          f"(got {got}); glass, frame and sills are not overridden")
    rows, cols = grid["rows"], grid["cols"]
    if not all(isinstance(n, numbers.Integral) and n >= 0 for n in (rows, cols)) or not all(
            isinstance(grid[key], numbers.Real) and grid[key] > 0 for key in ("pitch", "width", "height", "side")):
        raise GeoxaiError("override windows=: rows and cols must be integers >= 0; pitch, width, height and side "
                          "numbers > 0")
    span = (cols - 1) * grid["pitch"] + grid["width"] if cols else 0.0
    fits = (grid["side"] >= MIN_WINDOW_SIDE and span <= building["x1"] - building["x0"] - 2 * grid["side"] + 1e-6
            and rows * building["floor_height"] <= building["height"] - building["ground_floor"] + 1e-6)
    if not fits:
        raise GeoxaiError(f"override windows=: grid {grid} does not fit its facade (side margin >= "
                          f"{MIN_WINDOW_SIDE:g}, columns within the margins, rows below the top); "
                          "take grids from SynthCity.content_factors(place, variant)")
    return {key: grid[key] for key in GRID_KEYS}


def _place_summary(content: dict[str, Any], grids: list[dict[str, Any]]) -> dict[str, Any]:
    buildings = content["buildings"]
    return {
        "building_count": len(buildings),
        "windows_total": int(sum(grid["rows"] * grid["cols"] for grid in grids)),
        "tree_count": len(content["trees"]),
        "pole_count": len(content["poles"]),
        "sign_count": len(content["signs"]),
        "facade_colors": [b["color"] for b in buildings],
    }
