"""Notices a user can trust: one counted line for images of another size, notices kept when an EVAL folder
is evaluated again, plurals, what to give when a spec is missing, and --help that says what is optional."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.errors import GeoxaiError
from geoxai.evaluation.context import EvaluationContext, merge_notices
from geoxai.evaluation.plugin import Metric, Plugin

TESTS = Path(__file__).resolve().parents[1]  # tests/, where tiny_models.py lives
LAYOUT = {"name": f"{TESTS / 'tiny_models.py'}:LayoutEmbedder", "image_size": 48}

pytestmark = pytest.mark.usefixtures("one_thread")


class SayingPlugin(Plugin):
    """Scores nothing useful; says why, as a plugin that skips a metric does."""

    name = "saying"
    description = "a constant and a notice"
    metrics = {"one": Metric("always 1", True)}  # noqa: RUF012

    def score(self, pairs, ctx):
        ctx.notice("saying: a skip reason that must survive a second evaluation")
        return [pair.record(one=1.0) for pair in pairs]


def test_images_of_other_sizes_are_one_counted_line(tmp_path):
    Image.fromarray(np.full((40, 80, 3), 200, np.uint8)).save(tmp_path / "original.png")
    for i, size in enumerate((16, 20, 24)):
        folder = tmp_path / f"q{i}"
        folder.mkdir()
        Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(folder / "0.png")
    ctx = EvaluationContext(seed=0, artifacts={}, digests={})
    assert ctx.aligned(tmp_path / "original.png", tmp_path / "q0" / "0.png") is not None
    assert ctx.all_notices()[0].startswith("1 image of another size than its original (e.g. q0/0.png: 16x16 vs 80x40")
    for i in (1, 2, 1):
        ctx.aligned(tmp_path / "original.png", tmp_path / f"q{i}" / "0.png")
    lines = [n for n in ctx.all_notices() if "another size" in n]
    assert len(lines) == 1 and lines[0].startswith("3 images of another size than their original")


def test_merged_notices_keep_earlier_ones_once_and_replace_restated_counts():
    from geoxai.domain import BANNER

    earlier = ["fid: skipped (no Inception weights)", "5 images of another size than their original (e.g. a)",
               f"{BANNER} (segmenter synthcity ...)", "shared"]
    now = ["shared", "7 images of another size than their original (e.g. b)", f"{BANNER} (embedder synthcity ...)"]
    merged = merge_notices(earlier, now)
    assert merged == [*now, "fid: skipped (no Inception weights)"]
    assert merge_notices([], now) == now
    assert merge_notices(earlier, now, rerun=["fid"]) == now  # fid ran again: what it said then no longer holds


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    folder = tmp_path_factory.mktemp("world")
    write_world(folder, places=4, visits=3, size=32, test_fraction=0.5, val_fraction=0.0, progress=False)
    return folder


@pytest.fixture(scope="module")
def run(world, tmp_path_factory) -> Path:
    from geoxai.synthcity.reference_runs import write_reference_run

    return write_reference_run(world, "identity", 2, tmp_path_factory.mktemp("run") / "identity", progress=False).root


def test_a_second_evaluation_into_one_folder_keeps_the_first_ones_notices(run, tmp_path):
    from geoxai.evaluation.runner import evaluate

    out = tmp_path / "eval"
    first = evaluate(run, f"{__file__}:SayingPlugin", out, progress=False)
    assert "saying: a skip reason that must survive a second evaluation" in first.notices
    second = evaluate(run, [f"{__file__}:SayingPlugin", "tiny_plugins:ConstantPlugin"], out, progress=False)
    assert second.plugins[0].status == "reused"  # so it said nothing this time
    notices = json.loads((out / "results.json").read_text())["notices"]
    assert notices.count("saying: a skip reason that must survive a second evaluation") == 1


def test_diversity_says_the_database_has_no_coordinates_instead_of_asking_for_it(run, world, tmp_path):
    from geoxai.evaluation.runner import evaluate

    database = tmp_path / "unnamed"
    database.mkdir()
    for i, path in enumerate(sorted((world / "database").glob("*.png"))):
        shutil.copy(path, database / f"photo{i}.png")
    result = evaluate(run, "diversity", tmp_path / "eval", database=database, embedder_spec=LAYOUT, progress=False)
    said = [n for n in result.notices if n.startswith("diversity: no generated / reference spread ratio")]
    assert len(said) == 1 and "--database was given, but its file names carry no UTM coordinates" in said[0]
    assert "give --database" not in said[0]


def test_other_sizes_are_counted_with_the_right_plural():
    from geoxai.data.info import _format_sizes

    six = {(w, 10): 1 for w in range(10, 16)}
    assert _format_sizes(six).endswith(", and 1 other size")
    seven = {(w, 10): 1 for w in range(10, 17)}
    assert _format_sizes(seven).endswith(", and 2 other sizes")


# ------------------------------------------------------------------------------- segmenter specs
def example_spec(message: str) -> dict:
    """The YAML keys the one-line error shows between backticks, as a spec."""
    spec: dict = {}
    for item in re.findall(r"`([^`]+)`", message):
        spec.update(yaml.safe_load(item))
    return spec


@pytest.mark.parametrize("backend, missing, after", [
    ("hf", "needs a model", "neither a folder nor in the Hugging Face cache"),
    ("sam", "needs a checkpoint", "no such file"),
])
def test_hf_and_sam_without_a_spec_say_what_to_give(backend, missing, after, run, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--plugins", "sky", "--segmenter", backend,
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: --segmenter {backend} {missing}: give --segmenter-config FILE, e.g. a YAML with")

    from geoxai.segmentation.base import from_spec, read_segmenter_spec

    spec_file = tmp_path / "segmenter.yaml"
    spec_file.write_text(yaml.safe_dump(example_spec(line)))
    spec = read_segmenter_spec(spec_file)
    assert spec["name"] == backend
    with pytest.raises(GeoxaiError) as found:  # the example passes validation; only the model is absent here
        from_spec(spec, device="cpu")
    assert after in str(found.value) and "unknown option" not in str(found.value) and missing not in str(found.value)


def test_evaluate_help_shows_weights_as_optional():
    evaluate_help = " ".join(CliRunner().invoke(cli, ["evaluate", "--help"]).output.split())
    weights = evaluate_help[evaluate_help.index("--weights TEXT"):evaluate_help.index("--image-size")]
    assert "[required]" not in weights and "the run's embedder" in weights and "untrained network baseline" in weights
    retrieve_help = " ".join(CliRunner().invoke(cli, ["retrieve", "--help"]).output.split())
    assert "[required]" in retrieve_help[retrieve_help.index("--weights TEXT"):retrieve_help.index("--image-size")]
    assert "chance" not in weights

