"""Outputs that cannot be written: one line naming the path and the cause, checked before the work,
and no half-written file left behind; a finished run can be re-run on a read-only disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_models import make_checkpoint, save_tiny_vae, write_queries

from geoxai.cli import cli
from geoxai.errors import OutputError
from geoxai.files import atomic_path, atomic_save_image, writable_folder


@pytest.fixture(params=["under-a-file", "read-only"])
def unwritable(request, tmp_path) -> Path:
    """An output folder that cannot be created: below a regular file, or in a read-only place."""
    if request.param == "under-a-file":
        (tmp_path / "a-file").write_text("x")
        yield tmp_path / "a-file" / "out"
        return
    if os.geteuid() == 0:  # root ignores permissions; sysfs takes no new folders, even from root
        if not Path("/sys").is_dir():
            pytest.skip("no read-only file system to write to")
        yield Path("/sys/geoxai-unwritable/out")
        return
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder / "out"
    folder.chmod(0o755)


def error_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_data_synthcity_checks_out_before_rendering(unwritable):
    line = error_line(CliRunner().invoke(cli, ["data", "synthcity", "--out", str(unwritable), "--places", "6",
                                               "--visits", "2", "--size", "32"]))
    assert "--out" in line and "cannot write" in line


def test_retrieve_checks_out_before_computing_descriptors(unwritable, tmp_path, monkeypatch):
    import geoxai.embedders.descriptors as descriptors

    calls = []
    monkeypatch.setattr(descriptors, "embed_files", lambda *a, **k: calls.append(1))
    dataset = tmp_path / "set"
    write_queries(dataset / "database", 2)
    write_queries(dataset / "queries", 2)
    line = error_line(CliRunner().invoke(cli, ["retrieve", "--dataset", str(dataset), "--weights", "random",
                                               "--backbone", "resnet18", "--image-size", "32", "--device", "cpu",
                                               "--out", str(unwritable)]))
    assert "--out" in line and not calls


def test_sample_checks_out_before_loading_models(unwritable, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "last.ckpt", save_tiny_vae(tmp_path / "vae"))
    queries = write_queries(tmp_path / "queries", 2)
    line = error_line(CliRunner().invoke(cli, ["sample", "--checkpoint", str(checkpoint), "--queries", str(queries),
                                               "--out", str(unwritable), "--samples", "1", "--steps", "1",
                                               "--device", "cpu"]))
    assert "--out" in line and "cannot write" in line


def test_train_checks_output_dir_before_training(unwritable, tmp_path):
    import yaml

    write_queries(tmp_path / "images", 2)
    config = {"stage": "autoencoder", "output_dir": str(unwritable),
              "data": {"train_dirs": [str(tmp_path / "images")], "image_size": 16, "crop_size": 8, "batch_size": 2},
              "model": {"block_out_channels": [4, 8], "layers_per_block": 1, "latent_channels": 2,
                        "norm_num_groups": 4},
              "trainer": {"max_steps": 1}}
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(config))
    line = error_line(CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "ae.yaml")]))
    assert "output_dir" in line and "cannot write" in line


def test_a_full_disk_leaves_no_half_written_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "manifest.csv"
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="No space left on device; free disk space"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
    monkeypatch.setattr(os, "replace", real_replace)
    assert not target.exists() and os.listdir(target.parent) == []  # no temporary file left either

    from PIL import Image

    def failing_save(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OutputError, match=r"0\.png: cannot write"):
        atomic_save_image(tmp_path / "out" / "0.png", Image.new("RGB", (4, 4)))
    assert os.listdir(target.parent) == []


def test_writable_folder_without_create_leaves_nothing(tmp_path):
    assert writable_folder(tmp_path / "new" / "run", "--out", create=False) == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="--out"):
        writable_folder(tmp_path / "file" / "run", "--out", create=False)


def test_a_finished_run_is_not_written_to_again(tmp_path):
    """Re-running `geoxai sample` on a complete run only reads it: it works on a read-only disk."""
    checkpoint = make_checkpoint(tmp_path / "last.ckpt", save_tiny_vae(tmp_path / "vae"))
    queries = write_queries(tmp_path / "queries", 2)
    out = tmp_path / "run"
    options = ["sample", "--checkpoint", str(checkpoint), "--queries", str(queries), "--out", str(out),
               "--samples", "1", "--steps", "1", "--device", "cpu"]
    assert CliRunner().invoke(cli, options).exit_code == 0

    def snapshot() -> dict[str, int]:
        return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")}

    before = snapshot()
    again = CliRunner().invoke(cli, [*options, "--batch-size", "3"])  # a setting that does not change images
    assert again.exit_code == 0, again.output
    assert snapshot() == before  # not a file created, rewritten or touched (lock files included)
