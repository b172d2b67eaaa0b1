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

import colorsys
import math
import numbers
import random
from typing import Any, NamedTuple

import numpy as np

from geoxai.errors import GeoxaiError, setting
from geoxai.segmentation import labels as L

DESIGN = 128.0  # side of the design canvas every size is scaled from
FACTOR_KEYS = ("sky", "lighting", "vehicles", "pedestrians", "signs", "camera")
CONTENT_KEYS = ("windows", "facade_colors")  # content that can be re-sampled alone (content_factors)
GRID_KEYS = ("rows", "cols", "pitch", "width", "height", "side")  # what a windows= override replaces
MIN_WINDOW_SIDE = 3.0  # design units between a grid and its facade's edge: keeps neighbours' windows apart
MIN_SIZE = 32

# Where places are: a street grid in UTM zone 10 S (San Francisco), places 30 m apart. Places sit at
# the centre of CosPlace's 10 m cells (and inside 30 m cells) and headings at the centre of 30-degree
# bins, so the official CosGroups settings (M = 10 m, alpha = 30 deg) never split a place's visits.
ORIGIN_EAST, ORIGIN_NORTH = 551005.0, 4178005.0
HEADING_OFFSET_DEG = 15.0
PLACE_SPACING_M = 30.0
PLACES_PER_STREET = 40
POSITION_JITTER_M = 2.0  # radius of the per-visit camera position jitter (2 + 2 + 25 < 30)
# Each seed has its own block of the grid, so worlds of different seeds never share a position and a
# folder that merges them holds no false positives: block k = seed lies seed % SEED_BLOCK_ROWS blocks
# north and seed // SEED_BLOCK_ROWS blocks east of the origin (seed 0 keeps the origin). A block
# holds MAX_PLACES places (1000 streets, 30 km) with a 300 m gap east of its 1.2 km wide streets, and
# the 160 x 180 blocks stay within latitudes 37.7 to 81 degrees.
MAX_PLACES = 40000
SEED_BLOCK_NORTH_M = PLACE_SPACING_M * MAX_PLACES / PLACES_PER_STREET
SEED_BLOCK_EAST_M = PLACE_SPACING_M * PLACES_PER_STREET + 300.0
SEED_BLOCK_ROWS, SEED_BLOCK_COLUMNS = 160, 180
MAX_SEED = SEED_BLOCK_ROWS * SEED_BLOCK_COLUMNS - 1
DEGREES_PER_DESIGN_PIXEL = 0.7  # a camera shift of dx design pixels is a yaw of 0.7 * dx degrees


class Render(NamedTuple):
    """One rendered view: RGB image, canonical label map and the factors that produced it."""

    image: np.ndarray  # uint8 [size, size, 3]
    labels: np.ndarray  # uint8 [size, size], geoxai.segmentation.labels ids
    factors: dict[str, Any]


# ------------------------------------------------------------------------------------ helpers
def _rgb(h: float, s: float, v: float) -> list[float]:
    return [round(c, 4) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))]


class _Rng:
    """A random stream keyed by a tuple; built on ``random.Random.random()`` only, whose sequence for
    a given seed Python keeps stable across versions (numpy's samplers may change between releases)."""

    def __init__(self, *key: int):
        self._random = random.Random("synthcity/" + "/".join(str(int(k)) for k in key))

    def random(self) -> float:
        return self._random.random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random.random()

    def integers(self, low: int, high: int | None = None) -> int:
        """An integer in [low, high), or in [0, low) when ``high`` is omitted (numpy's convention)."""
        if high is None:
            low, high = 0, low
        return low + min(int((high - low) * self._random.random()), high - low - 1)

    def choice(self, options: Any, p: Any = None) -> Any:
        if p is None:
            return options[self.integers(len(options))]
        x, total = self._random.random(), 0.0
        for option, weight in zip(options, p):
            total += weight
            if x < total:
                return option
        return options[-1]


def _u(rng: _Rng, low: float, high: float) -> float:
    return rng.uniform(low, high)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer lattice point (vectorised)."""
    h = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + (seed % 1048573) * 2246822519)
    h &= 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return (h & 0xFFFFFF).astype(np.float32) / np.float32(1 << 24)


def _lattice_coords(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index below each coordinate and the smoothstep weight of the next one."""
    grid = coords / cell
    index = np.floor(grid).astype(np.int64)
    f = (grid - index).astype(np.float32)
    return index, f * f * (3 - 2 * f)


class _Textures:
    """Random tables drawn once per world: a value-noise lattice and a bank of sensor noise.

    Value noise is evaluated at design coordinates, so textures move with the camera like the
    geometry does; ``key`` picks a different part of the lattice (a different texture).
    """

    LATTICE = 256
    BANK_MARGIN = 64

    def __init__(self, seed: int, size: int):
        self.lattice = np.random.Generator(np.random.PCG64([seed, 7])).random(
            (self.LATTICE, self.LATTICE), dtype=np.float32)
        self.bank = np.random.Generator(np.random.PCG64([seed, 8])).standard_normal(
            (size + self.BANK_MARGIN, size + self.BANK_MARGIN, 3), dtype=np.float32)

    def value_noise(self, u: np.ndarray, v: np.ndarray, cell: float, key: int) -> np.ndarray:
        """Smooth noise in [0, 1) on rows ``v`` x columns ``u`` (increasing design coordinates)."""
        ix, fx = _lattice_coords(u, cell)
        iy, fy = _lattice_coords(v, cell)
        ox, oy = (key * 7919 + 13) % self.LATTICE, (key * 104729 // self.LATTICE + 71) % self.LATTICE
        rows = (iy[0] + oy + np.arange(iy[-1] - iy[0] + 2)) % self.LATTICE
        cols = (ix[0] + ox + np.arange(ix[-1] - ix[0] + 2)) % self.LATTICE
        table = self.lattice[np.ix_(rows, cols)]
        ix, iy = ix - ix[0], iy - iy[0]
        left, right = table[:, ix], table[:, ix + 1]
        along = left + (right - left) * fx
        top, bottom = along[iy], along[iy + 1]
        return top + (bottom - top) * fy[:, None]

    def sensor_noise(self, size: int, noise_seed: int) -> np.ndarray:
        oy, ox = noise_seed % self.BANK_MARGIN, (noise_seed // self.BANK_MARGIN) % self.BANK_MARGIN
        return self.bank[oy:oy + size, ox:ox + size]


class _Stamp(NamedTuple):
    """Pixels of one shape: a bounding box and an optional mask inside it (None = full box)."""

    ys: slice
    xs: slice
    mask: np.ndarray | None

    @property
    def empty(self) -> bool:
        return self.ys.stop <= self.ys.start or self.xs.stop <= self.xs.start or (
            self.mask is not None and not self.mask.any())


class _View:
    """Design units -> pixels for one render (output size, zoom about the centre, camera shift).

    A pixel belongs to a shape when its centre does; a design interval [a, b) covers the pixel
    indices [ceil(px(a) - 0.5), ceil(px(b) - 0.5)).
    """

    def __init__(self, size: int, camera: dict[str, Any]):
        self.size = size
        self.scale = size / DESIGN * float(camera["zoom"])
        self.x0 = size / 2 + float(camera["dx"]) * size / DESIGN - DESIGN / 2 * self.scale
        self.y0 = size / 2 + float(camera["dy"]) * size / DESIGN - DESIGN / 2 * self.scale
        centres = np.arange(size, dtype=np.float64) + 0.5
        self.u = (centres - self.x0) / self.scale  # design x of each pixel column centre
        self.v = (centres - self.y0) / self.scale  # design y of each pixel row centre

    def px(self, u: float) -> float:
        return u * self.scale + self.x0

    def py(self, v: float) -> float:
        return v * self.scale + self.y0

    def index(self, pixel_coord: float) -> int:
        """First pixel index whose centre is at or after ``pixel_coord``, clipped to the image."""
        return min(max(math.ceil(pixel_coord - 0.5), 0), self.size)

    def span(self, a: float, b: float, axis: str) -> slice:
        to_pixel = self.px if axis == "x" else self.py
        return slice(self.index(to_pixel(a)), self.index(to_pixel(b)))

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> _Stamp:
        return _Stamp(self.span(v0, v1, "y"), self.span(u0, u1, "x"), None)

    def ellipse(self, cu: float, cv: float, ru: float, rv: float) -> _Stamp:
        ys, xs = self.span(cv - rv, cv + rv + 1e-6, "y"), self.span(cu - ru, cu + ru + 1e-6, "x")
        du = (self.u[xs] - cu) / ru
        dv = (self.v[ys] - cv) / rv
        return _Stamp(ys, xs, dv[:, None] ** 2 + du[None, :] ** 2 <= 1.0)

    def polygon(self, points: list[tuple[float, float]]) -> _Stamp:
        """A convex polygon given by its corners in design units (any orientation)."""
        us, vs = [p[0] for p in points], [p[1] for p in points]
        ys, xs = self.span(min(vs), max(vs) + 1e-6, "y"), self.span(min(us), max(us) + 1e-6, "x")
        uu, vv = self.u[xs][None, :], self.v[ys][:, None]
        area = sum(points[i - 1][0] * points[i][1] - points[i][0] * points[i - 1][1] for i in range(len(points)))
        sign = 1.0 if area >= 0 else -1.0
        mask = np.ones((ys.stop - ys.start, xs.stop - xs.start), dtype=bool)
        for i in range(len(points)):
            (au, av), (bu, bv) = points[i - 1], points[i]
            mask &= sign * ((bu - au) * (vv - av) - (bv - av) * (uu - au)) >= 0
        return _Stamp(ys, xs, mask)


class _Canvas:
    """Label map and float RGB image painted back to front."""

    def __init__(self, size: int):
        self.labels = np.full((size, size), L.SKY, dtype=np.uint8)
        self.rgb = np.zeros((size, size, 3), dtype=np.float32)

    def paint(self, stamp: _Stamp, label: int, colour: Any, clip_row: int = 0) -> None:
        ys = slice(max(stamp.ys.start, clip_row), stamp.ys.stop) if clip_row else stamp.ys
        if ys.stop <= ys.start or stamp.xs.stop <= stamp.xs.start:
            return
        mask = stamp.mask
        if mask is not None and ys.start != stamp.ys.start:
            mask = mask[ys.start - stamp.ys.start:]
        colour = np.asarray(colour, dtype=np.float32)
        if colour.ndim == 3 and ys.start != stamp.ys.start:
            colour = colour[ys.start - stamp.ys.start:]
        labels, rgb = self.labels[ys, stamp.xs], self.rgb[ys, stamp.xs]
        if mask is None:
            labels[...] = label
            rgb[...] = colour
        else:
            labels[mask] = label
            rgb[mask] = colour[mask] if colour.ndim == 3 else colour


# ------------------------------------------------------------------------------ the palettes
_FACADE_FAMILIES = (  # (hue range, saturation range, value range)
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
_MATERIALS = ("plaster", "brick", "panel", "siding")
_ROOFS = ("flat", "cornice", "parapet", "gable", "mansard")
_CAR_COLOURS = ([0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.63, 0.65], [0.38, 0.39, 0.41],
                [0.70, 0.08, 0.08], [0.10, 0.20, 0.55], [0.12, 0.30, 0.18], [0.95, 0.75, 0.10],
                [0.80, 0.74, 0.62], [0.30, 0.45, 0.70])
_SIGN_KINDS = {  # kind -> (outer colour, inner colour)
    "round": ([0.80, 0.08, 0.08], [0.95, 0.95, 0.95]),
    "blue_round": ([0.95, 0.95, 0.95], [0.10, 0.30, 0.75]),
    "triangle": ([0.80, 0.08, 0.08], [0.97, 0.97, 0.97]),
    "diamond": ([0.10, 0.10, 0.10], [0.98, 0.80, 0.10]),
    "rect": ([0.95, 0.95, 0.95], [0.08, 0.35, 0.70]),
    "street_name": ([0.95, 0.95, 0.95], [0.05, 0.45, 0.20]),
    "traffic_light": ([0.12, 0.12, 0.12], [0.20, 0.20, 0.20]),
}
_POLE_SIGN_KINDS = ("round", "blue_round", "triangle", "diamond", "rect", "street_name", "traffic_light")


# ---------------------------------------------------------------------------------- the world
def seed_origin(seed: int) -> tuple[float, float]:
    """UTM (east, north) of place 0 of the world ``seed``: the south-west corner of the seed's block."""
    column, row = divmod(int(seed), SEED_BLOCK_ROWS)
    return ORIGIN_EAST + SEED_BLOCK_EAST_M * column, ORIGIN_NORTH + SEED_BLOCK_NORTH_M * row


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
        self._textures: _Textures | None = None

    # ----------------------------------------------------------------------- where places are
    def place_utm(self, place: int) -> tuple[float, float]:
        """UTM (east, north) of a place: streets of 40 places, places and streets 30 m apart, in the
        seed's own block (``seed_origin``)."""
        row, col = divmod(int(place), PLACES_PER_STREET)
        east, north = seed_origin(self.seed)
        return east + PLACE_SPACING_M * col, north + PLACE_SPACING_M * row

    def visit_utm(self, place: int, visit: int) -> tuple[float, float]:
        """The camera position of one visit: the place position jittered by at most 2 m."""
        rng = _Rng(self.seed, 4, place, visit)
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
        phase = _Rng(self.seed, 3).random()
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
            self._content_cache[place] = _sample_place(_Rng(self.seed, 1, place))
        return self._content_cache[place]

    # ------------------------------------------------------------------------ visit factors
    def visit_factors(self, place: int, visit: int) -> dict[str, Any]:
        """Transient content of one visit: one independent random stream per factor."""
        content = self._content(place)

        def rng(index: int) -> _Rng:
            return _Rng(self.seed, 2, place, visit, index)

        return {
            "sky": _sample_sky(rng(0)),
            "lighting": _sample_lighting(rng(1)),
            "vehicles": _sample_vehicles(rng(2)),
            "pedestrians": _sample_pedestrians(rng(3)),
            "signs": _sample_sign_appearance(rng(4), content["signs"]),
            "camera": _sample_camera(rng(5)),
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
        windows, colours = _Rng(self.seed, 5, place, variant), _Rng(self.seed, 6, place, variant)
        return {
            "windows": [_sample_window_grid(windows, b["x1"] - b["x0"], b["height"], b["ground_floor"],
                                            b["floor_height"]) for b in buildings],
            "facade_colors": [_sample_facade_colour(colours) for _ in buildings],
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
            self._textures = _Textures(self.seed, self.size)
        image, labels, window_count = _render(content, factors, self.size, self._textures, int(place), grids)
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
        buildings = [{**b, "color": [float(c) for c in colour]} for b, colour in zip(buildings, colours)]
        content = {**content, "buildings": buildings}
    grids = [b["windows"] for b in buildings]
    windows = overrides.get("windows")
    if windows is not None:
        _check_list_override("windows", windows, buildings)
        grids = [{**grid, **_checked_grid(new, b)} for grid, new, b in zip(grids, windows, buildings)]
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


# ------------------------------------------------------------------------- sampling a place
def _sample_place(rng: _Rng) -> dict[str, Any]:
    base = _u(rng, 80, 90)  # design y where facades meet the sidewalk
    kerb = base + _u(rng, 8, 13)
    buildings = _sample_buildings(rng, base)
    grey = _u(rng, 0.22, 0.42)
    road_hue = rng.choice([0.0, 0.6, 0.08])
    sidewalk_v = _u(rng, 0.55, 0.8)
    content: dict[str, Any] = {
        "base_y": round(base, 3),
        "kerb_y": round(kerb, 3),
        "sidewalk": {
            "color": _rgb(_u(rng, 0.05, 0.12), _u(rng, 0.02, 0.15), sidewalk_v),
            "kerb_color": _rgb(0.1, 0.03, min(sidewalk_v + 0.12, 0.95)),
            "tile": round(_u(rng, 3.0, 7.0), 3),
        },
        "road": {
            "color": _rgb(road_hue, _u(rng, 0.0, 0.08), grey),
            "marking": bool(rng.random() < 0.75),
            "marking_color": [0.92, 0.92, 0.88] if rng.random() < 0.6 else [0.92, 0.78, 0.2],
            "marking_y": round(_u(rng, 0.45, 0.6), 3),  # fraction of the road band below the kerb
        },
        "skyline": _sample_skyline(rng, base) if rng.random() < 0.6 else [],
        "buildings": buildings,
    }
    trees = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        trunk_h = _u(rng, 10, 22)
        rx, ry = _u(rng, 8, 15), _u(rng, 8, 15)
        trees.append({
            "x": round(_u(rng, 0, 128), 3), "foot_y": round(base + (kerb - base) * _u(rng, 0.4, 0.7), 3),
            "trunk_width": round(_u(rng, 1.5, 3.0), 3), "trunk_height": round(trunk_h, 3),
            "crown_rx": round(rx, 3), "crown_ry": round(ry, 3),
            "crown_color": _rgb(_u(rng, 0.2, 0.36), _u(rng, 0.45, 0.75), _u(rng, 0.25, 0.5)),
            "trunk_color": _rgb(0.07, 0.5, _u(rng, 0.2, 0.35)),
            "blobs": [[round(_u(rng, -0.6, 0.6), 3), round(_u(rng, -0.5, 0.4), 3), round(_u(rng, 0.45, 0.7), 3)]
                      for _ in range(int(rng.integers(3, 6)))],
        })
    content["trees"] = trees
    poles, signs = [], []
    pole_colour = _rgb(0.6, _u(rng, 0.0, 0.15), _u(rng, 0.2, 0.5))
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        poles.append({"kind": "lamp", "x": round(_u(rng, 0, 128), 3), "foot_y": round(kerb - 1.5, 3),
                      "height": round(_u(rng, 38, 58), 3), "width": 1.6,
                      "arm": round(_u(rng, 5, 9) * rng.choice([-1, 1]), 3), "color": pole_colour})
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        if rng.random() < 0.35:  # a shop sign on the ground floor of a facade
            width, height = _u(rng, 12, 24), _u(rng, 4, 6)
            signs.append({"mount": "wall", "kind": "shop", "x": round(_u(rng, 5, 123), 3),
                          "y": round(base - _u(rng, 12, 15), 3), "width": round(width, 3),
                          "height": round(height, 3),
                          "color": _rgb(rng.random(), _u(rng, 0.5, 0.9), _u(rng, 0.3, 0.9)),
                          "text_color": _rgb(0, 0, float(rng.choice([0.1, 0.95])))})
        else:
            kind = str(rng.choice(_POLE_SIGN_KINDS))
            post_h = _u(rng, 22, 32) if kind != "traffic_light" else _u(rng, 30, 38)
            x = _u(rng, 0, 128)
            width = _u(rng, 6, 8) if kind not in ("rect", "street_name") else _u(rng, 9, 13)
            height = width if kind not in ("rect", "street_name", "traffic_light") else (
                _u(rng, 4, 6) if kind == "street_name" else _u(rng, 8, 11))
            if kind == "traffic_light":
                width, height = 4.5, _u(rng, 11, 13)
            poles.append({"kind": "sign_post", "x": round(x, 3), "foot_y": round(kerb - 1.0, 3),
                          "height": round(post_h - height / 2, 3), "width": 1.2, "arm": 0.0,
                          "color": pole_colour})
            outer, inner = _SIGN_KINDS[kind]
            signs.append({"mount": "pole", "kind": kind, "x": round(x, 3), "y": round(kerb - 1.0 - post_h, 3),
                          "width": round(width, 3), "height": round(height, 3), "color": outer,
                          "text_color": inner})
    content["poles"] = poles
    content["signs"] = signs
    return content


def _sample_skyline(rng: _Rng, base: float) -> list[dict[str, Any]]:
    blocks, x = [], -24.0
    haze = _u(rng, 0.55, 0.68)
    while x < 152:
        width = _u(rng, 10, 30)
        blocks.append({"x0": round(x, 3), "x1": round(x + width, 3), "top": round(base - _u(rng, 45, 95), 3),
                       "color": _rgb(_u(rng, 0.55, 0.62), _u(rng, 0.05, 0.2), haze + _u(rng, -0.08, 0.08))})
        x += width
    return blocks


def _sample_facade_colour(rng: _Rng) -> list[float]:
    """A facade colour: a family of ``_FACADE_FAMILIES``, then hue, saturation and value within it."""
    family = _FACADE_FAMILIES[int(rng.integers(len(_FACADE_FAMILIES)))]
    return _rgb(_u(rng, *family[0]), _u(rng, *family[1]), _u(rng, *family[2]))


def _sample_window_grid(rng: _Rng, width: float, height: float, ground: float, floor_h: float) -> dict[str, Any]:
    """A window grid (``GRID_KEYS``) for a facade: rows on the floors above the ground floor that fit
    under a top margin, columns that fit between side margins (design units)."""
    top_margin = _u(rng, 3, 6)
    rows = max(0, int((height - ground - top_margin) // floor_h))
    pitch = _u(rng, 9, 17)
    win_w = pitch * _u(rng, 0.4, 0.72)
    win_h = floor_h * _u(rng, 0.45, 0.72)
    side = _u(rng, MIN_WINDOW_SIDE, 6)
    cols = max(0, int((width - 2 * side + (pitch - win_w)) // pitch))
    return {"rows": rows, "cols": cols, "pitch": round(pitch, 3), "width": round(win_w, 3),
            "height": round(win_h, 3), "side": round(side, 3)}


def _sample_buildings(rng: _Rng, base: float) -> list[dict[str, Any]]:
    buildings, x = [], -24.0 - _u(rng, 0, 20)
    while x < 152:
        width = _u(rng, 22, 58)
        colour = _sample_facade_colour(rng)
        height = _u(rng, 30, min(82, base + 6))
        ground = _u(rng, 21, 28)
        floor_h = _u(rng, 11, 16)
        roof = str(rng.choice(_ROOFS))
        grid = _sample_window_grid(rng, width, height, ground, floor_h)
        glass_family = int(rng.integers(4))
        glass = [_rgb(0.6, 0.3, _u(rng, 0.18, 0.32)), _rgb(0.45, 0.25, _u(rng, 0.2, 0.35)),
                 _rgb(0.08, 0.25, _u(rng, 0.15, 0.28)), _rgb(0.58, 0.15, _u(rng, 0.5, 0.7))][glass_family]
        trim_hue = _u(rng, 0, 1)
        frame = [[0.93, 0.93, 0.9], [0.15, 0.15, 0.15], _rgb(trim_hue, 0.3, 0.45),
                 [0.55, 0.5, 0.45]][int(rng.integers(4))]
        doors = []
        for _ in range(int(rng.choice([1, 1, 2]) if width > 30 else 1)):
            dw = _u(rng, 6, 10) if rng.random() < 0.8 else _u(rng, 12, 18)
            if width - dw - 4 <= 2:
                continue
            dx = _u(rng, 2, width - dw - 2)
            if any(abs(dx - d["x"] + x) < (dw + d["width"]) / 2 + 2 for d in doors):
                continue
            doors.append({"x": round(x + dx, 3), "width": round(dw, 3),
                          "height": round(min(_u(rng, 13, 18), ground - 3), 3),
                          "color": _rgb(_u(rng, 0, 1), _u(rng, 0.2, 0.6), _u(rng, 0.12, 0.4)),
                          "garage": bool(dw > 11)})
        buildings.append({
            "x0": round(x, 3), "x1": round(x + width, 3), "height": round(height, 3), "color": colour,
            "material": str(rng.choice(_MATERIALS)), "ground_floor": round(ground, 3),
            "floor_height": round(floor_h, 3), "texture_seed": int(rng.integers(1 << 20)),
            "roof": {"kind": roof, "height": round(_u(rng, 6, 14), 3),
                     "color": _rgb(_u(rng, 0.0, 0.08) if rng.random() < 0.6 else 0.6,
                                   _u(rng, 0.1, 0.5), _u(rng, 0.18, 0.45)),
                     "trim_color": _rgb(trim_hue, 0.08, _u(rng, 0.3, 0.95))},
            "band": bool(rng.random() < 0.5),
            "windows": {**grid, "glass": glass, "frame": frame, "sill": bool(rng.random() < 0.6)},
            "doors": doors,
            "awning": _rgb(rng.random(), 0.6, 0.6) if rng.random() < 0.25 else None,
        })
        x += width
        if rng.random() < 0.15:  # an alley
            x += _u(rng, 3, 8)
    return buildings


# -------------------------------------------------------------------- sampling visit factors
def _sample_sky(rng: _Rng) -> dict[str, Any]:
    time_of_day = "dusk" if rng.random() < 0.25 else "day"
    kind = str(rng.choice(["clear", "clouds", "overcast"], p=[0.35, 0.4, 0.25]))
    if kind == "overcast":
        grey = _u(rng, 0.55, 0.82)
        hue = _u(rng, 0.55, 0.65) if time_of_day == "day" else _u(rng, 0.0, 0.08)
        top, horizon = _rgb(hue, _u(rng, 0.02, 0.08), grey), _rgb(hue, _u(rng, 0.02, 0.1), grey + 0.08)
        cloud = _rgb(hue, 0.03, grey + _u(rng, 0.05, 0.15))
    elif time_of_day == "day":
        hue = _u(rng, 0.55, 0.62)
        top = _rgb(hue, _u(rng, 0.5, 0.75), _u(rng, 0.7, 0.9))
        horizon = _rgb(hue - 0.02, _u(rng, 0.15, 0.35), _u(rng, 0.88, 0.98))
        cloud = _rgb(0.6, 0.02, _u(rng, 0.9, 0.99))
    else:
        hue = _u(rng, 0.0, 0.1) if rng.random() < 0.6 else _u(rng, 0.9, 1.0)
        top = _rgb(_u(rng, 0.64, 0.74), _u(rng, 0.35, 0.6), _u(rng, 0.4, 0.6))
        horizon = _rgb(hue, _u(rng, 0.45, 0.7), _u(rng, 0.85, 0.98))
        cloud = _rgb(hue + 0.02, _u(rng, 0.2, 0.4), _u(rng, 0.75, 0.95))
    count = {"clear": int(rng.integers(0, 3)), "clouds": int(rng.integers(4, 10)),
             "overcast": int(rng.integers(8, 15))}[kind]
    clouds = [[round(_u(rng, -10, 138), 2), round(_u(rng, -8, 55), 2), round(_u(rng, 8, 28), 2),
               round(_u(rng, 3, 9), 2), round(_u(rng, 0.6, 1.3) * (0.5 if kind == "overcast" else 1.0), 3)]
              for _ in range(count)]
    return {"kind": kind, "time_of_day": time_of_day, "hue": round(hue * 360.0 % 360.0, 1), "top": top,
            "horizon": horizon, "cloud_color": cloud, "clouds": clouds,
            "texture_seed": int(rng.integers(1 << 20))}


def _sample_lighting(rng: _Rng) -> dict[str, Any]:
    sun_side = str(rng.choice(["left", "right", "none"], p=[0.38, 0.38, 0.24]))
    tint = str(rng.choice(["warm", "cool", "neutral"], p=[0.35, 0.35, 0.3]))
    strength = 0.0 if tint == "neutral" else _u(rng, 0.03, 0.12)
    tint_rgb = {"warm": [1 + strength, 1.0, 1 - strength], "cool": [1 - strength, 1.0, 1 + strength],
                "neutral": [1.0, 1.0, 1.0]}[tint]
    return {
        "brightness": round(_u(rng, 0.65, 1.25), 3),
        "sun_side": sun_side,
        "shadow_strength": round(_u(rng, 0.25, 0.55), 3) if sun_side != "none" else 0.0,
        "shadow_y": round(_u(rng, 35, 100), 2),  # design y of the shadow's upper edge mid-image
        "shadow_slope": round(_u(rng, 0.1, 0.6), 3),  # the edge rises towards the sun
        "tint": tint,
        "tint_strength": round(strength, 3),
        "tint_rgb": [round(c, 4) for c in tint_rgb],
    }


def _sample_vehicles(rng: _Rng) -> list[dict[str, Any]]:
    vehicles: list[dict[str, Any]] = []
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.2, 0.35, 0.3, 0.15]))):
        kind = "van" if rng.random() < 0.25 else "car"
        length = _u(rng, 46, 56) if kind == "van" else _u(rng, 38, 50)
        lane = int(rng.integers(2))
        for _attempt in range(8):
            x = _u(rng, -15, 143)
            span = length * (0.8 if lane == 0 else 1.0)
            if all(v["lane"] != lane or abs(v["x"] - x) > (span + v["length"]) / 2 + 2 for v in vehicles):
                break
        else:
            continue
        vehicles.append({
            "type": kind, "lane": lane, "x": round(x, 2), "length": round(length, 2),
            "height": round(_u(rng, 25, 29) if kind == "van" else _u(rng, 15, 19), 2),
            "color": _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))],
            "facing": str(rng.choice(["left", "right"])),
        })
    return vehicles


def _sample_pedestrians(rng: _Rng) -> list[dict[str, Any]]:
    people = []
    for _ in range(int(rng.choice([0, 1, 2, 3, 4], p=[0.25, 0.3, 0.25, 0.12, 0.08]))):
        people.append({
            "x": round(_u(rng, -4, 132), 2),
            "depth": round(_u(rng, 0.2, 0.9), 3),  # 0 = against the facades, 1 = at the kerb
            "height": round(_u(rng, 13, 18), 2),
            "shirt": _rgb(rng.random(), _u(rng, 0.2, 0.9), _u(rng, 0.2, 0.95)),
            "trousers": _rgb(_u(rng, 0.55, 0.65), _u(rng, 0.1, 0.6), _u(rng, 0.1, 0.5)),
            "skin": _rgb(_u(rng, 0.04, 0.09), _u(rng, 0.25, 0.6), _u(rng, 0.35, 0.95)),
            "hair": _rgb(0.08, _u(rng, 0.2, 0.7), _u(rng, 0.05, 0.6)),
        })
    return people


def _sample_sign_appearance(rng: _Rng, signs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    looks = []
    for _sign in signs:
        looks.append({
            "visible": bool(rng.random() < 0.82),
            "color_jitter": [round(_u(rng, 0.8, 1.15), 3) for _ in range(3)],
            "scale": round(_u(rng, 0.9, 1.1), 3),
            "dx": round(_u(rng, -1, 1), 2),
            "dy": round(_u(rng, -1, 1), 2),
            "state": int(rng.integers(3)),  # lit lamp of a traffic light
        })
    return looks


def _sample_camera(rng: _Rng) -> dict[str, Any]:
    return {"dx": int(rng.integers(-4, 5)), "dy": int(rng.integers(-3, 4)), "zoom": round(_u(rng, 0.96, 1.06), 4),
            "noise_level": round(_u(rng, 1.0, 5.0), 3), "noise_seed": int(rng.integers(1 << 31))}


# -------------------------------------------------------------------------------- rendering
SIGN_MAX_SCALE, SIGN_MAX_SHIFT = 1.1, 1.0  # the extent a sign may take in any visit


def _render(content: dict[str, Any], factors: dict[str, Any], size: int, textures: _Textures,
            place: int, grids: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, int]:
    view = _View(size, factors["camera"])
    canvas = _Canvas(size)
    coarse = textures.value_noise(view.u, view.v, 7.0, 4 * place)
    fine = textures.value_noise(view.u, view.v, 1.0, 4 * place + 1)
    base, kerb = content["base_y"], content["kerb_y"]

    canvas.rgb[...] = _sky_colours(view, factors["sky"], textures)
    for block in content["skyline"]:
        stamp = view.rect(block["x0"], block["top"], block["x1"], base)
        if not stamp.empty:  # distant facades: faint rows of tiny windows, too small to count
            rows = (view.v[stamp.ys] - block["top"]) % 4.0 > 2.2
            cols = (view.u[stamp.xs] - block["x0"]) % 3.0 > 1.5
            shade = 0.97 + 0.06 * fine[stamp.ys, stamp.xs] - 0.07 * (rows[:, None] & cols[None, :])
            canvas.paint(stamp, L.BUILDING, np.asarray(block["color"], np.float32) * shade[..., None])
    for building in content["buildings"]:
        _draw_facade(canvas, view, building, base, coarse, fine)
    _draw_street(canvas, view, content, coarse, fine)

    occluders = [*_tree_stamps(view, content["trees"]), *_pole_stamps(view, content["poles"])]
    occluders += [_sign_extent(view, sign) for sign in content["signs"]]
    occluded = np.zeros((size, size), dtype=bool)
    for stamp, *_ in occluders:
        _mark(occluded, stamp)
    window_count = _draw_windows(canvas, view, content, grids, occluded, place)

    for stamp, label, colour in occluders[:len(occluders) - len(content["signs"])]:
        if label == L.VEGETATION and stamp.mask is not None:  # crown: shaded leaves
            shade = 0.75 + 0.45 * fine[stamp.ys, stamp.xs, None] * coarse[stamp.ys, stamp.xs, None]
            canvas.paint(stamp, label, np.asarray(colour, np.float32) * shade)
        else:
            canvas.paint(stamp, label, colour)
    for sign, look in zip(content["signs"], factors["signs"]):
        _draw_sign(canvas, view, sign, look)

    clip_row = view.index(view.py(base - min((b["ground_floor"] for b in content["buildings"]), default=21.0)))
    for person in sorted(factors["pedestrians"], key=lambda p: p["depth"]):
        _draw_pedestrian(canvas, view, person, base, kerb, clip_row)
    for vehicle in sorted(factors["vehicles"], key=lambda v: v["lane"]):
        _draw_vehicle(canvas, view, vehicle, kerb, clip_row)

    rgb = _apply_lighting(canvas, view, factors["lighting"])
    camera = factors["camera"]
    noise = textures.sensor_noise(size, int(camera["noise_seed"]))
    rgb = rgb * 255.0 + noise * np.float32(camera["noise_level"])
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return image, canvas.labels, window_count


def _mark(mask: np.ndarray, stamp: _Stamp) -> None:
    if stamp.empty:
        return
    if stamp.mask is None:
        mask[stamp.ys, stamp.xs] = True
    else:
        mask[stamp.ys, stamp.xs] |= stamp.mask


def _sky_colours(view: _View, sky: dict[str, Any], textures: _Textures) -> np.ndarray:
    t = np.clip((view.v - (-10.0)) / 100.0, 0.0, 1.0).astype(np.float32) ** 1.3
    top, horizon = np.asarray(sky["top"], np.float32), np.asarray(sky["horizon"], np.float32)
    rgb = (top[None, None, :] * (1 - t)[:, None, None] + horizon[None, None, :] * t[:, None, None])
    rgb = np.broadcast_to(rgb, (view.size, view.size, 3)).copy()
    if not sky["clouds"]:
        return rgb
    seed = int(sky["texture_seed"])
    texture = textures.value_noise(view.u, view.v, 3.5, seed)
    density = np.zeros((view.size, view.size), dtype=np.float32)
    for cu, cv, ru, rv, strength in sky["clouds"]:
        ys, xs = view.span(cv - 3 * rv, cv + 3 * rv, "y"), view.span(cu - 2.5 * ru, cu + 2.5 * ru, "x")
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        across = np.exp(-(((view.u[xs] - cu) / ru) ** 2)).astype(np.float32)
        down = np.exp(-(((view.v[ys] - cv) / rv) ** 2)).astype(np.float32)
        density[ys, xs] += np.float32(strength) * down[:, None] * across[None, :]
    alpha = np.clip((density * (0.6 + 0.8 * texture) - 0.35) * 1.6, 0.0, 1.0)[..., None]
    cloud = np.asarray(sky["cloud_color"], np.float32)
    # cloud bottoms are darker than their tops
    underside = 1.0 - 0.18 * np.clip(density - 0.5, 0.0, 1.0)[..., None]
    return rgb * (1 - alpha) + cloud * underside * alpha


def _draw_facade(canvas: _Canvas, view: _View, building: dict[str, Any], base: float,
                 coarse: np.ndarray, fine: np.ndarray) -> None:
    x0, x1, top = building["x0"], building["x1"], base - building["height"]
    stamp = view.rect(x0, top, x1, base)
    if stamp.empty:
        return
    colour = np.asarray(building["color"], np.float32)
    ys, xs = stamp.ys, stamp.xs
    uu, vv = view.u[xs][None, :].astype(np.float32), view.v[ys][:, None].astype(np.float32)
    shade = 0.94 + 0.12 * coarse[ys, xs] + 0.08 * (fine[ys, xs] - 0.5)
    material = building["material"]
    if material == "brick":
        course = np.floor(vv / 2.5)
        brick = _hash01(np.floor(uu / 5.0 + 0.5 * (course % 2)).astype(np.int64), course.astype(np.int64),
                        building["texture_seed"])
        shade = shade * (0.92 + 0.14 * brick) * np.where((vv / 2.5) % 1.0 < 0.28, 0.86, 1.0)
    elif material == "siding":
        shade = shade * np.where((vv / 2.2) % 1.0 < 0.3, 0.88, 1.0)
    elif material == "panel":
        panel_w = building["windows"]["pitch"]
        joint = ((uu - x0) / panel_w % 1.0 < 0.1) | ((base - vv) / building["floor_height"] % 1.0 < 0.1)
        shade = shade * np.where(joint, 0.87, 1.0)
    # ambient occlusion near the ground, a lighter band between ground and first floor
    shade = shade * (1.0 - 0.10 * np.clip((vv - (base - 8.0)) / 8.0, 0.0, 1.0))
    if building["band"]:
        line = base - building["ground_floor"]
        shade = np.where((vv >= line - 1.6) & (vv < line), shade * 1.12, shade)
    canvas.paint(stamp, L.BUILDING, colour * shade[..., None])

    roof = building["roof"]
    trim = roof["trim_color"]
    if roof["kind"] == "cornice":
        canvas.paint(view.rect(x0, top, x1, top + 2.2), L.BUILDING, trim)
        canvas.paint(view.rect(x0, top + 2.2, x1, top + 2.9), L.BUILDING, colour * 0.6)
    elif roof["kind"] == "parapet":
        canvas.paint(view.rect(x0, top, x1, top + 1.4), L.BUILDING, np.asarray(trim) * 0.8)
    elif roof["kind"] == "gable":
        canvas.paint(view.polygon([(x0, top), (x1, top), ((x0 + x1) / 2, top - roof["height"])]),
                     L.BUILDING, roof["color"])
        canvas.paint(view.rect(x0, top, x1, top + 1.0), L.BUILDING, np.asarray(roof["color"]) * 0.7)
    elif roof["kind"] == "mansard":
        inset = min(roof["height"], (x1 - x0) / 4)
        canvas.paint(view.polygon([(x0, top), (x1, top), (x1 - inset, top - roof["height"] * 0.7),
                                   (x0 + inset, top - roof["height"] * 0.7)]), L.BUILDING, roof["color"])

    ground = base - building["ground_floor"]
    if building["awning"] is not None:
        awning = view.rect(x0 + 2, ground + 2, x1 - 2, ground + 5.5)
        if not awning.empty:
            stripes = np.where((view.u[awning.xs] / 3.0) % 1.0 < 0.5, 1.0, 0.8).astype(np.float32)
            colour_stripes = np.asarray(building["awning"], np.float32) * stripes[:, None]
            canvas.paint(awning, L.BUILDING, np.broadcast_to(colour_stripes, (awning.ys.stop - awning.ys.start,
                                                                             *colour_stripes.shape)))
    for door in building["doors"]:
        d0, d1, dtop = door["x"], door["x"] + door["width"], base - door["height"]
        canvas.paint(view.rect(d0 - 0.8, dtop - 0.8, d1 + 0.8, base), L.BUILDING, colour * 0.7)
        canvas.paint(view.rect(d0, dtop, d1, base), L.BUILDING, door["color"])
        if door["garage"]:
            slats = view.rect(d0, dtop, d1, base)
            if not slats.empty:
                vv = view.v[slats.ys].astype(np.float32)
                canvas.paint(slats, L.BUILDING, np.asarray(door["color"], np.float32)
                             * np.where((vv / 1.8) % 1.0 < 0.3, 0.8, 1.05)[:, None, None]
                             * np.ones((1, slats.xs.stop - slats.xs.start, 1), np.float32))
        else:
            canvas.paint(view.rect(d0 + 1, dtop + 1, d1 - 1, dtop + door["height"] * 0.4), L.BUILDING,
                         np.asarray(door["color"]) * 0.55)


def _draw_street(canvas: _Canvas, view: _View, content: dict[str, Any], coarse: np.ndarray,
                 fine: np.ndarray) -> None:
    base, kerb = content["base_y"], content["kerb_y"]
    walk = view.rect(-40, base, 170, kerb)
    if not walk.empty:
        uu, vv = view.u[walk.xs][None, :], view.v[walk.ys][:, None]
        tile = content["sidewalk"]["tile"]
        joint = ((uu / tile) % 1.0 < 0.12) | (((vv - base) / tile) % 1.0 < 0.12)
        shade = (0.95 + 0.08 * fine[walk.ys, walk.xs]) * np.where(joint, 0.88, 1.0)
        canvas.paint(walk, L.SIDEWALK, np.asarray(content["sidewalk"]["color"], np.float32) * shade[..., None])
    canvas.paint(view.rect(-40, kerb - 1.5, 170, kerb), L.SIDEWALK, content["sidewalk"]["kerb_color"])
    road = view.rect(-40, kerb, 170, 170)
    if not road.empty:
        shade = 0.9 + 0.12 * fine[road.ys, road.xs] + 0.06 * coarse[road.ys, road.xs]
        # a darker gutter along the kerb
        vv = view.v[road.ys][:, None]
        shade = shade * (1.0 - 0.15 * np.clip(1.0 - (vv - kerb) / 2.5, 0.0, 1.0))
        canvas.paint(road, L.ROAD, np.asarray(content["road"]["color"], np.float32) * shade[..., None])
    if content["road"]["marking"]:
        y = kerb + (DESIGN - kerb) * content["road"]["marking_y"]
        for x in np.arange(-40.0, 170.0, 16.0):
            canvas.paint(view.rect(x, y, x + 9.0, y + 1.3), L.ROAD, content["road"]["marking_color"])


def _tree_stamps(view: _View, trees: list[dict[str, Any]]) -> list[tuple[_Stamp, int, Any]]:
    stamps = []
    for tree in trees:
        x, foot = tree["x"], tree["foot_y"]
        half = tree["trunk_width"] / 2
        crown_y = foot - tree["trunk_height"] - tree["crown_ry"] * 0.6
        stamps.append((view.rect(x - half, crown_y, x + half, foot), L.VEGETATION, tree["trunk_color"]))
        rx, ry = tree["crown_rx"], tree["crown_ry"]
        colour = np.asarray(tree["crown_color"], np.float32)
        stamps.append((view.ellipse(x, crown_y, rx * 0.8, ry * 0.8), L.VEGETATION, colour * 0.85))
        for i, (ox, oy, r) in enumerate(tree["blobs"]):
            stamps.append((view.ellipse(x + ox * rx, crown_y + oy * ry, rx * r, ry * r), L.VEGETATION,
                           colour * (0.9 + 0.08 * (i % 3))))
    return stamps


def _pole_stamps(view: _View, poles: list[dict[str, Any]]) -> list[tuple[_Stamp, int, Any]]:
    stamps = []
    for pole in poles:
        x, foot, top, half = pole["x"], pole["foot_y"], pole["foot_y"] - pole["height"], pole["width"] / 2
        stamps.append((view.rect(x - half, top, x + half, foot), L.POLE, pole["color"]))
        if pole["kind"] == "lamp":
            arm = pole["arm"]
            stamps.append((view.rect(min(x, x + arm), top, max(x, x + arm), top + 1.0), L.POLE, pole["color"]))
            stamps.append((view.ellipse(x + arm, top + 1.4, 2.2, 1.2), L.POLE, np.asarray(pole["color"]) * 0.8))
    return stamps


def _sign_shape(view: _View, kind: str, cx: float, cy: float, w: float, h: float) -> _Stamp:
    if kind in ("round", "blue_round"):
        return view.ellipse(cx, cy, w / 2, h / 2)
    if kind == "triangle":
        return view.polygon([(cx - w / 2, cy + h / 2), (cx + w / 2, cy + h / 2), (cx, cy - h / 2)])
    if kind == "diamond":
        return view.polygon([(cx, cy - h / 2), (cx + w / 2, cy), (cx, cy + h / 2), (cx - w / 2, cy)])
    return view.rect(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _sign_extent(view: _View, sign: dict[str, Any]) -> tuple[_Stamp, int, Any]:
    """The box any visit's version of the sign fits in (windows touching it are never drawn)."""
    w, h = sign["width"] * SIGN_MAX_SCALE / 2 + SIGN_MAX_SHIFT, sign["height"] * SIGN_MAX_SCALE / 2 + SIGN_MAX_SHIFT
    return view.rect(sign["x"] - w, sign["y"] - h, sign["x"] + w, sign["y"] + h), L.SIGN, sign["color"]


def _draw_sign(canvas: _Canvas, view: _View, sign: dict[str, Any], look: dict[str, Any]) -> None:
    if not look["visible"]:
        return
    scale = min(max(float(look["scale"]), 0.0), SIGN_MAX_SCALE)
    cx = sign["x"] + float(np.clip(look["dx"], -SIGN_MAX_SHIFT, SIGN_MAX_SHIFT))
    cy = sign["y"] + float(np.clip(look["dy"], -SIGN_MAX_SHIFT, SIGN_MAX_SHIFT))
    w, h = sign["width"] * scale, sign["height"] * scale
    jitter = np.asarray(look["color_jitter"], np.float32)
    outer = np.clip(np.asarray(sign["color"], np.float32) * jitter, 0, 1)
    inner = np.clip(np.asarray(sign["text_color"], np.float32) * jitter[::-1], 0, 1)
    kind = sign["kind"]
    canvas.paint(_sign_shape(view, kind, cx, cy, w, h), L.SIGN, outer)
    if kind == "traffic_light":
        for i, lamp in enumerate(([0.9, 0.1, 0.1], [0.95, 0.7, 0.1], [0.1, 0.85, 0.3])):
            lit = lamp if i == int(look["state"]) % 3 else [c * 0.25 for c in lamp]
            canvas.paint(view.ellipse(cx, cy - h / 3 + i * h / 3, w * 0.3, h * 0.12), L.SIGN, lit)
    elif kind == "shop":
        canvas.paint(view.rect(cx - w / 2 + 1.5, cy - h / 4, cx + w / 2 - 1.5, cy + h / 4), L.SIGN,
                     inner * 0.7 + outer * 0.3)
    elif kind in ("rect", "street_name"):
        canvas.paint(_sign_shape(view, kind, cx, cy, w - 1.2, h - 1.2), L.SIGN, inner)
    elif kind == "triangle":
        canvas.paint(_sign_shape(view, kind, cx, cy + h * 0.08, w * 0.55, h * 0.55), L.SIGN, inner)
    else:
        canvas.paint(_sign_shape(view, kind, cx, cy, w * 0.7, h * 0.7), L.SIGN, inner)


def _window_boxes(view: _View, content: dict[str, Any], grids: list[dict[str, Any]]
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Pixel boxes [N, 4] (y0, y1, x0, x1), unclipped, of every window of every building (one grid each).

    The grid is laid out in pixel units so that windows stay at least one pixel apart at any size:
    a window is at most ``pitch - 1.01`` pixels wide, and at least one pixel.
    """
    boxes, owners = [], []
    base = content["base_y"]
    for index, (building, grid) in enumerate(zip(content["buildings"], grids)):
        rows, cols = grid["rows"], grid["cols"]
        if rows <= 0 or cols <= 0:
            continue
        pitch_x = grid["pitch"] * view.scale
        pitch_y = building["floor_height"] * view.scale
        width = min(max(grid["width"] * view.scale, 1.0), pitch_x - 1.01)
        height = min(max(grid["height"] * view.scale, 1.0), pitch_y - 1.01)
        span = (cols - 1) * grid["pitch"] + grid["width"]
        left = view.px(building["x0"] + (building["x1"] - building["x0"] - span) / 2)
        ground = view.py(base - building["ground_floor"])
        lefts = left + pitch_x * np.arange(cols)
        tops = ground - pitch_y * (np.arange(rows) + 1) + (pitch_y - height) * 0.45
        y0 = np.ceil(tops - 0.5)
        y1 = np.ceil(tops + height - 0.5)
        x0 = np.ceil(lefts - 0.5)
        x1 = np.ceil(lefts + width - 0.5)
        grid_boxes = np.stack(np.broadcast_arrays(y0[:, None], y1[:, None], x0[None, :], x1[None, :]), -1)
        boxes.append(grid_boxes.reshape(-1, 4))
        owners.extend([{"building": index, "row": r, "col": c} for r in range(rows) for c in range(cols)])
    if not boxes:
        return np.zeros((0, 4), dtype=np.int64), []
    return np.concatenate(boxes).astype(np.int64), owners


def _draw_windows(canvas: _Canvas, view: _View, content: dict[str, Any], grids: list[dict[str, Any]],
                  occluded: np.ndarray, place: int) -> int:
    """Paint the visible windows and return how many there are (from geometry alone)."""
    boxes, owners = _window_boxes(view, content, grids)
    if not len(boxes):
        return 0
    size = view.size
    clipped = np.clip(boxes, 0, size)
    y0, y1, x0, x1 = clipped.T
    integral = np.zeros((size + 1, size + 1), dtype=np.int32)
    integral[1:, 1:] = occluded.cumsum(0).cumsum(1)
    hits = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    visible = np.flatnonzero((y1 > y0) & (x1 > x0) & (hits == 0))
    buildings = content["buildings"]
    sill_rows = max(1, round(view.scale * 0.9))
    for i in visible:  # sills first, so that a window is never painted over
        building = buildings[owners[i]["building"]]
        if grids[owners[i]["building"]]["sill"]:
            sill = _Stamp(slice(int(y1[i]), min(int(boxes[i, 1]) + sill_rows, size)),
                          slice(max(int(x0[i]) - 1, 0), min(int(x1[i]) + 1, size)), None)
            canvas.paint(sill, L.BUILDING, np.asarray(building["color"], np.float32) * 1.15)
    # One id map for all windows, then every colour is computed in one vectorised pass.
    ids = np.full((size, size), -1, dtype=np.int32)
    for i in visible:
        ids[y0[i]:y1[i], x0[i]:x1[i]] = i
    rows, cols = np.nonzero(ids >= 0)
    which = ids[rows, cols]
    canvas.labels[rows, cols] = L.WINDOW
    owner = np.array([o["building"] for o in owners])[which]
    glass = np.array([grid["glass"] for grid in grids], np.float32)[owner]
    frame = np.array([grid["frame"] for grid in grids], np.float32)[owner]
    top, bottom, left, right = boxes[which, 0], boxes[which, 1], boxes[which, 2], boxes[which, 3]
    height, width = bottom - top, right - left
    gy = ((rows - top + 0.5) / np.maximum(height, 1)).astype(np.float32)
    tone = glass * (1.25 - 0.45 * gy)[:, None]  # glass with a vertical reflection gradient
    state = _hash01(which, np.full(len(which), place), 11)  # persistent per window: lit, curtains
    lit = state < 0.12
    tone[lit] = tone[lit] * 0.6 + np.array([0.95, 0.85, 0.55], np.float32) * 0.4
    curtain = (state >= 0.12) & (state < 0.3) & (height >= 4) & (rows - top < height // 2)
    tone[curtain] = tone[curtain] * 0.5 + np.array([0.85, 0.82, 0.75], np.float32) * 0.5
    framed = (height >= 5) & (width >= 5) & (
        (rows == top) | (rows == bottom - 1) | (cols == left) | (cols == right - 1)
        | ((width >= 7) & (cols == left + width // 2)))
    tone[framed] = frame[framed]
    canvas.rgb[rows, cols] = tone
    return len(visible)


def _draw_pedestrian(canvas: _Canvas, view: _View, person: dict[str, Any], base: float, kerb: float,
                     clip_row: int) -> None:
    foot = base + 1.0 + (kerb - 2.5 - base) * float(person["depth"])
    h = float(person["height"])
    x = float(person["x"])
    leg_top, torso_top, head_r = foot - 0.47 * h, foot - 0.82 * h, 0.09 * h
    half = 0.13 * h
    paint = canvas.paint
    paint(view.rect(x - half, leg_top, x - 0.02 * h, foot), L.PERSON, person["trousers"], clip_row)
    paint(view.rect(x + 0.02 * h, leg_top, x + half, foot), L.PERSON, np.asarray(person["trousers"]) * 0.85,
          clip_row)
    paint(view.rect(x - half - 0.05 * h, torso_top, x + half + 0.05 * h, leg_top + 0.04 * h), L.PERSON,
          person["shirt"], clip_row)
    paint(view.rect(x - half - 0.13 * h, torso_top + 0.03 * h, x - half - 0.03 * h, leg_top), L.PERSON,
          np.asarray(person["shirt"]) * 0.85, clip_row)
    paint(view.rect(x + half + 0.03 * h, torso_top + 0.03 * h, x + half + 0.13 * h, leg_top), L.PERSON,
          np.asarray(person["shirt"]) * 0.85, clip_row)
    paint(view.rect(x - 0.04 * h, torso_top - 0.05 * h, x + 0.04 * h, torso_top + 0.01), L.PERSON, person["skin"],
          clip_row)
    head_y = torso_top - 0.05 * h - head_r * 0.9
    paint(view.ellipse(x, head_y, head_r * 0.9, head_r), L.PERSON, person["skin"], clip_row)
    paint(view.ellipse(x, head_y - head_r * 0.45, head_r * 0.95, head_r * 0.6), L.PERSON, person["hair"],
          clip_row)


def _draw_vehicle(canvas: _Canvas, view: _View, vehicle: dict[str, Any], kerb: float, clip_row: int) -> None:
    lane_scale = 0.8 if vehicle["lane"] == 0 else 1.0
    bottom = kerb + 11.0 if vehicle["lane"] == 0 else DESIGN + 2.0
    length, height = vehicle["length"] * lane_scale, vehicle["height"] * lane_scale
    x0, x1 = vehicle["x"] - length / 2, vehicle["x"] + length / 2
    top = bottom - height
    body = np.asarray(vehicle["color"], np.float32)
    glass = np.asarray([0.12, 0.15, 0.2], np.float32) + body * 0.12
    wheel_r = 0.16 * length if vehicle["type"] == "car" else 0.13 * length
    wheel_r = min(wheel_r, 0.3 * height)
    front = 1.0 if vehicle["facing"] == "right" else -1.0
    paint = canvas.paint
    if vehicle["type"] == "van":
        sill = bottom - wheel_r * 0.7
        paint(view.rect(x0, top, x1, sill), L.VEHICLE, body, clip_row)
        nose = x1 if front > 0 else x0
        windscreen = [(nose - front * 0.18 * length, top + 0.05 * height),
                      (nose - front * 0.02 * length, top + 0.45 * height),
                      (nose - front * 0.18 * length, top + 0.45 * height)]
        paint(view.polygon(windscreen), L.VEHICLE, glass, clip_row)
        for k in range(2):
            wx = vehicle["x"] - front * (0.05 + 0.22 * k) * length
            paint(view.rect(wx - 0.09 * length, top + 0.1 * height, wx + 0.09 * length, top + 0.42 * height),
                  L.VEHICLE, glass * 1.1, clip_row)
    else:
        sill = bottom - wheel_r * 0.6
        waist = top + 0.45 * height
        paint(view.rect(x0, waist, x1, sill), L.VEHICLE, body, clip_row)
        c0, c1 = x0 + 0.22 * length, x1 - 0.2 * length
        if front < 0:
            c0, c1 = x0 + 0.2 * length, x1 - 0.22 * length
        slope = 0.12 * length
        ahead, behind = float(front > 0), float(front < 0)  # the windscreen slopes towards the front
        cabin = [(c0 - slope * ahead * 0.6, waist + 0.01), (c1 + slope * behind * 0.6, waist + 0.01),
                 (c1 - slope * ahead, top), (c0 + slope * behind, top)]
        paint(view.polygon(cabin), L.VEHICLE, body * 0.95, clip_row)
        inset = 0.12 * height
        windows = [(c0 + inset * 0.8, waist), (c1 - inset * 0.8, waist),
                   (c1 - slope * ahead - inset * 0.3, top + inset), (c0 + slope * behind + inset * 0.3, top + inset)]
        paint(view.polygon(windows), L.VEHICLE, glass, clip_row)
        paint(view.rect((c0 + c1) / 2 - 0.5, top + inset, (c0 + c1) / 2 + 0.5, waist), L.VEHICLE, body * 0.8,
              clip_row)
    paint(view.rect(x0, sill - 0.12 * height, x1, sill - 0.06 * height), L.VEHICLE, body * 0.75, clip_row)
    lamp_x = x1 - 1.5 if front > 0 else x0
    paint(view.rect(lamp_x, sill - 0.35 * height, lamp_x + 1.5, sill - 0.2 * height), L.VEHICLE,
          [0.95, 0.92, 0.7], clip_row)
    tail_x = x0 if front > 0 else x1 - 1.5
    paint(view.rect(tail_x, sill - 0.35 * height, tail_x + 1.5, sill - 0.22 * height), L.VEHICLE,
          [0.75, 0.05, 0.05], clip_row)
    for wx in (x0 + 0.2 * length, x1 - 0.2 * length):
        paint(view.ellipse(wx, bottom - wheel_r, wheel_r, wheel_r), L.VEHICLE, [0.06, 0.06, 0.06], clip_row)
        paint(view.ellipse(wx, bottom - wheel_r, wheel_r * 0.5, wheel_r * 0.5), L.VEHICLE, [0.6, 0.6, 0.62],
              clip_row)


def _apply_lighting(canvas: _Canvas, view: _View, lighting: dict[str, Any]) -> np.ndarray:
    """Brightness, tint and the sun's shadow band: pixel colours only, never labels."""
    rgb = canvas.rgb * np.asarray(lighting["tint_rgb"], np.float32) * np.float32(lighting["brightness"])
    strength = float(lighting["shadow_strength"])
    if lighting["sun_side"] != "none" and strength > 0:
        side = 1.0 if lighting["sun_side"] == "left" else -1.0
        # signed distance (design units) below a slanted edge: the lower part of the scene lies in
        # the shadow of the buildings across the street, deeper on the side away from the sun
        dist = (view.v[:, None] - lighting["shadow_y"]) + side * lighting["shadow_slope"] * (view.u[None, :] - 64.0)
        cover = np.clip(dist / 3.0 + 0.5, 0.0, 1.0).astype(np.float32)
        cover[canvas.labels == L.SKY] = 0.0
        rgb = rgb * (1.0 - strength * cover)[..., None]
    return rgb
