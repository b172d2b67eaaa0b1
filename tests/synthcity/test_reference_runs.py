"""SynthCity reference runs: every kind renders what it claims, labels beside images, byte-identical resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy import ndimage

from geoxai import labels as L
from geoxai.errors import GeoxaiError
from geoxai.runs import GenerationRun
from geoxai.synthcity import SynthCity
from geoxai.synthcity.reference_runs import REFERENCE_KINDS, write_reference_run
from geoxai.synthcity.world import write_world

SAMPLES = 3
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
FACADE = (L.BUILDING, L.WINDOW)
PERSISTENT = (L.SKY, L.BUILDING, L.WINDOW, L.ROAD, L.SIDEWALK, L.VEGETATION, L.POLE)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "world"
    write_world(out, places=10, visits=3, size=64, progress=False)
    return out


@pytest.fixture(scope="module")
def city(world) -> SynthCity:
    return SynthCity(seed=0, size=64)


@pytest.fixture(scope="module")
def make_run(world, tmp_path_factory):
    """The run of one kind (written once per module)."""
    root, runs = tmp_path_factory.mktemp("runs"), {}

    def make(kind: str) -> GenerationRun:
        if kind not in runs:
            runs[kind] = write_reference_run(world, kind, SAMPLES, root / kind, seed=3, progress=False)
        return runs[kind]

    return make


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def images(world: Path, run: GenerationRun):
    """(reference row, query image, query labels, image, labels) for every image of the run."""
    metadata = pd.read_csv(world / "metadata.csv").set_index("path")
    table = pd.read_csv(run.root / "reference.csv", dtype={"query_id": str})
    manifest = run.manifest(absolute=True)
    assert len(table) == len(manifest) == 6 * SAMPLES
    for row, entry in zip(table.to_dict("records"), manifest.to_dict("records"), strict=True):
        assert (row["query_id"], row["sample"]) == (entry["query_id"], entry["sample"])
        query = Path(entry["query_path"]).relative_to(world).as_posix()
        meta = metadata.loc[query]
        assert (row["query_place"], row["query_visit"]) == (meta["place"], meta["visit"])
        row["overrides"] = json.loads(row["overrides_json"])
        yield (row, read(world / query), read(world / meta["label_path"]), read(entry["image_path"]),
               read(run.root / row["label_path"]))


def components(labels: np.ndarray) -> int:
    return ndimage.label(labels == L.WINDOW, structure=FOUR_CONNECTED)[1]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("kind", REFERENCE_KINDS)
def test_every_image_is_the_recorded_render_with_its_label_map(world, city, make_run, kind):
    run = make_run(kind)
    assert run.settings["generator"] == "synthcity-reference" and run.settings["kind"] == kind
    assert run.settings["world"] == str(world) and run.settings["world_seed"] == 0
    assert run.settings["world_size"] == 64 and run.settings["samples"] == SAMPLES and run.settings["seed"] == 3
    fresh: dict[str, set[int]] = {}
    for row, _, _, image, labels in images(world, run):
        assert row["label_path"] == f"labels/samples/{row['query_id']}/{row['sample']}.png"
        assert labels.dtype == np.uint8 and labels.shape == (64, 64) and image.shape == (64, 64, 3)
        render = city.render(row["place"], row["visit"], **row["overrides"])
        assert np.array_equal(render.image, image) and np.array_equal(render.labels, labels)
        if kind != "identity":
            assert row["fresh"] >= 3  # no world image uses a fresh visit
            fresh.setdefault(row["query_id"], set()).add(int(row["fresh"]))
    assert all(len(values) == SAMPLES for values in fresh.values())


def test_identity_copies_the_queries_and_their_labels(world, make_run):
    for row, query, query_labels, image, labels in images(world, make_run("identity")):
        assert np.array_equal(image, query) and np.array_equal(labels, query_labels)
        assert (row["place"], row["visit"], row["overrides"]) == (row["query_place"], row["query_visit"], {})


def persistent_agreement(query_labels: np.ndarray, labels: np.ndarray) -> float:
    """Share of the pixels of persistent classes in both maps that have the same class."""
    both = np.isin(query_labels, PERSISTENT) & np.isin(labels, PERSISTENT)
    return float((query_labels[both] == labels[both]).mean())


def test_oracle_is_the_same_place_with_new_transients(world, city, make_run):
    agreement = []
    for row, _, query_labels, _, labels in images(world, make_run("oracle")):
        assert row["place"] == row["query_place"] and row["visit"] == row["fresh"] and row["overrides"] == {}
        query_factors = city.visit_factors(row["query_place"], row["query_visit"])
        factors = city.visit_factors(row["place"], row["visit"])
        for key in ("sky", "lighting", "camera"):
            assert factors[key] != query_factors[key]
        agreement.append(persistent_agreement(query_labels, labels))
    elsewhere = [persistent_agreement(query_labels, labels)
                 for _, _, query_labels, _, labels in images(world, make_run("other-place"))]
    # the camera jitter (up to 2 px at 64 px) moves the scene, another place changes it
    assert np.mean(agreement) > 0.8 and np.mean(elsewhere) < np.mean(agreement) - 0.15
    by_query = {}
    for row, *_, image, _ in images(world, make_run("oracle")):
        by_query.setdefault(row["query_id"], []).append(image)
    for samples in by_query.values():
        assert all(not np.array_equal(samples[i], samples[j]) for i in range(SAMPLES) for j in range(i))


def test_other_place_is_always_another_test_place(world, make_run):
    metadata = pd.read_csv(world / "metadata.csv")
    test_places = set(metadata.loc[metadata["split"] != "train", "place"])
    places = set()
    for row, *_ in images(world, make_run("other-place")):
        assert row["place"] != row["query_place"] and row["place"] in test_places
        assert row["visit"] == row["fresh"] and row["visit"] >= 3
        places.add(row["place"])
    assert places == test_places


@pytest.mark.parametrize("kind, footprint", [
    ("sky", None), ("lighting", None), ("vehicles", L.VEHICLE), ("pedestrians", L.PERSON), ("signs", L.SIGN)])
def test_a_transient_intervention_changes_only_its_factor(world, city, make_run, kind, footprint):
    changed_any = False
    for row, query, query_labels, image, labels in images(world, make_run(kind)):
        place, visit = row["query_place"], row["query_visit"]
        assert (row["place"], row["visit"]) == (place, visit) and list(row["overrides"]) == [kind]
        assert row["overrides"][kind] == city.visit_factors(place, row["fresh"])[kind]
        changed = (image != query).any(axis=-1) | (labels != query_labels)
        changed_any |= bool(changed.any())
        if kind == "lighting":
            assert np.array_equal(labels, query_labels) and changed.mean() > 0.5
        elif kind == "sky":
            assert np.array_equal(labels, query_labels)
            assert not changed[labels != L.SKY].any() and changed[labels == L.SKY].mean() > 0.3
        else:
            inside = (labels == footprint) | (query_labels == footprint)
            assert not changed[~inside].any()
    assert changed_any


def test_windows_change_the_window_grids_on_unchanged_facades(world, make_run):
    counts_changed = 0
    for row, query, query_labels, image, labels in images(world, make_run("windows")):
        assert list(row["overrides"]) == ["windows"]
        facade = np.isin(query_labels, FACADE)
        assert np.array_equal(facade, np.isin(labels, FACADE))
        assert np.array_equal(labels[~facade], query_labels[~facade])
        assert not (image != query).any(axis=-1)[~facade].any()
        counts_changed += components(labels) != components(query_labels)
    assert counts_changed >= 0.6 * 6 * SAMPLES


def test_colours_change_facade_pixels_only(world, make_run):
    for row, query, query_labels, image, labels in images(world, make_run("colours")):
        assert list(row["overrides"]) == ["facade_colors"]
        assert np.array_equal(labels, query_labels)
        changed = (image != query).any(axis=-1)
        assert changed[labels == L.BUILDING].mean() > 0.3
        assert not changed[labels != L.BUILDING].any()


def test_resume_writes_only_what_is_missing_byte_identically(world, make_run, tmp_path):
    full = make_run("windows").root
    partial = tmp_path / "run"
    write_reference_run(world, "windows", SAMPLES, partial, seed=3, limit=2, progress=False)
    (partial / "samples" / "q000001" / "2.png").unlink()
    (partial / "labels" / "samples" / "q000000" / "1.png").unlink()
    with pytest.warns(UserWarning, match="no image on disk"):  # q000001/2.png was in the manifest
        write_reference_run(world, "windows", SAMPLES, partial, seed=3, progress=False)
    expected, got = tree_hashes(full), tree_hashes(partial)
    assert {k: v for k, v in got.items() if k != "run.yaml"} == {k: v for k, v in expected.items() if k != "run.yaml"}
    before = tree_hashes(partial)
    for victim in ("samples/q000004/0.png", "labels/samples/q000002/2.png", "reference.csv", "manifest.csv"):
        (partial / victim).unlink()
    write_reference_run(world, "windows", SAMPLES, partial, seed=3, progress=False)  # manifest rebuilt
    assert tree_hashes(partial) == before
    with pytest.raises(GeoxaiError, match="other settings"):
        write_reference_run(world, "colours", SAMPLES, partial, seed=3, progress=False)
    with pytest.raises(GeoxaiError, match="other settings"):
        write_reference_run(world, "windows", SAMPLES, partial, seed=4, progress=False)


def broken_world(world: Path, folder: Path, edit) -> Path:
    copy = folder / "copy"
    shutil.copytree(world, copy)
    table = pd.read_csv(copy / "metadata.csv")
    edit(table).to_csv(copy / "metadata.csv", index=False)
    return copy


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist.*geoxai data synthcity --out DIR"),
    ("not-a-world", "not a SynthCity world .*geoxai data synthcity --out DIR"),
    ("kind", "--kind 'oracel': unknown; choose one of identity, oracle, .* did you mean 'oracle'"),
    ("samples", "--samples 0: must be at least 1"),
    ("limit", "--limit 0: must be at least 1"),
    ("unlisted", "queries/.* is not in metadata.csv"),
    ("one-test-place", "at least 2 test places"),
])
def test_bad_input_is_a_one_line_error(world, tmp_path, case, message):
    args = dict(world=world, kind="oracle", samples=2, out=tmp_path / "run", progress=False)
    if case == "missing":
        args["world"] = tmp_path / "nowhere"
    elif case == "not-a-world":
        (tmp_path / "plain").mkdir()
        args["world"] = tmp_path / "plain"
    elif case in ("kind", "samples", "limit"):
        args.update({"kind": {"kind": "oracel"}, "samples": {"samples": 0}, "limit": {"limit": 0}}[case])
    elif case == "unlisted":
        args["world"] = broken_world(world, tmp_path, lambda t: t.drop(index=t.index[t["split"] == "queries"][-1]))
    else:
        def keep_one(table: pd.DataFrame) -> pd.DataFrame:
            first = table.loc[table["split"] != "train", "place"].min()
            table.loc[table["place"] != first, "split"] = "train"
            return table

        args.update(world=broken_world(world, tmp_path, keep_one), kind="other-place")
    with pytest.raises(GeoxaiError, match=message) as info:
        write_reference_run(**args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_settings_name_the_world_parameters(world, make_run):
    settings = yaml.safe_load((make_run("identity").root / "run.yaml").read_text())
    params = yaml.safe_load((world / "synthcity.yaml").read_text())
    assert (settings["world_seed"], settings["world_size"]) == (params["seed"], params["size"])


# ------------------------------------------------------------------ SynthCity content overrides
@pytest.mark.parametrize("size", [32, 64, 128])
def test_window_override_keeps_the_window_count_guarantee(size):
    city = SynthCity(seed=2, size=size)
    for place in range(8):
        base = city.render(place, 1)
        own = city.render(place, 1, **city.content_factors(place))
        assert np.array_equal(own.image, base.image) and own.factors == base.factors
        for variant in range(3):
            new = city.content_factors(place, variant)
            assert new == city.content_factors(place, variant) and new != city.content_factors(place)
            render = city.render(place, 1, windows=new["windows"])
            assert render.factors["window_count"] == components(render.labels), (size, place, variant)
            assert render.factors["windows_total"] == sum(g["rows"] * g["cols"] for g in new["windows"])
            recoloured = city.render(place, 1, facade_colors=new["facade_colors"])
            assert recoloured.factors["facade_colors"] == new["facade_colors"]
            assert np.array_equal(recoloured.labels, base.labels)


def test_bad_content_overrides_are_clear_errors():
    city = SynthCity(seed=0, size=64)
    own = city.content_factors(0)
    grid = own["windows"][0]
    with pytest.raises(GeoxaiError, match="valid overrides: .*camera, windows, facade_colors"):
        city.render(0, 0, doors=[])
    with pytest.raises(GeoxaiError, match="one entry per building"):
        city.render(0, 0, windows=own["windows"][1:])
    with pytest.raises(GeoxaiError, match="exactly the keys rows, cols"):
        city.render(0, 0, windows=[{**grid, "glass": [0, 0, 0]}, *own["windows"][1:]])
    with pytest.raises(GeoxaiError, match="does not fit its facade"):
        city.render(0, 0, windows=[{**grid, "cols": grid["cols"] + 5}, *own["windows"][1:]])
    with pytest.raises(GeoxaiError, match="RGB triple"):
        city.render(0, 0, facade_colors=[[2.0, 0, 0], *own["facade_colors"][1:]])
