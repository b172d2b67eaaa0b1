"""`geoxai assets`: found, missing and mismatched files, published digests, and the missing-VAE messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from geoxai import assets
from geoxai.cli import cli
from geoxai.embedders.cosplace import CosPlaceNet, released_weights_path
from geoxai.errors import GeoxaiError
from geoxai.ldm.autoencoder import load_autoencoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOXAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def hub_spec(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "spec.yaml", {"name": "cosplace", "backbone": "resnet18", "dim": 32,
                                               "image_size": 64, "weights": "hub"})


def save_release(backbone: str = "resnet18", dim: int = 32) -> Path:
    torch.manual_seed(0)
    path = released_weights_path(backbone, dim)
    torch.save(CosPlaceNet(backbone, dim).state_dict(), path)
    return path


def rows(**options) -> dict[str, assets.Row]:
    return {row.asset.path.name: row for row in assets.check_assets(**options).rows}


def test_missing_release_names_the_place_and_the_url_and_exits_1(cache):
    result = CliRunner().invoke(cli, ["assets", "--config", str(hub_spec(cache))])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if "ResNet18_32_cosplace.pth" in line)
    assert "missing" in line and str(cache / "cache" / "cosplace" / "ResNet18_32_cosplace.pth") in line
    assert "https://github.com/gmberton/CosPlace/releases/download/v1.0/ResNet18_32_cosplace.pth" in line
    assert assets.NOT_PUBLISHED in line  # no published hash: a dropped-in file is checked by its tensors only
    assert "0 of 1 found" in result.output


def test_found_release_is_checked_by_its_tensors_and_exits_0(cache):
    save_release()
    result = CliRunner().invoke(cli, ["assets", "--config", str(hub_spec(cache))])
    assert result.exit_code == 0, result.output
    assert "tensors match CosPlace resnet18 32-d" in result.output and assets.NOT_PUBLISHED in result.output
    assert "1 of 1 found" in result.output


def test_a_release_with_the_wrong_tensors_is_a_mismatch(cache):
    torch.save(CosPlaceNet("resnet18", 64).state_dict(), released_weights_path("resnet18", 32))
    row = rows(configs=[hub_spec(cache)])["ResNet18_32_cosplace.pth"]
    assert row.status == assets.MISMATCH and "aggregation.3.weight" in row.detail
    assert "the file looks like backbone resnet18 dim 64" in row.detail  # spec keys, not command-line flags
    released_weights_path("resnet18", 32).unlink()
    released_weights_path("resnet18", 32).mkdir()
    row = rows(configs=[hub_spec(cache)])["ResNet18_32_cosplace.pth"]
    assert row.status == assets.MISMATCH and row.detail == "a folder is there, not a file"


def test_recorded_digest_found_and_mismatch(cache, monkeypatch):
    path = save_release()
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(assets.PUBLISHED, path.name, assets.Digest("sha256", good, path.stat().st_size, "test"))
    row = rows(configs=[hub_spec(cache)])[path.name]
    assert row.status == assets.FOUND and "sha256 matches test" in row.detail
    bad = "0" * 64
    monkeypatch.setitem(assets.PUBLISHED, path.name, assets.Digest("sha256", bad, None, "test"))
    result = CliRunner().invoke(cli, ["assets", "--config", str(hub_spec(cache))])
    assert result.exit_code == 1
    assert f"mismatch: {path}: sha256 {good}, the release has {bad} (test)" in result.output
    monkeypatch.setitem(assets.PUBLISHED, path.name, assets.Digest("sha256", good, 12, "test"))
    row = rows(configs=[hub_spec(cache)])[path.name]
    assert row.status == assets.MISMATCH and f"size {path.stat().st_size} bytes, the release has 12" in row.detail


def test_plugin_weights_use_the_torch_hub_name_prefix_and_the_published_inception_hash(cache):
    from geoxai.evaluation.perceptual import inception_weights_file, lpips_weights_file

    found = rows(plugins="fidelity")
    lpips, inception = lpips_weights_file("alex"), inception_weights_file()
    assert {lpips.name, inception.name, "models--facebook--dinov2-small"} <= set(found)
    assert all(row.status == assets.MISSING for row in found.values())
    lpips.parent.mkdir(parents=True)
    lpips.write_bytes(b"not the alexnet weights")
    inception.write_bytes(b"not inception")
    found = rows(plugins="diversity,fidelity")
    digest = hashlib.sha256(b"not the alexnet weights").hexdigest()
    assert found[lpips.name].status == assets.MISMATCH
    assert f"sha256 {digest}, the release has 7be5be79..." in found[lpips.name].detail
    assert found[inception.name].status == assets.MISMATCH
    assert "size 13 bytes, the release has 95628359" in found[inception.name].detail
    assert len([r for r in assets.collect(plugins="diversity,fidelity") if r.path == lpips]) == 1  # listed once


def test_ldm_config_lists_embedder_autoencoder_and_folders(cache, monkeypatch):
    monkeypatch.chdir(cache)
    (cache / "train").mkdir()
    config = write_yaml(cache / "ldm.yaml", {
        "stage": "ldm", "data": {"train_dirs": ["train", "more"], "val_queries": "val"},
        "embedder": {"name": "cosplace", "backbone": "resnet18", "dim": 32, "weights": "hub"},
        "autoencoder": {"path": "models/first_stage_models/kl-f8/model.ckpt"}})
    found = {row.asset.needed_by: row for row in assets.check_assets([config]).rows}
    vae = found[f"{config.as_posix()}: autoencoder.path"]
    assert vae.status == assets.MISSING and vae.asset.source == "https://ommer-lab.com/files/latent-diffusion/kl-f8.zip"
    assert found[f"{config.as_posix()}: embedder.weights: hub"].status == assets.MISSING
    listed = assets.check_assets([config]).rows
    assert {r.asset.path for r in listed if r.asset.folder} == {Path("train"), Path("more"), Path("val")}
    train = next(r for r in listed if r.asset.path == Path("train"))
    assert train.status == assets.MISMATCH and "no .jpg/.jpeg/.png images" in train.detail


def test_compvis_file_found_by_its_tensors_and_garbage_is_a_mismatch(cache, monkeypatch):
    from test_autoencoder import tiny_vae, to_compvis

    monkeypatch.chdir(cache)
    path = cache / "models" / "first_stage_models" / "kl-f8" / "model.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in to_compvis(tiny_vae().state_dict()).items()}},
               path)
    (row,) = assets.check_assets(segmenter_config=None, configs=[write_yaml(
        cache / "c.yaml", {"stage": "ldm", "autoencoder": {"path": str(path)}})]).rows
    assert row.status == assets.FOUND and "CompVis KL autoencoder (ch 32, ch_mult [1, 1], z 4)" in row.detail
    torch.save({"state_dict": {"encoder.other": torch.zeros(1)}}, path)
    (row,) = assets.check_assets([cache / "c.yaml"]).rows
    assert row.status == assets.MISMATCH and "not a CompVis KL autoencoder" in row.detail


def test_segmenter_specs_hf_folder_and_sam_checkpoint(cache, monkeypatch):
    folder = cache / "segformer"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    sam = cache / "sam_vit_b_01ec64.pth"
    sam.write_bytes(b"x")
    spec = write_yaml(cache / "seg.yaml", {"name": "sam", "checkpoint": str(sam),
                                           "base": {"name": "hf", "model": str(folder)}})
    found = rows(segmenter_config=spec)
    assert found["segformer"].status == assets.MISMATCH
    assert "lacks preprocessor_config.json, weights (.safetensors)" in found["segformer"].detail
    assert found[sam.name].status == assets.MISMATCH
    assert f"md5 {hashlib.md5(b'x').hexdigest()}, the release has 01ec64d29a2fca3f0661936605ae66f8" \
        in found[sam.name].detail
    assert found[sam.name].asset.source == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"


def test_bad_invocations_are_one_line_errors(cache):
    runner = CliRunner()
    for args, message in ((["assets"], "nothing to check"),
                          (["assets", "--config", str(cache / "nope.yaml")], "config file not found"),
                          (["assets", "--plugins", "fidelity,,recall"], "an empty name between commas"),
                          (["assets", "--plugins", "fidelty"], "fidelty"),
                          (["assets", "--segmenter-config", str(cache / "nope.yaml")], "no such file"),
                          (["assets", "--segmenter-config", str(write_yaml(cache / "hf.yaml", {"name": "hf"}))],
                           "segmenter hf needs model:"),
                          (["assets", "--config", str(hub_spec(cache)), "dim=100"],
                           "weights hub: no released CosPlace weights for backbone resnet18 dim 100"),
                          (["assets", "--config", str(write_yaml(cache / "ldm.yaml", {"stage": "ldm", "embedder": {
                              "name": "cosplace", "backbone": "resnet51", "weights": "hub"}}))],
                           "embedder.backbone 'resnet51': not a CosPlace backbone")):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_missing_vae_names_the_source_for_the_config_in_use(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # configs/autoencoder/ of the checkout
    with pytest.raises(GeoxaiError) as kl:
        load_autoencoder({"path": str(tmp_path / "models" / "first_stage_models" / "kl-f8" / "model.ckpt")})
    assert "https://ommer-lab.com/files/latent-diffusion/kl-f8.zip" in str(kl.value)
    assert "synthcity" not in str(kl.value)
    thesis = yaml.safe_load((REPO / "configs" / "ldm" / "pitts30k-cosplace-r50-256.yaml").read_text())
    with pytest.raises(GeoxaiError, match="kl-f8.zip and unzip its model.ckpt"):
        load_autoencoder({"path": str(tmp_path / thesis["autoencoder"]["path"])})
    synthcity = yaml.safe_load((REPO / "configs" / "ldm" / "synthcity.yaml").read_text())
    with pytest.raises(GeoxaiError) as trained:
        load_autoencoder(synthcity["autoencoder"])
    assert "`geoxai train --config configs/autoencoder/synthcity.yaml`" in str(trained.value)
    assert "ommer-lab" not in str(trained.value)


def test_overrides_change_the_config_and_imagenet_starts_are_listed(cache):
    config = write_yaml(cache / "embedder.yaml", {"stage": "embedder", "data": {"train_dir": str(cache)},
                                                  "model": {"backbone": "resnet18", "pretrained": None}})
    assert [asset.path for asset in assets.collect([config])] == [cache]
    listed = assets.collect([config], overrides=["model.pretrained=imagenet", f"data.train_dir={cache / 'other'}"])
    assert [r.path.name for r in listed] == ["resnet18-f37072fd.pth", "other"]
    assert listed[0].path.parent == cache / "torch" / "hub" / "checkpoints"
    assert listed[0].source == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    result = CliRunner().invoke(cli, ["assets", "model.pretrained=imagenet"])
    assert result.exit_code == 2 and "give the config they apply to" in result.output
