"""Rasterising one view of a place: content and visit factors to an RGB image, a label map and
the number of windows drawn (the window rules are in ``geoxai.synthcity.render``'s docstring)."""

from __future__ import annotations

from typing import Any

import numpy as np

from geoxai import labels as L
from geoxai.synthcity.raster import DESIGN, Canvas, Stamp, Textures, View, hash01, mark

SIGN_MAX_SCALE, SIGN_MAX_SHIFT = 1.1, 1.0  # the extent a sign may take in any visit


def draw_view(content: dict[str, Any], factors: dict[str, Any], size: int, textures: Textures,
            place: int, grids: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, int]:
    """The image, label map and visible window count of ``content`` seen under ``factors``."""
    view = View(size, factors["camera"])
    canvas = Canvas(size)
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
        mark(occluded, stamp)
    window_count = _draw_windows(canvas, view, content, grids, occluded, place)

    for stamp, label, colour in occluders[:len(occluders) - len(content["signs"])]:
        if label == L.VEGETATION and stamp.mask is not None:  # crown: shaded leaves
            shade = 0.75 + 0.45 * fine[stamp.ys, stamp.xs, None] * coarse[stamp.ys, stamp.xs, None]
            canvas.paint(stamp, label, np.asarray(colour, np.float32) * shade)
        else:
            canvas.paint(stamp, label, colour)
    for sign, look in zip(content["signs"], factors["signs"], strict=True):
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


def _sky_colours(view: View, sky: dict[str, Any], textures: Textures) -> np.ndarray:
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


def _draw_facade(canvas: Canvas, view: View, building: dict[str, Any], base: float,
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
        brick = hash01(np.floor(uu / 5.0 + 0.5 * (course % 2)).astype(np.int64), course.astype(np.int64),
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


def _draw_street(canvas: Canvas, view: View, content: dict[str, Any], coarse: np.ndarray,
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


def _tree_stamps(view: View, trees: list[dict[str, Any]]) -> list[tuple[Stamp, int, Any]]:
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


def _pole_stamps(view: View, poles: list[dict[str, Any]]) -> list[tuple[Stamp, int, Any]]:
    stamps = []
    for pole in poles:
        x, foot, top, half = pole["x"], pole["foot_y"], pole["foot_y"] - pole["height"], pole["width"] / 2
        stamps.append((view.rect(x - half, top, x + half, foot), L.POLE, pole["color"]))
        if pole["kind"] == "lamp":
            arm = pole["arm"]
            stamps.append((view.rect(min(x, x + arm), top, max(x, x + arm), top + 1.0), L.POLE, pole["color"]))
            stamps.append((view.ellipse(x + arm, top + 1.4, 2.2, 1.2), L.POLE, np.asarray(pole["color"]) * 0.8))
    return stamps


def _sign_shape(view: View, kind: str, cx: float, cy: float, w: float, h: float) -> Stamp:
    if kind in ("round", "blue_round"):
        return view.ellipse(cx, cy, w / 2, h / 2)
    if kind == "triangle":
        return view.polygon([(cx - w / 2, cy + h / 2), (cx + w / 2, cy + h / 2), (cx, cy - h / 2)])
    if kind == "diamond":
        return view.polygon([(cx, cy - h / 2), (cx + w / 2, cy), (cx, cy + h / 2), (cx - w / 2, cy)])
    return view.rect(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _sign_extent(view: View, sign: dict[str, Any]) -> tuple[Stamp, int, Any]:
    """The box any visit's version of the sign fits in (windows touching it are never drawn)."""
    w, h = sign["width"] * SIGN_MAX_SCALE / 2 + SIGN_MAX_SHIFT, sign["height"] * SIGN_MAX_SCALE / 2 + SIGN_MAX_SHIFT
    return view.rect(sign["x"] - w, sign["y"] - h, sign["x"] + w, sign["y"] + h), L.SIGN, sign["color"]


def _draw_sign(canvas: Canvas, view: View, sign: dict[str, Any], look: dict[str, Any]) -> None:
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


def _window_boxes(view: View, content: dict[str, Any], grids: list[dict[str, Any]]
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Pixel boxes [N, 4] (y0, y1, x0, x1), unclipped, of every window of every building (one grid each).

    The grid is laid out in pixel units so that windows stay at least one pixel apart at any size:
    a window is at most ``pitch - 1.01`` pixels wide, and at least one pixel.
    """
    boxes, owners = [], []
    base = content["base_y"]
    for index, (building, grid) in enumerate(zip(content["buildings"], grids, strict=True)):
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


def _draw_windows(canvas: Canvas, view: View, content: dict[str, Any], grids: list[dict[str, Any]],
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
            sill = Stamp(slice(int(y1[i]), min(int(boxes[i, 1]) + sill_rows, size)),
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
    state = hash01(which, np.full(len(which), place), 11)  # persistent per window: lit, curtains
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


def _draw_pedestrian(canvas: Canvas, view: View, person: dict[str, Any], base: float, kerb: float,
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


def _draw_vehicle(canvas: Canvas, view: View, vehicle: dict[str, Any], kerb: float, clip_row: int) -> None:
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


def _apply_lighting(canvas: Canvas, view: View, lighting: dict[str, Any]) -> np.ndarray:
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
