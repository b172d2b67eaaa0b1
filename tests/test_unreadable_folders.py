"""A folder that cannot be read (permissions, an I/O error) is counted and named like an unreadable
image by every command that lists images, never skipped without a word.

Tests run as root here, and root reads any folder whatever its mode, so the failure is simulated at
``os.scandir`` (what ``os.walk`` lists a folder with); a real ``chmod 000`` test runs as other users.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_data_info import make_world, named

from geoxai.cli import cli
from geoxai.data.vpr import list_images
from geoxai.errors import GeoxaiError


@pytest.fixture()
def unreadable(monkeypatch):
    """``unreadable(folder)`` makes listing that folder fail as a chmod 000 folder does."""
    blocked: set[str] = set()
    real_scandir = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.path.abspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return lambda folder: blocked.add(os.path.abspath(folder))


def test_the_listing_collects_unreadable_folders_and_says_so_once(tmp_path, unreadable):
    root = make_world(tmp_path / "world")
    unreadable(root / "train" / "x")
    with pytest.warns(UserWarning, match=r"1 folder\(s\) cannot be read.*train/x: unreadable folder "
                                         r"\(Permission denied\)") as caught:
        paths = list_images(root / "train")
    assert len(caught) == 1
    reason = "unreadable folder (Permission denied); its images are not listed: fix its permissions or the disk"
    assert len(paths) == 1 and paths.unreadable_folders == [(root / "train" / "x", reason)]


def test_an_unreadable_folder_asked_for_is_one_line(tmp_path, unreadable):
    root = make_world(tmp_path / "world")
    unreadable(root / "train")
    with pytest.raises(GeoxaiError, match=r"train: cannot read this folder \(Permission denied\)"):
        list_images(root / "train")


def test_data_info_counts_and_names_an_unreadable_folder_like_an_image(tmp_path, unreadable):
    root = make_world(tmp_path / "world")
    bad_image = root / "database" / "broken.jpg"
    bad_image.write_bytes(b"not a jpeg")
    unreadable(root / "train" / "x")
    result = CliRunner().invoke(cli, ["data", "info", str(root), "--no-labels"])
    assert result.exit_code == 0, result.output
    assert "train/: 1 images" in result.stdout
    assert "unreadable files: 2" in result.stdout
    assert f"{root / 'train' / 'x'}: unreadable folder (Permission denied)" in result.stdout
    assert f"{bad_image}: unreadable image" in result.stdout


def test_retrieve_counts_and_names_an_unreadable_folder_like_an_image(tmp_path, unreadable):
    import shutil

    from geoxai.retrieval import evaluate_retrieval

    root = make_world(tmp_path / "world")
    shutil.rmtree(root / "train")
    named(root / "database" / "more", 600010, 4200000)
    named(root / "queries" / "more", 600012, 4200000)
    unreadable(root / "database" / "more")
    unreadable(root / "queries" / "more")
    spec = {"name": f"{Path(__file__).parent / 'test_retrieval.py'}:ColourEmbedder"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said in the result, not in a second warning
        result = evaluate_retrieval(root, spec, progress=False, num_workers=0)
    assert (result.skipped_queries, result.skipped_database) == (1, 1)
    text = result.format()
    assert "1 unreadable database images left out" in text and "excluded queries:" in text
    assert f"unreadable: {root / 'database' / 'more'}: unreadable folder (Permission denied)" in text
    assert f"unreadable: {root / 'queries' / 'more'}: unreadable folder (Permission denied)" in text


def test_sample_says_an_unreadable_query_folder_with_unreadable_queries(tmp_path, unreadable):
    from tiny_models import make_checkpoint, save_tiny_vae, write_queries

    checkpoint = make_checkpoint(tmp_path / "last.ckpt", save_tiny_vae(tmp_path / "vae"))
    queries = write_queries(tmp_path / "queries", 2)
    hidden = queries / "hidden"
    hidden.mkdir()
    unreadable(hidden)
    result = CliRunner().invoke(cli, ["sample", "--checkpoint", str(checkpoint), "--queries", str(queries),
                                      "--out", str(tmp_path / "run"), "--samples", "1", "--steps", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (f"skipped 1 unreadable query image(s) or folder(s), first: {hidden}: unreadable folder "
            "(Permission denied)") in result.stderr


def test_training_listings_warn_of_an_unreadable_folder(tmp_path, unreadable):
    from geoxai.data.vpr import read_train_set
    from geoxai.ldm.training import training_images

    root = make_world(tmp_path / "world")
    unreadable(root / "train" / "x")
    with pytest.warns(UserWarning, match=r"train: 1 folder\(s\) cannot be read.*x: unreadable folder"):
        assert len(training_images([str(root / "train")])) == 1  # the LDM and autoencoder stages
    with pytest.warns(UserWarning, match=r"train: 1 folder\(s\) cannot be read"):
        assert len(read_train_set(root / "train")) == 1  # the embedder stage


def test_evaluate_records_an_unreadable_database_folder(tmp_path, unreadable):
    from geoxai.evaluation.runner import evaluate
    from geoxai.synthcity.reference_runs import write_reference_run
    from geoxai.synthcity.world import write_world

    write_world(tmp_path / "world", places=6, visits=2, size=32, progress=False)
    run = write_reference_run(tmp_path / "world", "identity", 1, tmp_path / "run", progress=False).root
    hidden = tmp_path / "world" / "database" / "more"
    hidden.mkdir()
    unreadable(hidden)
    result = evaluate(run, "tiny_plugins:ConstantPlugin", tmp_path / "eval", database=tmp_path / "world",
                      progress=False)
    assert any("1 unreadable database folder(s)" in n and str(hidden) in n for n in result.notices)
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert errors["error"].str.contains(f"{hidden}: unreadable folder \\(Permission denied\\)").any()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_a_real_chmod_000_folder(tmp_path):
    root = make_world(tmp_path / "world")
    locked = root / "train" / "x"
    locked.chmod(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths = list_images(root / "train")
        assert [p for p, _ in paths.unreadable_folders] == [locked] and len(paths) == 1
        result = CliRunner().invoke(cli, ["data", "info", str(root), "--no-labels"])
        assert f"{locked}: unreadable folder (Permission denied)" in result.stdout
    finally:
        locked.chmod(0o755)


def test_listing_a_readable_tree_reports_nothing(tmp_path):
    root = make_world(tmp_path / "world")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = list_images(root / "train")
    assert len(paths) == 3 and paths.unreadable_folders == [] and isinstance(paths[0], Path)


def test_evaluate_names_run_images_in_an_unreadable_folder(tmp_path, unreadable):
    import shutil

    from geoxai.evaluation.runner import evaluate
    from geoxai.synthcity.reference_runs import write_reference_run
    from geoxai.synthcity.world import write_world

    write_world(tmp_path / "world", places=12, visits=2, size=32, progress=False)
    run = write_reference_run(tmp_path / "world", "identity", 1, tmp_path / "run", progress=False).root
    manifest = pd.read_csv(run / "manifest.csv")
    hidden = (run / manifest["image_path"].iloc[0]).parent
    shutil.move(hidden, tmp_path / "away")  # what a folder that cannot be read looks like from outside
    hidden.mkdir()
    unreadable(hidden)
    with pytest.warns(UserWarning, match="1 row"):  # the run itself sees an image it cannot find
        result = evaluate(run, "tiny_plugins:ConstantPlugin", tmp_path / "eval", progress=False)
    assert any(f"in 1 unreadable folder(s), first {hidden}" in n for n in result.notices), result.notices
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert errors["error"].str.contains(f"in {hidden}: unreadable folder \\(Permission denied\\)").any()
