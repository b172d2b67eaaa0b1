"""SynthCity worlds on disk: half-written worlds are refused in one line, render workers die with their
parent, and every seed has its own UTM block (seed 0 where it always was)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from geoxai.cli import cli
from geoxai.errors import GeoxaiError
from geoxai.synthcity import SynthCity
from geoxai.synthcity import world as synthcity_world
from geoxai.synthcity.world import (
    check_world_complete,
    image_name,
    synthcity_place,
    world_identity,
    world_params,
    write_world,
)

TINY = {"places": 6, "visits": 2, "size": 32, "seed": 3, "test_fraction": 0.4, "val_fraction": 0.0}
RERUN = "geoxai data synthcity --out {} --places 6 --visits 2 --size 32 --seed 3 --test-fraction 0.4 --val-fraction 0.0"


def geoxai(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("complete") / "world"
    write_world(out, progress=False, **TINY)
    return out


@pytest.fixture()
def interrupted(tmp_path, monkeypatch) -> Path:
    """A world whose render stopped after 5 of its 12 images (as a killed `geoxai data synthcity` leaves it)."""
    out, calls, render = tmp_path / "world", [], SynthCity.render

    def failing(self, place, visit, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(place)
        return render(self, place, visit, **kwargs)

    monkeypatch.setattr(SynthCity, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        write_world(out, progress=False, workers=1, **TINY)
    monkeypatch.setattr(SynthCity, "render", render)
    return out


# ------------------------------------------------------------------------------ coordinates
def test_seed_zero_keeps_its_coordinates_and_names():
    """The compatibility contract: worlds, docs and shipped numbers of seed 0 stay valid."""
    city = SynthCity(seed=0, size=128)
    assert city.place_utm(0) == (551005.0, 4178005.0) and city.place_utm(57) == (551515.0, 4178035.0)
    assert city.visit_utm(57, 3) == (551513.69, 4178034.72)
    assert image_name(city, 57, 3) == \
        "@0551513.69@4178034.72@10@S@037.748192@-122.415265@p00057@3@197.1@0@0@2.5@20190522@synthcity@.png"
    assert "coordinates" not in world_params(200, 6, 128, 0, 0.3, 0.1)  # seed 0 worlds keep their parameters


@pytest.mark.parametrize("other", [1, 159, 160, 28799])
def test_worlds_of_different_seeds_never_share_a_place(other):
    places = 800
    a = np.array([SynthCity(seed=0).place_utm(p) for p in range(places)])
    b = np.array([SynthCity(seed=other).place_utm(p) for p in range(places)])
    nearest = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min()
    assert nearest > 100.0
    name = image_name(SynthCity(seed=other, size=32), places - 1, 1)
    assert synthcity_place(name) == (other, places - 1)  # a name says which world's place it shows


def test_seeds_and_places_beyond_the_blocks_are_one_line_errors(tmp_path):
    result = geoxai("data", "synthcity", "--out", tmp_path / "w", "--seed", "28800")
    assert result.exit_code == 2 and result.output.startswith("error: --seed must be from 0 to 28799")
    result = geoxai("data", "synthcity", "--out", tmp_path / "w", "--places", "40001")
    assert result.exit_code == 2 and "--places must be <= 40000" in result.output
    assert not (tmp_path / "w").exists()


def test_a_seed_world_rendered_before_the_blocks_is_not_resumed_into(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    old = {k: v for k, v in world_params(6, 2, 32, 3, 0.4).items() if k != "coordinates"}
    (out / "synthcity.yaml").write_text(yaml.safe_dump(old))
    result = geoxai("data", "synthcity", "--out", out, "--places", 6, "--visits", 2, "--size", 32, "--seed", 3,
                    "--test-fraction", 0.4, "--val-fraction", 0)
    assert result.exit_code == 2 and "before each seed had its own UTM block" in result.output
    assert "--overwrite" in result.output


# ------------------------------------------------------------------------------ half-written
def test_a_half_written_world_is_one_line_in_every_command(interrupted, tmp_path):
    line = (f"error: {interrupted}: a SynthCity world whose rendering did not finish (5 of 12 images); "
            f"re-run `{RERUN.format(interrupted)}` to complete it\n")
    assert geoxai("data", "info", interrupted).output == line
    assert geoxai("data", "info", interrupted / "train").output == line
    result = geoxai("retrieve", "--dataset", interrupted, "--embedder", "cosplace", "--weights", "random")
    assert result.exit_code == 2 and result.output == line
    config = tmp_path / "ldm.yaml"
    config.write_text(yaml.safe_dump({"stage": "ldm", "output_dir": str(tmp_path / "run"), "embedder": {"name": "x"},
                                      "data": {"train_dirs": [str(interrupted / "train")]}}))
    result = geoxai("train", "--config", config)
    assert result.exit_code == 2 and result.output == line
    config.write_text(yaml.safe_dump({"stage": "embedder", "output_dir": str(tmp_path / "emb"),
                                      "data": {"train_dir": str(interrupted / "train")}}))
    assert geoxai("train", "--config", config).output == line
    assert not (tmp_path / "run").exists() and not (tmp_path / "emb").exists()

    # the command the line names completes the world, and the world is then the uninterrupted one
    args = RERUN.format(interrupted).split()[1:]
    assert geoxai(*args).exit_code == 0
    assert check_world_complete(interrupted / "queries")[0] == interrupted
    assert geoxai("data", "info", interrupted).exit_code == 0


def test_missing_images_or_metadata_make_a_complete_world_half_written(complete, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(complete, copy)
    (copy / "metadata.csv").unlink()
    with pytest.raises(GeoxaiError, match=r"did not finish \(12 of 12 images but no metadata.csv, which is written last\)"):
        check_world_complete(copy / "database")
    shutil.copy(complete / "metadata.csv", copy / "metadata.csv")
    next((copy / "train").glob("*.png")).unlink()
    with pytest.raises(GeoxaiError, match=r"did not finish \(11 of 12 images\)"):
        check_world_complete(copy)


def test_folders_outside_worlds_are_not_checked(complete, tmp_path):
    plain = tmp_path / "photos"
    shutil.copytree(complete / "train", plain)  # SynthCity images, but no world around them
    assert check_world_complete(plain) is None
    result = geoxai("data", "info", plain, "--no-decode")
    assert result.exit_code == 0 and "images:" in result.output


def test_identity_is_the_parameters_not_the_folder(complete, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(complete, copy)
    root, params = check_world_complete(copy / "val" if (copy / "val").exists() else copy / "queries")
    assert root == copy and world_identity(params) == world_identity(world_params(**{
        k: TINY[k] for k in ("places", "visits", "size", "seed", "test_fraction", "val_fraction")}))
    assert world_identity(params) != world_identity(world_params(6, 2, 32, 4, 0.4))


# ------------------------------------------------------------------------------ workers
def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_render_workers_end_when_the_command_is_killed(tmp_path):
    """kill -9 gives the pool no chance to stop its workers: they must notice on their own."""
    command = [sys.executable, "-c", "from geoxai.cli import cli; cli()", "data", "synthcity", "--out",
               str(tmp_path / "world"), "--places", "300", "--visits", "2", "--size", "64"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.monotonic() + 20, []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.1)
            workers = _children(parent.pid)
        assert len(workers) == 2, "the command did not start its two render workers"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers)
    finally:
        parent.kill()
        for worker in _children(parent.pid):
            os.kill(worker, signal.SIGKILL)
    # what they left is a half-written world, which the next command names
    with pytest.raises(GeoxaiError, match="rendering did not finish"):
        check_world_complete(tmp_path / "world")


def test_workers_without_prctl_watch_their_parent(monkeypatch):
    """The fallback: a thread that ends the worker once its parent process is gone."""
    exits = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(os, "_exit", exits.append)
    synthcity_world._end_with_parent(os.getppid() + 1 if os.getppid() != 1 else 2)  # a parent that is not ours
    deadline = time.monotonic() + 3
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exits == [1]
