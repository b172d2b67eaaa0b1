"""Retrieval: faiss search and recall@N against brute force, exclusions, descriptor cache, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.data.vpr import VPRName, format_name
from geoxai.embedders import Embedder
from geoxai.embedders.cosplace import CosPlaceEmbedder
from geoxai.errors import GeoxaiError
from geoxai.retrieval import chance_recall, evaluate_retrieval, recall_at, search

PALETTE = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (20, 230, 230), (230, 20, 230)]


class ColourEmbedder(Embedder):
    """Mean colour as a descriptor: places painted in distinct colours are retrieved exactly."""

    name = "colour"
    dim, image_size = 3, 32

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.mean(dim=(2, 3)) - 0.5, dim=1)

    def spec(self) -> dict:
        return {"name": f"{__file__}:ColourEmbedder"}


def _image(path: Path, colour, rng, size=(40, 48)) -> None:
    pixels = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-15, 16, (*size, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six places 100 m apart; database photo per place, one query 5 m away from places 0-4.

    Place 5's database photo is corrupt (so query 5 has no readable positive), a query 900 m
    away has none at all, and one query file is corrupt.
    """
    root = tmp_path_factory.mktemp("vpr")
    rng = np.random.default_rng(0)
    (root / "database").mkdir()
    (root / "queries").mkdir()

    def name(east, note):
        return format_name(VPRName(utm_east=500000.0 + east, utm_north=4180000.0, note=note), ".png")

    for place, colour in enumerate(PALETTE):
        target = root / "database" / name(100 * place, f"db{place}")
        if place == 5:
            target.write_bytes(b"\x89PNG truncated")
        else:
            _image(target, colour, rng, size=(48, 64))
        _image(root / "queries" / name(100 * place + 5, f"q{place}"), colour, rng, size=(60, 40))
    _image(root / "queries" / name(900, "far"), PALETTE[0], rng)
    (root / "queries" / name(300, "corrupt")).write_bytes(b"not an image")
    return root


def _brute_force_recall(database, queries, positives, ns):
    distances = ((queries[:, None, :] - database[None, :, :]) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")
    hits = {n: [] for n in ns}
    for q, pos in enumerate(positives):
        if len(pos) == 0:
            continue
        for n in ns:
            hits[n].append(any(int(i) in set(pos.tolist()) for i in order[q, :n]))
    return {n: 100.0 * sum(h) / len(h) for n, h in hits.items()}, order


def test_search_and_recall_equal_a_brute_force_reference():
    rng = np.random.default_rng(3)
    database = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((60, 16)).astype(np.float32)
    positives = [rng.choice(300, size=rng.integers(0, 40), replace=False) for _ in range(60)]
    expected, order = _brute_force_recall(database, queries, positives, (1, 5, 10, 20))
    distances, indices = search(database, queries, 20)
    assert indices.shape == (60, 20)
    np.testing.assert_array_equal(indices, order[:, :20])
    np.testing.assert_allclose(distances, np.sort(((queries[:, None] - database[None]) ** 2).sum(-1))[:, :20],
                               rtol=1e-4)
    recalls = recall_at(indices, positives)
    assert recalls == pytest.approx(expected)
    assert any(len(p) == 0 for p in positives)  # the exclusion path is exercised


def test_recall_excludes_queries_without_positives():
    predictions = np.array([[0, 1], [2, 3], [4, 5]])
    positives = [np.array([1]), np.array([], dtype=int), np.array([9])]
    assert recall_at(predictions, positives, ns=(1, 2)) == {1: 0.0, 2: 50.0}
    assert math.isnan(recall_at(predictions[1:2], positives[1:2], ns=(1,))[1])


def test_chance_recall_is_the_hypergeometric_hit_probability():
    got = chance_recall([1, 2, 0], num_database=10, ns=(1, 5))
    one = {n: 1 - math.comb(9, n) / math.comb(10, n) for n in (1, 5)}
    two = {n: 1 - math.comb(8, n) / math.comb(10, n) for n in (1, 5)}
    assert got[1] == pytest.approx(100 * (one[1] + two[1]) / 2)
    assert got[5] == pytest.approx(100 * (one[5] + two[5]) / 2)


def test_evaluation_counts_exclusions_and_writes_predictions(dataset, tmp_path):
    spec = {"name": f"{__file__}:ColourEmbedder"}
    result = evaluate_retrieval(dataset, spec, out=tmp_path, progress=False, num_workers=0)
    assert result.recalls == {1: 100.0, 5: 100.0, 10: 100.0, 20: 100.0}
    assert result.num_queries == 5  # q0..q4 (q5's only positive is unreadable; "far" has none)
    assert result.num_without_positives == 2
    assert (result.skipped_queries, result.skipped_database) == (1, 1)
    assert result.chance[1] == pytest.approx(20.0)  # 1 positive among 5 readable database images
    text = result.format()
    assert "over 5 queries" in text and "2 without a database image within 25 m" in text
    assert "1 unreadable" in text and "1 unreadable database images left out" in text

    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 8
    status = dict(zip(predictions["query"].str.extract(r"@(\w+)@\.png$")[0], predictions["status"], strict=True))
    assert status == {"q0": "ok", "q1": "ok", "q2": "ok", "q3": "ok", "q4": "ok", "q5": "no_positives",
                      "far": "no_positives", "corrupt": "unreadable"}
    ok = predictions[predictions["status"] == "ok"]
    # the top prediction is the database photo of the query's own place (indices map past the corrupt one)
    assert (ok["prediction_1"].str.extract(r"@db(\d)@")[0] == ok["query"].str.extract(r"@q(\d)@")[0]).all()
    assert (ok["first_correct_rank"] == 1).all() and ok["correct_at_1"].all()
    assert predictions["prediction_5"].notna().sum() == 7 and "prediction_6" not in predictions
    recalls = pd.read_csv(tmp_path / "recalls.csv")
    assert recalls["n"].tolist() == [1, 5, 10, 20] and (recalls["num_queries"] == 5).all()
    assert np.load(tmp_path / "database_descriptors.npy").shape == (6, 3)


def test_descriptor_cache_is_reused_and_invalidated_by_another_embedder(dataset, tmp_path, monkeypatch):
    calls = []
    original = CosPlaceEmbedder.embed
    def counting_embed(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(CosPlaceEmbedder, "embed", counting_embed)
    torch.manual_seed(0)
    first = CosPlaceEmbedder(backbone="resnet18", dim=16, image_size=32, device="cpu").save(tmp_path / "a.pth")
    other = CosPlaceEmbedder(backbone="resnet18", dim=16, image_size=32, device="cpu")
    with torch.no_grad():
        other.net.aggregation[3].weight.mul_(-1.0)  # random inits are seeded: change the numbers by hand
    second = other.save(tmp_path / "b.pth")
    out = tmp_path / "out"

    def run(weights):
        calls.clear()
        evaluate_retrieval(dataset, {"name": "cosplace", "weights": str(weights), "image_size": 32}, out=out,
                           progress=False, num_workers=0)
        return sum(calls)

    assert run(first) == 12  # 5 readable database + 7 readable queries
    descriptors = np.load(out / "queries_descriptors.npy")
    assert run(first) == 0
    np.testing.assert_array_equal(np.load(out / "queries_descriptors.npy"), descriptors)
    assert run(second) == 12  # same architecture, other weights: a new identity


def test_retrieve_command_end_to_end(dataset, tmp_path):
    torch.manual_seed(0)
    weights = CosPlaceEmbedder(backbone="resnet18", dim=16, image_size=32, device="cpu").save(tmp_path / "w.pth")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["retrieve", "--dataset", str(dataset), "--backbone", "resnet18", "--dim", "16",
                                      "--weights", str(weights), "--image-size", "32", "--device", "cpu",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output and "over 5 queries" in result.output
    assert {"recalls.csv", "predictions.csv", "database_descriptors.npy", "queries_descriptors.npy"} <= {p.name for p in out.iterdir()}
    assert len(pd.read_csv(out / "predictions.csv")) == 8

    sidecar = CliRunner().invoke(cli, ["retrieve", "--dataset", str(dataset), "--embedder-config",
                                       str(tmp_path / "embedder.yaml"), "--device", "cpu", "--out", str(out)])
    assert sidecar.exit_code == 0, sidecar.output
    assert "from the artifact store" in sidecar.output


def test_retrieve_with_a_bad_backbone_is_a_one_line_error(dataset):
    result = CliRunner().invoke(cli, ["retrieve", "--dataset", str(dataset), "--backbone", "resnet19"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --backbone 'resnet19'")


def test_dataset_without_positives_anywhere_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    for part, east in (("database", 0.0), ("queries", 5000.0)):
        (tmp_path / part).mkdir()
        _image(tmp_path / part / format_name(VPRName(utm_east=east, utm_north=0.0), ".png"), PALETTE[0], rng)
    with pytest.raises(GeoxaiError, match="no readable query has a readable database image within 25 m"):
        evaluate_retrieval(tmp_path, {"name": f"{__file__}:ColourEmbedder"}, progress=False, num_workers=0)
