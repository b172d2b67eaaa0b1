"""The shipped SynthCity models on images that are not SynthCity renders: one notice, a ``domain`` record
in run.yaml and results.json, a banner in the report; random weights warned about and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.domain import (
    BANNER,
    RANDOM_BANNER,
    check_domain,
    embedder_model,
    ldm_model,
    segmenter_model,
    world_of,
)

TESTS = Path(__file__).resolve().parent
LAYOUT = {"name": f"{TESTS / 'tiny_models.py'}:LayoutEmbedder", "image_size": 48}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    folder = tmp_path_factory.mktemp("world")
    # seed 2: the shipped LDM trained on places of seeds 0 and 1, so sampling it here is on unseen places
    write_world(folder, places=4, visits=2, size=32, seed=2, test_fraction=0.5, val_fraction=0.0, progress=False)
    return folder


@pytest.fixture(scope="module")
def photos(world, tmp_path_factory) -> Path:
    """Real-like photos: the world's UTM positions (so labels work) under a camera's note, not SynthCity's
    (SynthCity names would be recognised as its places), noise of another size, no world around them."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split in ("database", "queries"):
        (root / split).mkdir()
        for path in sorted((world / split).glob("*.png")):
            Image.fromarray(rng.integers(0, 255, (36, 52, 3), dtype=np.uint8)).save(
                root / split / f"{path.stem.replace('@synthcity@', '@photo@')}.jpg")
    return root


def invoke(*args: str):
    return CliRunner().invoke(cli, [*args])


def notices(output: str) -> list[str]:
    return [line for line in output.splitlines() if BANNER in line]


# ------------------------------------------------------------------------------- the rule
def test_images_inside_a_world_match_and_loose_photos_do_not(world, photos):
    from geoxai import domain
    from geoxai.synthcity.world import PARAMS_FILE

    assert domain.PARAMS_FILE == PARAMS_FILE and (world / PARAMS_FILE).is_file()
    assert world_of(world / "queries") == world.resolve()
    assert world_of(photos / "queries") is None
    inside = check_domain(["embedder synthcity"], sorted((world / "queries").glob("*.png")))
    assert inside.notice is None and inside.record()["images"] == "synthcity"
    outside = check_domain(["embedder synthcity"], sorted((photos / "queries").glob("*.jpg")))
    assert outside.notice.startswith(BANNER) and str((photos / "queries").resolve()) in outside.notice
    assert outside.record()["images"] == "not synthcity"
    assert outside.record()["folders"] == [str((photos / "queries").resolve())]
    other_models = check_domain([None, None], sorted((photos / "queries").glob("*.jpg")))
    assert other_models.notice is None and other_models.record() is None  # no shipped model: nothing to say


def test_only_the_shipped_models_count(tmp_path):
    from geoxai import pretrained
    from geoxai.embedders import SIDECAR, read_spec
    from geoxai.ldm.loading import resolve_checkpoint

    assert embedder_model({"name": "synthcity"}) == "embedder synthcity"
    resolved = read_spec(pretrained.folder("synthcity", "embedder") / SIDECAR)  # weights: a file inside the package
    assert resolved["name"] == "cosplace" and embedder_model(resolved) == "embedder synthcity"
    assert embedder_model({"name": "cosplace", "weights": "random"}) is None
    assert embedder_model(LAYOUT) is None
    assert segmenter_model({"name": "synthcity"}) == "segmenter synthcity"  # its default weights are the shipped ones
    assert segmenter_model({"name": "synthcity", "weights": str(tmp_path / "mine.safetensors")}) is None
    assert segmenter_model({"name": "hf", "model": "nvidia/segformer-b0-finetuned-cityscapes-512-1024"}) is None
    assert ldm_model(resolve_checkpoint("synthcity")) == "ldm synthcity"
    assert ldm_model(tmp_path / "last.ckpt") is None


# ------------------------------------------------------------------------------- commands
def test_retrieve_says_it_once_on_photos_and_not_on_renders(world, photos):
    on_world = invoke("retrieve", "--dataset", str(world), "--embedder", "synthcity", "--device", "cpu")
    assert on_world.exit_code == 0, on_world.output
    assert notices(on_world.output) == []
    on_photos = invoke("retrieve", "--dataset", str(photos), "--embedder", "synthcity", "--device", "cpu")
    assert on_photos.exit_code == 0, on_photos.output
    assert len(notices(on_photos.output)) == 1 and "embedder synthcity" in notices(on_photos.output)[0]


@pytest.fixture(scope="module")
def photo_run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "photos"
    result = invoke("sample", "--checkpoint", "synthcity", "--queries", str(photos / "queries"), "--out", str(out),
                    "--samples", "1", "--steps", "1", "--limit", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(notices(result.output)) == 1
    return out


def test_sample_records_the_domain_in_run_yaml(photo_run, world, tmp_path):
    settings = yaml.safe_load((photo_run / "run.yaml").read_text())
    assert settings["domain"]["images"] == "not synthcity"
    assert settings["domain"]["models"] == ["ldm synthcity", "embedder synthcity"]
    assert settings["random_weights"] is False
    result = invoke("sample", "--checkpoint", "synthcity", "--queries", str(world / "queries"), "--out",
                    str(tmp_path / "renders"), "--samples", "1", "--steps", "1", "--limit", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert notices(result.output) == []
    assert yaml.safe_load((tmp_path / "renders" / "run.yaml").read_text())["domain"]["images"] == "synthcity"


def test_evaluate_records_it_and_the_report_shows_a_banner(photo_run, photos, tmp_path):
    out = tmp_path / "eval"
    result = invoke("evaluate", str(photo_run), "--plugins", "sky", "--segmenter", "synthcity", "--out", str(out),
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(notices(result.output)) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["domain"]["images"] == "not synthcity"
    assert set(results["domain"]["models"]) == {"segmenter synthcity", "ldm synthcity"}
    assert sum(BANNER in n for n in results["notices"]) == 1
    assert results["random_weights"] == {"embedder": False, "run": False}

    report = invoke("report", str(out), "--out", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    assert BANNER in (tmp_path / "report" / "summary.md").read_text().split("**Summary**")[0]  # above the table
    assert f"WARNING: {BANNER}" in (tmp_path / "report" / "sky.tex").read_text()
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.index(BANNER) < page.index('id="provenance"')  # at the top of the page


def test_evaluate_of_renders_shows_no_banner(world, tmp_path):
    from geoxai.synthcity.reference_runs import write_reference_run

    run = write_reference_run(world, "identity", 1, tmp_path / "run", progress=False).root
    out = tmp_path / "eval"
    result = invoke("evaluate", str(run), "--plugins", "sky", "--segmenter", "synthcity", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert notices(result.output) == []
    assert json.loads((out / "results.json").read_text())["domain"]["images"] == "synthcity"
    assert invoke("report", str(out), "--out", str(tmp_path / "report")).exit_code == 0
    assert BANNER not in (tmp_path / "report" / "index.html").read_text()


# ------------------------------------------------------------------------------- random weights
def random_checkpoint(folder: Path) -> Path:
    """A tiny LDM checkpoint whose embedder is an untrained network asked for by name (weights: random)."""
    from tiny_models import UntrainedEmbedder, make_checkpoint, save_tiny_vae

    path = make_checkpoint(folder / "last.ckpt", save_tiny_vae(folder / "vae"))
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["config"]["embedder"] = UntrainedEmbedder().spec()
    torch.save(state, path)
    return path


def test_random_weights_are_warned_about_and_recorded_by_sample_and_evaluate(tmp_path):
    from tiny_models import write_queries

    queries = write_queries(tmp_path / "queries", count=2)
    run = tmp_path / "run"
    sampled = invoke("sample", "--checkpoint", str(random_checkpoint(tmp_path)), "--queries", str(queries),
                     "--out", str(run), "--samples", "1", "--steps", "1", "--device", "cpu")
    assert sampled.exit_code == 0, sampled.output
    assert "WARNING" in sampled.output and "untrained network baseline" in sampled.output
    assert "chance" not in sampled.output
    settings = yaml.safe_load((run / "run.yaml").read_text())
    assert settings["random_weights"] is True and "domain" not in settings  # no shipped model: no domain record

    out = tmp_path / "eval"
    evaluated = invoke("evaluate", str(run), "--plugins", "recall", "--database", str(queries), "--out", str(out))
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.output.count("WARNING") == 2  # the run's conditioning and the evaluation's own embedder
    results = json.loads((out / "results.json").read_text())
    assert results["random_weights"] == {"embedder": True, "run": True}
    assert "domain" not in results
    assert invoke("report", str(out), "--out", str(tmp_path / "report")).exit_code == 0
    assert RANDOM_BANNER in (tmp_path / "report" / "recall.md").read_text()
