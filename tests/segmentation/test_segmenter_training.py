"""The ``synthcity`` segmenter: training on a tiny world, resuming, loading by spec, refusing bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoxai import labels as L
from geoxai.errors import GeoxaiError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, places=12, visits=3, size=48, progress=False)
    return out


def _config(world: Path, out: Path, **sections) -> dict:
    config = {
        "stage": "segmenter", "output_dir": str(out),
        "data": {"train_dirs": [str(world / "train")], "val_dir": str(world / "val" / "queries"),
                 "test_dir": str(world / "queries"), "image_size": 48, "crop_size": 32, "batch_size": 8},
        "model": {"architecture": "unet", "widths": [8, 16]},
        "augment": {"blur": 0.5},
        "loss": {"class_weights": "inverse-sqrt-frequency"},
        "optim": {"warmup_steps": 0},
        "checkpoint_every_n_steps": 2,
        "trainer": {"max_steps": 3, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> Path:
    from geoxai.segmentation.synthcity_training import train

    out = tmp_path_factory.mktemp("segmenter") / "run"
    assert train(_config(world, out)) == out / "segmenter.safetensors"
    return out


def test_training_writes_every_output(trained, world):
    for name in ("segmenter.safetensors", "segmenter.yaml", "metrics.json", "config.yaml", "checkpoints/last.ckpt"):
        assert (trained / name).is_file(), name
    assert not (trained / "skipped_images.csv").exists()  # nothing was unreadable
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["architecture"] == "unet" and metrics["protocol"] == "unseen-places"
    assert metrics["test"]["images"] == len(list((world / "queries").glob("*.png")))
    assert metrics["val"]["images"] == len(list((world / "val" / "queries").glob("*.png")))
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["pixel_accuracy"] <= 1.0
        assert list(metrics[split]["iou"]) == list(L.NAMES.values())
        assert all(v is None or 0.0 <= v <= 1.0 for v in metrics[split]["iou"].values())
    from geoxai.config import read_yaml

    spec = read_yaml(trained / "segmenter.yaml")
    assert spec == {"name": "synthcity", "architecture": "unet", "widths": [8, 16], "num_classes": 11,
                    "image_size": 48, "weights": "segmenter.safetensors"}


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # the run was copied to a new folder
def test_resume_continues_and_a_fresh_run_refuses_the_folder(trained, world):
    import shutil

    from geoxai.segmentation.synthcity_training import train

    out = trained.parent / "resumed"
    shutil.copytree(trained, out)
    config = _config(world, out, trainer={"max_steps": 5})
    with pytest.raises(GeoxaiError, match="already holds a training run"):
        train(config)
    with pytest.raises(GeoxaiError, match="model.widths"):
        train(_config(world, out, model={"widths": [8, 8]}), resume=True)
    train(config, resume=True)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 5
    import pandas as pd

    logged = pd.read_csv(max((out / "logs").glob("version_*/metrics.csv")))["step"].dropna()
    assert logged.min() >= 3  # the resumed session continued after the first session's 3 steps
    with pytest.raises(GeoxaiError, match="--resume: no checkpoint"):
        train(_config(world, trained.parent / "empty"), resume=True)


@pytest.mark.parametrize("given", ["file", "folder", "yaml"])
def test_the_saved_segmenter_loads_by_spec_and_keeps_the_input_size(trained, given):
    from geoxai.segmentation.base import from_spec

    weights = {"file": trained / "segmenter.safetensors", "folder": trained, "yaml": trained / "segmenter.yaml"}[given]
    segmenter = from_spec({"name": "synthcity", "weights": str(weights)}, device="cpu")
    assert segmenter.classes == tuple(L.NAMES) and "SynthCity" in segmenter.licence
    assert segmenter.inference.startswith("resize to 48x48")
    images = torch.rand(3, 3, 40, 56)  # not the training size: resized in, logits upsampled back
    maps = segmenter.segment(images)
    assert maps.shape == (3, 40, 56) and maps.dtype == torch.long
    assert int(maps.min()) >= 0 and int(maps.max()) < L.NUM_CLASSES
    rebuilt = from_spec(segmenter.spec())
    assert rebuilt.identity() == segmenter.identity()
    assert torch.equal(rebuilt.segment(images), maps)


def test_segment_files_reads_world_images(trained, world):
    from geoxai.segmentation.base import from_spec

    segmenter = from_spec({"name": "synthcity", "weights": str(trained)}, device="cpu")
    paths = sorted((world / "queries").glob("*.png"))[:2]
    maps = segmenter.segment_files(paths)
    assert [m.shape for m in maps] == [(48, 48)] * 2 and all(m.dtype == np.uint8 for m in maps)


def test_a_missing_or_damaged_weights_file_is_one_line(trained, tmp_path):
    from geoxai.segmentation.base import from_spec

    damaged = tmp_path / "segmenter.safetensors"
    damaged.write_bytes((trained / "segmenter.safetensors").read_bytes()[:200])
    for path, message in ((damaged, "not a readable safetensors file"), (tmp_path / "absent.safetensors",
                                                                            "no such file")):
        with pytest.raises(GeoxaiError, match=message) as error:
            from_spec({"name": "synthcity", "weights": str(path)})
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    with pytest.raises(GeoxaiError, match="image_size 64 does not match"):
        from_spec({"name": "synthcity", "weights": str(trained), "image_size": 64})
    with pytest.raises(GeoxaiError, match="this is a training config"):
        from_spec({"name": "synthcity", "weights": str(trained / "config.yaml")})


def test_default_weights_are_read_on_first_use(tmp_path, monkeypatch):
    from geoxai import pretrained
    from geoxai.segmentation.base import describe_segmenters, from_spec

    monkeypatch.chdir(tmp_path)  # no runs/segmenter/synthcity here
    if pretrained.is_shipped("synthcity", "segmenter"):  # the shipped weights are the default
        segmenter = from_spec({"name": "synthcity"})
        segmenter.identity()
        assert segmenter.path == (pretrained.folder("synthcity", "segmenter") / "segmenter.safetensors").resolve()
    monkeypatch.setattr(pretrained, "ROOT", tmp_path / "nothing-shipped")
    (tmp_path / "nothing-shipped").mkdir()
    segmenter = from_spec({"name": "synthcity"})  # listing and building need no weights yet
    assert "synthcity" in describe_segmenters()
    with pytest.raises(GeoxaiError, match="geoxai train --config configs/segmenter/synthcity.yaml"):
        segmenter.identity()


def test_the_config_refuses_unknown_keys_and_test_places(world, tmp_path):
    from geoxai.segmentation.synthcity_training import train

    with pytest.raises(GeoxaiError, match="unknown key 'widht'"):
        train(_config(world, tmp_path / "a", model={"widht": [8]}))
    with pytest.raises(GeoxaiError, match="held-out places"):
        train(_config(world, tmp_path / "b", data={"train_dirs": [str(world / "train"), str(world / "queries")]}))
    with pytest.raises(GeoxaiError, match="held-out places"):
        train(_config(world, tmp_path / "c", data={"train_dirs": [str(world / "database")]}))
    with pytest.raises(GeoxaiError, match="image_size 45 is not a positive multiple of 2"):
        train(_config(world, tmp_path / "d", data={"image_size": 45}))
    with pytest.raises(GeoxaiError, match="crop_size 64 must be null or a positive multiple"):
        train(_config(world, tmp_path / "e", data={"crop_size": 64}))
    with pytest.raises(GeoxaiError, match="loss.class_weights 'median'"):
        train(_config(world, tmp_path / "f", loss={"class_weights": "median"}))
    with pytest.raises(GeoxaiError, match="augment.blur_sigma"):
        train(_config(world, tmp_path / "g", augment={"blur_sigma": [2.0, 1.0]}))
    with pytest.raises(GeoxaiError, match="augment.blur_kernel 4 must be a positive odd integer"):
        train(_config(world, tmp_path / "h", augment={"blur_kernel": 4}))
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_geoxai_train_runs_the_segmenter_stage(world, tmp_path):
    import yaml
    from click.testing import CliRunner

    from geoxai.cli import cli

    config = _config(world, tmp_path / "run", model={"depth": 3})
    path = tmp_path / "segmenter.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["train", "--config", str(path)])
    assert result.exit_code == 2
    assert "segmenter config.model: unknown key 'depth'" in result.output and len(result.output.splitlines()) == 1


def test_class_weights_favour_rare_classes_and_average_one(world):
    from geoxai.segmentation.synthcity_training import class_weights, labelled_images, read_label_map

    pairs = labelled_images([world / "train"], "data.train_dirs")
    assert class_weights(pairs, None) is None
    weights = class_weights(pairs, "inverse-sqrt-frequency")
    counts = sum(torch.bincount(read_label_map(label).reshape(-1), minlength=L.NUM_CLASSES) for _, label in pairs)
    frequency = counts.double() / counts.sum()
    assert float((frequency * weights.double()).sum()) == pytest.approx(1.0)
    assert weights[L.POLE] > weights[L.ROAD] > weights[L.BUILDING]
    assert weights[L.OTHER] == 1.0  # never occurs in SynthCity


def test_augmentation_keeps_labels_aligned():
    from torchvision import tv_tensors

    from geoxai.segmentation.synthcity_training import augmentation

    torch.manual_seed(0)
    image = torch.rand(3, 8, 8)
    labels = torch.arange(64).reshape(8, 8) % L.NUM_CLASSES
    transform = augmentation({"flip": True, "brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.1,
                              "blur": 1.0, "blur_sigma": [0.5, 2.0], "blur_kernel": 7})
    for _ in range(6):
        _, out = transform(tv_tensors.Image(image), tv_tensors.Mask(labels))
        assert torch.equal(out, labels) or torch.equal(out, labels.flip(-1))  # flipped or not, never recoloured
    position = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8).expand(3, 8, 8) / 64
    cropped = augmentation({"flip": False, "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0, "blur": 0,
                            "blur_sigma": [0.1, 1.5], "blur_kernel": 5}, crop_size=4)
    index = torch.arange(64).reshape(8, 8)
    for _ in range(4):
        image_out, labels_out = cropped(tv_tensors.Image(position.clone()), tv_tensors.Mask(index))
        assert labels_out.shape == (4, 4) and torch.equal((image_out[0] * 64).round().long(), labels_out)


def test_unreadable_training_images_are_skipped_and_listed(world, tmp_path):
    import shutil

    from geoxai.segmentation.synthcity_training import train

    copy = tmp_path / "world"
    shutil.copytree(world / "train", copy / "train")
    shutil.copytree(world / "labels" / "train", copy / "labels" / "train")
    broken = sorted((copy / "train").glob("*.png"))[0]
    broken.write_bytes(b"not a png")
    config = _config(copy, tmp_path / "run", data={"val_dir": None, "test_dir": None, "batch_size": 24},
                     trainer={"max_steps": 1})
    train(config)
    listed = (tmp_path / "run" / "skipped_images.csv").read_text()
    assert str(broken) in listed and "unreadable image" in listed


def test_the_shipped_config_resolves_and_trains_on_training_places_only():
    from geoxai.config import load_config
    from geoxai.protocols import check_training_folders
    from geoxai.segmentation.synthcity_training import training_config

    config = training_config(load_config(Path(__file__).parents[2] / "configs" / "segmenter" / "synthcity.yaml"))
    assert config["protocol"] == "unseen-places" and config["output_dir"] == "runs/segmenter/synthcity"
    check_training_folders(config["data"]["train_dirs"], config["protocol"])
    assert "/val/" in config["data"]["val_dir"] and config["data"]["test_dir"].endswith("/queries")
