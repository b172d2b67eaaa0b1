"""geoxai.report: tables, figures, grids and index.html from synthetic EVAL folders with known values."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from geoxai.errors import GeoxaiError
from geoxai.report import load_evaluation, write_report
from geoxai.report.grids import original_vs_generations_grid
from geoxai.report.tables import paired_differences

QUERIES, SAMPLES = 6, 3
RECALL_NS = (1, 5, 10, 20)
# plugin -> metric -> (higher_is_better, pairings it is measured for)
PLUGINS = {
    "recall": {**{f"recall@{n}": (True, ("generated", "shuffled", "reference", "chance")) for n in RECALL_NS},
               "cosine": (True, ("generated", "shuffled", "reference"))},
    "lighting": {"delta_L": (False, ("generated", "shuffled", "reference")),
                 "cosine": (True, ("generated", "shuffled", "reference"))},
    "texture": {"ssim": (True, ("generated", "shuffled")),          # no reference pairing
                "edge_density": (None, ("generated",))},             # no chance level either
}
CI_BELOW, CI_ABOVE = 0.02, 0.04  # asymmetric CI: the cells must show the half-width 0.03


def make_photos(folder: Path, prefix: str, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(QUERIES):
        path = folder / f"{prefix}{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_run(folder: Path, photos: list[Path], seed: int) -> Path:
    """A tiny GenerationRun: run.yaml, manifest.csv and samples/<query_id>/<sample>.png."""
    rng = np.random.default_rng(seed)
    rows = []
    for q, photo in enumerate(photos):
        query_id = f"q{q:06d}"
        for s in range(SAMPLES):
            image = folder / "samples" / query_id / f"{s}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
            rows.append([query_id, str(photo), s, 1000 * q + s, f"samples/{query_id}/{s}.png", "", ""])
    pd.DataFrame(rows, columns=["query_id", "query_path", "sample", "seed", "image_path", "utm_east",
                                "utm_north"]).to_csv(folder / "manifest.csv", index=False)
    (folder / "run.yaml").write_text(yaml.safe_dump({"format": "geoxai.generation-run/1", "sampler": "dpm++",
                                                     "steps": 20, "seed": seed, "samples": SAMPLES,
                                                     "queries": str(photos[0].parent)}))
    return folder


def make_records(seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Known values: generated per (query, sample), baselines per sample or per query; one skipped value."""
    rng = np.random.default_rng(seed)
    rows = []
    for plugin, metrics in PLUGINS.items():
        for metric, (_, pairings) in metrics.items():
            for pairing in pairings:
                for q in range(QUERIES):
                    samples = range(SAMPLES) if pairing in ("generated", "shuffled") else [-1]
                    for s in samples:
                        if metric == "delta_L":
                            value = rng.uniform(2, 20) + (shift * 10 if pairing == "generated" else 0)
                        elif metric.startswith("recall@"):
                            value = float(rng.random() < (0.3 + 0.03 * int(metric[7:]) + shift))
                        else:
                            value = rng.uniform(0.1, 0.9) + (shift if pairing == "generated" else 0)
                        rows.append([f"q{q:06d}", s, plugin, metric, value, pairing, ""])
    records = pd.DataFrame(rows, columns=["query_id", "sample", "plugin", "metric", "value", "pairing",
                                          "skip_reason"])
    skip = (records["metric"] == "delta_L") & (records["query_id"] == "q000002") & (records["sample"] == 1)
    records.loc[skip, ["value", "skip_reason"]] = [np.nan, "image too dark"]
    return records.astype({"sample": "int64", "value": "float64"})


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """summary.csv as the evaluation engine writes it (the CI is fixed: it is not what is tested here)."""
    rows = []
    for (plugin, metric, pairing), group in records.groupby(["plugin", "metric", "pairing"], sort=False):
        per_query = group.dropna(subset=["value"]).groupby("query_id")["value"].mean()
        mean = per_query.mean()
        hib = PLUGINS[plugin][metric][0]
        rows.append([plugin, metric, pairing, mean, mean - CI_BELOW, mean + CI_ABOVE, len(per_query),
                     int(group["value"].isna().sum()), "" if hib is None else hib, f"{metric} of {plugin}"])
    return pd.DataFrame(rows, columns=["plugin", "metric", "pairing", "mean", "ci_low", "ci_high", "n_queries",
                                       "n_skipped", "higher_is_better", "definition"])


def make_eval(folder: Path, run: Path, seed: int, shift: float = 0.0, label: str | None = None) -> Path:
    folder.mkdir(parents=True)
    records = make_records(seed, shift)
    records.to_parquet(folder / "records.parquet", index=False)
    summary = summarise(records)
    summary.to_csv(folder / "summary.csv", index=False)
    pd.DataFrame([["lighting", "q000002", 1, "measure", "ValueError: image too dark", "Traceback ..."]],
                 columns=["plugin", "query_id", "sample", "stage", "error", "traceback"]).to_csv(
        folder / "errors.csv", index=False)
    results = {
        "format": "geoxai.evaluation/1", "created": "2024-05-01T12:00:00+00:00", "geoxai_version": "0.1.0",
        "git": "abc1234", "run": {"path": str(run.resolve()), "identity": f"run-{seed}",
                                  "settings": yaml.safe_load((run / "run.yaml").read_text()),
                                  "images": QUERIES * SAMPLES, "queries": QUERIES},
        "config": {"plugins": list(PLUGINS)}, "backends": {"embedder": "cosplace"},
        "plugins": {p: {"version": "1", "description": f"{p} plugin", "needs": ["images"],
                        "metrics": {m: {"higher_is_better": hib, "definition": f"{m} of {p}"}
                                    for m, (hib, _) in metrics.items()}, "status": "ok"}
                    for p, metrics in PLUGINS.items()},
        "summary": json.loads(summary.to_json(orient="records")), "errors": 1,
        "notices": ["texture: no reference photos in this dataset"],
    }
    if label:
        results["label"] = label
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    photos = make_photos(root / "photos", "place", seed=1)
    run_a = make_run(root / "runs" / "ep7", photos, seed=2)
    run_b = make_run(root / "runs" / "ep14", photos, seed=3)
    eval_a = make_eval(root / "evals" / "ep7", run_a, seed=4, label="epoch_7")
    eval_b = make_eval(root / "evals" / "ep14", run_b, seed=5, shift=0.05, label="epoch_14")
    out = root / "report"
    result = write_report([eval_a, eval_b], out, n_boot=2000)
    return {"root": root, "photos": photos, "eval_a": eval_a, "eval_b": eval_b, "out": out, "result": result}


def expected_cells(folder: Path) -> list[str]:
    """``mean ± 0.025`` of every generated row, at the precision the tables promise."""
    summary = pd.read_csv(folder / "summary.csv")
    cells = []
    for row in summary[summary["pairing"] == "generated"].itertuples():
        decimals = 2 if row.metric == "delta_L" else 3
        cells.append(f"{row.mean:.{decimals}f}{{pm}}{(CI_BELOW + CI_ABOVE) / 2:.{decimals}f}")
    return cells


def test_tables_hold_the_summary_numbers_in_every_format(world):
    out = world["out"]
    for name in ("summary", "recall", "lighting", "texture", "paired"):
        for suffix in (".md", ".tex", ".csv"):
            assert (out / f"{name}{suffix}").is_file(), f"{name}{suffix}"
    # the summary holds each plugin's headline metrics, the per-plugin tables all of them
    md = "".join((out / f"{name}.md").read_text() for name in ("summary", "recall", "lighting", "texture"))
    tex = "".join((out / f"{name}.tex").read_text() for name in ("summary", "recall", "lighting", "texture"))
    page = (out / "index.html").read_text()
    for folder in (world["eval_a"], world["eval_b"]):
        for cell in expected_cells(folder):
            assert cell.format(pm=" ± ") in md
            assert cell.format(pm=r" $\pm$ ") in tex
            assert cell.format(pm=" ± ") in page
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"delta\_L $\downarrow$" in tex and r"epoch\_7" in tex and "delta_L" not in tex
    assert "recall@1 ↑" in md and "delta_L ↓" in md
    # texture has no reference and edge_density no chance level: "—" marks them, not a missing column
    texture_md = (out / "texture.md").read_text()
    header = next(line for line in texture_md.splitlines() if line.startswith("| "))
    assert header.count("reference") == 2 and header.count("shuffled") == 2
    ep7_row = next(line for line in texture_md.splitlines() if line.startswith("| epoch_7"))
    assert ep7_row.count("—") == 3  # ssim reference, edge_density shuffled and reference
    assert "---" in (out / "texture.tex").read_text()
    assert "chance" in (out / "recall.md").read_text()
    # CSV: the tidy numbers, exactly
    table = pd.read_csv(out / "summary.csv")
    for label, folder in (("epoch_7", world["eval_a"]), ("epoch_14", world["eval_b"])):
        expected = pd.read_csv(folder / "summary.csv").set_index(["plugin", "metric", "pairing"])["mean"]
        got = table[table["evaluation"] == label].set_index(["plugin", "metric", "pairing"])["mean"]
        pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    assert np.allclose(table["half_ci"], (CI_BELOW + CI_ABOVE) / 2)
    lighting = pd.read_csv(out / "lighting.csv")
    assert set(lighting["plugin"]) == {"lighting"}
    assert "image too dark" in (out / "lighting.md").read_text()  # why one value is missing


def test_paired_difference_equals_a_hand_computation(world):
    def per_query(folder: Path, plugin: str, metric: str) -> pd.Series:
        records = pd.read_parquet(folder / "records.parquet")
        rows = records[(records["plugin"] == plugin) & (records["metric"] == metric)
                       & (records["pairing"] == "generated")]
        return rows.dropna(subset=["value"]).groupby("query_id")["value"].mean()

    paired = pd.read_csv(world["out"] / "paired.csv")
    assert set(paired["evaluation_a"]) == {"epoch_7"} and set(paired["evaluation_b"]) == {"epoch_14"}
    assert len(paired) == sum(len(m) for m in PLUGINS.values())
    for plugin, metric in (("lighting", "delta_L"), ("recall", "cosine"), ("texture", "edge_density")):
        hand = (per_query(world["eval_b"], plugin, metric) - per_query(world["eval_a"], plugin, metric)).mean()
        row = paired[(paired["plugin"] == plugin) & (paired["metric"] == metric)].iloc[0]
        assert row["difference"] == pytest.approx(hand, abs=1e-12)
        assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["ci_low"] < row["ci_high"]
        assert row["n_shared"] == QUERIES
        decimals = 2 if metric == "delta_L" else 3
        assert f"{hand:+.{decimals}f} [" in (world["out"] / "paired.md").read_text()
        assert f"{hand:+.{decimals}f} [".replace("-", "$-$") in (world["out"] / "paired.tex").read_text()
    assert r"\toprule" in (world["out"] / "paired.tex").read_text()
    # seeded: computing it again gives the same CI
    again, _ = paired_differences([load_evaluation(world["eval_a"]), load_evaluation(world["eval_b"])], n_boot=2000)
    assert np.allclose(again[["difference", "ci_low", "ci_high"]], paired[["difference", "ci_low", "ci_high"]])


def test_figures_and_grids_are_pngs_that_open(world):
    out = world["out"]
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"recall_metrics", "lighting_metrics", "texture_metrics", "lighting_vs_cosine", "recall_at_n"} <= figures
    for png in (out / "figures").glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300
        assert png.with_suffix(".csv").is_file()
    scatter = pd.read_csv(out / "figures" / "lighting_vs_cosine.csv")
    assert set(scatter["pairing"]) >= {"generated", "shuffled"} and scatter["x"].notna().all()
    grids = sorted((out / "grids").glob("*.png"))
    assert [g.stem for g in grids] == ["epoch_14", "epoch_7"]
    with Image.open(grids[0]) as image:
        image.load()
        height, width = 160 + 2, round(64 * 160 / 48) + 2  # tiles scaled to 160 px high, 2 px padding
        assert image.size[1] == QUERIES * height + 2  # 6 queries < 8 rows: all of them
        assert image.size[0] == (SAMPLES + 1) * width + 2  # original + 3 generations (4 asked, 3 in the run)
    assert any(p.suffix == ".png" for p in world["result"].written)
    text = world["result"].format()
    assert "index.html" in text and "figures/" in text


def test_index_references_only_files_that_exist(world):
    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.scripts = [], 0

        def handle_starttag(self, tag, attrs):
            self.scripts += tag == "script"
            self.links += [v for k, v in attrs if k in ("src", "href") and v]

    out = world["out"]
    page = (out / "index.html").read_text()
    parser = Links()
    parser.feed(page)
    assert parser.scripts == 0 and not re.search(r"https?://", page)
    files = [link for link in parser.links if not link.startswith("#")]
    assert any(f.startswith("figures/") for f in files) and any(f.startswith("grids/") for f in files)
    for link in files:
        path = (out / unquote(link)).resolve()
        assert path.is_file() and out.resolve() in path.parents, link
    for text in ("abc1234", "dpm++", str(world["root"] / "runs" / "ep7"), "no reference photos in this dataset",
                 "image too dark", "1 error(s)", "Paired differences against epoch_7"):
        assert text in page, text


def test_bad_inputs_are_one_line_errors(world, tmp_path):
    eval_a = world["eval_a"]
    with pytest.raises(GeoxaiError, match=r"unknown report format 'mdd'. did you mean 'md'\?.*md, latex, csv, html"):
        write_report([eval_a], tmp_path / "r", formats=["mdd"])
    with pytest.raises(GeoxaiError, match="no evaluations"):
        write_report([], tmp_path / "r")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(GeoxaiError, match="is a file"):
        write_report([eval_a], a_file)
    with pytest.raises(GeoxaiError, match="no such folder"):
        write_report([tmp_path / "nowhere"], tmp_path / "r")
    for name in ("results.json", "records.parquet", "summary.csv"):
        broken = tmp_path / f"no-{name}"
        broken.mkdir()
        for other in ("results.json", "records.parquet", "summary.csv"):
            if other != name:
                (broken / other).write_bytes((eval_a / other).read_bytes())
        with pytest.raises(GeoxaiError, match=f"no-{re.escape(name)}: no {re.escape(name)}; give a folder "
                                              f"written by `geoxai evaluate --out`") as info:
            load_evaluation(broken)
        assert "\n" not in str(info.value)
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    for other in ("results.json", "summary.csv"):
        (garbled / other).write_bytes((eval_a / other).read_bytes())
    (garbled / "records.parquet").write_text("not parquet")
    with pytest.raises(GeoxaiError, match="cannot read records.parquet"):
        write_report([garbled], tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing written before the input is known to be good


def test_evaluations_of_different_runs_have_no_paired_table(world, tmp_path):
    other_photos = make_photos(tmp_path / "other-photos", "elsewhere", seed=9)
    run = make_run(tmp_path / "run-other", other_photos, seed=10)
    other = make_eval(tmp_path / "eval-other", run, seed=11)
    out = tmp_path / "report"
    result = write_report([world["eval_a"], other], out, formats=("md", "html"), n_boot=200)
    assert not list(out.glob("paired.*")) and not list(out.glob("*.tex"))
    why = dict(result.skipped)["paired difference"]
    assert "share no query photos" in why and "eval-other" in why and "epoch_7" in why
    assert "share no query photos" in (out / "index.html").read_text()
    assert "share no query photos" in result.format()


def test_one_evaluation_without_lighting_or_recall_says_which_figures_are_missing(world, tmp_path):
    folder = tmp_path / "texture-only"
    folder.mkdir()
    records = pd.read_parquet(world["eval_a"] / "records.parquet")
    records[records["plugin"] == "texture"].to_parquet(folder / "records.parquet", index=False)
    summary = pd.read_csv(world["eval_a"] / "summary.csv")
    summary[summary["plugin"] == "texture"].to_csv(folder / "summary.csv", index=False)
    results = json.loads((world["eval_a"] / "results.json").read_text())
    results["plugins"] = {"texture": results["plugins"]["texture"]}
    results["run"]["path"] = str(tmp_path / "moved-away")
    results.pop("label")
    (folder / "results.json").write_text(json.dumps(results))  # no errors.csv: no errors
    result = write_report([folder], tmp_path / "out", formats="md,html", n_boot=200)
    skipped = dict(result.skipped)
    assert "one evaluation" in skipped["paired difference"]
    assert "figure lighting vs descriptor" in skipped and "figure recall@N" in skipped
    assert "moved" in skipped["grid texture-only"]
    page = (tmp_path / "out" / "index.html").read_text()
    assert "figure recall@N" in page and "texture-only" in page
    assert (tmp_path / "out" / "figures" / "texture_metrics.png").is_file()


def test_grid_captions_go_on_the_generation_tiles():
    black = [Image.new("RGB", (40, 40))]
    grid = np.asarray(original_vs_generations_grid(black, [[black[0], black[0]]], ncols=2,
                                                   captions=[["cos 0.84", ""]]))
    tile = lambda col: grid[2:42, 2 + col * 42:2 + col * 42 + 40]  # noqa: E731
    assert tile(0).max() == 0 and tile(2).max() == 0  # no label asked, empty caption
    assert tile(1)[20:].max() > 200 and tile(1)[:15].max() == 0  # caption at the bottom
    with pytest.raises(ValueError):
        original_vs_generations_grid(black, [black], ncols=1, captions=[["a"], ["b"]])


def test_two_folders_with_one_label_get_distinct_labels(world):
    from geoxai.report.report import _unique_labels

    same = [load_evaluation(world["eval_a"]), load_evaluation(world["eval_a"])]
    _unique_labels(same)
    assert [e.label for e in same] == ["evals/epoch_7", "evals/epoch_7 (2)"]


def test_the_summary_shows_the_metrics_a_plugin_names_as_its_headline(world, tmp_path):
    """Metrics run down the summary, baselines across; a plugin's ``headline`` picks its rows (in its
    order), a named metric nobody measured is left out, and a plugin that names none shows two of its
    measured metrics, those with a direction first."""
    folder = tmp_path / "headline"
    folder.mkdir()
    for name in ("records.parquet", "summary.csv"):
        (folder / name).write_bytes((world["eval_a"] / name).read_bytes())
    results = json.loads((world["eval_a"] / "results.json").read_text())
    results["plugins"]["recall"]["headline"] = ["cosine", "recall@5", "fid"]  # fid: never measured
    results["plugins"]["recall"]["metrics"]["fid"] = {"higher_is_better": False, "definition": "fid"}
    (folder / "results.json").write_text(json.dumps(results))
    write_report([folder], tmp_path / "out", formats="md", n_boot=200)
    lines = (tmp_path / "out" / "summary.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| "))
    assert [c.strip() for c in header.strip("|").split("|")] == ["", "generated", "shuffled", "reference", "chance"]
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and line != header]
    assert rows == ["recall · cosine ↑", "recall · recall@5 ↑",
                    "lighting · delta_L ↓", "lighting · cosine ↑",
                    "texture · ssim ↑", "texture · edge_density"]  # directional metrics first
    recall5 = next(line for line in lines if "recall@5" in line)
    assert recall5.count("±") == 4  # generated, shuffled, reference and the analytic chance level


def test_an_evaluation_whose_values_were_all_skipped_gets_tables_that_say_so(world, tmp_path):
    """Every value skipped (e.g. diversity of one sample per query): no summary row, no traceback."""
    folder = tmp_path / "skipped"
    folder.mkdir()
    records = pd.read_parquet(world["eval_a"] / "records.parquet")
    records["value"], records["skip_reason"] = np.nan, "one sample: no spread"
    records.to_parquet(folder / "records.parquet", index=False)
    summary = pd.read_csv(world["eval_a"] / "summary.csv")
    summary[["mean", "ci_low", "ci_high"]] = np.nan
    summary["n_queries"] = 0
    summary.to_csv(folder / "summary.csv", index=False)
    (folder / "results.json").write_bytes((world["eval_a"] / "results.json").read_bytes())
    write_report([folder], tmp_path / "out", formats="md,latex,csv,html", n_boot=200)
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "no metric has a generated value" in text
    assert "one sample: no spread" in (tmp_path / "out" / "recall.md").read_text()
