"""Writing SynthCity worlds: VPR layout, positives, metadata, byte-identical resume, the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.data.vpr import parse_name
from geoxai.errors import GeoxaiError
from geoxai.synthcity import SynthCity
from geoxai.synthcity.world import place_splits, write_world

WORLD = dict(places=8, visits=3, size=48, seed=5, test_fraction=0.4, val_fraction=0.3)
SPLIT_FOLDERS = ("train", "database", "queries", "val/database", "val/queries")


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("synthcity") / "world"
    return out, write_world(out, progress=False, **WORLD)


def images(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def test_layout_counts_and_names(world):
    out, summary = world
    city = SynthCity(seed=5, size=48)
    test_places = [p for p in range(8) if city.is_test_place(p, 0.4)]
    val_places = [p for p, role in enumerate(place_splits(city, 8, 0.4, 0.3)) if role == "val"]
    assert 0 < len(test_places) < 8 and 0 < len(val_places) and not set(val_places) & set(test_places)
    train_places = 8 - len(test_places) - len(val_places)
    assert len(images(out / "database")) == len(test_places) == summary.images["database"]
    assert len(images(out / "queries")) == 2 * len(test_places) == summary.images["queries"]
    assert len(images(out / "val" / "database")) == len(val_places) == summary.images["val/database"]
    assert len(images(out / "val" / "queries")) == 2 * len(val_places) == summary.images["val/queries"]
    assert len(images(out / "train")) == 3 * train_places == summary.images["train"]
    names = [p.name for split in SPLIT_FOLDERS for p in images(out / split)]
    assert len(set(names)) == len(names) == 24
    for split in SPLIT_FOLDERS:
        for path in images(out / split):
            fields = parse_name(path)
            assert fields.zone_number == "10" and fields.zone_letter == "S" and fields.note == "synthcity"
            assert fields.pano_id.startswith("p") and 39 < fields.lat < 39.2 and -123 < fields.lon < -122  # seed 5's block
            place, visit = int(fields.pano_id[1:]), int(fields.tile_num)
            assert (split in ("database", "queries")) == (place in test_places)
            assert split.startswith("val/") == (place in val_places)
            assert (visit == 0) == split.endswith("database") or split == "train"
            with Image.open(path) as image:
                assert image.size == (48, 48) and image.mode == "RGB"
            with Image.open(out / "labels" / split / path.name) as label:
                assert label.mode == "L"
                assert np.array_equal(np.asarray(label), city.render(place, visit).labels)
    label_files = sorted(p.relative_to(out / "labels") for p in (out / "labels").rglob("*.png"))
    image_files = sorted(p.relative_to(out) for s in SPLIT_FOLDERS for p in images(out / s))
    assert label_files == image_files


def test_each_query_has_exactly_its_own_place_as_positive(world):
    out, _ = world
    database = [parse_name(p) for p in images(out / "database")]
    queries = [parse_name(p) for p in images(out / "queries")]
    db_utm = np.array([[n.utm_east, n.utm_north] for n in database])
    for query in queries:
        distances = np.hypot(db_utm[:, 0] - query.utm_east, db_utm[:, 1] - query.utm_north)
        positives = [database[i].pano_id for i in np.flatnonzero(distances <= 25.0)]
        assert positives == [query.pano_id]


def test_metadata_has_one_row_per_image_with_factors(world):
    out, summary = world
    table = pd.read_csv(out / "metadata.csv")
    assert len(table) == 24 and table["path"].is_unique
    assert all((out / path).is_file() for path in table["path"])
    assert all((out / path).is_file() for path in table["label_path"])
    for column in ("sky_kind", "brightness", "sun_side", "shadow_strength", "tint", "n_vehicles",
                   "n_pedestrians", "n_signs_visible", "camera_dx", "camera_dy", "building_count",
                   "window_count", "factors_json"):
        assert column in table.columns
    city = SynthCity(seed=5, size=48)
    row = table.iloc[4]
    assert row["window_count"] == city.render(row["place"], row["visit"]).factors["window_count"]
    assert summary.windows["max"] == table["window_count"].max()
    assert abs(sum(summary.class_shares.values()) - 100) < 0.1
    text = summary.format()
    assert "windows per image" in text and "vehicle" in text


def test_identical_arguments_give_identical_bytes_and_resume(world, tmp_path):
    out, _ = world
    again = tmp_path / "again"
    write_world(again, progress=False, **WORLD)
    assert tree_hashes(again) == tree_hashes(out)
    victim = images(again / "queries")[0]
    victim.unlink()
    (again / "labels" / "train" / images(again / "train")[1].name).unlink()
    summary = write_world(again, progress=False, **WORLD)
    assert summary.written == 2 and summary.skipped == 22
    assert tree_hashes(again) == tree_hashes(out)


def test_parallel_workers_write_the_same_bytes(world, tmp_path):
    out, _ = world
    write_world(tmp_path / "parallel", progress=False, workers=2, **WORLD)
    assert tree_hashes(tmp_path / "parallel") == tree_hashes(out)


def test_refuses_a_different_world_unless_overwrite(world, tmp_path):
    out, _ = world
    target = tmp_path / "w"
    write_world(target, progress=False, **{**WORLD, "places": 5})
    with pytest.raises(GeoxaiError, match="--overwrite"):
        write_world(target, progress=False, **WORLD)
    write_world(target, progress=False, overwrite=True, **WORLD)
    assert tree_hashes(target) == tree_hashes(out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(GeoxaiError, match="not empty.*--overwrite"):
        write_world(foreign, progress=False, **WORLD)
    write_world(foreign, progress=False, overwrite=True, **WORLD)
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "metadata.csv").is_file()


@pytest.mark.parametrize("options, message", [
    (dict(places=0), "--places must be >= 1"),
    (dict(visits=1), "--visits must be >= 2"),
    (dict(size=16), "--size must be >= 32"),
    (dict(test_fraction=1.0), "--test-fraction"),
    (dict(places=1), "no test place|no training place"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, options, message):
    with pytest.raises(GeoxaiError, match=message) as info:
        write_world(tmp_path / "x", progress=False, **{**WORLD, **options})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_world_and_prints_its_summary(tmp_path):
    result = CliRunner().invoke(cli, ["data", "synthcity", "--out", str(tmp_path / "w"), "--places", "6",
                                      "--visits", "3", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "SynthCity world" in result.output and "class pixel shares" in result.output
    assert len(pd.read_csv(tmp_path / "w" / "metadata.csv")) == 18


def test_cli_user_mistakes_exit_2_without_traceback(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "synthcity", "--out", str(tmp_path / "w"), "--places", "0"])
    assert result.exit_code == 2  # a usage error: one error: line naming the option
    assert result.output.startswith("error: Invalid value for '--places': 0 is not in the range x>=1.")
    assert len(result.output.splitlines()) == 1
    assert "Traceback" not in result.output and not (tmp_path / "w").exists()
    result = runner.invoke(cli, ["data", "synthcity", "--out", str(tmp_path / "w"), "--places", "6", "--visits", "3",
                                 "--test-fraction", "0.9", "--val-fraction", "0.9"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    result = runner.invoke(cli, ["data", "synthcity", "--out", str(busy), "--places", "6", "--visits", "3",
                                 "--size", "32"])
    assert result.exit_code == 2 and "--overwrite" in result.output and "Traceback" not in result.output
