"""Plugin ``lighting``: L* changes are exact, baselines exist, the probe is bounded, Spearman is summarised."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from skimage.color import rgb2lab

from geoxai.evaluation.runner import evaluate
from geoxai.synthcity.reference_runs import write_reference_run
from geoxai.synthcity.world import write_world

SPEC = {"name": "cosplace", "backbone": "resnet18", "dim": 16, "image_size": 48, "weights": "random"}
PROBE_METRICS = ("probe_cosine_brightness", "probe_cosine_gamma", "probe_cosine_temperature")
SPEARMAN = "spearman_abs_delta_L_cosine"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lighting") / "world"
    write_world(out, places=12, visits=3, size=48, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluated(world, tmp_path_factory, one_thread):
    """(records, summary) of a reference run of one kind, evaluated once per module."""
    root, done = tmp_path_factory.mktemp("lighting-runs"), {}

    def run(kind: str, database: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        if kind not in done:
            write_reference_run(world, kind, 2, root / kind, progress=False)
            evaluate(root / kind, "lighting", root / f"eval-{kind}", database=database or world, embedder_spec=SPEC,
                     progress=False)
            done[kind] = (pd.read_parquet(root / f"eval-{kind}" / "records.parquet"),
                          pd.read_csv(root / f"eval-{kind}" / "summary.csv"))
        return done[kind]

    return run


def values(records: pd.DataFrame, metric: str, pairing: str, sample: int | None = None) -> np.ndarray:
    keep = (records["metric"] == metric) & (records["pairing"] == pairing)
    if sample is not None:
        keep &= records["sample"] == sample
    return records.loc[keep, "value"].to_numpy()


def row(summary: pd.DataFrame, metric: str, pairing: str) -> pd.Series:
    found = summary[(summary["metric"] == metric) & (summary["pairing"] == pairing)]
    assert len(found) == 1, f"no single summary row for {metric} / {pairing}"
    return found.iloc[0]


def test_identity_run_has_no_illumination_change(evaluated):
    records, summary = evaluated("identity")
    generated = records[(records["pairing"] == "generated") & (records["sample"] >= 0)]
    assert set(generated["metric"]) == {"delta_L", "abs_delta_L", "delta_contrast", "cosine"}
    for metric in ("delta_L", "abs_delta_L", "delta_contrast"):
        assert np.array_equal(values(generated, metric, "generated"), np.zeros(len(values(generated, metric,
                                                                                           "generated"))))
    assert values(generated, "cosine", "generated") == pytest.approx(1.0, abs=1e-4)
    # the probe: one record per original under generated (sample -1), with both baselines
    queries = records.loc[records["pairing"] == "generated", "query_id"].nunique()
    for metric in (*PROBE_METRICS, "probe_top1_stability"):
        probe = values(records, metric, "generated", sample=-1)
        assert len(probe) == queries and np.isfinite(probe).all()
        assert len(values(records, metric, "shuffled", sample=-1)) == queries
        assert len(values(records, metric, "reference", sample=-1)) > 0
        assert row(summary, metric, "generated")["definition"]
    # no variation of abs_delta_L: the rank correlation is undefined, and said so by a NaN
    assert np.isnan(row(summary, SPEARMAN, "generated")["mean"])


def test_lighting_run_changes_lightness_and_has_baselines(evaluated, world, tmp_path_factory):
    # a database with images that are nobody's reference photo: the probe embeds them itself
    database = tmp_path_factory.mktemp("lighting-db")
    for folder in ("database", "train"):
        for image in (world / folder).glob("*.png"):
            shutil.copy(image, database / image.name)
    identity, _ = evaluated("identity")
    records, summary = evaluated("lighting", database)
    assert values(records, "abs_delta_L", "generated").mean() > 1.0
    assert values(records, "abs_delta_L", "generated").mean() > values(identity, "abs_delta_L", "generated").mean()
    assert np.abs(values(records, "delta_L", "generated")).max() > 1.0
    for pairing in ("generated", "shuffled", "reference"):
        assert row(summary, "abs_delta_L", pairing)["n_queries"] > 0
    # probe values bounded and top-1 stability a percentage, for every pairing
    for metric in PROBE_METRICS:
        probe = records.loc[records["metric"] == metric, "value"].to_numpy()
        assert np.isfinite(probe).all() and (probe <= 1.0 + 1e-6).all()
    stability = records.loc[records["metric"] == "probe_top1_stability", "value"].to_numpy()
    assert len(stability) and np.isfinite(stability).all()
    assert ((stability >= 0) & (stability <= 100)).all()
    # Spearman rows: generated with a CI around it, baselines when there are enough queries
    spearman = row(summary, SPEARMAN, "generated")
    assert -1 <= spearman["mean"] <= 1 and spearman["ci_low"] <= spearman["mean"] <= spearman["ci_high"]
    assert "Spearman" in spearman["definition"] and pd.isna(spearman["higher_is_better"])
    assert {"shuffled", "reference"} <= set(summary.loc[summary["metric"] == SPEARMAN, "pairing"])
    assert pd.isna(row(summary, "delta_L", "generated")["higher_is_better"])  # neither direction is better


def _lightness(path: Path) -> float:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return float(rgb2lab(image)[..., 0].mean())


def test_known_brightening_matches_skimage(world, tmp_path, one_thread):
    """A hand-written run: sample 0 is the original x 1.2 (clipped), sample 1 a constant colour of another size."""
    run = tmp_path / "run"
    queries = sorted((world / "queries").glob("*.png"))[:3]
    rows = []
    for index, query in enumerate(queries):
        query_id = f"q{index:06d}"
        (run / "samples" / query_id).mkdir(parents=True)
        original = np.asarray(Image.open(query).convert("RGB"), dtype=np.float64)
        Image.fromarray(np.clip(original * 1.2, 0, 255).round().astype(np.uint8)).save(
            run / "samples" / query_id / "0.png")
        Image.new("RGB", (40, 30), (200, 120, 60 + 40 * index)).save(run / "samples" / query_id / "1.png")
        rows += [{"query_id": query_id, "query_path": str(query), "sample": s, "seed": "",
                  "image_path": f"samples/{query_id}/{s}.png", "utm_east": "", "utm_north": ""} for s in (0, 1)]
    pd.DataFrame(rows).to_csv(run / "manifest.csv", index=False)
    (run / "run.yaml").write_text(yaml.safe_dump({"generator": "brightened originals (test)",
                                                   "queries": str(world / "queries")}))

    evaluate(run, "lighting", tmp_path / "eval", embedder_spec=SPEC, progress=False)  # no database
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    for index, query in enumerate(queries):
        query_id = f"q{index:06d}"
        for sample in (0, 1):
            expected = _lightness(run / "samples" / query_id / f"{sample}.png") - _lightness(query)
            found = records[(records["query_id"] == query_id) & (records["sample"] == sample)
                            & (records["pairing"] == "generated") & (records["metric"] == "delta_L")]["value"]
            assert float(found.iloc[0]) == pytest.approx(expected, abs=1e-3)
            abs_found = values(records[(records["query_id"] == query_id) & (records["sample"] == sample)],
                               "abs_delta_L", "generated")
            assert float(abs_found[0]) == pytest.approx(abs(expected), abs=1e-3)
    assert (values(records, "delta_L", "generated", sample=0) > 0).all()  # brighter
    # without a database: no reference pairing, top-1 stability skipped with its reason
    assert "reference" not in set(records["pairing"])
    top1 = records[records["metric"] == "probe_top1_stability"]
    assert len(top1) and top1["value"].isna().all() and top1["skip_reason"].str.contains("--database").all()
    assert np.isfinite(values(records, "probe_cosine_gamma", "generated", sample=-1)).all()


def test_probe_without_a_change_keeps_the_descriptor(world, monkeypatch, one_thread):
    """With every change set to a no-op the probe's descriptors are the stored ones (same preprocessing)."""
    import geoxai_plugins.lighting as lighting

    from geoxai.embedders.descriptors import embed_files
    from geoxai.evaluation.artifacts import DescriptorArtifact
    from geoxai.evaluation.context import EvaluationContext

    monkeypatch.setattr(lighting, "PROBES", (("brightness", "x1", 1.0), ("gamma", "1", 1.0),
                                              ("temperature", "neutral", (1.0, 1.0, 1.0))))
    provider = DescriptorArtifact(SPEC, device="cpu", batch_size=8)
    ctx = EvaluationContext(seed=0, artifacts={}, digests={}, embedder_provider=provider)
    originals = sorted((world / "queries").glob("*.png"))
    stored = embed_files(provider.embedder, originals, progress=False, num_workers=0).array
    changed = lighting.LightingPlugin._embed_changes(originals, ctx)
    assert changed.shape == (len(originals), 3, SPEC["dim"])
    assert np.einsum("qcd,qd->qc", changed, stored) == pytest.approx(1.0, abs=1e-4)


def test_photometric_changes_are_fixed_and_bounded():
    import torch
    from geoxai_plugins.lighting import PROBES, photometric_change

    image = torch.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5)
    assert len(PROBES) <= 6
    for family, _, level in PROBES:
        changed = photometric_change(image, family, level)
        assert changed.shape == image.shape and changed.min() >= 0 and changed.max() <= 1
        assert torch.equal(changed, photometric_change(image, family, level))
        assert not torch.equal(changed, image)


def test_without_an_embedder_the_probe_is_skipped(tmp_path):
    """A context without descriptors (no embedder): L* changes still computed, the probe skipped with a reason."""
    from geoxai_plugins.lighting import LightingPlugin

    from geoxai.evaluation import Pair
    from geoxai.evaluation.artifacts import lab_statistics
    from geoxai.evaluation.context import EvaluationContext
    from geoxai.evaluation.plugin import to_long_records

    dark, bright = tmp_path / "dark.png", tmp_path / "bright.png"
    Image.new("RGB", (8, 8), (0, 0, 0)).save(dark)  # uniform black: L* is defined (0)
    Image.new("RGB", (6, 4), (128, 128, 128)).save(bright)
    lab = {name: lab_statistics(np.asarray(Image.open(path), dtype=np.float32) / 255.0)
           for name, path in (("d", dark), ("b", bright))}
    ctx = EvaluationContext(seed=0, artifacts={"lab": lab}, digests={dark: "d", bright: "b"})
    pairs = [Pair("q0", 0, "generated", dark, bright)]
    records = to_long_records(LightingPlugin, LightingPlugin().score(pairs, ctx))
    delta = records.loc[records["metric"] == "delta_L", "value"].item()
    assert delta == pytest.approx(rgb2lab(np.full((1, 1, 3), 128 / 255.0))[0, 0, 0], abs=1e-3)
    probe = records[records["metric"].str.startswith("probe_")]
    assert len(probe) == 4 and probe["value"].isna().all() and probe["skip_reason"].str.contains("embedder").all()
    assert records.loc[records["metric"] == "cosine", "skip_reason"].item()
