"""The transient factors of a SynthCity visit (sky, lighting, vehicles, pedestrians, sign
appearance, camera), each sampled from its own stream so any one can be replaced alone."""

from __future__ import annotations

from typing import Any

from geoxai.synthcity.palettes import CAR_COLOURS, hsv_rgb
from geoxai.synthcity.rng import Rng

FACTOR_KEYS = ("sky", "lighting", "vehicles", "pedestrians", "signs", "camera")


def sample_sky(rng: Rng) -> dict[str, Any]:
    """Time of day (day, dusk), sky kind (clear, clouds, overcast), its colours and clouds."""
    time_of_day = "dusk" if rng.random() < 0.25 else "day"
    kind = str(rng.choice(["clear", "clouds", "overcast"], p=[0.35, 0.4, 0.25]))
    if kind == "overcast":
        grey = rng.uniform(0.55, 0.82)
        hue = rng.uniform(0.55, 0.65) if time_of_day == "day" else rng.uniform(0.0, 0.08)
        top, horizon = hsv_rgb(hue, rng.uniform(0.02, 0.08), grey), hsv_rgb(hue, rng.uniform(0.02, 0.1), grey + 0.08)
        cloud = hsv_rgb(hue, 0.03, grey + rng.uniform(0.05, 0.15))
    elif time_of_day == "day":
        hue = rng.uniform(0.55, 0.62)
        top = hsv_rgb(hue, rng.uniform(0.5, 0.75), rng.uniform(0.7, 0.9))
        horizon = hsv_rgb(hue - 0.02, rng.uniform(0.15, 0.35), rng.uniform(0.88, 0.98))
        cloud = hsv_rgb(0.6, 0.02, rng.uniform(0.9, 0.99))
    else:
        hue = rng.uniform(0.0, 0.1) if rng.random() < 0.6 else rng.uniform(0.9, 1.0)
        top = hsv_rgb(rng.uniform(0.64, 0.74), rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6))
        horizon = hsv_rgb(hue, rng.uniform(0.45, 0.7), rng.uniform(0.85, 0.98))
        cloud = hsv_rgb(hue + 0.02, rng.uniform(0.2, 0.4), rng.uniform(0.75, 0.95))
    count = {"clear": int(rng.integers(0, 3)), "clouds": int(rng.integers(4, 10)),
             "overcast": int(rng.integers(8, 15))}[kind]
    clouds = [[round(rng.uniform(-10, 138), 2), round(rng.uniform(-8, 55), 2), round(rng.uniform(8, 28), 2),
               round(rng.uniform(3, 9), 2), round(rng.uniform(0.6, 1.3) * (0.5 if kind == "overcast" else 1.0), 3)]
              for _ in range(count)]
    return {"kind": kind, "time_of_day": time_of_day, "hue": round(hue * 360.0 % 360.0, 1), "top": top,
            "horizon": horizon, "cloud_color": cloud, "clouds": clouds,
            "texture_seed": int(rng.integers(1 << 20))}


def sample_lighting(rng: Rng) -> dict[str, Any]:
    """Brightness, colour tint and the cast shadow of one visit."""
    sun_side = str(rng.choice(["left", "right", "none"], p=[0.38, 0.38, 0.24]))
    tint = str(rng.choice(["warm", "cool", "neutral"], p=[0.35, 0.35, 0.3]))
    strength = 0.0 if tint == "neutral" else rng.uniform(0.03, 0.12)
    tint_rgb = {"warm": [1 + strength, 1.0, 1 - strength], "cool": [1 - strength, 1.0, 1 + strength],
                "neutral": [1.0, 1.0, 1.0]}[tint]
    return {
        "brightness": round(rng.uniform(0.65, 1.25), 3),
        "sun_side": sun_side,
        "shadow_strength": round(rng.uniform(0.25, 0.55), 3) if sun_side != "none" else 0.0,
        "shadow_y": round(rng.uniform(35, 100), 2),  # design y of the shadow's upper edge mid-image
        "shadow_slope": round(rng.uniform(0.1, 0.6), 3),  # the edge rises towards the sun
        "tint": tint,
        "tint_strength": round(strength, 3),
        "tint_rgb": [round(c, 4) for c in tint_rgb],
    }


def sample_vehicles(rng: Rng) -> list[dict[str, Any]]:
    """Up to three cars or vans in the two lanes, never overlapping within a lane."""
    vehicles: list[dict[str, Any]] = []
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.2, 0.35, 0.3, 0.15]))):
        kind = "van" if rng.random() < 0.25 else "car"
        length = rng.uniform(46, 56) if kind == "van" else rng.uniform(38, 50)
        lane = int(rng.integers(2))
        for _attempt in range(8):
            x = rng.uniform(-15, 143)
            span = length * (0.8 if lane == 0 else 1.0)
            if all(v["lane"] != lane or abs(v["x"] - x) > (span + v["length"]) / 2 + 2 for v in vehicles):
                break
        else:
            continue
        vehicles.append({
            "type": kind, "lane": lane, "x": round(x, 2), "length": round(length, 2),
            "height": round(rng.uniform(25, 29) if kind == "van" else rng.uniform(15, 19), 2),
            "color": CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))],
            "facing": str(rng.choice(["left", "right"])),
        })
    return vehicles


def sample_pedestrians(rng: Rng) -> list[dict[str, Any]]:
    """The people on the sidewalk."""
    people = []
    for _ in range(int(rng.choice([0, 1, 2, 3, 4], p=[0.25, 0.3, 0.25, 0.12, 0.08]))):
        people.append({
            "x": round(rng.uniform(-4, 132), 2),
            "depth": round(rng.uniform(0.2, 0.9), 3),  # 0 = against the facades, 1 = at the kerb
            "height": round(rng.uniform(13, 18), 2),
            "shirt": hsv_rgb(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.95)),
            "trousers": hsv_rgb(rng.uniform(0.55, 0.65), rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.5)),
            "skin": hsv_rgb(rng.uniform(0.04, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95)),
            "hair": hsv_rgb(0.08, rng.uniform(0.2, 0.7), rng.uniform(0.05, 0.6)),
        })
    return people


def sample_sign_appearance(rng: Rng, signs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How each of the place's signs looks in this visit (its position and shape are content)."""
    looks = []
    for _sign in signs:
        looks.append({
            "visible": bool(rng.random() < 0.82),
            "color_jitter": [round(rng.uniform(0.8, 1.15), 3) for _ in range(3)],
            "scale": round(rng.uniform(0.9, 1.1), 3),
            "dx": round(rng.uniform(-1, 1), 2),
            "dy": round(rng.uniform(-1, 1), 2),
            "state": int(rng.integers(3)),  # lit lamp of a traffic light
        })
    return looks


def sample_camera(rng: Rng) -> dict[str, Any]:
    """Camera shift, zoom and sensor noise."""
    return {"dx": int(rng.integers(-4, 5)), "dy": int(rng.integers(-3, 4)), "zoom": round(rng.uniform(0.96, 1.06), 4),
            "noise_level": round(rng.uniform(1.0, 5.0), 3), "noise_seed": int(rng.integers(1 << 31))}
