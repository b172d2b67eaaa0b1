"""CosPlace embedder: official state-dict layout, weight formats, hub handling, preprocessing, registry."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms import v2

from geoxai import embedders
from geoxai.embedders.cosplace import RELEASED_DIMS, CosPlaceEmbedder, CosPlaceNet
from geoxai.errors import GeoxaiError


# ---------------------------------------------------------------- the official construction, re-stated
class RefL2Norm(nn.Module):
    def forward(self, x):
        return F.normalize(x, p=2.0, dim=1)


class RefGeM(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * 3)

    def forward(self, x):
        return F.avg_pool2d(x.clamp(min=1e-6).pow(self.p), (x.size(-2), x.size(-1))).pow(1.0 / self.p)


class RefFlatten(nn.Module):
    def forward(self, x):
        return x[:, :, 0, 0]


class Reference(nn.Module):
    """How the release builds its network: torchvision model cut before pooling + aggregation."""

    def __init__(self, backbone: str, dim: int):
        super().__init__()
        model = getattr(torchvision.models, backbone)(weights=None)
        if backbone.startswith("resnet"):
            layers, channels = list(model.children())[:-2], 512 if backbone == "resnet18" else 2048
        else:
            layers, channels = list(model.features.children())[:-2], 512
        self.backbone = nn.Sequential(*layers)
        self.aggregation = nn.Sequential(RefL2Norm(), RefGeM(), RefFlatten(), nn.Linear(channels, dim), RefL2Norm())

    def forward(self, x):
        return self.aggregation(self.backbone(x))


def _shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOXAI_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def small() -> CosPlaceEmbedder:
    torch.manual_seed(0)
    return CosPlaceEmbedder(backbone="resnet18", dim=32, image_size=64, device="cpu")


@pytest.mark.parametrize("backbone,dim,count", [("resnet18", 128, 123), ("resnet50", 512, 321), ("vgg16", 256, 29)])
def test_state_dict_keys_and_shapes_equal_the_official_layout(backbone, dim, count):
    with torch.device("meta"):  # layout only: skip the (slow) random init
        ours, reference = CosPlaceNet(backbone, dim), Reference(backbone, dim)
    assert _shapes(ours) == _shapes(reference)
    assert len(ours.state_dict()) == count
    assert {"aggregation.1.p", "aggregation.3.weight", "aggregation.3.bias"} <= set(ours.state_dict())


def test_reference_weights_load_strictly_and_give_the_same_descriptors(tmp_path):
    torch.manual_seed(1)
    reference = Reference("resnet18", 64).eval()
    path = tmp_path / "ResNet18_64_cosplace.pth"
    torch.save(reference.state_dict(), path)  # the release format: a bare state dict
    embedder = CosPlaceEmbedder(backbone="resnet18", dim=64, weights=path, image_size=64, device="cpu")
    images = torch.rand(2, 3, 64, 64)
    normalised = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(images)
    with torch.no_grad():
        expected = reference(normalised)
    torch.testing.assert_close(embedder.embed(images), expected, rtol=1e-5, atol=1e-5)


def test_embed_returns_unit_vectors_of_the_right_shape_without_grad(small):
    descriptors = small.embed(torch.rand(3, 3, 70, 90))
    assert descriptors.shape == (3, 32) and descriptors.dtype == torch.float32
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(3))
    assert not descriptors.requires_grad


def test_embed_runs_in_eval_mode_and_restores_the_mode(small):
    small.train()
    images = torch.rand(2, 3, 64, 64)
    first, second = small.embed(images), small.embed(images[:1])
    torch.testing.assert_close(first[:1], second)  # batch statistics would make these differ
    assert small.training


def test_preprocessing_matches_torchvision_resize_crop_normalise(small):
    images = torch.rand(2, 3, 100, 80)
    reference = v2.Compose([v2.Resize(64, antialias=True), v2.CenterCrop(64),
                            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    torch.testing.assert_close(small.preprocess(images), reference(images))


def test_images_smaller_than_the_crop_are_scaled_up(small):
    tiny = torch.rand(1, 3, 20, 30)
    assert small.preprocess(tiny).shape == (1, 3, 64, 64)
    upscaled = v2.functional.resize(tiny, [64], antialias=True)  # 64 x 96, then the centre crop
    torch.testing.assert_close(small.embed(tiny), small.embed(upscaled))


def test_save_and_reload_give_identical_descriptors_and_identity(small, tmp_path):
    path = small.save(tmp_path / "weights" / "model.pth")
    sidecar = embedders.read_spec(tmp_path / "weights" / embedders.SIDECAR)
    assert sidecar["weights"] == str(path)
    reloaded = embedders.from_spec(sidecar, device="cpu")
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(small.embed(images), reloaded.embed(images))
    assert small.identity() == reloaded.identity()
    assert reloaded.spec() == {"name": "cosplace", "backbone": "resnet18", "dim": 32, "weights": str(path),
                               "image_size": 64}


def test_identity_changes_with_weights_and_preprocessing(small):
    other = CosPlaceEmbedder(backbone="resnet18", dim=32, image_size=64, device="cpu")
    with torch.no_grad():
        other.net.aggregation[3].weight.add_(1e-3)  # the same architecture, other numbers
    bigger = embedders.from_spec({**small.spec(), "image_size": 96}, device="cpu")
    bigger.net.load_state_dict(small.net.state_dict())
    assert len({small.identity(), other.identity(), bigger.identity()}) == 3


def test_training_checkpoint_with_model_state_dict_loads(small, tmp_path):
    path = tmp_path / "last_checkpoint.pth"
    torch.save({"epoch_num": 3, "model_state_dict": small.net.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": []}, "best_val_recall1": 81.5}, path)
    loaded = CosPlaceEmbedder(weights=path, image_size=64, device="cpu")  # backbone and dim read from the file
    assert (loaded.backbone_name, loaded.dim) == ("resnet18", 32)
    images = torch.rand(1, 3, 64, 64)
    assert torch.equal(small.embed(images), loaded.embed(images))


def test_weights_of_another_architecture_list_every_problem_in_one_line(small, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(small.net.state_dict(), path)
    with pytest.raises(GeoxaiError) as info:
        CosPlaceEmbedder(backbone="vgg16", dim=64, weights=path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "25 missing keys (backbone.0.bias, backbone.2.weight" in message
    assert "119 unexpected keys (backbone.1.weight" in message
    assert "shape mismatches" in message and "backbone.0.weight [64, 3, 7, 7] vs [64, 3, 3, 3]" in message
    assert "--backbone resnet18 --dim 32" in message  # what the file actually is


def test_unreadable_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(GeoxaiError, match="not readable as weights"):
        CosPlaceEmbedder(weights=path, device="cpu")
    with pytest.raises(GeoxaiError, match="no such file"):
        CosPlaceEmbedder(weights=tmp_path / "missing.pth", device="cpu")


def test_hub_with_an_unreleased_pair_lists_the_released_ones(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    with pytest.raises(GeoxaiError) as info:
        CosPlaceEmbedder(backbone="resnet18", dim=1024, weights="hub", device="cpu")
    message = str(info.value)
    assert "resnet18: 32, 64, 128, 256, 512" in message and "vgg16: 64, 128, 256, 512" in message
    assert "resnet50: 32, 64, 128, 256, 512, 1024, 2048" in message
    assert RELEASED_DIMS["vgg16"] == (64, 128, 256, 512)


def test_hub_offline_names_the_file_and_the_folder(monkeypatch, tmp_path):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(GeoxaiError) as info:
        CosPlaceEmbedder(backbone="ResNet18", dim=32, weights="hub", device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "https://github.com/gmberton/CosPlace/releases/download/v1.0/ResNet18_32_cosplace.pth" in message
    assert str(tmp_path / "cache" / "cosplace") in message


def test_hub_uses_a_file_already_in_the_cache_without_network(small, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    folder = tmp_path / "cache" / "cosplace"
    folder.mkdir(parents=True)
    torch.save(small.net.state_dict(), folder / "ResNet18_32_cosplace.pth")
    loaded = CosPlaceEmbedder(backbone="resnet18", dim=32, weights="hub", image_size=64, device="cpu")
    images = torch.rand(1, 3, 64, 64)
    assert torch.equal(small.embed(images), loaded.embed(images))
    assert loaded.spec()["weights"] == "hub"


def test_local_weights_allow_any_dim(tmp_path):
    trained = CosPlaceEmbedder(backbone="resnet18", dim=48, image_size=64, device="cpu")
    path = trained.save(tmp_path / "trained.pth")
    assert CosPlaceEmbedder(weights=path, image_size=64, device="cpu").dim == 48


def test_bad_options_are_geoxai_errors():
    with pytest.raises(GeoxaiError, match="did you mean 'resnet50'"):
        embedders.load("cosplace", backbone="resnet05")
    with pytest.raises(GeoxaiError, match="positive integer"):
        embedders.load("cosplace", backbone="resnet18", dim=-4)
    with pytest.raises(GeoxaiError, match="unknown option 'dims'.*did you mean 'dim'"):
        embedders.load("cosplace", dims=512)
    with pytest.raises(GeoxaiError, match="unknown embedder"):
        embedders.from_spec({"name": "cosplaec"})


def test_cosplace_is_registered_through_the_entry_point():
    assert "cosplace" in embedders.names()
    embedder = embedders.from_spec({"name": "cosplace", "backbone": "resnet18", "dim": 16, "image_size": 32},
                                   device="cpu")
    assert isinstance(embedder, embedders.Embedder) and embedder.dim == 16 and embedder.image_size == 32
