"""Perceptual models for evaluations, used only when their weights are already on disk.

Evaluations run on machines without internet, and a library that quietly downloads weights would
either hang there or fetch an unvetted pickle. Each model here is therefore looked up in its cache
first; a missing file or package is a ``PerceptualUnavailable`` whose one-line message names what is
missing and where it belongs (plugins record it as the skip reason), and nothing is ever downloaded.
Every load runs inside ``geoxai.weights.weights_only_loads()``.

- LPIPS (torchmetrics; its linear layers ship inside the package): the torchvision backbone
  (AlexNet, VGG16 or SqueezeNet ImageNet weights) from ``torch.hub.get_dir()/checkpoints``.
- Inception v3 for FID/KID (torch-fidelity's conversion of the TF-slim weights, what every FID
  number in the literature uses): ``weights-inception-2015-12-05-6726825d.pth`` in the same folder;
  needs the ``torch-fidelity`` package.
- DINOv2 (``facebook/dinov2-small`` through transformers) from the local Hugging Face cache.

Fréchet distances are computed here too (``frechet_distance``), for any feature space, with
``frechet_unstable`` telling when a set is too small for a stable covariance estimate.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from geoxai.errors import GeoxaiError
from geoxai.evaluation.plugin import Model, Skip

LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}  # net_type -> torchvision model
LPIPS_MODELS = (  # what LPIPS (AlexNet backbone) uses, with licences, for a plugin's `models`
        Model("LPIPS linear layers (shipped with torchmetrics)", "BSD-2-Clause",
              "https://github.com/richzhang/PerceptualSimilarity"),
        Model("AlexNet ImageNet weights, LPIPS backbone (torchvision)",
              "BSD-3-Clause (torchvision); ImageNet terms of use may apply",
              "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_DIM = 2048
DINOV2_MODEL = "facebook/dinov2-small"
DINOV2_SIZE = 224  # DINOv2's pretraining resolution (patch 14, 16x16 patches)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STABLE_SAMPLES_PER_DIM = 2  # a Fréchet distance from fewer samples than 2 x dim is reported as unstable

_MODELS: dict[tuple, torch.nn.Module] = {}  # one instance per process and weights file


class PerceptualUnavailable(GeoxaiError):
    """A perceptual model that cannot be used on this machine (package or weights missing); the
    message is the one-line reason a metric records when it is skipped."""


class WeightsNotCached(PerceptualUnavailable):
    """The weights file of a perceptual model is not in its cache folder (nothing is downloaded)."""


# ---------------------------------------------------------------------------------- caches
def hub_checkpoints() -> Path:
    """The torch hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where torchvision and
    torch-fidelity keep downloaded weights; read at call time, so ``TORCH_HOME`` may change."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _missing(what: str, path: Path, url: str) -> WeightsNotCached:
    return WeightsNotCached(f"{what}: weights file {path.name} not found in {path.parent}; copy it there "
                            f"from a machine with internet ({url})")


# ---------------------------------------------------------------------------------- LPIPS
def lpips_weights_file(net: str = "alex") -> Path:
    """Where the torchvision ImageNet backbone of LPIPS ``net`` must be (the file torchvision would
    download: the base name of its weights URL in the hub checkpoint folder)."""
    import torchvision

    if net not in LPIPS_BACKBONES:
        raise GeoxaiError(f"LPIPS net {net!r}: use one of {', '.join(LPIPS_BACKBONES)}")
    weights = torchvision.models.get_model_weights(LPIPS_BACKBONES[net]).DEFAULT
    return hub_checkpoints() / Path(weights.url).name


def lpips_model(net: str = "alex") -> torch.nn.Module:
    """torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` (frozen, eval mode) when its backbone
    weights are cached, else ``WeightsNotCached``. One instance per process and weights file; its
    ``.net(a, b, normalize=True)`` scores batches of [0, 1] images pair by pair."""
    path = lpips_weights_file(net)
    if not path.is_file():
        import torchvision

        url = torchvision.models.get_model_weights(LPIPS_BACKBONES[net]).DEFAULT.url
        raise _missing(f"LPIPS ({net})", path, url)
    key = ("lpips", net, str(path))
    if key not in _MODELS:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        from geoxai.weights import library_load, weights_only_loads

        with weights_only_loads(), library_load(path, f"LPIPS ({net}) backbone", "delete it and download it again"):
            metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
        _MODELS[key] = metric.requires_grad_(False).eval()
    return _MODELS[key]


def lpips_distances(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, net: str = "alex",
                    batch_size: int = 32) -> np.ndarray:
    """LPIPS between ``a[i]`` and ``b[i]`` ([N, H, W, 3] floats in [0, 1], one size), one value per
    pair; raises ``PerceptualUnavailable`` when the weights are not cached."""
    model = lpips_model(net)
    device = next(model.parameters()).device
    a, b = _nchw(a), _nchw(b)
    out = []
    with torch.inference_mode():
        for start in range(0, len(a), batch_size):
            x = a[start:start + batch_size].to(device)
            y = b[start:start + batch_size].to(device)
            out.append(model.net(x, y, normalize=True).reshape(-1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def lpips_or_skips(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, reason: str | None,
                   net: str = "alex") -> list[float | Skip]:
    """Per pair, LPIPS or a ``Skip``: ``reason`` (from ``unavailable_reason``) when the weights are
    missing, the network's complaint when the images are too small for it (AlexNet needs ~31 px)."""
    if reason:
        return [Skip(reason)] * len(a)
    try:
        return [max(0.0, float(v)) for v in lpips_distances(a, b, net)]
    except RuntimeError as exc:  # e.g. a pooling window larger than the feature map
        text = str(exc).strip().splitlines()
        height, width = tuple(a.shape[1:3])
        return [Skip(f"LPIPS failed on {width}x{height} images: {text[0] if text else type(exc).__name__}")] * len(a)


def _nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32)) if not torch.is_tensor(images) else images
    return tensor.float().permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------- Inception (FID, KID)
def inception_weights_file() -> Path:
    """Where torch-fidelity's Inception v3 weights must be (torchmetrics' FID/KID backbone)."""
    return hub_checkpoints() / INCEPTION_FILE


def inception_model() -> torch.nn.Module:
    """torchmetrics' ``NoTrainInceptionV3`` (2048-d pool features, input uint8 [N, 3, H, W]) built
    from the cached torch-fidelity weights; ``PerceptualUnavailable`` when the package or the file
    is missing. The file is passed explicitly, so torch-fidelity never reaches for its URL."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise PerceptualUnavailable("torch-fidelity not installed")
    path = inception_weights_file()
    if not path.is_file():
        raise _missing("Inception v3 (FID/KID)", path, INCEPTION_URL)
    key = ("inception", str(path))
    if key not in _MODELS:
        from torchmetrics.image.fid import NoTrainInceptionV3

        from geoxai.weights import library_load, weights_only_loads

        with weights_only_loads(), library_load(path, "Inception v3 (FID/KID)", "delete it and download it again"):
            model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(INCEPTION_DIM)],
                                       feature_extractor_weights_path=str(path))
        _MODELS[key] = model.requires_grad_(False).eval()
    return _MODELS[key]


def inception_available() -> bool:
    """Whether FID/KID can be computed here (torch-fidelity installed, its weights cached)."""
    return unavailable_reason(inception_model) is None


def inception_features(images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """Inception pool features [N, 2048] of [H, W, 3] images (floats in [0, 1] or uint8; any sizes:
    the network resizes to 299 px as torch-fidelity does)."""
    model = inception_model()
    device = next(model.parameters()).device

    def run(batch: list[np.ndarray]) -> torch.Tensor:
        x = torch.as_tensor(np.stack([_uint8(image) for image in batch])).permute(0, 3, 1, 2).to(device)
        return model(x).double().cpu()

    return _by_shape(images, batch_size, run, INCEPTION_DIM)


class _Precomputed(torch.nn.Module):
    """A "feature extractor" that passes features through, so torchmetrics' FID and KID work on
    features computed once (instead of running Inception twice per image)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """torchmetrics' FID (float64) between two sets of Inception features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    return float(metric.compute())


def kid_from_features(real: np.ndarray, fake: np.ndarray, seed: int = 0, subsets: int = 100,
                      subset_size: int = 1000) -> tuple[float, float]:
    """torchmetrics' KID (mean, std over ``subsets`` random subsets of at most ``subset_size``)
    between two sets of Inception features; unbiased, so usable on small sets. Seeded."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    size = int(min(subset_size, len(real), len(fake)))
    with warnings.catch_warnings():  # its note that features are kept in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# ---------------------------------------------------------------------------------- DINOv2
def dinov2_model(model_id: str = DINOV2_MODEL) -> torch.nn.Module:
    """A DINOv2 ``AutoModel`` from the local Hugging Face cache (``local_files_only=True``), else
    ``PerceptualUnavailable`` (transformers missing, or the model not in the cache)."""
    if importlib.util.find_spec("transformers") is None:
        raise PerceptualUnavailable("transformers not installed (needed for DINOv2)")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = [try_to_load_from_cache(model_id, name) for name in ("config.json", "model.safetensors",
                                                                    "pytorch_model.bin")]
    if not isinstance(cached[0], str) or not any(isinstance(c, str) for c in cached[1:]):
        raise WeightsNotCached(f"DINOv2: {model_id} not found in the Hugging Face cache {constants.HF_HUB_CACHE}; "
                               f"run `hf download {model_id}` on a machine with internet and copy its cache "
                               "folder here (or point HF_HOME to a copy)")
    key = ("dinov2", model_id, cached[0])
    if key not in _MODELS:
        from transformers import AutoModel

        from geoxai.weights import library_load, weights_only_loads

        with weights_only_loads(), library_load(Path(cached[0]).parent, f"DINOv2 {model_id}",
                                                f"download it again with `hf download {model_id}`"):
            model = AutoModel.from_pretrained(model_id, local_files_only=True)
        _MODELS[key] = model.requires_grad_(False).eval()
    return _MODELS[key]


def dinov2_available() -> bool:
    """Whether DINOv2 features can be computed here."""
    return unavailable_reason(dinov2_model) is None


def dinov2_features(images: Sequence[np.ndarray], batch_size: int = 16, model_id: str = DINOV2_MODEL) -> np.ndarray:
    """DINOv2 CLS features [N, hidden] of [H, W, 3] images (floats in [0, 1] or uint8), each resized
    to 224 x 224 (bicubic, antialiased) and ImageNet-normalised."""
    model = dinov2_model(model_id)
    device = next(model.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def run(batch: list[np.ndarray]) -> torch.Tensor:
        x = torch.as_tensor(np.stack([_unit(image) for image in batch])).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(x, size=(DINOV2_SIZE, DINOV2_SIZE), mode="bicubic", antialias=True,
                                            align_corners=False).clamp(0, 1)
        out = model(pixel_values=((x - mean) / std).to(device))
        return out.pooler_output.double().cpu()

    return _by_shape(images, batch_size, run, int(model.config.hidden_size))


# ---------------------------------------------------------------------------------- helpers
def evaluation_device(ctx: object) -> torch.device:
    """The device of an evaluation's embedder (perceptual models follow it), else the CPU."""
    try:
        return torch.device(ctx.embedder.device)  # type: ignore[attr-defined]
    except Exception:  # no embedder in this evaluation, or one without a device attribute
        return torch.device("cpu")


def unavailable_reason(load: Callable[..., object], *args: object) -> str | None:
    """None when ``load(*args)`` (``lpips_model``, ``inception_model``, ``dinov2_model``) works, else
    the one-line reason it does not."""
    try:
        load(*args)
    except PerceptualUnavailable as exc:
        return str(exc)
    return None


def _uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _unit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


def _by_shape(images: Sequence[np.ndarray], batch_size: int, run, dim: int) -> np.ndarray:
    """``run`` on batches of same-size images, results back in input order."""
    out = np.zeros((len(images), dim), dtype=np.float64)
    groups: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(tuple(np.shape(image)), []).append(index)
    with torch.inference_mode():
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                out[chunk] = run([images[i] for i in chunk]).numpy()
    return out


# ---------------------------------------------------------------------------------- Fréchet distance
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D] (rows with NaN
    dropped): |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^1/2), with unbiased covariances (as FID).

    The trace of the matrix square root is taken as tr((C_a^1/2 C_b C_a^1/2)^1/2), a symmetric
    positive semi-definite form, so rank-deficient covariances (fewer samples than dimensions) give
    a real, non-negative value; a set against itself gives 0 up to rounding.
    """
    from scipy.linalg import eigh, eigvalsh

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise GeoxaiError(f"frechet_distance: need two [N, D] feature sets of one D, got {a.shape} and {b.shape}")
    a, b = a[np.isfinite(a).all(axis=1)], b[np.isfinite(b).all(axis=1)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    mean = float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2))
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    cross = float(np.sum(np.sqrt(np.clip(eigvalsh((middle + middle.T) / 2), 0, None))))
    return max(0.0, mean + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * cross)


def frechet_unstable(samples: int, dim: int) -> bool:
    """Whether a set of ``samples`` feature vectors of ``dim`` dimensions is too small for a stable
    Fréchet distance (fewer than 2 x dim: the covariance is poorly estimated, and the distance is
    biased upwards); the value is still reported, flagged."""
    return samples < STABLE_SAMPLES_PER_DIM * dim
