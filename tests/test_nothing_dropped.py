"""Nothing is silently dropped, duplicated or reshaped: skipped images are counted and listed,
reshaped and duplicated images are said, coordinates follow one rule, replaced weights are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli
from geoxai.data.vpr import VPRName, format_name
from geoxai.errors import GeoxaiError

pytestmark = pytest.mark.usefixtures("one_thread")


def vpr_image(folder: Path, east: float, size: tuple[int, int] = (24, 24), seed: int = 0, suffix: str = ".png",
              name: str | None = None) -> Path:
    """A random photo named by its UTM position (``size`` is height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or format_name(VPRName(utm_east=east, utm_north=4477000.0, zone_number="17", zone_letter="T"), suffix)
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


# ------------------------------------------------------------------------------- training
def test_embedder_training_counts_and_lists_unreadable_images(tmp_path, capsys):
    from geoxai.embedders.training import train
    from geoxai.synthcity.world import write_world

    world = tmp_path / "world"
    write_world(world, places=8, visits=4, size=64, seed=0, test_fraction=0.25, progress=False)
    place = sorted((world / "train").iterdir())[:4]  # the four visits of the first training place
    broken = place[:3]
    for path in broken:
        path.write_bytes(path.read_bytes()[:100])  # truncated: the class keeps one readable image
    out = tmp_path / "run"
    train({"stage": "embedder", "output_dir": str(out),
           "data": {"train_dir": str(world / "train"), "image_size": 64, "num_workers": 0},
           "model": {"backbone": "resnet18", "dim": 16},
           "groups": {"M": 30, "alpha": 360, "N": 1, "L": 1, "min_images_per_class": 4},
           "optim": {"lr": 1e-3, "batch_size": 6, "iterations_per_epoch": 4, "epochs": 1},
           "trainer": {"max_steps": 4, "seed": 0}})
    skipped = pd.read_csv(out / "skipped_images.csv")
    assert 1 <= len(skipped) <= 3 and set(skipped["path"]) <= {str(p) for p in broken}
    assert skipped["error"].str.contains("unreadable image").all()
    assert f"embedder: {len(skipped)} unreadable training image(s) skipped" in capsys.readouterr().out


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    """A tiny LDM trained 2 steps from a folder with one unreadable image; paths given relative."""
    import os

    from diffusers import AutoencoderKL

    from geoxai.embedders import from_spec
    from geoxai.ldm.training import train

    root = tmp_path_factory.mktemp("ldm")
    for i in range(6):
        vpr_image(root / "train", 584000.0 + 30 * i, (32, 32), seed=i)
    (root / "train" / "broken.png").write_bytes(b"\x89PNG not really")
    for i in range(2):
        vpr_image(root / "queries", 584000.0 + 30 * i, (32, 32), seed=10 + i)
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                  norm_num_groups=8).save_pretrained(root / "vae")
    from_spec({"name": "cosplace", "backbone": "resnet18", "dim": 8, "image_size": 32, "weights": "random"},
              device="cpu").save(root / "embedder" / "cosplace.pth")
    config = {
        "stage": "ldm", "output_dir": "run",
        "data": {"train_dirs": ["train"], "image_size": 32, "flip": False, "batch_size": 3, "num_workers": 0,
                 "cache_dir": "cache", "encode_batch_size": 8},
        "embedder": {"name": "cosplace", "backbone": "resnet18", "dim": 8, "image_size": 32,
                     "weights": "embedder/cosplace.pth"},
        "autoencoder": {"path": "vae"},
        "unet": {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2], "num_res_blocks": 1,
                 "num_heads": 4},
        "logging": {"image_every_n_steps": 0, "checkpoint_every_n_steps": 0},
        "trainer": {"max_steps": 2, "accelerator": "cpu", "devices": 1},
    }
    cwd = os.getcwd()
    os.chdir(root)  # the config's paths are relative to the training directory
    try:
        import contextlib
        import io

        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            checkpoint = train(config)
    finally:
        os.chdir(cwd)
    return root, root / checkpoint, console.getvalue()


def test_ldm_training_says_how_many_images_the_latent_cache_skipped(ldm):
    _, _, console = ldm
    assert "latent cache: 1 unreadable training image(s) skipped" in console and "broken.png" in console


def test_checkpoint_stores_identities_and_absolute_paths(ldm):
    root, checkpoint, _ = ldm
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert set(hparams["identities"]) == {"embedder", "autoencoder"}
    assert hparams["config"]["embedder"]["weights"] == str(root / "embedder" / "cosplace.pth")
    assert hparams["config"]["autoencoder"]["path"] == str(root / "vae")


def sample_args(checkpoint: Path, queries: Path, out: Path) -> list[str]:
    return ["sample", "--checkpoint", str(checkpoint), "--queries", str(queries), "--out", str(out),
            "--samples", "1", "--steps", "1", "--device", "cpu"]


def test_a_checkpoint_samples_from_any_working_directory(ldm, tmp_path, monkeypatch):
    root, checkpoint, _ = ldm
    monkeypatch.chdir(tmp_path)  # neither the training directory nor the checkpoint's
    result = CliRunner().invoke(cli, sample_args(checkpoint, root / "queries", tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "run" / "manifest.csv")) == 2


def test_replaced_embedder_weights_are_refused_by_sample_and_resume(ldm, tmp_path):
    from geoxai.embedders import from_spec
    from geoxai.ldm.training import train

    root, checkpoint, _ = ldm
    weights = root / "embedder" / "cosplace.pth"
    original = weights.read_bytes()
    other = from_spec({"name": "cosplace", "backbone": "resnet18", "dim": 8, "image_size": 32, "weights": "random"},
                      device="cpu")
    with torch.no_grad():
        other.net.aggregation[3].weight.mul_(-1)
    try:
        other.save(weights)  # same path, same size, other numbers
        result = CliRunner().invoke(cli, sample_args(checkpoint, root / "queries", tmp_path / "run"))
        assert result.exit_code == 2 and "embedder (embedder.weights) has identity" in result.output
        assert "was trained with" in result.output and not (tmp_path / "run").exists()
        config = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["config"]
        with pytest.raises(GeoxaiError, match=r"--resume .*embedder \(embedder\.weights\) has identity"):
            train({**config, "trainer": {**config["trainer"], "max_steps": 3}}, resume=True)
    finally:
        weights.write_bytes(original)


def test_moved_embedder_weights_are_one_clear_line(ldm, tmp_path):
    root, checkpoint, _ = ldm
    weights = root / "embedder" / "cosplace.pth"
    moved = tmp_path / "elsewhere.pth"
    shutil.move(weights, moved)
    try:
        result = CliRunner().invoke(cli, sample_args(checkpoint, root / "queries", tmp_path / "run"))
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"embedder.weights {weights} no longer exists" in result.output
    finally:
        shutil.move(moved, weights)


# ------------------------------------------------------------------------------- retrieval
@pytest.fixture
def test_set(tmp_path) -> Path:
    """Three places; a thumbnail and a panorama among the queries; one query byte-identical to a database image."""
    root = tmp_path / "set"
    for i in range(3):
        vpr_image(root / "database", 584000.0 + 30 * i, (48, 48), seed=i)
    vpr_image(root / "queries", 584001.0, (48, 48), seed=10)
    vpr_image(root / "queries", 584031.0, (8, 8), seed=11)  # thumbnail: scaled up
    vpr_image(root / "queries", 584061.0, (20, 200), seed=12)  # panorama: keeps 10% of its area
    twin = sorted((root / "database").iterdir())[0]
    shutil.copy(twin, root / "queries" / twin.name.replace("@.png", "copy@.png"))
    return root


def test_retrieve_says_what_was_reshaped_and_duplicated(test_set, tmp_path):
    result = CliRunner().invoke(cli, ["retrieve", "--dataset", str(test_set), "--weights", "random",
                                      "--backbone", "resnet18", "--dim", "8", "--image-size", "32",
                                      "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "notice: 2 of 4 queries are smaller than the 32 px input and were scaled up" in result.output
    assert "notice: 1 of 4 queries lost more than half of their area" in result.output
    assert "notice: 1 queries have a byte-identical copy in the database" in result.output
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert predictions["identical_in_database"].sum() == 1


def test_data_info_reports_exact_duplicates(test_set):
    result = CliRunner().invoke(cli, ["data", "info", str(test_set)])
    assert result.exit_code == 0, result.output
    assert "exact duplicates (identical bytes): 1 group(s), 2 files" in result.output
    assert "1 queries have a byte-identical copy in database/" in result.output


def test_one_coordinates_rule_for_retrieve_and_sample(tmp_path):
    """A name with malformed coordinates: retrieve refuses it (or --no-labels), sample says how many."""
    from tiny_models import make_checkpoint, save_tiny_vae

    root = tmp_path / "set"
    vpr_image(root / "database", 584000.0)
    vpr_image(root / "queries", 584001.0, seed=1)
    vpr_image(root / "queries", 0, seed=2, name="@abc@4477000.0@17@T@@@@@@@@@@@.png")  # east is not a number
    refused = CliRunner().invoke(cli, ["retrieve", "--dataset", str(root), "--weights", "random", "--image-size", "32",
                                       "--backbone", "resnet18", "--device", "cpu"])
    assert refused.exit_code == 2 and "no UTM coordinates" in refused.output and "--no-labels" in refused.output
    plain = CliRunner().invoke(cli, ["retrieve", "--dataset", str(root), "--weights", "random", "--image-size", "32",
                                     "--backbone", "resnet18", "--device", "cpu", "--no-labels"])
    assert plain.exit_code == 0 and "no-labels mode" in plain.output, plain.output
    checkpoint = make_checkpoint(tmp_path / "last.ckpt", save_tiny_vae(tmp_path / "vae"))
    result = CliRunner().invoke(cli, sample_args(checkpoint, root / "queries", tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "notice: 1 query name(s) carry no UTM coordinates" in result.output
    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv")
    assert manifest["utm_east"].isna().sum() == 1
