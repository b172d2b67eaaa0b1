"""The shipped SynthCity models: each loads by name, a generation resembles its query's place, and
bad names and damaged files are one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from geoxai import pretrained
from geoxai.errors import GeoxaiError

pytestmark = pytest.mark.skipif(not pretrained.names("ldm"), reason="no shipped models in this checkout")


def test_every_shipped_kind_is_there_with_a_card_and_within_50_mb():
    for kind in pretrained.KINDS:
        assert pretrained.names(kind) == ["synthcity"], kind
        assert (pretrained.folder("synthcity", kind) / "MODEL_CARD.md").is_file(), kind
    total = sum(p.stat().st_size for p in (pretrained.ROOT / "synthcity").rglob("*") if p.is_file())
    assert total < 50 * 2**20
    # every weights file is safetensors: nothing shipped is unpickled
    weights = [p for p in (pretrained.ROOT / "synthcity").rglob("*") if p.suffix in (".pth", ".pt", ".bin", ".ckpt")]
    assert weights == []


def test_every_shipped_model_loads_by_name():
    from geoxai.embedders import load
    from geoxai.ldm.autoencoder import load_autoencoder
    from geoxai.ldm.loading import load_components
    from geoxai.segmentation.base import load as load_segmenter

    embedder = load("synthcity")
    assert embedder.dim == 512 and not embedder.random_weights
    assert all(p.dtype == torch.float32 for p in embedder.parameters())  # fp16 storage, fp32 compute
    components = load_components("synthcity")
    assert components.context_dim == embedder.dim
    assert components.identities["embedder"] == embedder.identity()
    assert components.guidance is not None and components.guidance >= 1  # chosen on validation places
    vae = load_autoencoder({"path": "synthcity"})
    assert next(vae.parameters()).dtype == torch.float32
    segmenter = load_segmenter("synthcity")  # the backend's default weights are the shipped ones
    labels = segmenter.segment(torch.rand(1, 3, 128, 128))
    assert labels.shape[-2:] == (128, 128)


def _render_queries(folder: Path, places: list[int]) -> None:
    """Visit 1 of test places of the default world, named as `geoxai data synthcity` names them."""
    from geoxai.synthcity import SynthCity
    from geoxai.synthcity.world import image_name

    city = SynthCity(seed=0, size=128)
    folder.mkdir(parents=True)
    for place in places:
        Image.fromarray(city.render(place, 1).image).save(folder / image_name(city, place, 1))


def test_a_shipped_generation_resembles_its_query_and_not_other_places(tmp_path):
    """Loose bound, but random weights fail it: generations of unseen test places, scored by the embedder."""
    from geoxai.data.images import load_tensor
    from geoxai.embedders import load
    from geoxai.ldm.loading import load_components
    from geoxai.ldm.sampling import sample_run
    from geoxai.synthcity import SynthCity

    city = SynthCity(seed=0, size=128)
    places = [p for p in range(200) if city.is_test_place(p, 0.3)][:4]
    _render_queries(tmp_path / "queries", places)
    run = sample_run("synthcity", tmp_path / "queries", tmp_path / "run", samples=1, steps=12, progress=False)
    assert run.settings["guidance"] == load_components("synthcity").guidance  # the model's own default
    embedder = load("synthcity")
    manifest = run.manifest(absolute=True)
    assert len(manifest) == 4 and manifest.query_path.nunique() == 4
    q = embedder.embed(torch.stack([load_tensor(p) for p in manifest.query_path]))
    g = embedder.embed(torch.stack([load_tensor(p) for p in manifest.image_path]))
    cosine = (g @ q.T).numpy()
    paired = np.diag(cosine)
    other = cosine[~np.eye(4, dtype=bool)]
    assert paired.mean() > 0.45, cosine
    assert paired.mean() - other.mean() > 0.2, cosine


def test_unknown_shipped_names_list_the_shipped_ones(tmp_path):
    from click.testing import CliRunner

    from geoxai.cli import cli

    result = CliRunner().invoke(cli, ["sample", "--checkpoint", "synthcty", "--queries", str(tmp_path),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert "--checkpoint synthcty" in line and "shipped: synthcity" in line and "did you mean 'synthcity'" in line
    from geoxai.embedders import load

    with pytest.raises(GeoxaiError, match=r"unknown embedder 'synthcty'.*synthcity \(shipped model\)"):
        load("synthcty")
    with pytest.raises(GeoxaiError, match="shipped model and takes no options"):
        load("synthcity", dim=256)


def _copy_ldm(tmp_path: Path) -> Path:
    copy = tmp_path / "ldm"
    shutil.copytree(pretrained.folder("synthcity", "ldm"), copy)
    return copy


def test_an_embedder_of_another_dimension_names_both(tmp_path):
    from geoxai.ldm.loading import load_components
    from geoxai.ldm.sampling import frozen_models

    copy = _copy_ldm(tmp_path)
    manifest = yaml.safe_load((copy / "geoxai.yaml").read_text())
    manifest["training_config"]["embedder"] = {"name": "cosplace", "backbone": "resnet18", "dim": 256,
                                               "weights": "random", "image_size": 128}
    (copy / "geoxai.yaml").write_text(yaml.safe_dump(manifest))
    components = load_components(copy)
    with pytest.raises(GeoxaiError, match=r"its embedder \(.*dim 256.*name cosplace.*\) gives "
                                          r"256-d descriptors but the model is conditioned on 512-d"):
        frozen_models(components, copy)


def test_a_damaged_safetensors_file_is_one_line_naming_it(tmp_path):
    from geoxai.ldm.loading import load_components

    copy = _copy_ldm(tmp_path)
    unet = copy / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    with pytest.raises(GeoxaiError) as info:
        load_components(copy)
    assert str(unet) in str(info.value) and "\n" not in str(info.value)

    from geoxai.embedders import from_spec

    weights = tmp_path / "model.safetensors"
    source = pretrained.folder("synthcity", "embedder") / "model.safetensors"
    weights.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(GeoxaiError) as info:
        from_spec({"name": "cosplace", "backbone": "resnet18", "dim": 512, "weights": str(weights)})
    assert str(weights) in str(info.value) and "\n" not in str(info.value)


def test_build_packs_a_set_that_loads_and_samples_by_name(tmp_path, monkeypatch):
    """`geoxai pretrained build` from training outputs: fp16 safetensors, cards, identities of the stored
    weights, the model's guidance; the set then samples by name (here from a tiny random set)."""
    from click.testing import CliRunner
    from safetensors.torch import load_file
    from tiny_models import TINY_UNET, save_tiny_vae, write_queries

    from geoxai.cli import cli
    from geoxai.embedders import from_spec
    from geoxai.ldm.module import LatentDiffusion
    from geoxai.ldm.sampling import sample_run
    from geoxai.segmentation.synthcity import SegmentationNet, network_config, save_segmenter

    embedder_dir = tmp_path / "embedder"
    embedder = from_spec({"name": "cosplace", "backbone": "resnet18", "dim": 8, "weights": "random", "image_size": 32})
    embedder.save(embedder_dir / "cosplace_resnet18_8.pth")
    vae = save_tiny_vae(tmp_path / "vae")
    spec = {"name": "cosplace", "backbone": "resnet18", "dim": 8, "image_size": 32,
            "weights": str(embedder_dir / "cosplace_resnet18_8.pth")}
    config = {"stage": "ldm", "data": {"image_size": 16}, "embedder": spec, "autoencoder": {"path": str(vae)},
              "unet": TINY_UNET, "conditioning": {"mode": "bias"}, "optim": {"use_ema": False},
              "diffusion": {"scale_by_std": False, "scale_factor": 0.5}}
    torch.manual_seed(0)
    model = LatentDiffusion(config, context_dim=8)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"config": config, "context_dim": 8}},
               tmp_path / "last.ckpt")
    net = SegmentationNet("unet", 11, [4, 8])
    save_segmenter(net, tmp_path / "segmenter", network_config("unet", 11, 16, [4, 8]))

    monkeypatch.setattr(pretrained, "ROOT", tmp_path / "shipped")
    result = CliRunner().invoke(cli, ["pretrained", "build", "tinyset", "--embedder", str(embedder_dir),
                                      "--checkpoint", str(tmp_path / "last.ckpt"), "--segmenter",
                                      str(tmp_path / "segmenter"), "--guidance", "2.5"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    root = tmp_path / "shipped" / "tinyset"
    for kind in pretrained.KINDS:
        assert pretrained.names(kind) == ["tinyset"]
        assert (pretrained.folder("tinyset", kind) / "MODEL_CARD.md").read_text().startswith("# tinyset")
    for file in root.rglob("*.safetensors"):
        assert all(t.dtype in (torch.float16, torch.int64) for t in load_file(str(file)).values()) or \
            file.parent.name == "conditioner", file
    queries = write_queries(tmp_path / "queries", count=2)
    run = sample_run("tinyset", queries, tmp_path / "run", samples=1, steps=2, progress=False)
    assert len(run.manifest()) == 2
    assert run.settings["guidance"] == 2.5 and run.settings["embedder"] == {"name": "tinyset"}
    listing = CliRunner().invoke(cli, ["pretrained"])
    assert listing.exit_code == 0 and "tinyset" in listing.output and "segmenter" in listing.output

    # Rebuilding after retraining only the LDM keeps the shipped embedder and segmenter bit for bit,
    # cards included; the LDM must have been trained on the embedder it is shipped with.
    kept = {p.relative_to(root): p.read_bytes() for kind in ("embedder", "segmenter") for p in (root / kind).rglob("*")
            if p.is_file()}
    torch.manual_seed(1)
    retrained = LatentDiffusion({**config, "embedder": {"name": "tinyset"}}, context_dim=8,
                                identities={"embedder": from_spec({"name": "tinyset"}).identity()})
    torch.save({"state_dict": retrained.state_dict(), "hyper_parameters": dict(retrained.hparams)}, tmp_path / "new.ckpt")
    result = CliRunner().invoke(cli, ["pretrained", "build", "tinyset", "--embedder", "tinyset", "--checkpoint",
                                      str(tmp_path / "new.ckpt"), "--segmenter", "tinyset"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert {p: root.joinpath(p).read_bytes() for p in kept} == kept
    unet = load_file(str(next((root / "ldm" / "unet").glob("*.safetensors"))))
    first = next(k for k in unet if k.endswith("weight"))
    assert torch.equal(unet[first], retrained.state_dict()[f"unet.{first}"].half())  # the new LDM is in
    assert len(sample_run("tinyset", queries, tmp_path / "run2", samples=1, steps=2, progress=False).manifest()) == 2

    other = LatentDiffusion({**config, "embedder": {"name": "tinyset"}}, context_dim=8, identities={"embedder": "0" * 16})
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, tmp_path / "other.ckpt")
    result = CliRunner().invoke(cli, ["pretrained", "build", "tinyset", "--embedder", "tinyset", "--checkpoint",
                                      str(tmp_path / "other.ckpt"), "--segmenter", "tinyset"])
    assert result.exit_code == 2 and "trained with embedder 0000000000000000" in result.output, result.output
    assert {p: root.joinpath(p).read_bytes() for p in kept} == kept  # a refused build leaves the set as it was
