"""No code runs from a weights file: a pickle with a payload is refused, in one line, at every door.

Each test plants a file whose unpickling would create a marker file (the "payload"), hands it to one
of the places where geoxai (or a library on its behalf) loads weights, and checks that the command
fails with a one-line error and that the marker never appears.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from geoxai.cli import cli
from geoxai.errors import GeoxaiError


class Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, wrap=lambda payload: {"weights": payload}) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Payload(marker)), path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "the payload inside the weights file ran"


def one_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_embedder_weights_option(tmp_path, marker):
    evil = plant(tmp_path / "evil.pth", marker)
    line = one_line(CliRunner().invoke(cli, ["probe", "--weights", str(evil), "--places", "2", "--size", "32",
                                             "--device", "cpu"]))
    assert "--weights" in line and "refused" in line and "GLOBAL" in line


def test_embedder_spec_from_a_training_config_names_the_key(tmp_path, marker):
    from geoxai.embedders import from_spec
    from geoxai.errors import settings_from

    evil = plant(tmp_path / "evil.pth", marker)
    with settings_from("embedder"), pytest.raises(GeoxaiError, match=r"^embedder\.weights .*refused"):
        from_spec({"name": "cosplace", "weights": str(evil)})


def test_imagenet_weights_from_the_torch_hub_cache(tmp_path, marker, monkeypatch):
    """model.pretrained=imagenet reads torchvision's file itself, never through torchvision's unpickling loader."""
    import torchvision

    from geoxai.embedders.training import build_network

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = torchvision.models.get_model_weights("resnet18")["IMAGENET1K_V1"].url
    plant(Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, marker)
    with pytest.raises(GeoxaiError, match=r"model\.pretrained=imagenet .*refused"):
        build_network({"backbone": "resnet18", "dim": 8, "pretrained": "imagenet", "train_all_layers": None})


def test_lightning_resume_of_every_stage(tmp_path, marker):
    """`geoxai train --resume` reads checkpoints/last.ckpt through SafeCheckpointIO (weights_only=True)."""
    from geoxai.trainer import SafeCheckpointIO

    evil = plant(tmp_path / "run" / "checkpoints" / "last.ckpt", marker, wrap=lambda p: {"state_dict": {}, "x": p})
    with pytest.raises(GeoxaiError, match=r"^--resume .*refused"):
        SafeCheckpointIO().load_checkpoint(evil, weights_only=False)  # Lightning's own request is overridden
    from geoxai.ldm.loading import read_checkpoint

    with pytest.raises(GeoxaiError, match=r"^--resume .*refused"):
        read_checkpoint(evil, setting="--resume")


def test_ldm_checkpoint_for_sampling(tmp_path, marker):
    evil = plant(tmp_path / "last.ckpt", marker, wrap=lambda p: {"state_dict": {}, "hyper_parameters": p})
    from PIL import Image

    (tmp_path / "queries").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "queries" / "q.png")
    line = one_line(CliRunner().invoke(cli, ["sample", "--checkpoint", str(evil), "--queries", str(tmp_path / "queries"),
                                             "--out", str(tmp_path / "run"), "--device", "cpu"]))
    assert "--checkpoint" in line and "refused" in line
    assert not (tmp_path / "run").exists()


def test_autoencoder_files(tmp_path, marker):
    """A diffusers folder with a pickled .bin, and a CompVis single file, are both refused."""
    from geoxai.ldm.autoencoder import load_autoencoder

    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"],
        "block_out_channels": [8], "layers_per_block": 1, "norm_num_groups": 4}))
    plant(folder / "diffusion_pytorch_model.bin", marker, wrap=lambda p: {"encoder.conv_in.weight": p})
    with pytest.raises(GeoxaiError, match=r"autoencoder\.path"):
        load_autoencoder({"path": str(folder)})
    single = plant(tmp_path / "kl-f8.ckpt", marker, wrap=lambda p: {"state_dict": p})
    with pytest.raises(GeoxaiError, match=r"autoencoder\.path .*refused"):
        load_autoencoder({"path": str(single)})


def test_library_loads_are_forced_to_weights_only(tmp_path, marker):
    """Inside weights_only_loads (and in every `geoxai` process) a library's weights_only=False is overridden."""
    from geoxai.weights import FORCE_VARIABLE, weights_only_loads

    evil = plant(tmp_path / "hub-file.pth", marker)
    before = os.environ.get(FORCE_VARIABLE)
    with pytest.raises(GeoxaiError, match="refused"), weights_only_loads():
        torch.load(evil, weights_only=False)  # what torch.hub.load_state_dict_from_url does by default
    assert os.environ.get(FORCE_VARIABLE) == before


def test_plain_state_dicts_still_load(tmp_path):
    """The guard refuses objects, not weights: tensors, numbers and strings load as before."""
    from geoxai.weights import read_weights, weights_only_loads

    path = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(2), "step": 3, "name": "x", "nested": {"b": [torch.zeros(1)]}}, path)
    assert read_weights(path, "--weights")["step"] == 3
    with weights_only_loads():
        assert torch.load(path, weights_only=False)["name"] == "x"
