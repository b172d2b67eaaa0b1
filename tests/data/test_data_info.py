"""``geoxai data info`` / ``dataset_info`` on tiny synthetic folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.data.info import dataset_info
from geoxai.data.vpr import VPRName, format_name
from geoxai.errors import GeoxaiError


def image(path: Path, size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(len(path.name)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    return path


def named(folder: Path, east: float, north: float, size: tuple[int, int] = (16, 12)) -> Path:
    return image(folder / format_name(VPRName(east, north, "10", "S"), ".png"), size)


def make_world(root: Path) -> Path:
    """train/ (3 images, two sizes, two depths), database/ (2), queries/ (3, one far away), labels/."""
    named(root / "train", 500000, 4100000)
    named(root / "train" / "x", 500040, 4100010, size=(20, 10))
    named(root / "train" / "x" / "y", 500100, 4100030)
    named(root / "database", 600000, 4200000)
    named(root / "database", 600030, 4200000)
    named(root / "queries", 600001, 4200001)
    named(root / "queries", 600030, 4200028)
    named(root / "queries", 601000, 4200000)
    image(root / "labels" / "train" / "whatever.png")
    (root / "metadata.csv").write_text("place,visit\n")
    return root


def test_world_root(tmp_path):
    info = dataset_info(make_world(tmp_path / "world"))
    assert [(p.name, p.images) for p in info.parts] == [("train", 3), ("database", 2), ("queries", 3)]
    train = info.parts[0]
    assert train.sizes == {(16, 12): 2, (20, 10): 1}
    assert train.utm_min == (500000.0, 4100000.0) and train.utm_max == (500100.0, 4100030.0)
    assert train.utm_span == (100.0, 30.0)
    assert info.queries == 3 and info.queries_without_positives == 2  # (600030, 4200028) is 28 m away
    assert dataset_info(tmp_path / "world", radius=30).queries_without_positives == 1
    assert info.unreadable == []
    text = info.format()
    for expected in ("train/: 3 images", "database/: 2 images", "queries/: 3 images", "16x12 (2)",
                     "20x10 (1)", "span 100.0 m x 30.0 m", "queries without a positive within 25 m: 2 of 3",
                     "unreadable files: 0"):
        assert expected in text
    assert "labels" not in text


def test_training_folder_without_coordinates(tmp_path):
    image(tmp_path / "photos" / "a.jpg")
    image(tmp_path / "photos" / "deep" / "er" / "b.jpeg", size=(8, 8))
    info = dataset_info(tmp_path / "photos")
    assert [(p.name, p.images) for p in info.parts] == [("photos", 2)]
    assert info.parts[0].utm_span is None and info.queries_without_positives is None
    text = info.format()
    assert "images: 2 images" in text and "no coordinates" in text and "training folder" in text


def test_test_set_with_list_file_and_no_labels(tmp_path):
    root = make_world(tmp_path / "world")
    shutil.rmtree(root / "train")  # a plain test set: database/ + queries/
    (root / "queries_images_paths.txt").write_text(
        "\n".join(f"queries/{p.name}" for p in sorted((root / "queries").iterdir())[:2]) + "\n")
    info = dataset_info(root / "database", labels=False)   # a plain folder of images
    assert [(p.name, p.images) for p in info.parts] == [("database", 2)]
    assert "not read (no-labels mode)" in info.format()
    info = dataset_info(root, radius=25, labels=True, decode=False)
    queries = next(p for p in info.parts if p.name == "queries")
    assert queries.images == 2 and queries.list_file == root / "queries_images_paths.txt"
    assert "listed in" in info.format() and "headers only" in info.format()


def test_corrupt_and_non_image_files_are_listed(tmp_path):
    root = make_world(tmp_path / "world")
    cut = named(root / "database", 600010, 4200000, size=(64, 64))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    fake = root / "queries" / "@600000@4200000@@.jpg"
    fake.write_text("not an image")
    info = dataset_info(root)
    assert sorted(p for p, _ in info.unreadable) == sorted([cut, fake])
    database = next(p for p in info.parts if p.name == "database")
    assert database.images == 3 and [p for p, _ in database.unreadable] == [cut]
    # the truncated PNG's header is fine (its size is counted); the fake has no readable header
    queries = next(p for p in info.parts if p.name == "queries")
    assert sum(queries.sizes.values()) == 3 and queries.images == 4
    text = info.format()
    assert "unreadable files: 2" in text and f"{cut}: unreadable image (" in text and str(fake) in text
    # headers only: the truncated file passes, the fake does not
    quick = dataset_info(root, decode=False)
    assert [p for p, _ in quick.unreadable] == [fake]


def test_mixed_names_report_extent_and_skip_positives(tmp_path):
    root = make_world(tmp_path / "world")
    image(root / "queries" / "nameless.png")
    info = dataset_info(root)
    queries = next(p for p in info.parts if p.name == "queries")
    assert queries.without_coordinates == 1 and queries.utm_span is not None
    assert info.queries_without_positives is None and "nameless.png" in info.format()


def test_errors(tmp_path):
    with pytest.raises(GeoxaiError, match="does not exist"):
        dataset_info(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeoxaiError, match="no .jpg/.jpeg/.png images"):
        dataset_info(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ CLI
def test_cli_good_folder(tmp_path):
    root = make_world(tmp_path / "world")
    result = CliRunner().invoke(cli, ["data", "info", str(root), "--radius", "30"])
    assert result.exit_code == 0, result.output
    assert "train/: 3 images" in result.stdout and "queries/: 3 images" in result.stdout
    assert "queries without a positive within 30 m: 1 of 3" in result.stdout


def test_cli_missing_folder_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "nope")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_cli_lists_corrupt_image(tmp_path):
    root = make_world(tmp_path / "world")
    bad = root / "train" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    result = CliRunner().invoke(cli, ["data", "info", str(root), "--no-labels"])
    assert result.exit_code == 0, result.output
    assert "unreadable files: 1" in result.stdout and f"{bad}: unreadable image" in result.stdout
    assert "no-labels mode" in result.stdout
