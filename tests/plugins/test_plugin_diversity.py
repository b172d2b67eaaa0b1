"""Plugin ``diversity``: zero spread for copies, real spread for fresh visits, exact pixel distances,
one-sample queries skipped, the generated / reference ratio summarised, LPIPS only from cached weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geoxai.evaluation.runner import evaluate
from geoxai.runs import GenerationRun, plan_queries
from geoxai.synthcity.reference_runs import write_reference_run
from geoxai.synthcity.world import write_world

SPEC = {"name": "cosplace", "backbone": "resnet18", "dim": 16, "image_size": 48, "weights": "random"}
DISTANCES = ("pixel_l1", "lpips", "descriptor_distance")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diversity") / "world"
    write_world(out, places=12, visits=3, size=48, progress=False)
    return out


@pytest.fixture()
def no_weights(monkeypatch, tmp_path):
    """An empty torch hub cache, and torch's downloader fails the test if it is ever called."""

    def refuse(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def evaluated(world, tmp_path_factory, one_thread):
    """(records, summary, notices) of a reference run of one kind and sample count, once per module."""
    root, done = tmp_path_factory.mktemp("diversity-runs"), {}

    def run(kind: str, samples: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        key = f"{kind}-{samples}"
        if key not in done:
            write_reference_run(world, kind, samples, root / key, progress=False)
            result = evaluate(root / key, "diversity", root / f"eval-{key}", database=world, embedder_spec=SPEC,
                              progress=False)
            assert result.failed == [], (root / f"eval-{key}" / "errors.csv").read_text()
            done[key] = (pd.read_parquet(root / f"eval-{key}" / "records.parquet"),
                         pd.read_csv(root / f"eval-{key}" / "summary.csv"), result.notices)
        return done[key]

    return run


def values(records: pd.DataFrame, metric: str, pairing: str) -> np.ndarray:
    return records.loc[(records["metric"] == metric) & (records["pairing"] == pairing), "value"].to_numpy()


def row(summary: pd.DataFrame, metric: str, pairing: str = "generated") -> pd.Series:
    found = summary[(summary["metric"] == metric) & (summary["pairing"] == pairing)]
    assert len(found) == 1, f"no single summary row for {metric} / {pairing}"
    return found.iloc[0]


def test_copies_have_no_spread(evaluated, no_weights):
    records, summary, notices = evaluated("identity")
    assert len(values(records, "pixel_l1", "generated")) == 12  # 6 queries x 2 samples
    assert (values(records, "pixel_l1", "generated") == 0).all()
    assert values(records, "descriptor_distance", "generated") == pytest.approx(0.0, abs=1e-6)
    for distance in ("pixel_l1", "descriptor_distance"):  # the baselines are real distances
        assert (values(records, distance, "reference") > 0).all() and (values(records, distance, "shuffled") > 0).all()
    assert row(summary, "pixel_l1_ratio")["mean"] == 0.0
    assert any(n.startswith("diversity: generated spread / reference spread: pixel_l1 0.00") for n in notices)
    assert pd.isna(row(summary, "pixel_l1")["higher_is_better"])  # neither direction is better
    # LPIPS without weights: skipped with the reason naming the file
    lpips = records[records["metric"] == "lpips"]
    assert lpips["value"].isna().all() and lpips["skip_reason"].str.contains("alexnet-owt-7be5be79.pth").all()
    assert "lpips_ratio" not in set(summary["metric"])


def test_fresh_visits_vary(evaluated, no_weights):
    records, summary, notices = evaluated("oracle")
    for distance in ("pixel_l1", "descriptor_distance"):
        for pairing in ("generated", "reference", "shuffled"):
            assert np.isfinite(values(records, distance, pairing)).all()
        assert row(summary, distance)["mean"] > 0
        ratio = row(summary, f"{distance}_ratio")
        assert ratio["mean"] > 0 and ratio["ci_low"] <= ratio["mean"] <= ratio["ci_high"] and ratio["n_queries"] == 6
    # per query, the mean over samples is the spread of its only sample pair: both samples record it
    generated = records[(records["metric"] == "pixel_l1") & (records["pairing"] == "generated")]
    assert (generated.groupby("query_id")["value"].nunique() == 1).all()
    assert (records.loc[records["pairing"] == "reference", "sample"] == -1).all()


def test_one_sample_has_no_spread(evaluated, no_weights):
    records, summary, _ = evaluated("oracle", samples=1)
    generated = records[records["pairing"] == "generated"]
    assert generated["value"].isna().all() and (generated["skip_reason"] == "one sample: no spread").all()
    assert np.isfinite(values(records, "pixel_l1", "reference")).all()
    assert row(summary, "pixel_l1")["n_skipped"] == 6
    assert "pixel_l1_ratio" not in set(summary["metric"])


def test_pixel_spread_is_exact(tmp_path, no_weights, one_thread):
    """Two queries, each with constant-grey samples 51, 102 and 204: spreads are exact 8-bit differences."""
    queries = tmp_path / "queries"
    queries.mkdir()
    for i in range(2):
        Image.new("RGB", (24, 16), (10 * i,) * 3).save(queries / f"query{i}.png")
    items = plan_queries(sorted(queries.iterdir()), queries)
    run = GenerationRun.create(tmp_path / "run", {"generator": "constant greys", "queries": queries})
    greys = (51, 102, 204)
    run.save_images([(item, s, 0, Image.new("RGB", (24, 16), (g,) * 3)) for item in items for s, g in enumerate(greys)])
    run.finalize(items, len(greys))
    evaluate(tmp_path / "run", "diversity", tmp_path / "eval", embedder_spec=SPEC, progress=False)
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    generated = records[(records["metric"] == "pixel_l1") & (records["pairing"] == "generated")]
    by_sample = generated.groupby("sample")["value"].first()
    expected = {s: np.mean([abs(g - h) / 255 for t, h in enumerate(greys) if t != s]) for s, g in enumerate(greys)}
    assert by_sample.to_dict() == pytest.approx(expected, abs=1e-6)
    # a query's mean over samples is the mean over its sample pairs (s < t)
    assert generated.groupby("query_id")["value"].mean().to_numpy() == pytest.approx((51 + 153 + 102) / 3 / 255)
    # shuffled: each generation against the other query's generation with the same sample index
    assert (values(records, "pixel_l1", "shuffled") == 0).all()


def test_lpips_spread_with_cached_weights(world, tmp_path, monkeypatch, no_weights, one_thread):
    import torchvision

    from geoxai.evaluation.perceptual import lpips_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    path = lpips_weights_file("alex")
    path.parent.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), path)
    write_reference_run(world, "identity", 2, tmp_path / "run", progress=False)
    result = evaluate(tmp_path / "run", "diversity", tmp_path / "eval", database=world, embedder_spec=SPEC,
                      progress=False)
    assert result.failed == []
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    assert (values(records, "lpips", "generated") == 0).all()
    assert (values(records, "lpips", "reference") > 0).all() and (values(records, "lpips", "shuffled") > 0).all()
