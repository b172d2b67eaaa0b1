"""One decoder for every command: bit depths scaled to 8 bits, EXIF orientation applied, decompression
bombs and broken files an ``UnreadableImageError`` naming the file, counted where images are read."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import ExifTags, Image

from geoxai.data.images import image_size, load_label_map, load_rgb
from geoxai.data.info import dataset_info
from geoxai.errors import GeoxaiError, UnreadableImageError
from geoxai.report.evaluations import Evaluation
from geoxai.report.grids import evaluation_grid
from geoxai.runs import MANIFEST_COLUMNS


def gray(path: Path) -> np.ndarray:
    return np.asarray(load_rgb(path))[..., 0].astype(int)


def test_16_bit_gradient_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 64 * 4).round().astype(np.uint16).reshape(4, 64)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = gray(tmp_path / "g16.png")
    assert np.abs(got - np.round(values / 257)).max() <= 1
    assert got.min() == 0 and got.max() == 255 and 100 < np.median(got) < 155  # a gradient, not white


def test_32_bit_integer_images(tmp_path):
    sixteen = (np.arange(64, dtype=np.int32).reshape(8, 8) * 1000)  # within 0..65535: 16-bit data
    Image.fromarray(sixteen).save(tmp_path / "i16.tiff")
    assert np.abs(gray(tmp_path / "i16.tiff") - np.round(sixteen / 257)).max() <= 1
    wide = (np.arange(64, dtype=np.int32).reshape(8, 8) * 1_000_000)  # wider: by the image's maximum
    Image.fromarray(wide).save(tmp_path / "i32.tiff")
    assert np.abs(gray(tmp_path / "i32.tiff") - np.round(wide / wide.max() * 255)).max() <= 1


def test_float_images(tmp_path):
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(unit).save(tmp_path / "unit.tiff")
    assert Image.open(tmp_path / "unit.tiff").mode == "F"
    assert np.abs(gray(tmp_path / "unit.tiff") - np.round(unit * 255)).max() <= 1
    big = unit * 4000
    big[0, 0] = np.nan
    Image.fromarray(big).save(tmp_path / "big.tiff")
    got = gray(tmp_path / "big.tiff")
    assert got[0, 0] == 0 and got.max() == 255 and np.abs(got[1:] - np.round(unit[1:] * 255)).max() <= 1


def _png_48_bit(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_48_bit_rgb_png(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 2570
    _png_48_bit(tmp_path / "rgb48.png", rgb)
    got = np.asarray(load_rgb(tmp_path / "rgb48.png")).astype(int)
    assert np.abs(got - np.round(rgb / 257)).max() <= 1  # 255, 128, 10


def test_exif_orientation_is_applied_everywhere(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)  # stored 20 wide, 10 tall; left half red
    pixels[:, :10] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = 6  # display rotated 90 degrees clockwise
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_rgb(tmp_path / "phone.jpg")
    assert upright.size == (10, 20) == image_size(tmp_path / "phone.jpg")
    array = np.asarray(upright).astype(int)
    assert array[2, 5, 0] > 200 and array[-3, 5, 0] < 60  # the stored left (red) is now the top
    labels = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20))
    labels.save(tmp_path / "labels.png", exif=exif)
    assert load_label_map(tmp_path / "labels.png").shape == (20, 10)


@pytest.mark.parametrize("limit", [3000, 1000])  # 64 x 64 = 4096: above Pillow's warning, then its error
def test_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch, limit):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    for read in (load_rgb, load_label_map, image_size):
        with pytest.raises(UnreadableImageError, match=rf"bomb.png: unreadable image \(more than {limit} pixels, "
                                                       "refused as a possible decompression bomb; set "
                                                       "GEOXAI_MAX_IMAGE_PIXELS higher"):
            read(tmp_path / "bomb.png")


def test_the_limit_can_be_raised_and_a_bad_value_is_an_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setenv("GEOXAI_MAX_IMAGE_PIXELS", "5000")
    assert load_rgb(tmp_path / "big.png").size == (64, 64)
    monkeypatch.setenv("GEOXAI_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(GeoxaiError, match="GEOXAI_MAX_IMAGE_PIXELS='lots': give a positive whole number"):
        load_rgb(tmp_path / "big.png")


def test_bombs_are_counted_by_data_info_and_report_grids(tmp_path, monkeypatch):
    queries = tmp_path / "queries"
    queries.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(queries / "small.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(queries / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    for decode in (True, False):
        info = dataset_info(queries, decode=decode, labels=False)
        assert [p.name for p, _ in info.unreadable] == ["bomb.png"]
        assert "decompression bomb" in info.unreadable[0][1]

    run = tmp_path / "run"
    (run / "samples" / "q0").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(run / "samples" / "q0" / "0.png")  # a bomb too
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(run / "samples" / "q0" / "1.png")
    rows = [["q0", str(queries / "small.png"), s, "", f"samples/q0/{s}.png", "", ""] for s in (0, 1)]
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(run / "manifest.csv", index=False)
    (run / "run.yaml").write_text(f"generator: test\nqueries: {queries}\n")
    records = pd.DataFrame({"plugin": ["recall"] * 2, "metric": ["cosine"] * 2, "pairing": ["generated"] * 2,
                            "query_id": ["q0", "q0"], "sample": [0, 1], "value": [0.5, 0.9]})
    evaluation = Evaluation(folder=tmp_path / "eval", label="run", records=records, summary=pd.DataFrame(),
                            results={}, errors=pd.DataFrame(), run_path=run)
    grid, text = evaluation_grid(evaluation, samples=2)
    assert grid is not None and "1 image(s) could not be read" in text
