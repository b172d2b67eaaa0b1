"""SynthCity renderer: determinism, label maps that agree with the factors, exact window counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from geoxai import labels as L
from geoxai.errors import GeoxaiError
from geoxai.synthcity import FACTOR_KEYS, SynthCity

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@pytest.fixture(scope="module")
def city() -> SynthCity:
    return SynthCity(seed=0, size=128)


def first_visit(city: SynthCity, place: int, test) -> int:
    """The first visit of ``place`` whose factors pass ``test``."""
    return next(v for v in range(50) if test(city.visit_factors(place, v)))


def test_render_is_deterministic_and_seeded():
    a, b = SynthCity(seed=3, size=96).render(5, 2), SynthCity(seed=3, size=96).render(5, 2)
    assert a.image.shape == (96, 96, 3) and a.image.dtype == np.uint8
    assert a.labels.shape == (96, 96) and a.labels.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.factors == b.factors
    other_seed = SynthCity(seed=4, size=96).render(5, 2)
    assert np.abs(other_seed.image.astype(int) - a.image).mean() > 10
    other_place = SynthCity(seed=3, size=96).render(6, 2)
    assert np.abs(other_place.image.astype(int) - a.image).mean() > 10
    assert (other_place.labels != a.labels).mean() > 0.05


def test_places_differ_in_content(city):
    contents = [city.place_content(p) for p in range(12)]
    colours = {tuple(b["color"]) for c in contents for b in c["buildings"]}
    grids = {(b["windows"]["rows"], b["windows"]["cols"]) for c in contents for b in c["buildings"]}
    heights = [b["height"] for c in contents for b in c["buildings"]]
    assert len(colours) > 30 and len(grids) > 8 and np.std(heights) > 8
    assert city.place_content(3) == SynthCity(seed=0).place_content(3)
    assert city.place_content(3) != city.place_content(4)


def test_visit_factors_keys_and_variation(city):
    factors = [city.visit_factors(7, v) for v in range(12)]
    assert all(tuple(f) == FACTOR_KEYS for f in factors)
    assert len({f["sky"]["kind"] for f in factors}) > 1
    assert len({len(f["vehicles"]) for f in factors}) > 1
    assert len({(f["camera"]["dx"], f["camera"]["dy"]) for f in factors}) > 3
    assert factors[0] == city.visit_factors(7, 0)
    sign_looks = [look["visible"] for p in range(30) for look in city.visit_factors(p, 0)["signs"]]
    assert any(sign_looks) and not all(sign_looks)  # signs are sometimes missing


def test_lighting_changes_colours_never_labels(city):
    place = 2
    reference = city.render(place, 0)
    for visit in range(1, 5):
        lit = city.render(place, 0, lighting=city.visit_factors(place, visit)["lighting"])
        assert np.array_equal(lit.labels, reference.labels)
        assert (lit.image != reference.image).any(axis=-1).mean() > 0.5
        assert lit.factors["window_count"] == reference.factors["window_count"]


@pytest.mark.parametrize("place", [0, 4, 9])
def test_vehicles_change_labels_only_inside_their_footprints(city, place):
    visit = first_visit(city, place, lambda f: len(f["vehicles"]) >= 1)
    other = first_visit(city, place, lambda f: len(f["vehicles"]) >= 1 and f["vehicles"]
                        != city.visit_factors(place, visit)["vehicles"])
    a = city.render(place, visit)
    b = city.render(place, visit, vehicles=city.visit_factors(place, other)["vehicles"])
    empty = city.render(place, visit, vehicles=[])
    assert (a.labels == L.VEHICLE).sum() > 50
    assert not (empty.labels == L.VEHICLE).any()
    footprints = (a.labels == L.VEHICLE) | (b.labels == L.VEHICLE)
    assert (a.labels != b.labels).any()
    assert np.array_equal(a.labels[~footprints], b.labels[~footprints])
    assert np.array_equal(a.labels[a.labels != L.VEHICLE], empty.labels[a.labels != L.VEHICLE])


def test_pedestrians_change_only_their_pixels(city):
    place = 1
    visit = first_visit(city, place, lambda f: len(f["pedestrians"]) >= 2)
    a = city.render(place, visit)
    b = city.render(place, visit, pedestrians=[])
    assert (a.labels == L.PERSON).sum() > 10 and not (b.labels == L.PERSON).any()
    changed = (a.image != b.image).any(axis=-1) | (a.labels != b.labels)
    assert changed.any() and not changed[a.labels != L.PERSON].any()


def test_sky_override_changes_only_sky_pixels(city):
    place = 3
    a = city.render(place, 0)
    for visit in range(1, 4):
        sky = city.visit_factors(place, visit)["sky"]
        b = city.render(place, 0, sky=sky)
        assert b.factors["sky"] == sky and b.factors["lighting"] == a.factors["lighting"]
        assert np.array_equal(a.labels, b.labels)
        changed = (a.image != b.image).any(axis=-1)
        assert not changed[a.labels != L.SKY].any()
        assert changed[a.labels == L.SKY].mean() > 0.3


def test_sign_override_changes_only_sign_pixels(city):
    place = next(p for p in range(60) if len(city.place_content(p)["signs"]) >= 2)
    a = city.render(place, 0, signs=[{**look, "visible": True} for look in city.visit_factors(place, 0)["signs"]])
    hidden = city.render(place, 0, signs=[{**look, "visible": False} for look in a.factors["signs"]])
    assert (a.labels == L.SIGN).sum() > 10 and not (hidden.labels == L.SIGN).any()
    changed = (a.image != hidden.image).any(axis=-1) | (a.labels != hidden.labels)
    assert not changed[a.labels != L.SIGN].any()
    assert a.factors["window_count"] == hidden.factors["window_count"]


def test_camera_shift_moves_labels_exactly(city):
    place = 5
    camera = city.visit_factors(place, 0)["camera"]
    a = city.render(place, 0, camera={**camera, "dx": 0, "dy": 0})
    b = city.render(place, 0, camera={**camera, "dx": 3, "dy": -2})
    # content moves right by 3 and up by 2 pixels at 128 px
    assert (a.labels[2:, :-3] == b.labels[:-2, 3:]).mean() > 0.995
    assert (a.labels != b.labels).mean() > 0.02


def test_unknown_override_is_a_clear_error(city):
    with pytest.raises(GeoxaiError, match="valid overrides: sky, lighting, vehicles"):
        city.render(0, 0, weather="rain")
    with pytest.raises(GeoxaiError, match="list of dicts"):
        city.render(0, 0, vehicles="none")
    with pytest.raises(GeoxaiError, match="dict with keys"):
        city.render(0, 0, sky={"kind": "clear"})
    with pytest.raises(GeoxaiError, match="lacks color, facing"):
        city.render(0, 0, vehicles=[{"type": "car", "lane": 1, "x": 50, "length": 40, "height": 16}])


@pytest.mark.parametrize("size", [64, 128])
def test_window_count_matches_connected_components(size):
    city = SynthCity(seed=1, size=size)
    counts = []
    for place in range(15):
        for visit in (0, 3):
            render = city.render(place, visit)
            _, components = ndimage.label(render.labels == L.WINDOW, structure=FOUR_CONNECTED)
            assert render.factors["window_count"] == components, (place, visit)
            counts.append(components)
    assert sum(c > 0 for c in counts) >= 0.8 * len(counts)


def test_windows_above_ground_floor_and_street_objects_below_them():
    city = SynthCity(seed=2, size=128)
    for place in range(20):
        render = city.render(place, 1)
        window_rows = np.nonzero((render.labels == L.WINDOW).any(axis=1))[0]
        street_rows = np.nonzero(np.isin(render.labels, [L.VEHICLE, L.PERSON]).any(axis=1))[0]
        door_line = city.place_content(place)["base_y"]  # facades meet the sidewalk here (design y)
        if len(window_rows):
            assert window_rows.max() < door_line - 15
            if len(street_rows):
                assert street_rows.min() > window_rows.max()


@pytest.mark.parametrize("size", [32, 64, 256])
def test_other_sizes_scale_the_geometry(size):
    small = SynthCity(seed=0, size=size).render(4, 1)
    reference = SynthCity(seed=0, size=128).render(4, 1)
    assert small.image.shape == (size, size, 3)
    # the same scene: label maps agree after resizing to a common grid
    step = 128 / size
    idx = np.minimum((np.arange(size) * step + step / 2).astype(int), 127)
    assert (reference.labels[np.ix_(idx, idx)] == small.labels).mean() > 0.9


def test_visits_of_a_place_share_one_cosplace_class(city):
    # the official CosGroups cell (M = 10 m, alpha = 30 deg) must hold every visit of a place
    for place in (0, 1, 39, 40, 41, 117):
        cells = {
            (city.visit_utm(place, v)[0] // 10, city.visit_utm(place, v)[1] // 10, city.visit_heading(place, v) // 30)
            for v in range(12)
        }
        assert len(cells) == 1, (place, cells)


def test_positions_headings_and_held_out_places(city):
    spots = np.array([city.place_utm(p) for p in range(90)])
    gaps = np.linalg.norm(spots[:, None] - spots[None], axis=-1) + np.eye(90) * 1e9
    assert gaps.min() >= 30.0
    for place in (0, 41, 85):
        east, north = city.place_utm(place)
        for visit in range(4):
            ve, vn = city.visit_utm(place, visit)
            assert math.hypot(ve - east, vn - north) <= 2.0
            assert abs((city.visit_heading(place, visit) - city.place_heading(place) + 180) % 360 - 180) < 4
    assert city.place_heading(0) % 90 == 15 and city.place_heading(0) != city.place_heading(40)
    test = [city.is_test_place(p, 0.3) for p in range(100)]
    assert 28 <= sum(test) <= 32 and test == [city.is_test_place(p, 0.3) for p in range(100)]


def test_invalid_world_arguments():
    with pytest.raises(GeoxaiError, match="size"):
        SynthCity(size=16)
    with pytest.raises(GeoxaiError, match="seed"):
        SynthCity(seed=-1)
