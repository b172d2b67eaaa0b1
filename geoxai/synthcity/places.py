"""Where SynthCity places are (a UTM street grid, a block per seed) and the persistent content of a
place (facades, window grids, street, trees, poles, signs), sampled from its own stream."""

from __future__ import annotations

from typing import Any

from geoxai.synthcity.palettes import FACADE_FAMILIES, MATERIALS, POLE_SIGN_KINDS, ROOFS, SIGN_KINDS, hsv_rgb
from geoxai.synthcity.rng import Rng

GRID_KEYS = ("rows", "cols", "pitch", "width", "height", "side")  # what a windows= override replaces
MIN_WINDOW_SIDE = 3.0  # design units between a grid and its facade's edge: keeps neighbours' windows apart

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


def seed_origin(seed: int) -> tuple[float, float]:
    """UTM (east, north) of place 0 of the world ``seed``: the south-west corner of the seed's block."""
    column, row = divmod(int(seed), SEED_BLOCK_ROWS)
    return ORIGIN_EAST + SEED_BLOCK_EAST_M * column, ORIGIN_NORTH + SEED_BLOCK_NORTH_M * row


def sample_place(rng: Rng) -> dict[str, Any]:
    """The persistent content of one place, in design units, from the place's own stream."""
    base = rng.uniform(80, 90)  # design y where facades meet the sidewalk
    kerb = base + rng.uniform(8, 13)
    buildings = _sample_buildings(rng, base)
    grey = rng.uniform(0.22, 0.42)
    road_hue = rng.choice([0.0, 0.6, 0.08])
    sidewalk_v = rng.uniform(0.55, 0.8)
    content: dict[str, Any] = {
        "base_y": round(base, 3),
        "kerb_y": round(kerb, 3),
        "sidewalk": {
            "color": hsv_rgb(rng.uniform(0.05, 0.12), rng.uniform(0.02, 0.15), sidewalk_v),
            "kerb_color": hsv_rgb(0.1, 0.03, min(sidewalk_v + 0.12, 0.95)),
            "tile": round(rng.uniform(3.0, 7.0), 3),
        },
        "road": {
            "color": hsv_rgb(road_hue, rng.uniform(0.0, 0.08), grey),
            "marking": bool(rng.random() < 0.75),
            "marking_color": [0.92, 0.92, 0.88] if rng.random() < 0.6 else [0.92, 0.78, 0.2],
            "marking_y": round(rng.uniform(0.45, 0.6), 3),  # fraction of the road band below the kerb
        },
        "skyline": _sample_skyline(rng, base) if rng.random() < 0.6 else [],
        "buildings": buildings,
    }
    trees = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        trunk_h = rng.uniform(10, 22)
        rx, ry = rng.uniform(8, 15), rng.uniform(8, 15)
        trees.append({
            "x": round(rng.uniform(0, 128), 3), "foot_y": round(base + (kerb - base) * rng.uniform(0.4, 0.7), 3),
            "trunk_width": round(rng.uniform(1.5, 3.0), 3), "trunk_height": round(trunk_h, 3),
            "crown_rx": round(rx, 3), "crown_ry": round(ry, 3),
            "crown_color": hsv_rgb(rng.uniform(0.2, 0.36), rng.uniform(0.45, 0.75), rng.uniform(0.25, 0.5)),
            "trunk_color": hsv_rgb(0.07, 0.5, rng.uniform(0.2, 0.35)),
            "blobs": [[round(rng.uniform(-0.6, 0.6), 3), round(rng.uniform(-0.5, 0.4), 3),
                       round(rng.uniform(0.45, 0.7), 3)]
                      for _ in range(int(rng.integers(3, 6)))],
        })
    content["trees"] = trees
    poles, signs = [], []
    pole_colour = hsv_rgb(0.6, rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.5))
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        poles.append({"kind": "lamp", "x": round(rng.uniform(0, 128), 3), "foot_y": round(kerb - 1.5, 3),
                      "height": round(rng.uniform(38, 58), 3), "width": 1.6,
                      "arm": round(rng.uniform(5, 9) * rng.choice([-1, 1]), 3), "color": pole_colour})
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        if rng.random() < 0.35:  # a shop sign on the ground floor of a facade
            width, height = rng.uniform(12, 24), rng.uniform(4, 6)
            signs.append({"mount": "wall", "kind": "shop", "x": round(rng.uniform(5, 123), 3),
                          "y": round(base - rng.uniform(12, 15), 3), "width": round(width, 3),
                          "height": round(height, 3),
                          "color": hsv_rgb(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.9)),
                          "text_color": hsv_rgb(0, 0, float(rng.choice([0.1, 0.95])))})
        else:
            kind = str(rng.choice(POLE_SIGN_KINDS))
            post_h = rng.uniform(22, 32) if kind != "traffic_light" else rng.uniform(30, 38)
            x = rng.uniform(0, 128)
            width = rng.uniform(6, 8) if kind not in ("rect", "street_name") else rng.uniform(9, 13)
            height = width if kind not in ("rect", "street_name", "traffic_light") else (
                rng.uniform(4, 6) if kind == "street_name" else rng.uniform(8, 11))
            if kind == "traffic_light":
                width, height = 4.5, rng.uniform(11, 13)
            poles.append({"kind": "sign_post", "x": round(x, 3), "foot_y": round(kerb - 1.0, 3),
                          "height": round(post_h - height / 2, 3), "width": 1.2, "arm": 0.0,
                          "color": pole_colour})
            outer, inner = SIGN_KINDS[kind]
            signs.append({"mount": "pole", "kind": kind, "x": round(x, 3), "y": round(kerb - 1.0 - post_h, 3),
                          "width": round(width, 3), "height": round(height, 3), "color": outer,
                          "text_color": inner})
    content["poles"] = poles
    content["signs"] = signs
    return content


def _sample_skyline(rng: Rng, base: float) -> list[dict[str, Any]]:
    blocks, x = [], -24.0
    haze = rng.uniform(0.55, 0.68)
    while x < 152:
        width = rng.uniform(10, 30)
        blocks.append({"x0": round(x, 3), "x1": round(x + width, 3), "top": round(base - rng.uniform(45, 95), 3),
                       "color": hsv_rgb(rng.uniform(0.55, 0.62), rng.uniform(0.05, 0.2),
                                        haze + rng.uniform(-0.08, 0.08))})
        x += width
    return blocks


def sample_facade_colour(rng: Rng) -> list[float]:
    """A facade colour: a family of ``FACADE_FAMILIES``, then hue, saturation and value within it."""
    family = FACADE_FAMILIES[int(rng.integers(len(FACADE_FAMILIES)))]
    return hsv_rgb(rng.uniform(*family[0]), rng.uniform(*family[1]), rng.uniform(*family[2]))


def sample_window_grid(rng: Rng, width: float, height: float, ground: float, floor_h: float) -> dict[str, Any]:
    """A window grid (``GRID_KEYS``) for a facade: rows on the floors above the ground floor that fit
    under a top margin, columns that fit between side margins (design units)."""
    top_margin = rng.uniform(3, 6)
    rows = max(0, int((height - ground - top_margin) // floor_h))
    pitch = rng.uniform(9, 17)
    win_w = pitch * rng.uniform(0.4, 0.72)
    win_h = floor_h * rng.uniform(0.45, 0.72)
    side = rng.uniform(MIN_WINDOW_SIDE, 6)
    cols = max(0, int((width - 2 * side + (pitch - win_w)) // pitch))
    return {"rows": rows, "cols": cols, "pitch": round(pitch, 3), "width": round(win_w, 3),
            "height": round(win_h, 3), "side": round(side, 3)}


def _sample_buildings(rng: Rng, base: float) -> list[dict[str, Any]]:
    buildings, x = [], -24.0 - rng.uniform(0, 20)
    while x < 152:
        width = rng.uniform(22, 58)
        colour = sample_facade_colour(rng)
        height = rng.uniform(30, min(82, base + 6))
        ground = rng.uniform(21, 28)
        floor_h = rng.uniform(11, 16)
        roof = str(rng.choice(ROOFS))
        grid = sample_window_grid(rng, width, height, ground, floor_h)
        glass_family = int(rng.integers(4))
        glass = [hsv_rgb(0.6, 0.3, rng.uniform(0.18, 0.32)), hsv_rgb(0.45, 0.25, rng.uniform(0.2, 0.35)),
                 hsv_rgb(0.08, 0.25, rng.uniform(0.15, 0.28)), hsv_rgb(0.58, 0.15, rng.uniform(0.5, 0.7))][glass_family]
        trim_hue = rng.uniform(0, 1)
        frame = [[0.93, 0.93, 0.9], [0.15, 0.15, 0.15], hsv_rgb(trim_hue, 0.3, 0.45),
                 [0.55, 0.5, 0.45]][int(rng.integers(4))]
        doors = []
        for _ in range(int(rng.choice([1, 1, 2]) if width > 30 else 1)):
            dw = rng.uniform(6, 10) if rng.random() < 0.8 else rng.uniform(12, 18)
            if width - dw - 4 <= 2:
                continue
            dx = rng.uniform(2, width - dw - 2)
            if any(abs(dx - d["x"] + x) < (dw + d["width"]) / 2 + 2 for d in doors):
                continue
            doors.append({"x": round(x + dx, 3), "width": round(dw, 3),
                          "height": round(min(rng.uniform(13, 18), ground - 3), 3),
                          "color": hsv_rgb(rng.uniform(0, 1), rng.uniform(0.2, 0.6), rng.uniform(0.12, 0.4)),
                          "garage": bool(dw > 11)})
        buildings.append({
            "x0": round(x, 3), "x1": round(x + width, 3), "height": round(height, 3), "color": colour,
            "material": str(rng.choice(MATERIALS)), "ground_floor": round(ground, 3),
            "floor_height": round(floor_h, 3), "texture_seed": int(rng.integers(1 << 20)),
            "roof": {"kind": roof, "height": round(rng.uniform(6, 14), 3),
                     "color": hsv_rgb(rng.uniform(0.0, 0.08) if rng.random() < 0.6 else 0.6,
                                   rng.uniform(0.1, 0.5), rng.uniform(0.18, 0.45)),
                     "trim_color": hsv_rgb(trim_hue, 0.08, rng.uniform(0.3, 0.95))},
            "band": bool(rng.random() < 0.5),
            "windows": {**grid, "glass": glass, "frame": frame, "sill": bool(rng.random() < 0.6)},
            "doors": doors,
            "awning": hsv_rgb(rng.random(), 0.6, 0.6) if rng.random() < 0.25 else None,
        })
        x += width
        if rng.random() < 0.15:  # an alley
            x += rng.uniform(3, 8)
    return buildings
