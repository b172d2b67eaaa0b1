"""The evaluation engine: discovery, isolation, record checks, artifacts once per image, resume,
sharding, the reference-run sanity checks, statistics, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.errors import GeoxaiError
from geoxai.evaluation.runner import evaluate
from geoxai.store import ArtifactStore

TESTS = Path(__file__).resolve().parents[1]  # tests/, where tiny_models.py lives
LAYOUT = {"name": f"{TESTS / 'tiny_models.py'}:LayoutEmbedder", "image_size": 48}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    folder = tmp_path_factory.mktemp("world")
    write_world(folder, places=30, visits=3, size=48, progress=False)
    return folder


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory) -> dict[str, Path]:
    from geoxai.synthcity.reference_runs import write_reference_run

    root = tmp_path_factory.mktemp("runs")
    return {kind: write_reference_run(world, kind, 2, root / kind, progress=False).root
            for kind in ("identity", "oracle", "other-place", "lighting")}


def run_eval(run: Path, plugins: str, out: Path, **options):
    options.setdefault("database", None)
    options.setdefault("embedder_spec", LAYOUT)
    return evaluate(run, plugins, out, progress=False, **options)


def table(result) -> pd.DataFrame:
    return result.summary.set_index(["plugin", "metric", "pairing"])["mean"]


# ------------------------------------------------------------------------ reference runs
@pytest.fixture(scope="module")
def recall_tables(runs, world, tmp_path_factory) -> dict[str, pd.Series]:
    out = tmp_path_factory.mktemp("evals")
    return {kind: table(run_eval(run, "recall", out / kind, database=world)) for kind, run in runs.items()}


def test_identity_is_perfect_and_equals_the_originals(recall_tables):
    t = recall_tables["identity"]
    assert t["recall", "top1_agreement", "generated"] == 100.0
    assert t["recall", "cosine", "generated"] == pytest.approx(1.0, abs=1e-5)
    for n in (1, 5, 10, 20):  # a copy of the query is retrieved exactly like the query
        assert t["recall", f"recall@{n}", "generated"] == pytest.approx(t["recall", f"recall@{n}", "reference"])


def test_other_place_scores_at_chance_and_interventions_near_the_oracle(recall_tables):
    oracle, other, lighting = (recall_tables[k] for k in ("oracle", "other-place", "lighting"))
    chance = oracle["recall", "recall@1", "chance"]
    assert oracle["recall", "recall@1", "generated"] >= 80
    assert other["recall", "recall@1", "generated"] <= chance + 15  # a useless explainer is chance
    assert abs(other["recall", "recall@1", "generated"] - other["recall", "recall@1", "shuffled"]) <= 25
    assert lighting["recall", "recall@1", "generated"] >= oracle["recall", "recall@1", "generated"] - 10
    assert other["recall", "cosine", "generated"] < oracle["recall", "cosine", "generated"] - 0.1


def test_recall_equals_a_brute_force_reference(runs, world, tmp_path):
    from geoxai.data.vpr import list_images, name_utm
    from geoxai.embedders import from_spec
    from geoxai.runs import GenerationRun

    result = run_eval(runs["oracle"], "recall", tmp_path / "eval", database=world)
    records = pd.read_parquet(result.out / "records.parquet")
    embedder = from_spec(LAYOUT)
    manifest = GenerationRun.open(runs["oracle"]).manifest(absolute=True)
    database = list_images(world / "database")
    images = [Image.open(p).convert("RGB") for p in database]
    import torch

    def embed(images):
        batch = torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32) / 255).permute(2, 0, 1) for i in images])
        return embedder.embed(batch).numpy()

    db = embed(images)
    db_utm = np.array([name_utm(p) for p in database])
    generated = embed([Image.open(p).convert("RGB") for p in manifest["image_path"]])
    nearest = np.argmax(generated @ db.T, axis=1)  # unit vectors: max cosine = min L2
    expected = np.hypot(*(db_utm[nearest] - manifest[["utm_east", "utm_north"]].to_numpy()).T) <= 25
    mine = records[(records.metric == "recall@1") & (records.pairing == "generated")]
    mine = mine.set_index(["query_id", "sample"])["value"]
    keys = zip(manifest["query_id"], manifest["sample"], strict=True)
    for (query_id, sample), hit in zip(keys, expected, strict=True):
        assert mine[query_id, sample] == 100.0 * hit


# ------------------------------------------------------------------------ artifacts, resume
def test_each_artifact_is_computed_once_per_image(runs, world, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = run_eval(runs["oracle"], "recall,tiny_plugins:DescriptorNormPlugin", tmp_path / "a", database=world,
                     store=store)
    from geoxai.runs import GenerationRun

    manifest = GenerationRun.open(runs["oracle"]).manifest()
    distinct = manifest["query_path"].nunique() + len(manifest) + len(list((world / "database").glob("*.png")))
    assert first.computed["descriptor"] == distinct  # two plugins, two samples: each image once
    again = run_eval(runs["oracle"], "recall", tmp_path / "b", database=world, store=store)
    assert again.computed["descriptor"] == 0  # another evaluation reuses the store


def test_a_second_evaluation_adding_a_plugin_computes_only_what_it_needs(runs, world, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    run_eval(runs["oracle"], "tiny_plugins:ConstantPlugin", tmp_path / "eval", database=world, store=store)
    added = run_eval(runs["oracle"], "tiny_plugins:ConstantPlugin,recall", tmp_path / "eval", database=world,
                     store=store)
    statuses = {p.name: p.status for p in added.plugins}
    assert statuses == {"constant": "reused", "recall": "ok"}
    assert set(added.summary["plugin"]) == {"constant", "recall"}


def test_resume_after_a_crash_reuses_finished_plugins_and_artifacts(runs, world, tmp_path, monkeypatch):
    import geoxai.evaluation.runner as runner

    store = ArtifactStore(tmp_path / "store")
    real = runner._run_plugin
    calls = []

    def crash_on_second(cls, *args, **kwargs):
        calls.append(cls.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies here
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(runner, "_run_plugin", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_eval(runs["oracle"], "recall,tiny_plugins:ConstantPlugin", tmp_path / "eval", database=world, store=store)
    monkeypatch.setattr(runner, "_run_plugin", real)
    resumed = run_eval(runs["oracle"], "recall,tiny_plugins:ConstantPlugin", tmp_path / "eval", database=world,
                       store=store)
    assert {p.name: p.status for p in resumed.plugins} == {"recall": "reused", "constant": "ok"}
    assert resumed.computed["descriptor"] == 0


def test_two_processes_give_the_records_of_one(runs, world, tmp_path):
    one = run_eval(runs["oracle"], "recall", tmp_path / "one", database=world, store=ArtifactStore(tmp_path / "s1"))
    two = run_eval(runs["oracle"], "recall", tmp_path / "two", database=world, store=ArtifactStore(tmp_path / "s2"),
                   devices=2, device="cpu")
    assert two.computed["descriptor"] == 0  # the two worker processes (gloo) filled the store
    a, b = (pd.read_parquet(r.out / "records.parquet").sort_values(["metric", "pairing", "query_id", "sample"])
            .reset_index(drop=True) for r in (one, two))
    pd.testing.assert_frame_equal(a, b)
    assert len(list((tmp_path / "s2").rglob("*.npz"))) >= 2


# ------------------------------------------------------------------------ plugins: discovery, isolation
def test_plugins_by_entry_point_module_and_file(runs, tmp_path):
    from geoxai.evaluation.runner import load_plugin

    assert load_plugin("recall").name == "recall"
    assert load_plugin("tiny_plugins:ConstantPlugin").name == "constant"
    assert load_plugin(f"{TESTS / 'tiny_plugins.py'}:ConstantPlugin").name == "constant"
    with pytest.raises(GeoxaiError, match=r"did you mean 'recall'"):
        load_plugin("recal")
    with pytest.raises(GeoxaiError, match="not a geoxai.evaluation.Plugin subclass"):
        load_plugin("tiny_models:TinyEmbedder")
    headless = tmp_path / "headless.py"
    headless.write_text("from tiny_plugins import ConstantPlugin\n\n"
                        "class Plugin(ConstantPlugin):\n    headline = ('one', 'recal@1')\n")
    with pytest.raises(GeoxaiError, match=r"headline metrics \['recal@1'\] are not in metrics"):
        load_plugin(f"{headless}:Plugin")


def test_a_name_registered_twice_is_an_error_naming_both(monkeypatch):
    from importlib.metadata import EntryPoint

    import geoxai.registry as registry

    eps = [EntryPoint("sky", "pkg_a.sky:Sky", "geoxai.plugins"), EntryPoint("sky", "pkg_b.sky:Sky", "geoxai.plugins")]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    with pytest.raises(GeoxaiError, match=r"'sky' is registered twice.*pkg_a\.sky:Sky.*pkg_b\.sky:Sky"):
        registry.load(registry.PLUGINS, "sky")


def test_a_failing_plugin_is_isolated_and_sets_the_exit_status(runs, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('a missing dependency of this plugin')\n")
    result = CliRunner().invoke(cli, ["evaluate", str(runs["identity"]), "--plugins",
                                      f"tiny_plugins:ConstantPlugin,tiny_plugins:RaisingPlugin,{broken}:Plugin",
                                      "--out", str(tmp_path / "eval"), "--embedder-config",
                                      str(write_spec(tmp_path))])
    assert result.exit_code == 1, result.output
    assert "FAILED: this plugin always fails" in result.output and "constant:" in result.output
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert set(errors["stage"]) == {"score", "import"}
    assert errors["traceback"].str.contains("RuntimeError").any()
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert set(summary["plugin"]) == {"constant"}  # the others finished


def write_spec(folder: Path) -> Path:
    import yaml

    path = folder / "layout.yaml"
    path.write_text(yaml.safe_dump(LAYOUT))
    return path


@pytest.mark.parametrize("plugin, message", [
    ("tiny_plugins:NaNPlugin", "plugin nan: metric x of query .* is nan; return Skip"),
    ("tiny_plugins:UndeclaredMetricPlugin", "plugin undeclared: record 0 has metric 'y', which the plugin does not declare"),
    ("tiny_plugins:WrongColumnsPlugin", "plugin columns: record 0 lacks query_id, sample, pairing"),
])
def test_malformed_records_are_refused_with_the_plugin_name(runs, tmp_path, plugin, message):
    result = run_eval(runs["identity"], plugin, tmp_path / "eval")
    assert [p.status for p in result.plugins] == ["failed"]
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert errors["error"].str.contains(message).any(), errors["error"].tolist()


def test_skips_are_kept_and_counted(runs, world, tmp_path):
    result = run_eval(runs["identity"], "tiny_plugins:ConstantPlugin", tmp_path / "eval", database=world)
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    reference = records[records.pairing == "reference"]
    assert len(reference) and reference["value"].isna().all() and (reference["skip_reason"] == "not for real photos").all()
    row = result.summary.set_index("pairing").loc["reference"]
    assert row["n_skipped"] == len(reference) and row["n_queries"] == 0


# ------------------------------------------------------------------------ statistics
def test_bootstrap_intervals_cover_the_true_mean_at_about_the_nominal_rate():
    from geoxai.statistics import bootstrap_ci

    rng = np.random.default_rng(0)
    covered = 0
    trials = 300
    for trial in range(trials):
        values = rng.normal(3.0, 2.0, size=40)
        low, high = bootstrap_ci(values, seed=trial, resamples=1000)
        covered += low <= 3.0 <= high
    assert 0.90 <= covered / trials <= 0.98  # percentile intervals run slightly narrow at n = 40


def test_equal_error_threshold_separates_two_distributions():
    from geoxai.statistics import equal_error_threshold

    rng = np.random.default_rng(1)
    threshold, eer = equal_error_threshold(rng.normal(0.8, 0.05, 500), rng.normal(0.4, 0.05, 500))
    assert 0.55 < threshold < 0.65 and eer < 0.01


# ------------------------------------------------------------------------ bad input
def test_bad_input_is_one_line(runs, world, tmp_path):
    def error(*args: str) -> str:
        result = CliRunner().invoke(cli, ["evaluate", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        return result.output

    spec = ["--embedder-config", str(write_spec(tmp_path))]
    (tmp_path / "not-a-run").mkdir()
    assert "no run.yaml or manifest.csv" in error(str(tmp_path / "not-a-run"), "--plugins", "recall", "--out", "x")
    assert "--plugins is empty" in error(str(runs["identity"]), "--plugins", "", "--out", str(tmp_path / "e1"))
    assert "contains a space" in error(str(runs["identity"]), "--plugins", "rec all", "--out", str(tmp_path / "e1"))
    assert "did you mean 'recall'" in error(str(runs["identity"]), "--plugins", "recal", "--out", str(tmp_path / "e1"))
    assert "plugin recall needs --database" in error(str(runs["identity"]), "--plugins", "recall", "--out",
                                                      str(tmp_path / "e1"), *spec)
    plain = tmp_path / "plain-db"
    plain.mkdir()
    Image.new("RGB", (48, 48)).save(plain / "photo.png")
    assert "has no UTM coordinates" in error(str(runs["identity"]), "--plugins", "recall", "--database", str(plain),
                                             "--out", str(tmp_path / "e1"), *spec)
    CliRunner().invoke(cli, ["evaluate", str(runs["identity"]), "--plugins", "tiny_plugins:ConstantPlugin",
                             "--out", str(tmp_path / "e2")])
    assert "holds an evaluation of another run" in error(str(runs["oracle"]), "--plugins",
                                                          "tiny_plugins:ConstantPlugin", "--out", str(tmp_path / "e2"))
    assert "other settings" in error(str(runs["identity"]), "--plugins", "tiny_plugins:ConstantPlugin", "--seed", "3",
                                     "--out", str(tmp_path / "e2"))
    (tmp_path / "file").write_text("x")
    assert "cannot write" in error(str(runs["identity"]), "--plugins", "tiny_plugins:ConstantPlugin",
                                   "--out", str(tmp_path / "file" / "eval"))


def test_broken_images_are_recorded_skipped_and_counted(runs, world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["identity"], run)
    manifest = pd.read_csv(run / "manifest.csv")
    (run / manifest["image_path"][0]).write_bytes(b"not an image")
    truncated = run / manifest["image_path"][1]
    truncated.write_bytes(truncated.read_bytes()[:60])
    (run / "queries.csv").unlink()  # a hand-written run: the manifest is all there is
    extra = manifest.iloc[[2]].copy()
    extra["sample"], extra["image_path"] = 9, "samples/none/9.png"  # listed, never written
    pd.concat([manifest, extra]).to_csv(run / "manifest.csv", index=False)
    big = run / manifest["image_path"][3]
    Image.open(big).resize((96, 64)).save(big)  # another size than its original
    result = run_eval(run, "recall,tiny_plugins:ConstantPlugin", tmp_path / "eval", database=world)
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert (errors["stage"] == "image").sum() == 3
    assert any("2 unreadable image(s) skipped" in n for n in result.notices)
    assert any("1 image(s) listed in the manifest do not exist" in n for n in result.notices)
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    generated = records[(records.plugin == "constant") & (records.pairing == "generated")]
    assert len(generated) == len(manifest) - 2


def test_a_plugin_without_needs_never_receives_an_unreadable_image(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["identity"], run)
    manifest = pd.read_csv(run / "manifest.csv")
    broken = run / manifest["image_path"][0]
    broken.write_bytes(b"not an image")
    result = run_eval(run, "tiny_plugins:BrightnessPlugin", tmp_path / "eval")
    assert not result.failed
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert list(errors["stage"]) == ["image"] and broken.name in errors["error"][0]
    assert any("1 unreadable image(s) skipped" in n for n in result.notices)
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    generated = records[records.pairing == "generated"]
    assert len(generated) == len(manifest) - 1 and generated["value"].between(0, 1).all()


def test_images_of_another_size_are_aligned_and_said_once(tmp_path):
    from geoxai.evaluation.context import EvaluationContext

    Image.fromarray(np.full((40, 80, 3), 200, np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "small.png")
    ctx = EvaluationContext(seed=0, artifacts={}, digests={})
    original, other = ctx.aligned(tmp_path / "wide.png", tmp_path / "small.png")
    assert original.shape == other.shape == (40, 40, 3)  # centre crop to the square, generation resized to it
    ctx.aligned(tmp_path / "wide.png", tmp_path / "small.png")
    assert len(ctx.all_notices()) == 1 and "centre-cropping the original" in ctx.all_notices()[0]


def test_results_json_names_the_run_the_protocol_and_the_versions(runs, world, tmp_path):
    run_eval(runs["oracle"], "recall", tmp_path / "eval", database=world)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["run"]["identity"] and results["run"]["settings"]["kind"] == "oracle"
    assert results["run"]["protocol"].startswith("not a trained generator")
    assert results["plugins"]["recall"]["version"] == "1" and "recall@1" in results["plugins"]["recall"]["metrics"]
    assert results["backends"]["embedder"]["identity"] and "torch" in results["versions"]
    assert {row["pairing"] for row in results["summary"]} == {"generated", "shuffled", "reference", "chance"}


def test_plugins_command_lists_what_is_installed():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0 and "recall 1" in result.output and "needs: descriptor, database" in result.output
