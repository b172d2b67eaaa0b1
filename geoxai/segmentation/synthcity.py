"""``synthcity``: a small network trained on SynthCity renders, for label maps of *generated* images.

Ground truth (``groundtruth``) exists only for rendered images; an explainer's generations have
none, yet the plugins need their label maps. This backend predicts them with a compact
fully-convolutional network trained by ``geoxai train --config configs/segmenter/synthcity.yaml``
(``geoxai.segmentation.synthcity_training``) on the world's training places only, so it never saw
the test places whose generations it labels, and with colour and lighting jitter, since
generations shift both.

The trained network is one ``segmenter.safetensors`` file whose metadata records the architecture,
the class count and the training image size, so the file alone rebuilds the model (nothing is
unpickled). ``weights`` may name that file, the training output folder, or its ``segmenter.yaml``.
Images are resized to the training size and the logits upsampled back to the input size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geoxai import labels as L
from geoxai import pretrained
from geoxai.errors import GeoxaiError, did_you_mean
from geoxai.segmentation.base import Segmenter
from geoxai.weights import check_state_dict

WEIGHTS_NAME = "segmenter.safetensors"
SPEC_NAME = "segmenter.yaml"
DEFAULT_WEIGHTS = "runs/segmenter/synthcity"  # output_dir of configs/segmenter/synthcity.yaml
FORMAT = "geoxai-segmenter"
TORCHVISION_ARCHITECTURES = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
ARCHITECTURES = ("unet",) + TORCHVISION_ARCHITECTURES
TRAIN_COMMAND = "geoxai train --config configs/segmenter/synthcity.yaml"


# ------------------------------------------------------------------------------------ networks
def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small UNet (Ronneberger et al., 2015) with batch norm: full-resolution logits, so that
    one-pixel poles and the outlines of cars survive, at a fraction of a MobileNet's cost on a CPU."""

    def __init__(self, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        self.down = nn.ModuleList()
        channels = 3
        for width in widths:
            self.down.append(_double_conv(channels, width))
            channels = width
        self.upsample, self.up = nn.ModuleList(), nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.up.append(_double_conv(2 * width, width))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


class SegmentationNet(nn.Module):
    """Images in [0, 1] -> logits [B, classes, H, W] at the input size, whatever the body."""

    def __init__(self, architecture: str, num_classes: int, widths: Sequence[int] = ()) -> None:
        super().__init__()
        self.architecture = architecture
        if architecture == "unet":
            self.body: nn.Module = UNet(widths, num_classes)
        elif architecture in TORCHVISION_ARCHITECTURES:
            import torchvision

            self.body = torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                                     num_classes=num_classes)
        else:

            raise GeoxaiError(f"segmenter architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}."
                              f"{did_you_mean(str(architecture), list(ARCHITECTURES))}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.body(images * 2.0 - 1.0)
        return out["out"] if isinstance(out, dict) else out


def size_factor(architecture: str, widths: Sequence[int]) -> int:
    """What the image side must be a multiple of: the UNet pools ``len(widths) - 1`` times."""
    return 2 ** (len(widths) - 1) if architecture == "unet" else 1


def network_config(architecture: str, num_classes: int, image_size: int, widths: Sequence[int]) -> dict[str, Any]:
    """What a weights file records about its network (safetensors metadata and ``segmenter.yaml``)."""
    return {"architecture": str(architecture), "widths": [int(w) for w in widths] if architecture == "unet" else [],
            "num_classes": int(num_classes), "image_size": int(image_size)}


def save_segmenter(net: SegmentationNet, folder: str | Path, config: dict[str, Any]) -> Path:
    """Write ``segmenter.safetensors`` (weights + network config as metadata) and ``segmenter.yaml``
    (its spec, weights relative to the yaml) into ``folder``, each atomically."""
    from safetensors.torch import save

    from geoxai.config import save_config
    from geoxai.files import atomic_write_bytes

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(config, sort_keys=True)}
    path = folder / WEIGHTS_NAME
    atomic_write_bytes(path, save(state, metadata=metadata))
    save_config({"name": SynthCitySegmenter.name, **config, "weights": WEIGHTS_NAME}, folder / SPEC_NAME)
    return path


# ------------------------------------------------------------------------------------ loading
def default_weights() -> str:
    """Weights used when none are given: the shipped ``synthcity`` segmenter, else the default
    training output (``runs/segmenter/synthcity``)."""
    return "synthcity" if pretrained.is_shipped("synthcity", "segmenter") else DEFAULT_WEIGHTS


def weights_file(weights: str | Path) -> Path:
    """The ``.safetensors`` file that ``weights`` names: the file itself, a training output folder,
    or a ``segmenter.yaml`` (its ``weights`` read relative to the yaml)."""
    from geoxai.config import read_yaml

    path = Path(weights)
    where = f"segmenter synthcity: weights {path}"
    if not path.exists() and pretrained.is_shipped(str(weights), "segmenter"):
        path = pretrained.folder(str(weights), "segmenter")
    if path.is_dir():
        path = path / SPEC_NAME if (path / SPEC_NAME).is_file() else path / WEIGHTS_NAME
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        spec = read_yaml(path, "segmenter spec")
        if isinstance(spec, dict) and "stage" in spec:
            raise GeoxaiError(f"{where}: this is a training config (stage: {spec['stage']}); give its output_dir "
                              f"({spec.get('output_dir')}) or the {SPEC_NAME} written there")
        named = spec.get("weights") if isinstance(spec, dict) else None
        if not named:
            raise GeoxaiError(f"{where}: {path} names no `weights:` file; give the {WEIGHTS_NAME} itself")
        path = Path(named) if Path(named).is_absolute() else path.parent / named
    if not path.is_file():
        raise GeoxaiError(f"{where}: no such file ({path}); train one with `{TRAIN_COMMAND}` (writes "
                          f"{DEFAULT_WEIGHTS}/{WEIGHTS_NAME}) or give its path")
    return path


def read_segmenter(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and network config of a ``segmenter.safetensors``; anything else is one line."""
    from safetensors import safe_open

    where = f"segmenter synthcity: weights {path}"
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own types for truncated or foreign files
        text = str(exc).strip().splitlines()
        raise GeoxaiError(f"{where}: not a readable safetensors file ({text[0] if text else type(exc).__name__}); "
                          f"re-train it with `{TRAIN_COMMAND}`") from None
    if metadata.get("format") != FORMAT:
        raise GeoxaiError(f"{where}: not a geoxai segmenter (its metadata has no format: {FORMAT}); give the "
                          f"{WEIGHTS_NAME} written by `{TRAIN_COMMAND}`")
    try:
        config = json.loads(metadata["config"])
        config = network_config(config["architecture"], config["num_classes"], config["image_size"],
                                config.get("widths", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise GeoxaiError(f"{where}: damaged network config in its metadata ({exc}); re-train it") from None
    return state, config


def _device(device: str) -> torch.device:
    if device in ("auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise GeoxaiError(f"segmenter synthcity: device {device!r} is not a torch device ({exc})") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise GeoxaiError(f"segmenter synthcity: device {device!r}, but torch sees no CUDA GPU; use cpu or auto")
    return chosen


class SynthCitySegmenter(Segmenter):
    """A small network trained on SynthCity renders (geoxai train, stage segmenter): label maps of generated images."""

    name = "synthcity"
    classes = tuple(L.NAMES)
    licence = "trained by `geoxai train` on SynthCity (no external data)"
    inference = "resize to the training size, logits upsampled bilinearly to the input size"

    def __init__(self, weights: str | Path | None = None, device: str = "auto", batch_size: int = 32,
                 architecture: str | None = None, widths: Sequence[int] | None = None,
                 num_classes: int | None = None, image_size: int | None = None) -> None:
        """``weights``: a ``segmenter.safetensors``, its folder or its ``segmenter.yaml``; read at once
        when given. Without it the default training output (``runs/segmenter/synthcity``) is read on
        first use, so that ``geoxai segmenters`` lists this backend before one is trained. The
        architecture keys of a ``segmenter.yaml`` are accepted and must match the file."""
        self.weights = weights
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.expected = {"architecture": architecture, "widths": list(widths) if widths is not None else None,
                         "num_classes": num_classes, "image_size": image_size}
        self.network: SegmentationNet | None = None
        self.config: dict[str, Any] = {}
        self.path: Path | None = None
        if weights is not None:
            self._load()

    def _load(self) -> SegmentationNet:
        if self.network is not None:
            return self.network

        path = weights_file(self.weights if self.weights is not None else default_weights())
        state, config = read_segmenter(path)
        for key, value in self.expected.items():
            if value is not None and (list(value) if key == "widths" else value) != config[key]:
                raise GeoxaiError(f"segmenter synthcity: {key} {value!r} does not match the weights {path}, "
                                  f"trained with {key} {config[key]!r}; drop the option or give other weights")
        if config["num_classes"] != L.NUM_CLASSES:
            raise GeoxaiError(f"segmenter synthcity: weights {path} predict {config['num_classes']} classes, not the "
                              f"{L.NUM_CLASSES} canonical ones; re-train it with `{TRAIN_COMMAND}`")
        net = SegmentationNet(config["architecture"], config["num_classes"], config["widths"])
        check_state_dict(net.state_dict(), state, f"segmenter synthcity: weights {path}",
                         f"re-train it with `{TRAIN_COMMAND}`")
        net.load_state_dict(state)
        self.network = net.eval().requires_grad_(False).to(_device(self.device))
        self.config, self.path = config, path.resolve()
        self.inference = (f"resize to {config['image_size']}x{config['image_size']}, logits upsampled bilinearly to "
                          "the input size")
        return self.network

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical label ids [B, H, W] of images [B, 3, H, W] in [0, 1], at the input size."""
        net = self._load()
        if images.ndim != 4 or images.shape[1] != 3:
            raise GeoxaiError(f"segmenter synthcity: expected images [B, 3, H, W], got {list(images.shape)}")
        size = self.config["image_size"]
        device = next(net.parameters()).device
        out = []
        for chunk in images.split(self.batch_size):
            x = chunk.to(device=device, dtype=torch.float32)
            height, width = x.shape[-2:]
            if (height, width) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            logits = net(x.clamp(0, 1))
            if (height, width) != (size, size):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            out.append(logits.argmax(dim=1).cpu())
        return torch.cat(out).long()

    def spec(self) -> dict[str, Any]:
        if self.network is None and self.weights is None:
            return {"name": self.name, "device": self.device, "batch_size": self.batch_size}
        self._load()
        return {"name": self.name, "weights": str(self.path), **self.config, "device": self.device,
                "batch_size": self.batch_size}

    def identity(self) -> str:
        """A hash of the network config and the weights' values (not of where the file lies)."""
        net = self._load()
        digest = hashlib.sha256(json.dumps({"name": self.name, **self.config}, sort_keys=True).encode())
        for key, tensor in sorted(net.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]
