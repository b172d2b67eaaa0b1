"""A run written by another generator is untrusted input: its manifest must not make geoxai read
files outside the run (or outside the query folder recorded in run.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from geoxai.errors import GeoxaiError
from geoxai.report.evaluations import Evaluation
from geoxai.report.grids import evaluation_grid
from geoxai.runs import MANIFEST_COLUMNS, GenerationRun, plan_queries

SECRET_COLOUR = (250, 0, 250)


def hand_written_run(tmp_path: Path, image_paths: list[str], query_paths: list[str] | None = None,
                     queries: Path | None = None) -> Path:
    """A run with one image per row at samples/q<i>/0.png (unless the row says otherwise)."""
    queries = queries or tmp_path / "queries"
    queries.mkdir(exist_ok=True)
    root = tmp_path / "theirs"
    rows = []
    for index, image_path in enumerate(image_paths):
        query = queries / f"query{index}.png"
        Image.new("RGB", (8, 8), (index, 0, 0)).save(query)
        (root / "samples" / f"q{index}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (0, index, 0)).save(root / "samples" / f"q{index}" / "0.png")
        query_path = query_paths[index] if query_paths else str(query)
        rows.append([f"q{index}", query_path, 0, "", image_path, "", ""])
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(root / "manifest.csv", index=False)
    (root / "run.yaml").write_text(yaml.safe_dump({"generator": "another model", "queries": str(queries)}))
    return root


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside every run, which no report or evaluation may show."""
    path = tmp_path / "elsewhere" / "secret.png"
    path.parent.mkdir()
    Image.new("RGB", (8, 8), SECRET_COLOUR).save(path)
    return path


def test_a_legitimate_hand_written_run_opens(tmp_path):
    root = hand_written_run(tmp_path, ["samples/q0/0.png", "samples/q1/0.png"])
    frame = GenerationRun.open(root).manifest(absolute=True)
    assert len(frame) == 2 and all(Path(p).is_file() for p in frame["image_path"])


def test_dot_dot_image_path_is_refused_naming_the_row(tmp_path, secret):
    root = hand_written_run(tmp_path, ["samples/q0/0.png", "../elsewhere/secret.png"])
    with pytest.raises(GeoxaiError, match=r"manifest.csv row 2 \(query_id q1, sample 0\): image_path "
                                          r"\.\./elsewhere/secret.png points outside the run") as caught:
        GenerationRun.open(root)
    assert "\n" not in str(caught.value)


def test_absolute_image_path_is_refused(tmp_path, secret):
    root = hand_written_run(tmp_path, [str(secret)])
    with pytest.raises(GeoxaiError, match=r"row 1 \(query_id q0, sample 0\): image_path .*secret.png points outside"):
        GenerationRun.open(root, missing="skip")


def test_symlink_in_samples_escaping_the_run_is_refused(tmp_path, secret):
    root = hand_written_run(tmp_path, ["samples/q0/0.png", "samples/q1/0.png"])
    link = root / "samples" / "q1" / "0.png"
    link.unlink()
    os.symlink(secret, link)
    with pytest.raises(GeoxaiError, match=r"row 2 \(query_id q1, sample 0\): image_path samples/q1/0.png points "
                                          r"outside the run \(.*secret.png\)"):
        GenerationRun.open(root)


def test_a_symlinked_sample_folder_of_a_geoxai_run_is_refused(tmp_path, secret):
    """A geoxai run rebuilds rows from queries.csv and the folders on disk: those are checked too."""
    queries = tmp_path / "queries"
    queries.mkdir()
    Image.new("RGB", (8, 8)).save(queries / "a.png")
    items = plan_queries([queries / "a.png"], queries)
    run = GenerationRun.create(tmp_path / "run", {"generator": "test", "queries": queries})
    run.save_images([(items[0], 0, 0, Image.new("RGB", (8, 8)))])
    run.finalize(items, 1)
    folder = tmp_path / "run" / "samples" / items[0].query_id
    (folder / "0.png").unlink()
    folder.rmdir()
    (secret.parent / "0.png").write_bytes(secret.read_bytes())
    os.symlink(secret.parent, folder)
    with pytest.raises(GeoxaiError, match=r"(queries|manifest)\.csv.*points outside the run"):
        GenerationRun.open(tmp_path / "run")


def test_query_path_outside_the_run_and_the_recorded_queries_is_refused(tmp_path, secret):
    root = hand_written_run(tmp_path, ["samples/q0/0.png"], query_paths=[str(secret)])
    with pytest.raises(GeoxaiError, match=r"row 1 \(query_id q0, sample 0\): query_path .*secret.png is outside "
                                          r"the run and outside the queries folder recorded in run.yaml"):
        GenerationRun.open(root)
    (root / "run.yaml").write_text("generator: another model\n")  # no query folder recorded: none allowed
    with pytest.raises(GeoxaiError, match="none is"):
        GenerationRun.open(root)


def test_query_paths_inside_the_recorded_folder_or_the_run_are_allowed(tmp_path):
    root = hand_written_run(tmp_path, ["samples/q0/0.png", "samples/q1/0.png"],
                            query_paths=[str(tmp_path / "queries" / "sub" / ".." / "query0.png"), "samples/q1/0.png"])
    assert len(GenerationRun.open(root)) == 2
    frame = pd.read_csv(root / "manifest.csv")
    frame.loc[0, "query_path"] = str(tmp_path / "queries" / ".." / "elsewhere" / "secret.png")
    frame.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(GeoxaiError, match=r"row 1 .*query_path .* is outside the run"):
        GenerationRun.open(root)


def test_report_grid_never_shows_a_file_outside_the_run(tmp_path, secret):
    root = hand_written_run(tmp_path, ["samples/q0/0.png", "../elsewhere/secret.png"])
    records = pd.DataFrame({"plugin": ["recall"] * 2, "metric": ["cosine"] * 2, "pairing": ["generated"] * 2,
                            "query_id": ["q0", "q1"], "sample": [0, 0], "value": [0.5, 0.9]})
    evaluation = Evaluation(folder=tmp_path / "eval", label="theirs", records=records, summary=pd.DataFrame(),
                            results={}, errors=pd.DataFrame(), run_path=root)
    grid, text = evaluation_grid(evaluation)
    assert grid is None
    assert "no grid" in text and "row 2 (query_id q1, sample 0)" in text and "points outside the run" in text
