"""A plugin in its own package, registered through the entry point a third party would use, runs
through `geoxai evaluate` and `geoxai report` (a temporary distribution on sys.path, no network)."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from geoxai.cli import cli

PLUGIN = '''
import numpy as np

from geoxai.evaluation import Metric, Plugin


class Brightness(Plugin):
    """How much brighter a generation is than its original (mean grey level)."""

    name = "brightness"
    version = "0.1"
    description = "mean grey level of the image minus the original's"
    metrics = {"delta_grey": Metric("mean grey level difference, image minus original", None)}

    def score(self, pairs, ctx):
        for pair in pairs:
            original, image = ctx.aligned(pair.original, pair.other)
            yield pair.record(delta_grey=float(image.mean() - original.mean()))
'''


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """``my-geoxai-plugin`` as pip would leave it: a package and its dist-info with the entry point."""
    site = tmp_path / "site"
    (site / "my_geoxai_plugin").mkdir(parents=True)
    (site / "my_geoxai_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "my_geoxai_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-geoxai-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[geoxai.plugins]\nbrightness = my_geoxai_plugin:Brightness\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("my_geoxai_plugin", None)


def test_a_third_party_plugin_runs_through_evaluate_and_report(installed, tmp_path):
    from geoxai.synthcity.reference_runs import write_reference_run
    from geoxai.synthcity.world import write_world

    write_world(tmp_path / "world", places=12, visits=3, size=32, progress=False)
    write_reference_run(tmp_path / "world", "lighting", 2, tmp_path / "run", progress=False)
    listed = CliRunner().invoke(cli, ["plugins"])
    assert "brightness 0.1" in listed.output and "delta_grey" in listed.output
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), "--plugins", "brightness",
                                      "--database", str(tmp_path / "world"), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert set(summary["pairing"]) == {"generated", "shuffled", "reference"}
    mean = summary.set_index("pairing").loc["generated", "mean"]
    report = CliRunner().invoke(cli, ["report", str(tmp_path / "eval"), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "report" / "brightness.md").read_text()
    assert "delta_grey" in markdown and f"{mean:.3f}".lstrip("-") in markdown.replace("−", "-")
    assert (tmp_path / "report" / "index.html").is_file()


def test_the_documented_region_plugin_runs_as_written(tmp_path):
    """The RegionPlugin example of docs/writing-a-plugin.md, copied from the page, through `geoxai evaluate`."""
    from pathlib import Path

    from geoxai.synthcity.reference_runs import write_reference_run
    from geoxai.synthcity.world import write_world

    page = (Path(__file__).parents[2] / "docs" / "writing-a-plugin.md").read_text()
    section = page.split("## Segmentation plugins", 1)[1]
    (tmp_path / "vegetation.py").write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    write_world(tmp_path / "world", places=12, visits=3, size=32, progress=False)
    write_reference_run(tmp_path / "world", "identity", 2, tmp_path / "run", progress=False)
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), "--plugins",
                                      f"{tmp_path / 'vegetation.py'}:Vegetation", "--segmenter", "groundtruth",
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv").set_index(["metric", "pairing"])["mean"]
    assert summary["vegetation_iou", "generated"] == 1.0  # identity: the generation is the original
    assert summary["vegetation_clumps_change", "generated"] == 0.0
    assert summary["vegetation_colour_change", "generated"] == pytest.approx(0.0, abs=1e-6)
    assert summary["vegetation_iou", "shuffled"] < 1.0 and summary["vegetation_colour_change", "shuffled"] > 0.0
    assert summary["vegetation_iou_ceiling", "generated"] == 1.0  # ground truth measured against itself
