"""VPR names, folder listing, test sets, positives and image reading (tiny synthetic folders)."""

from __future__ import annotations

import math
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geoxai.data.images import ImageDataset, collate_images
from geoxai.data.vpr import (
    NAME_FIELDS,
    VPRName,
    VPRTestSet,
    check_images,
    format_name,
    list_images,
    parse_name,
    radius_positives,
    read_train_set,
)
from geoxai.errors import GeoxaiError

PITTS = "@0584269.67@4477041.35@17@T@040.44024@-079.99508@000001@@@@@@@pitch1_yaw1@.jpg"
SFXL = "@0543256.96@4178906.70@10@S@037.75582@-122.50112@sGf3FOtKLP4HrUPAD_lj7g@@0@@@@201311@@.jpg"


def same_name(a: VPRName, b: VPRName) -> bool:
    """Field-wise equality where NaN equals NaN."""
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(astuple(a), astuple(b), strict=True))


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def utm_name(east: float, north: float, suffix: str = ".jpg") -> str:
    return format_name(VPRName(east, north, "17", "T"), suffix)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (16, 12), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    if mode == "P":
        image = image.quantize(16)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def truncated(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    write_image(path, size=size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ---------------------------------------------------------------------------------------- names
def test_parse_real_pitts30k_and_sfxl_names():
    pitts = parse_name(Path("/data/pitts30k/images/test/queries") / PITTS)
    assert (pitts.utm_east, pitts.utm_north) == (584269.67, 4477041.35)
    assert (pitts.zone_number, pitts.zone_letter, pitts.lat, pitts.lon) == ("17", "T", 40.44024, -79.99508)
    assert pitts.pano_id == "000001" and pitts.note == "pitch1_yaw1" and math.isnan(pitts.heading)
    sfxl = parse_name(SFXL)
    assert (sfxl.utm_east, sfxl.utm_north, sfxl.lon) == (543256.96, 4178906.70, -122.50112)
    assert sfxl.pano_id == "sGf3FOtKLP4HrUPAD_lj7g" and sfxl.tile_num == "" and sfxl.heading == 0.0
    assert sfxl.timestamp == "201311" and math.isnan(sfxl.pitch)


@pytest.mark.parametrize("name", [PITTS, SFXL])
def test_real_names_round_trip_as_text(name):
    assert format_name(parse_name(name)) == name


def test_format_then_parse_round_trip_keeps_every_field():
    name = VPRName(utm_east=500123.456789, utm_north=4100000.5, zone_number="33", zone_letter="U",
                   lat=-3.14159265, lon=12.5, pano_id="abc_DEF-1", tile_num="7", heading=271.25,
                   pitch=-1.5, roll=0.0, height=2.0, timestamp="20240101", note="night")
    text = format_name(name, ".png")
    assert text.endswith("@.png") and text.count("@") == len(NAME_FIELDS) + 1
    assert same_name(parse_name(text), name)
    # the downloader's zero padding: 7 integer digits for UTM, 3 (lat) / 4 (lon) with the sign
    assert text.startswith("@0500123.456789@4100000.50@33@U@-03.14159265@0012.50000@")
    minimal = VPRName(1.0, 2.0)
    assert same_name(parse_name(format_name(minimal)), minimal)
    assert format_name(VPRName(500000, 4000000, heading=90)) == format_name(VPRName(500000.0, 4000000.0, heading=90.0))
    with pytest.raises(GeoxaiError, match="note"):
        format_name(VPRName(1.0, 2.0, note="a@b"))


def test_names_without_trailing_fields_or_suffix_parse():
    short = parse_name("@10.5@20.25@.jpg")
    assert (short.utm_east, short.utm_north, short.zone_number) == (10.5, 20.25, "")
    assert parse_name("@1@2@33@T@4@5@p@t@90.JPG").heading == 90.0


@pytest.mark.parametrize("name", ["IMG_0001.jpg", "@@@.jpg", "@abc@12@.jpg", "@12@.jpg", "@nan@1@.jpg"])
def test_name_without_coordinates_suggests_no_labels(name):
    with pytest.raises(GeoxaiError, match="no-labels") as info:
        parse_name(name)
    assert name in str(info.value)


def test_bad_number_in_optional_field_is_named():
    with pytest.raises(GeoxaiError, match="heading"):
        parse_name("@1@2@17@T@@@@@north@@@@@@.jpg")


# -------------------------------------------------------------------------------------- listing
def test_list_images_any_depth_sorted_case_insensitive(tmp_path):
    folder = tmp_path / "train"
    expected = [touch(folder / "b.JPG"), touch(folder / "a" / "x.png"),
                touch(folder / "a" / "deep" / "er" / "y.jpeg"), touch(folder / "c" / "z.Png")]
    touch(folder / "notes.txt")
    touch(folder / "a" / "mask.tif")
    touch(folder / ".hidden.jpg")                   # e.g. a partial atomic write
    touch(folder / ".cache" / "thumb.jpg")
    assert list_images(folder) == sorted(expected)


def test_list_file_beside_the_folder_is_used(tmp_path):
    folder = tmp_path / "database"
    on_disk = [touch(folder / f"{i}.jpg") for i in range(3)]
    elsewhere = touch(tmp_path / "other" / "abs.jpg")
    (tmp_path / "database_images_paths.txt").write_text(
        "database/2.jpg\n\n1.jpg\n" + f"{elsewhere.resolve()}\n   \n"
    )
    # parent-relative, folder-relative (the CosPlace convention), absolute; list order is kept
    assert list_images(folder) == [on_disk[2], on_disk[1], elsewhere.resolve()]


def test_list_file_with_missing_paths_names_list_and_first_missing(tmp_path):
    touch(tmp_path / "queries" / "a.jpg")
    (tmp_path / "queries_images_paths.txt").write_text("queries/a.jpg\nqueries/gone.jpg\nqueries/gone2.jpg\n")
    with pytest.raises(GeoxaiError) as info:
        list_images(tmp_path / "queries")
    message = str(info.value)
    assert "queries_images_paths.txt" in message and "queries/gone.jpg" in message
    assert "gone2" not in message and "2 listed" in message


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(GeoxaiError, match="does not exist"):
        list_images(tmp_path / "nope")
    touch(tmp_path / "empty" / "readme.txt")
    with pytest.raises(GeoxaiError, match=r"no \.jpg/\.jpeg/\.png images under .*empty"):
        list_images(tmp_path / "empty")


# ------------------------------------------------------------------------------------ test sets
def make_test_set(root: Path, database: np.ndarray, queries: np.ndarray) -> Path:
    for i, (e, n) in enumerate(database):
        touch(root / "database" / f"d{i % 3}" / utm_name(e, n))
    for e, n in queries:
        touch(root / "queries" / utm_name(e, n))
    return root


def brute_force(database: np.ndarray, queries: np.ndarray, radius: float) -> list[np.ndarray]:
    distances = np.linalg.norm(queries[:, None, :] - database[None, :, :], axis=-1)
    return [np.flatnonzero(row <= radius) for row in distances]


def test_positives_match_brute_force_on_random_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    origin = np.array([583000.0, 4477000.0])
    database = origin + rng.uniform(0, 300, (150, 2))
    queries = origin + rng.uniform(-20, 320, (60, 2))
    test_set = VPRTestSet(make_test_set(tmp_path, database, queries))
    # the set's arrays follow the sorted path order: compare in that order
    db, q = test_set.database_utm, test_set.queries_utm
    assert db.dtype == np.float64 and db.shape == (150, 2) and q.shape == (60, 2)
    assert sorted(map(tuple, db)) == sorted(map(tuple, database))
    for radius in (10.0, 25.0, 60.0):
        positives = test_set.positives(radius)
        expected = brute_force(db, q, radius)
        assert len(positives) == len(q)
        for got, want, query in zip(positives, expected, q, strict=True):
            assert sorted(got.tolist()) == want.tolist()
            distances = np.linalg.norm(db[got] - query, axis=1)
            assert np.all(np.diff(distances) >= 0)  # nearest first
    assert sum(len(p) > 0 for p in test_set.positives(10.0)) > 0
    lonely = [i for i, p in enumerate(brute_force(db, q, 25.0)) if len(p) == 0]
    assert lonely and test_set.queries_without_positives == lonely


def test_positives_radius_edges():
    database = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 0.0]])
    queries = np.array([[0.0, 0.0], [100.0, 100.0]])
    exact = radius_positives(database, queries, 5.0)      # (3, 4) lies exactly 5 m away: included
    assert sorted(exact[0][:2].tolist()) == [0, 3] and exact[0][2] == 1 and len(exact[0]) == 3
    assert len(exact[1]) == 0
    assert sorted(radius_positives(database, queries, 4.999)[0].tolist()) == [0, 3]
    assert sorted(radius_positives(database, queries, 0.0)[0].tolist()) == [0, 3]  # same spot only
    assert radius_positives(database, queries, 10.0)[0].tolist()[-1] == 2
    with pytest.raises(GeoxaiError, match="radius"):
        radius_positives(database, queries, -1.0)


def test_positives_are_cached_and_default_to_the_set_radius(tmp_path):
    root = make_test_set(tmp_path, np.array([[0.0, 0.0], [30.0, 0.0]]), np.array([[0.0, 1.0], [60.0, 0.0]]))
    test_set = VPRTestSet(root, radius=25.0)
    assert test_set.positives() is test_set.positives(25.0)
    assert [p.tolist() for p in test_set.positives()] == [[0], []]
    assert test_set.queries_without_positives == [1]
    assert [p.tolist() for p in test_set.positives(40.0)] == [[0, 1], [1]]


@pytest.mark.parametrize("missing", ["database", "queries"])
def test_missing_database_or_queries(tmp_path, missing):
    present = "queries" if missing == "database" else "database"
    touch(tmp_path / present / utm_name(1, 2))
    with pytest.raises(GeoxaiError) as info:
        VPRTestSet(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and f"{missing}/" in message and "database/ and queries/" in message


def test_labels_mode_rejects_names_without_coordinates_and_no_labels_mode_reads_them(tmp_path):
    touch(tmp_path / "database" / "img_001.jpg")
    touch(tmp_path / "queries" / "img_002.png")
    with pytest.raises(GeoxaiError, match="no-labels"):
        VPRTestSet(tmp_path)
    test_set = VPRTestSet(tmp_path, labels=False)
    assert test_set.database_utm is None and test_set.queries_utm is None
    assert [p.name for p in test_set.database_paths] == ["img_001.jpg"]
    with pytest.raises(GeoxaiError, match="coordinates"):
        test_set.positives()
    with pytest.raises(GeoxaiError, match="coordinates"):
        _ = test_set.queries_without_positives  # a property: reading it raises


def test_test_set_reads_list_files(tmp_path):
    touch(tmp_path / "database" / utm_name(0, 0))
    touch(tmp_path / "database" / utm_name(500, 500))
    touch(tmp_path / "queries" / utm_name(1, 1))
    (tmp_path / "database_images_paths.txt").write_text(f"{utm_name(500, 500)}\n")
    test_set = VPRTestSet(tmp_path)
    assert len(test_set.database_paths) == 1 and test_set.database_utm.tolist() == [[500.0, 500.0]]
    assert test_set.queries_without_positives == [0]


def test_read_train_set(tmp_path):
    folder = tmp_path / "train"
    touch(folder / "b" / format_name(VPRName(10.0, 20.0, "17", "T", heading=90.0)))
    touch(folder / "a" / utm_name(30.5, 40.25, ".png"))
    frame = read_train_set(folder)
    assert list(frame.columns) == ["path", "utm_east", "utm_north", "heading"]
    assert frame["path"].tolist() == [str(p) for p in list_images(folder)]
    assert all(isinstance(p, str) for p in frame["path"])
    assert frame[["utm_east", "utm_north"]].to_numpy().tolist() == [[30.5, 40.25], [10.0, 20.0]]
    assert math.isnan(frame["heading"][0]) and frame["heading"][1] == 90.0
    touch(folder / "c" / "no_coordinates.jpg")
    with pytest.raises(GeoxaiError, match="no_coordinates.jpg"):
        read_train_set(folder)


# --------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".jpg"),
                                         ("RGB", ".jpg")])
def test_any_mode_loads_as_rgb(tmp_path, mode, suffix):
    path = write_image(tmp_path / f"image{suffix}", mode=mode, size=(10, 7))
    with Image.open(path) as image:
        assert image.mode == mode
    item = ImageDataset([path])[0]
    assert item["error"] is None and item["index"] == 0
    image = item["image"]
    assert image.shape == (3, 7, 10) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0


def corrupt_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    good = [write_image(folder / "a.jpg", seed=1), write_image(folder / "c.png", seed=2)]
    bad = [truncated(folder / "b.jpg"), truncated(folder / "d.png"), folder / "e.jpg"]
    bad[2].write_text("this is not an image")
    return good, bad


def test_unreadable_files_are_skipped_and_listed(tmp_path):
    good, bad = corrupt_folder(tmp_path)
    paths = list_images(tmp_path)
    assert paths == sorted(good + bad)
    dataset = ImageDataset(paths)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["image"] is None for item in items] == [p in bad for p in paths]
    for item in items:
        if item["error"] is not None:
            assert item["error"].startswith(f"{paths[item['index']]}: unreadable image (")
    batch = collate_images(items)
    assert batch["index"].tolist() == [paths.index(p) for p in good] and batch["index"].dtype == torch.long
    assert batch["image"].shape == (2, 3, 12, 16)
    assert [i for i, _ in batch["skipped"]] == [paths.index(p) for p in bad]
    assert all("unreadable image" in error for _, error in batch["skipped"])
    listed = check_images(paths)
    assert [p for p, _ in listed] == [p for p in paths if p in bad]
    assert all(reason.startswith("unreadable image (") for _, reason in listed)


def test_dataloader_with_collate_and_all_bad_batch(tmp_path):
    good, bad = corrupt_folder(tmp_path)
    loader = DataLoader(ImageDataset(sorted(good + bad)), batch_size=2, collate_fn=collate_images)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 2 and sum(len(b["skipped"]) for b in batches) == 3
    only_bad = collate_images([ImageDataset(bad)[i] for i in range(3)])
    assert only_bad["image"] is None and only_bad["index"].numel() == 0 and len(only_bad["skipped"]) == 3


def test_mixed_sizes_need_a_resize(tmp_path):
    paths = [write_image(tmp_path / "small.png", size=(8, 8)), write_image(tmp_path / "big.png", size=(20, 12))]
    items = [ImageDataset(paths)[i] for i in range(2)]
    with pytest.raises(GeoxaiError, match="resize"):
        collate_images(items)
    seen = []

    def resize(image: torch.Tensor) -> torch.Tensor:
        seen.append(image.dtype)
        return torch.nn.functional.interpolate(image[None], size=(6, 6), mode="bilinear")[0]

    batch = collate_images([ImageDataset(paths, transform=resize)[i] for i in range(2)])
    assert batch["image"].shape == (2, 3, 6, 6) and seen == [torch.float32, torch.float32]
