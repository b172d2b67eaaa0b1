"""Drawing primitives: the camera view of the design canvas, shapes as pixel stamps, the canvas
they are painted on (colour and label at once) and the procedural textures."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from geoxai import labels as L

DESIGN = 128.0  # side of the design canvas every size is scaled from


def hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
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


class Textures:
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


class Stamp(NamedTuple):
    """Pixels of one shape: a bounding box and an optional mask inside it (None = full box)."""

    ys: slice
    xs: slice
    mask: np.ndarray | None

    @property
    def empty(self) -> bool:
        return self.ys.stop <= self.ys.start or self.xs.stop <= self.xs.start or (
            self.mask is not None and not self.mask.any())


class View:
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

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> Stamp:
        return Stamp(self.span(v0, v1, "y"), self.span(u0, u1, "x"), None)

    def ellipse(self, cu: float, cv: float, ru: float, rv: float) -> Stamp:
        ys, xs = self.span(cv - rv, cv + rv + 1e-6, "y"), self.span(cu - ru, cu + ru + 1e-6, "x")
        du = (self.u[xs] - cu) / ru
        dv = (self.v[ys] - cv) / rv
        return Stamp(ys, xs, dv[:, None] ** 2 + du[None, :] ** 2 <= 1.0)

    def polygon(self, points: list[tuple[float, float]]) -> Stamp:
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
        return Stamp(ys, xs, mask)


class Canvas:
    """Label map and float RGB image painted back to front."""

    def __init__(self, size: int):
        self.labels = np.full((size, size), L.SKY, dtype=np.uint8)
        self.rgb = np.zeros((size, size, 3), dtype=np.float32)

    def paint(self, stamp: Stamp, label: int, colour: Any, clip_row: int = 0) -> None:
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


def mark(mask: np.ndarray, stamp: Stamp) -> None:
    """Set ``mask`` where ``stamp`` covers."""
    if stamp.empty:
        return
    if stamp.mask is None:
        mask[stamp.ys, stamp.xs] = True
    else:
        mask[stamp.ys, stamp.xs] |= stamp.mask
