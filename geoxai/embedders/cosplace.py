"""CosPlace (Berton et al., CVPR 2022): a torchvision backbone, GeM pooling and a linear projection.

The module tree mirrors the official release (``backbone.N.*``, ``aggregation.1.p``,
``aggregation.3.weight|bias``), so the released ``{Backbone}_{dim}_cosplace.pth`` files and our own
training checkpoints (``model_state_dict``) load with ``strict=True``. Backbones are built with
``weights=None``: nothing is downloaded unless ``weights="hub"`` asks for the released file, and
every file is read with ``weights_only=True`` (``geoxai.weights``). Without weights the network is a
*seeded* random init (``weights="random"``): an untrained network baseline that repeats run after run, and
that commands refuse unless it is asked for by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF

from geoxai.data.images import resize_center_crop
from geoxai.devices import resolve_device
from geoxai.embedders.base import IMAGENET_MEAN, IMAGENET_STD, Embedder
from geoxai.embedders.layers import GeM, L2Norm
from geoxai.embedders.specs import write_sidecar
from geoxai.errors import GeoxaiError, did_you_mean, setting
from geoxai.files import atomic_path
from geoxai.weights import check_state_dict, read_weights


class Backbone(NamedTuple):
    build: Callable[..., nn.Module]
    channels: int  # channels of the last convolution, the input of the projection
    release_name: str  # how the official release spells it in file names


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(torchvision.models.resnet18, 512, "ResNet18"),
    "resnet50": Backbone(torchvision.models.resnet50, 2048, "ResNet50"),
    "resnet101": Backbone(torchvision.models.resnet101, 2048, "ResNet101"),
    "resnet152": Backbone(torchvision.models.resnet152, 2048, "ResNet152"),
    "vgg16": Backbone(torchvision.models.vgg16, 512, "VGG16"),
}

# Descriptor sizes with released weights, per backbone (the official hubconf's list).
RELEASED_DIMS: dict[str, tuple[int, ...]] = {
    "resnet18": (32, 64, 128, 256, 512),
    "resnet50": (32, 64, 128, 256, 512, 1024, 2048),
    "resnet101": (32, 64, 128, 256, 512, 1024, 2048),
    "resnet152": (32, 64, 128, 256, 512, 1024, 2048),
    "vgg16": (64, 128, 256, 512),
}
RELEASE_URL = "https://github.com/gmberton/CosPlace/releases/download/v1.0/{file}"

DEFAULT_BACKBONE, DEFAULT_DIM, DEFAULT_IMAGE_SIZE = "resnet50", 512, 512  # the thesis' model
RANDOM, RANDOM_SEED = "random", 0  # weights=random: torch.manual_seed(0) init, the same in every run
_RESNET_LAYER3_BLOCKS = {2: "resnet18", 6: "resnet50", 23: "resnet101", 36: "resnet152"}


# ------------------------------------------------------------------------------------- network
def backbone_name(name: str) -> str:
    """Canonical lower-case backbone name; accepts the release's spelling (``ResNet50``)."""
    key = str(name).lower()
    if key not in BACKBONES:

        raise GeoxaiError(f"{setting('backbone')} {name!r}: not a CosPlace backbone.{did_you_mean(key, list(BACKBONES))} "
                          f"Choose one of {', '.join(BACKBONES)}")
    return key


def build_backbone(name: str, torchvision_state: dict[str, torch.Tensor] | None = None) -> tuple[nn.Sequential, int]:
    """A torchvision backbone cut before pooling, and its output channels.

    ResNets lose avgpool and fc; VGG16 keeps ``features`` without its last ReLU and max-pool.
    ``torchvision_state`` (torchvision's ImageNet state dict, read by the caller with
    ``weights_only=True``) is for training from ImageNet; the default is a random init. torchvision
    is never asked to load weights itself (its loader unpickles without ``weights_only``).
    """
    name = backbone_name(name)
    model = BACKBONES[name].build(weights=None)
    if torchvision_state is not None:
        model.load_state_dict(torchvision_state)
    if name.startswith("resnet"):
        layers = list(model.children())[:-2]
    else:
        layers = list(model.features.children())[:-2]
    return nn.Sequential(*layers), BACKBONES[name].channels


class CosPlaceNet(nn.Module):
    """Backbone -> L2Norm -> GeM -> Flatten -> Linear(channels, dim) -> L2Norm, on normalised images."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, dim: int = DEFAULT_DIM,
                 torchvision_state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.backbone, channels = build_backbone(backbone, torchvision_state)
        self.aggregation = nn.Sequential(L2Norm(), GeM(), nn.Flatten(), nn.Linear(channels, dim), L2Norm())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregation(self.backbone(images))


# ------------------------------------------------------------------------------------- weights
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a release file, a training checkpoint (``model_state_dict``) or a .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise GeoxaiError(f"{setting('weights')} {path}: no such file; give a CosPlace .pth file, "
                          "`hub` for the released weights, or `random` for a seeded random init")
    state = read_weights(path, setting("weights"))
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeoxaiError(f"{setting('weights')} {path}: holds no state dict (a mapping of names to tensors); "
                          "give a .pth state dict or a checkpoint with `model_state_dict`")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def guess_architecture(state: dict[str, torch.Tensor]) -> tuple[str | None, int | None]:
    """(backbone, dim) that a CosPlace state dict was saved from; None where it cannot tell."""
    projection = state.get("aggregation.3.weight")
    dim = int(projection.shape[0]) if projection is not None and projection.ndim == 2 else None
    if "backbone.4.0.conv1.weight" in state:  # ResNet: layer1 is child 4
        blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.6.")})
        name = _RESNET_LAYER3_BLOCKS.get(blocks)
        bottleneck = "backbone.4.0.conv3.weight" in state
        if name is None or bottleneck != (name != "resnet18"):
            name = None
    elif "backbone.28.weight" in state and "backbone.29.weight" not in state:
        name = "vgg16"
    else:
        name = None
    return name, dim


def check_cosplace_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    """One ``GeoxaiError`` naming every missing, unexpected and mis-shaped tensor, with the
    architecture the file looks like when it can tell."""
    backbone, dim = guess_architecture(state)
    if backbone is not None and dim is not None:
        hint = f"the file looks like {setting('backbone')} {backbone} {setting('dim')} {dim}"
    else:
        hint = "is it a CosPlace state dict?"
    check_state_dict(model.state_dict(), state, f"{setting('weights')} {source} for {what}", hint)


def released_weights_path(backbone: str, dim: int) -> Path:
    """Where ``weights: hub`` looks for the released file of (backbone, dim): ``$GEOXAI_CACHE/cosplace``.

    The file name is the release's own (``ResNet50_512_cosplace.pth``); its URL is
    ``RELEASE_URL.format(file=path.name)``. A pair without a release is an error; nothing is downloaded.
    """
    from geoxai.cache import cache_dir

    backbone = backbone_name(backbone)
    if dim not in RELEASED_DIMS[backbone]:
        pairs = "; ".join(f"{b}: {', '.join(map(str, d))}" for b, d in RELEASED_DIMS.items())
        raise GeoxaiError(f"{setting('weights')} hub: no released CosPlace weights for {setting('backbone')} "
                          f"{backbone} {setting('dim')} {dim}; released dims per backbone: {pairs} (any dim works "
                          f"with your own weights file)")
    return cache_dir("cosplace") / f"{BACKBONES[backbone].release_name}_{dim}_cosplace.pth"


def released_weights(backbone: str, dim: int) -> Path:
    """The released weights for (backbone, dim) in the geoxai cache, downloaded once when online."""
    target = released_weights_path(backbone, dim)
    folder, file = target.parent, target.name
    if target.is_file():
        return target
    url = RELEASE_URL.format(file=file)
    try:
        torch.hub.download_url_to_file(url, os.fspath(target), progress=True)
    except OSError as exc:  # URLError, HTTPError, timeouts, DNS failures are all OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise GeoxaiError(f"{setting('weights')} hub: cannot download {url} ({str(reason).splitlines()[0][:120]}); "
                          f"on an offline machine fetch that file elsewhere and put it into {folder}") from None
    return target


# ------------------------------------------------------------------------------------ embedder
class CosPlaceEmbedder(Embedder):
    """CosPlace as a geoxai embedder: Resize(image_size) -> CenterCrop -> ImageNet norm -> CosPlaceNet.

    ``weights``: a file path, ``"hub"`` (released weights, ``RELEASED_DIMS`` pairs only), or
    ``"random"`` / None (a seeded random init: an untrained network baseline, flagged by
    ``random_weights``). With a file and no ``backbone``/``dim``, both are read from the file's
    tensor shapes. Images smaller than ``image_size`` are scaled up, as in the thesis.
    """

    name = "cosplace"

    def __init__(self, backbone: str | None = None, dim: int | None = None, weights: str | Path | None = None,
                 image_size: int = DEFAULT_IMAGE_SIZE, device: str | torch.device = "auto") -> None:
        super().__init__()
        state, source = None, None
        if weights is not None and str(weights) == "hub":
            backbone = backbone_name(backbone or DEFAULT_BACKBONE)
            dim = _positive_int(DEFAULT_DIM if dim is None else dim, "dim")
            source = released_weights(backbone, dim)
            state = read_state_dict(source)
        elif weights is not None and str(weights) != RANDOM:
            source = Path(weights)
            state = read_state_dict(source)
            guessed_backbone, guessed_dim = guess_architecture(state)
            backbone = backbone if backbone is not None else guessed_backbone
            dim = dim if dim is not None else guessed_dim
        self.backbone_name = backbone_name(backbone or DEFAULT_BACKBONE)
        self.dim = _positive_int(DEFAULT_DIM if dim is None else dim, "dim")
        self.image_size = _positive_int(image_size, "image_size")
        if self.image_size < 32:
            raise GeoxaiError(f"{setting('image_size')} {image_size}: CosPlace backbones downsample 32x; "
                              "use at least 32")
        self.weights = RANDOM if state is None else str(weights)
        if state is None:  # seeded, without touching the caller's random state
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                self.net = CosPlaceNet(self.backbone_name, self.dim)
        else:  # built on the meta device: a random init that is overwritten anyway costs seconds
            with torch.device("meta"):
                self.net = CosPlaceNet(self.backbone_name, self.dim)
            check_cosplace_state(self.net, state, str(source), f"cosplace {self.backbone_name} dim {self.dim}")
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            self.net.load_state_dict(state, strict=True, assign=True)
        self.requires_grad_(False).eval()  # frozen: a descriptor model, not a trainable part
        device = resolve_device(device)
        if device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)
        self.to(device)

    @property
    def random_weights(self) -> bool:
        return self.weights == RANDOM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors of already preprocessed (resized, ImageNet-normalised) images."""
        return self.net(images)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the network's input: resize, centre crop, ImageNet normalisation."""
        images = resize_center_crop(images.to(self.device, torch.float32), self.image_size)
        images = TF.normalize(images, IMAGENET_MEAN, IMAGENET_STD)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"embed expects images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.net(self.preprocess(images)).float()
        finally:
            self.train(was_training)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "backbone": self.backbone_name, "dim": self.dim,
                "weights": self.weights, "image_size": self.image_size}

    def save(self, path: str | Path) -> Path:
        """Write the weights in the release layout and an ``embedder.yaml`` spec beside them."""
        path = Path(path)
        state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        write_sidecar(path, {**self.spec(), "weights": str(path)})
        return path

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name}, dim={self.dim}, image_size={self.image_size}, weights={self.weights}"


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(str(value))  # int("3.5"), int("True") fail: no silent truncation
    except ValueError:
        number = 0
    if number <= 0:
        raise GeoxaiError(f"{setting(name)} {value!r}: must be a positive integer")
    return number
