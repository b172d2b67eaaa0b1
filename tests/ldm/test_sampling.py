"""`geoxai sample`: a GenerationRun from a checkpoint, deterministic per (query, sample), resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from tiny_models import DIM, IMAGE, make_checkpoint, save_tiny_vae, write_queries

from geoxai.cli import cli
from geoxai.runs import GenerationRun

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, vae_folder) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt", vae_folder)


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    return write_queries(tmp_path_factory.mktemp("queries"))


def sample(*args: str):
    return CliRunner().invoke(cli, ["sample", *args])


def options(checkpoint: Path, queries: Path, out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--queries", str(queries), "--out", str(out), "--samples", "2",
            "--steps", "2", "--device", "cpu", *extra]


def pixels(run_folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(run_folder).as_posix(): np.asarray(Image.open(p), dtype=np.int16)
            for p in sorted((run_folder / "samples").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, checkpoint, queries) -> Path:
    """An uninterrupted run (batch size 4), the reference the other runs are compared with."""
    out = tmp_path_factory.mktemp("runs") / "full"
    result = sample(*options(checkpoint, queries, out, "--batch-size", "4"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_sample_writes_a_complete_generation_run(full_run, queries, checkpoint):
    run = GenerationRun.open(full_run)
    manifest = run.manifest()
    assert len(manifest) == 5 * 2 and not manifest.duplicated(["query_id", "sample"]).any()
    assert sorted(manifest["sample"].unique()) == [0, 1]
    for path in manifest["image_path"]:
        assert not Path(path).is_absolute() and (full_run / path).is_file()
        assert Image.open(full_run / path).size == (IMAGE, IMAGE)
    assert manifest["utm_east"].notna().all()
    settings = yaml.safe_load((full_run / "run.yaml").read_text())
    assert settings["checkpoint"] == str(checkpoint.resolve()) and len(settings["checkpoint_sha256"]) == 64
    assert (settings["sampler"], settings["steps"], settings["guidance"], settings["samples"]) == ("dpm++", 2, 1.0, 2)
    assert settings["embedder"]["dim"] == DIM and settings["image_size"] == IMAGE
    assert settings["queries"] == str(queries.resolve()) and "path" in settings["autoencoder"]
    images = pixels(full_run)
    assert len(images) == 10
    first = list(images.values())
    assert all(np.abs(first[0] - other).max() > 0 for other in first[1:])  # every image its own noise


def test_a_killed_run_resumes_to_the_same_images(full_run, tmp_path, checkpoint, queries, monkeypatch):
    from geoxai.ldm.pipeline import DescriptorDiffusionPipeline

    original, calls = DescriptorDiffusionPipeline.__call__, []

    def dies_after_one_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("killed")
        return original(self, *args, **kwargs)

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(DescriptorDiffusionPipeline, "__call__", dies_after_one_batch)
        killed = sample(*options(checkpoint, queries, out, "--batch-size", "3"))
    assert isinstance(killed.exception, RuntimeError) and len(pixels(out)) == 3
    resumed = sample(*options(checkpoint, queries, out, "--batch-size", "3"))
    assert resumed.exit_code == 0, resumed.output
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 10 and not manifest.duplicated(["query_id", "sample"]).any()
    reference, images = pixels(full_run), pixels(out)
    assert images.keys() == reference.keys()  # no temporary or extra files either
    for name, image in images.items():  # batch 3 + resume vs batch 4: the same image per (query, sample)
        assert np.abs(image - reference[name]).max() <= 1, name

    def must_not_generate(self, *args, **kwargs):
        raise AssertionError("a complete run generated again")

    monkeypatch.setattr(DescriptorDiffusionPipeline, "__call__", must_not_generate)
    again = sample(*options(checkpoint, queries, out))
    assert again.exit_code == 0, again.output
    changed = sample(*options(checkpoint, queries, out)[:-2], "--steps", "3", "--device", "cpu")
    assert changed.exit_code == 2 and "steps (2 != 3)" in changed.stderr


def test_unreadable_queries_are_skipped_and_reported(tmp_path, checkpoint, queries):
    folder = tmp_path / "queries"
    for path in sorted(queries.rglob("*.png"))[:2]:
        (folder / path.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = sample(*options(checkpoint, folder, tmp_path / "run", "--samples", "1"))
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable" in result.stderr and "broken.jpg" in result.stderr
    assert len(GenerationRun.open(tmp_path / "run").manifest()) == 2


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_descriptor_dim_mismatch_names_both_dims(tmp_path, vae_folder, queries):
    checkpoint = make_checkpoint(tmp_path / "other.ckpt", vae_folder, embedder_dim=6, context_dim=DIM)
    error = one_line_error(sample(*options(checkpoint, queries, tmp_path / "run")))
    assert "6-d" in error and "8-d" in error
    assert not (tmp_path / "run").exists()  # nothing written for a refused command


def usage_error(result) -> str:
    """A usage error: exit status 2 and one ``error:`` line naming the option, nothing else."""
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_user_mistakes_are_one_line_errors(tmp_path, checkpoint, queries):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no .jpg/.jpeg/.png images" in one_line_error(sample(*options(checkpoint, empty, tmp_path / "a")))
    assert "not found" in one_line_error(sample(*options(tmp_path / "missing.ckpt", queries, tmp_path / "b")))
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    assert "junk.ckpt" in one_line_error(sample(*options(junk, queries, tmp_path / "c")))
    other_stage = tmp_path / "embedder.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, other_stage)
    assert "not a geoxai" in one_line_error(sample(*options(other_stage, queries, tmp_path / "d")))
    # numbers out of range are click usage errors (tests/test_option_validation.py has them all)
    assert "'--samples': 0 is not in the range" in usage_error(sample(*options(checkpoint, queries, tmp_path / "e"),
                                                                      "--samples", "0"))
    assert "'--steps': 0 is not in the range" in usage_error(sample(*options(checkpoint, queries, tmp_path / "f"),
                                                                    "--steps", "0"))
    assert "--steps 5000: at most" in one_line_error(sample(*options(checkpoint, queries, tmp_path / "g"),
                                                                 "--steps", "5000"))


def test_an_exported_folder_samples_the_same_images(full_run, tmp_path, checkpoint, queries):
    from geoxai.ldm.export import export_pipeline

    folder = export_pipeline(checkpoint, tmp_path / "export")
    out = tmp_path / "from_export"
    result = sample(*options(folder, queries, out, "--limit", "2"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    reference, images = pixels(full_run), pixels(out)
    assert sorted(images) == [f"samples/q00000{q}/{s}.png" for q in (0, 1) for s in (0, 1)]
    for name, image in images.items():
        assert np.abs(image - reference[name]).max() <= 1, name


def test_two_processes_write_the_images_of_one(full_run, tmp_path, checkpoint, queries):
    """--devices 2 (two CPU processes, gloo) shares the images out; the run equals a one-process run."""
    out = tmp_path / "two"
    result = sample(*options(checkpoint, queries, out, "--batch-size", "4", "--devices", "2"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    reference, images = pixels(full_run), pixels(out)
    assert sorted(images) == sorted(reference)  # every image once, none missing
    for name, image in images.items():
        assert np.abs(image - reference[name]).max() <= 1, name  # other batch mates: float rounding at most
    manifest = GenerationRun.open(out).manifest()
    assert len(manifest) == 10 and not manifest.duplicated(["query_id", "sample"]).any()
    assert "'--devices': 0 is not in the range" in usage_error(sample(*options(checkpoint, queries, tmp_path / "z"),
                                                                      "--devices", "0"))
