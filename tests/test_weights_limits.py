"""Weights and config files are size-checked before they are inflated, and a library that cannot load a
weights file is one line naming the file and its folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from geoxai.config import MAX_YAML_BYTES, load_config, read_yaml
from geoxai.errors import GeoxaiError
from geoxai.segmentation import mappings
from geoxai.weights import inflated_size, read_weights


def zip_bomb_checkpoint(path: Path, megabytes: int) -> Path:
    """A real torch checkpoint plus a deflated entry of ``megabytes`` of zeros (a few KB on disk)."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{path.stem}/data/99", bytes(megabytes * 2**20))
    return path


def test_a_compressed_checkpoint_that_inflates_beyond_the_limit_is_refused(tmp_path, monkeypatch):
    bomb = zip_bomb_checkpoint(tmp_path / "bomb.pt", 64)
    assert bomb.stat().st_size < 2**20 and inflated_size(bomb) > 64 * 2**20
    monkeypatch.setattr("geoxai.weights.MAX_WEIGHTS_BYTES", 32 * 2**20)
    with pytest.raises(GeoxaiError, match=r"^--weights .*bomb.pt: refused: its contents take 64.0 MiB once read, "
                                          r"more than the limit of 32.0 MiB .*GEOXAI_MAX_WEIGHTS_BYTES"):
        read_weights(bomb, "--weights")
    monkeypatch.setenv("GEOXAI_MAX_WEIGHTS_BYTES", str(128 * 2**20))  # a genuine big model: the limit raised
    assert torch.equal(read_weights(tmp_path / "bomb.pt", "--weights")["w"], torch.zeros(2))


def test_safetensors_sizes_come_from_the_header(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1024)}, tmp_path / "ok.safetensors")
    assert inflated_size(tmp_path / "ok.safetensors") == (tmp_path / "ok.safetensors").stat().st_size
    monkeypatch.setattr("geoxai.weights.MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(GeoxaiError, match="ok.safetensors: refused: its contents take"):
        read_weights(tmp_path / "ok.safetensors", "--weights")
    (tmp_path / "liar.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(GeoxaiError, match=r"liar.safetensors: not readable as weights \("):
        read_weights(tmp_path / "liar.safetensors", "--weights")


def test_yaml_alias_bomb_is_refused(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join(['*' + previous] * 9)}]")
    (tmp_path / "laughs.yaml").write_text("\n".join(lines) + "\n")  # 9**9 values once expanded
    with pytest.raises(GeoxaiError, match=r"laughs.yaml:\d+:\d+: invalid YAML in the config \(its aliases \(\*name\) "
                                          r"expand to more than 1000000 values, refused as an alias bomb\)"):
        load_config(tmp_path / "laughs.yaml")
    (tmp_path / "loop.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(GeoxaiError, match=r"loop.yaml:1:4: .*an alias refers to the value that contains it"):
        load_config(tmp_path / "loop.yaml")


def test_aliases_as_yaml_writes_them_still_load(tmp_path):
    shared = {"dim": 16}
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump({"embedder": shared, "copy": shared}))
    assert "*id001" in (tmp_path / "shared.yaml").read_text()
    assert load_config(tmp_path / "shared.yaml") == {"embedder": {"dim": 16}, "copy": {"dim": 16}}


def test_oversized_yaml_is_refused_before_parsing(tmp_path):
    (tmp_path / "huge.yaml").write_text("a: 1\n" + "#" * MAX_YAML_BYTES)
    with pytest.raises(GeoxaiError, match=r"huge.yaml: refused: the run.yaml of a GenerationRun is larger than 4 MiB"):
        read_yaml(tmp_path / "huge.yaml", "run.yaml of a GenerationRun")


def test_diffusers_names_the_file_and_folder_it_cannot_load(tmp_path):
    from tiny_models import save_tiny_vae

    from geoxai.ldm.autoencoder import load_autoencoder

    folder = save_tiny_vae(tmp_path / "vae")
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated by a failed copy
    with pytest.raises(GeoxaiError) as caught:
        load_autoencoder({"path": str(folder)})
    line = str(caught.value)
    assert line.startswith(f"autoencoder.path: weights file diffusion_pytorch_model.safetensors in {folder}: ")
    assert "\n" not in line and "save_pretrained" in line


def test_transformers_names_the_file_and_folder_it_cannot_load(tmp_path):
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    from geoxai.segmentation.hf import HFSegmenter

    names = [name for name, _ in mappings.CITYSCAPES]
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1],
                             decoder_hidden_size=8, id2label=dict(enumerate(names)),
                             label2id={name: i for i, name in enumerate(names)})
    folder = tmp_path / "segformer"
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor().save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + json.dumps({}).encode())
    with pytest.raises(GeoxaiError) as caught:
        HFSegmenter(model=str(folder), device="cpu")
    line = str(caught.value)
    assert f"weights file model.safetensors in {folder}" in line and "\n" not in line
