"""The engine's own integrity: a plugin that leaves pairs out, an evaluation of one query, and the
damaged state files of an EVAL folder (one line or set aside and recomputed, never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from geoxai.cli import cli
from geoxai.evaluation.runner import evaluate
from geoxai.statistics import ONE_QUERY, bootstrap_ci

pytestmark = pytest.mark.usefixtures("one_thread")
CONSTANT = "tiny_plugins:ConstantPlugin"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    folder = tmp_path_factory.mktemp("world")
    write_world(folder, places=8, visits=2, size=32, progress=False)
    return folder


@pytest.fixture(scope="module")
def run(world, tmp_path_factory) -> Path:
    from geoxai.synthcity.reference_runs import write_reference_run

    return write_reference_run(world, "identity", 2, tmp_path_factory.mktemp("run") / "run", progress=False).root


@pytest.fixture(scope="module")
def one_query_run(world, tmp_path_factory) -> Path:
    from geoxai.synthcity.reference_runs import write_reference_run

    return write_reference_run(world, "identity", 2, tmp_path_factory.mktemp("run1") / "run", limit=1,
                               progress=False).root


def run_eval(run: Path, plugins: str, out: Path):
    return evaluate(run, plugins, out, progress=False)


# ------------------------------------------------------------------------ plugin shortfall
def test_a_plugin_that_leaves_pairs_out_fails_naming_the_pairing_and_count(run, tmp_path):
    result = run_eval(run, f"{CONSTANT},tiny_plugins:DroppingPlugin", tmp_path / "eval")
    status = {p.name: p.status for p in result.plugins}
    assert status == {"constant": "ok", "dropping": "failed"}
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    row = errors[errors["plugin"] == "dropping"].iloc[0]
    shuffled = sum(1 for _ in pd.read_csv(run / "manifest.csv").itertuples())  # one shuffled pair per image
    assert f"no record for {shuffled} of {shuffled} shuffled pairs" in row["error"]
    assert set(pd.read_csv(tmp_path / "eval" / "summary.csv")["plugin"]) == {"constant"}


def test_the_cli_exits_1_for_a_shortfall(run, tmp_path):
    out = CliRunner().invoke(cli, ["evaluate", str(run), "--plugins", "tiny_plugins:DroppingPlugin",
                                   "--out", str(tmp_path / "eval")])
    assert out.exit_code == 1 and "FAILED: plugin dropping: no record for" in out.output, out.output


# ------------------------------------------------------------------------ one query
def test_bootstrap_over_one_value_is_no_interval():
    assert all(np.isnan(bootstrap_ci([0.7])))
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))  # constant values: a real zero-width CI


def test_one_query_says_there_is_no_chance_baseline_and_shows_no_ci(one_query_run, tmp_path):
    out = CliRunner().invoke(cli, ["evaluate", str(one_query_run), "--plugins", CONSTANT,
                                   "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    assert f"notice: {ONE_QUERY}" in out.output
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert list(summary["pairing"]) == ["generated"] and summary["n_queries"].tolist() == [1]
    assert summary[["ci_low", "ci_high"]].isna().all().all()
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert any(ONE_QUERY in n for n in results["notices"])

    report = CliRunner().invoke(cli, ["report", str(tmp_path / "eval"), "--out", str(tmp_path / "report"),
                                      "--format", "md,html"])
    assert report.exit_code == 0, report.output
    for table in ("summary.md", "constant.md"):
        text = (tmp_path / "report" / table).read_text()
        assert ONE_QUERY in text and "| 1.000 |" in text and "1.000 ±" not in text
    assert ONE_QUERY in (tmp_path / "report" / "index.html").read_text()


# ------------------------------------------------------------------------ damaged state files
def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    else:
        path.write_bytes(b"\x00garbage\xff" * 7)


@pytest.fixture()
def finished(run, tmp_path) -> Path:
    out = tmp_path / "eval"
    run_eval(run, CONSTANT, out)
    return out


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_evaluation_json_is_one_line(run, finished, how):
    damage(finished / "evaluation.json", how)
    out = CliRunner().invoke(cli, ["evaluate", str(run), "--plugins", CONSTANT, "--out", str(finished)])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    line = out.output.strip()
    assert len(line.splitlines()) == 1 and "evaluation.json is damaged" in line and "use a new --out" in line


@pytest.mark.parametrize("name", ["constant.json", "constant.parquet", "constant.summary.csv"])
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_saved_plugin_results_are_set_aside_and_scored_again(run, finished, name, how):
    before = pd.read_csv(finished / "summary.csv")
    damage(finished / "plugins" / name, how)
    result = run_eval(run, CONSTANT, finished)
    assert [p.status for p in result.plugins] == ["ok"]  # scored again, not reused
    notices = [n for n in result.notices if "damaged" in n]
    assert len(notices) == 1 and "plugin constant" in notices[0] and "scored again" in notices[0]
    aside = sorted(p.name for p in (finished / "plugins").glob("*.damaged-*"))
    assert len(aside) == 3 and any(a.startswith(name + ".damaged-") for a in aside)
    pd.testing.assert_frame_equal(pd.read_csv(finished / "summary.csv"), before)
    assert run_eval(run, CONSTANT, finished).plugins[0].status == "reused"  # healed: no second notice


def test_damaged_results_of_a_plugin_not_run_now_are_set_aside_with_the_fix(run, finished):
    damage(finished / "plugins" / "constant.parquet", "garbage")
    result = run_eval(run, "tiny_plugins:RaisingPlugin", finished)
    assert any("run it again with --plugins constant" in n for n in result.notices)
    assert pd.read_csv(finished / "summary.csv").empty  # no stale or half-read rows


@pytest.mark.parametrize("name", ["records.parquet", "summary.csv", "errors.csv", "results.json"])
def test_damaged_output_files_are_one_line_in_the_report_and_rewritten_by_evaluate(run, finished, name, tmp_path):
    before = pd.read_csv(finished / "summary.csv")
    damage(finished / name, "garbage")
    report = CliRunner().invoke(cli, ["report", str(finished), "--out", str(tmp_path / "report"), "--format", "md"])
    assert report.exit_code == 2 and "Traceback" not in report.output, report.output
    assert len(report.output.strip().splitlines()) == 1 and name in report.output
    result = run_eval(run, CONSTANT, finished)  # evaluate writes them from plugins/ again
    assert result.plugins[0].status == "reused"
    pd.testing.assert_frame_equal(pd.read_csv(finished / "summary.csv"), before)
    assert CliRunner().invoke(cli, ["report", str(finished), "--out", str(tmp_path / "report2"),
                                    "--format", "md"]).exit_code == 0
