"""``hf``: semantic segmentation with a transformers model (SegFormer, UperNet, BEiT, DPT, Mask2Former,
OneFormer, ...), read from a local folder or the Hugging Face cache, never downloaded.

Evaluations run on machines without internet, so the model is either a folder written by
``save_pretrained`` or a model id whose snapshot is already in the Hugging Face cache
(``local_files_only=True``). Weights are read from safetensors when the folder has them, a ``.bin``
only with ``weights_only=True`` inside ``geoxai.weights.weights_only_loads()``. The model's
``id2label`` is translated to canonical ids by name (``mappings.lookup``), so ``classes`` says what
this model can express (a Cityscapes model has no ``window``).

Two ways to fit street photos of any size: resize the shorter side to ``resolution`` (fast, the
default) or slide a ``window`` over the image at its own resolution with ``stride`` and average the
class probabilities of overlapping windows (slower, sharper on large images: how Cityscapes models
are evaluated). Either way the labels come back at the image's own size.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from geoxai.devices import resolve_device
from geoxai.errors import GeoxaiError
from geoxai.segmentation.base import Segmenter
from geoxai.segmentation.mappings import lookup
from geoxai.weights import library_load, weights_only_loads

# Processor steps geoxai does itself (resizing) or that do not apply to inference on whole images.
_SKIPPED_STEPS = ("do_resize", "do_center_crop", "do_reduce_labels")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or load reports from transformers: the engine prints its own progress."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def resolve_model(model: str) -> Path:
    """The local folder of ``model``: a folder as given, or the cached snapshot of a Hugging Face id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
    if looks_like_path:
        raise GeoxaiError(f"segmenter hf: model {model}: no such folder; give a folder written by save_pretrained "
                          "or the id of a model in the Hugging Face cache")
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id=model, local_files_only=True))
    except Exception:  # not cached, or not a valid id: the same fix either way
        raise GeoxaiError(f"segmenter hf: model {model!r} is neither a folder nor in the Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}); nothing is downloaded at run time: on a machine with internet "
                          f"run `hf download {model}` and copy that cache folder here (or set HF_HUB_CACHE), or "
                          "give a folder written by save_pretrained") from None


def model_licence(folder: Path, config: Any, model: str) -> str:
    """The licence named in the model card's metadata (or the config), else where to read it."""
    readme = folder / "README.md"
    if readme.is_file():
        import yaml

        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                meta = {}
            licence = meta.get("license") if isinstance(meta, dict) else None
            if licence:
                extra = meta.get("license_name") or meta.get("license_link")
                return f"{licence} ({extra})" if licence == "other" and extra else str(licence)
    licence = getattr(config, "license", None)
    return str(licence) if licence else f"see the model card of {model}"


def _shorter_side_to(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(h, w) with the shorter side at ``resolution`` and the aspect ratio kept."""
    scale = resolution / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length`` (the last one flush with the end)."""
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


class HFSegmenter(torch.nn.Module, Segmenter):
    """A transformers semantic-segmentation model (local folder or Hugging Face cache), mapped to canonical classes."""

    name = "hf"
    licence = "per model: the licence in its model card"
    inference = "shorter side resized to `resolution` (512), or sliding windows"
    example = "`name: hf` and `model: nvidia/segformer-b0-finetuned-cityscapes-512-1024` (a local folder works offline)"

    def __init__(self, model: str, resolution: int | str = 512, window: int = 512, stride: int = 341,
                 batch_size: int = 4, device: str = "auto") -> None:
        super().__init__()

        self.model_ref, self.batch_size, self.device_option = str(model), int(batch_size), device
        if isinstance(resolution, str) and resolution.isdigit():  # from a command line or a quoted YAML value
            resolution = int(resolution)
        self.sliding = resolution == "sliding"
        if not self.sliding and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
            raise GeoxaiError(f"segmenter hf: resolution {resolution!r}: give the shorter side in pixels (e.g. 512) "
                              "or `sliding` (windows at the image's own resolution)")
        if self.batch_size < 1 or int(window) < 1 or not 1 <= int(stride) <= int(window):
            raise GeoxaiError(f"segmenter hf: batch_size {batch_size}, window {window}, stride {stride}: give "
                              "batch_size >= 1 and 1 <= stride <= window")
        self.resolution, self.window, self.stride = resolution, int(window), int(stride)
        self.inference = (f"sliding window {self.window}, stride {self.stride}, at the image's resolution"
                          if self.sliding else f"shorter side resized to {resolution}")
        self.device = resolve_device(device)

        folder = resolve_model(self.model_ref)
        config, self.universal = self._config(folder)
        self.register_buffer("canonical", torch.as_tensor(
            lookup(config.id2label, where=f"segmenter hf: {self.model_ref}: id2label")), persistent=False)
        self.num_labels = len(self.canonical)
        self.classes = tuple(sorted(set(self.canonical.tolist())))
        self.licence = model_licence(folder, config, self.model_ref)
        self.processor = self._processor(folder, config)
        self.net = self._network(folder).to(self.device).eval()
        self.canonical = self.canonical.to(self.device)
        self.eval()

    # -- loading -------------------------------------------------------------------------------
    def _config(self, folder: Path) -> tuple[Any, bool]:
        """The model config, and whether it is a mask-classification (universal) model; other kinds refused."""
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES,
        )

        if not (folder / "config.json").is_file():
            raise GeoxaiError(f"segmenter hf: {self.model_ref}: {folder} has no config.json; it is not a transformers "
                              "model folder (write one with save_pretrained or `hf download`)")
        try:
            with _quiet_transformers():
                config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # invalid JSON, unknown model type, ...: transformers raises several types
            raise GeoxaiError(f"segmenter hf: {self.model_ref}: config.json in {folder} cannot be read "
                              f"({_first_line(exc)}); the folder is damaged: save or download it again") from None
        semantic = MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
        universal = MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES
        heads = set(semantic.values()) | set(universal.values())
        architectures = list(getattr(config, "architectures", None) or [])
        if config.model_type not in semantic and config.model_type not in universal or (
                architectures and not heads.intersection(architectures)):
            kind = architectures[0] if architectures else f"{config.model_type} model"
            raise GeoxaiError(f"segmenter hf: {self.model_ref} holds a {kind}, not a semantic segmentation model; "
                              "give a SegFormer, UperNet, BEiT, DPT, Mask2Former or OneFormer segmentation checkpoint")
        return config, config.model_type not in semantic

    def _processor(self, folder: Path, config: Any) -> Any:
        from transformers import AutoImageProcessor, AutoProcessor

        # OneFormer's processor also tokenises its task prompt ("semantic")
        loader = AutoProcessor if config.model_type == "oneformer" else AutoImageProcessor
        if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
            raise GeoxaiError(f"segmenter hf: {self.model_ref}: {folder} has no preprocessor_config.json (how the "
                              "model wants its images normalised); save the model's image processor beside it")
        try:
            with _quiet_transformers():
                return loader.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise GeoxaiError(f"segmenter hf: {self.model_ref}: no usable image processor in {folder} "
                              f"({_first_line(exc)}); the folder needs the preprocessor_config.json saved with "
                              "the model") from None

    def _network(self, folder: Path) -> torch.nn.Module:
        from transformers import AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation

        auto = AutoModelForUniversalSegmentation if self.universal else AutoModelForSemanticSegmentation
        safetensors = any(folder.glob("*.safetensors"))
        with weights_only_loads(), _quiet_transformers(), library_load(
                folder, f"segmenter hf: {self.model_ref}", "the folder is damaged: save or download it again"):
            net, info = auto.from_pretrained(folder, local_files_only=True, use_safetensors=safetensors,
                                             weights_only=True, output_loading_info=True)
        missing = list(info.get("missing_keys") or []) + [str(k[0] if isinstance(k, tuple) else k)
                                                          for k in info.get("mismatched_keys") or []]
        if missing:
            raise GeoxaiError(f"segmenter hf: {self.model_ref}: the weights in {folder} lack or mis-shape "
                              f"{len(missing)} tensors of the model ({', '.join(missing[:3])}); they are not this "
                              "segmentation model's weights (a backbone-only or damaged checkpoint?)")
        return net

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "model": self.model_ref, "resolution": self.resolution}
        if self.sliding:
            spec.update(window=self.window, stride=self.stride)
        return {**spec, "batch_size": self.batch_size, "device": self.device_option}

    # -- inference -----------------------------------------------------------------------------
    def _inputs(self, pixels: torch.Tensor) -> dict[str, Any]:
        """The model's inputs for images in [0, 1]: the processor rescales and normalises them as for 0..255
        pixels (its own factors, whatever they are), and may pad, but never resizes."""
        image_processor = getattr(self.processor, "image_processor", self.processor)
        skipped = {step: False for step in _SKIPPED_STEPS if getattr(image_processor, step, False)}
        extra = {"task_inputs": ["semantic"] * len(pixels)} if hasattr(self.processor, "tokenizer") else {}
        if getattr(image_processor, "backend", "") != "torchvision":  # PIL/numpy processors work on the CPU
            pixels = pixels.cpu()
        inputs = self.processor(images=pixels * 255, return_tensors="pt", **skipped, **extra)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    def _predict(self, pixels: torch.Tensor, size: tuple[int, int], votes: bool) -> list[torch.Tensor]:
        """Per image, source-class label maps at ``size`` (``votes=False``) or class scores [C, *size]
        (``votes=True``: probabilities, or one-hot maps for mask-classification models)."""
        inputs = self._inputs(pixels)
        outputs = self.net(**inputs)
        height, width = pixels.shape[-2:]
        padded = inputs["pixel_values"].shape[-2:]  # a processor may pad bottom/right
        target = (round(padded[0] * size[0] / height), round(padded[1] * size[1] / width))
        results = []
        if self.universal:
            maps = self.processor.post_process_semantic_segmentation(outputs, target_sizes=[target] * len(pixels))
            for labels in maps:
                labels = labels[: size[0], : size[1]].to(self.device)
                results.append(F.one_hot(labels, self.num_labels).permute(2, 0, 1).float() if votes else labels)
            return results
        for logits in outputs.logits:
            scores = F.interpolate(logits[None].float(), size=target, mode="bilinear", align_corners=False)[0]
            scores = scores[:, : size[0], : size[1]]
            results.append(scores.softmax(0) if votes else scores.argmax(0))
        return results

    def _sliding(self, images: torch.Tensor) -> torch.Tensor:
        """Source labels of images by averaging class scores of overlapping windows."""
        height, width = images.shape[-2:]
        boxes = [(y, x) for y in window_starts(height, self.window, self.stride)
                 for x in window_starts(width, self.window, self.stride)]
        window_h, window_w = min(self.window, height), min(self.window, width)
        labels = []
        for image in images:
            total = torch.zeros(self.num_labels, height, width, device=self.device)
            for start in range(0, len(boxes), self.batch_size):
                chunk = boxes[start:start + self.batch_size]
                crops = torch.stack([image[:, y:y + window_h, x:x + window_w] for y, x in chunk])
                for (y, x), scores in zip(chunk, self._predict(crops, (window_h, window_w), votes=True), strict=True):
                    total[:, y:y + window_h, x:x + window_w] += scores
            labels.append(total.argmax(0))
        return torch.stack(labels)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical label ids [B, H, W] of images [B, 3, H, W] in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise GeoxaiError(f"segmenter hf: expected images [B, 3, H, W], got {list(images.shape)}")
        height, width = images.shape[-2:]
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size].to(self.device, torch.float32).clamp(0, 1)
            if self.sliding:
                source = self._sliding(chunk)
            else:
                size = _shorter_side_to(height, width, self.resolution)
                if size != (height, width):
                    chunk = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False, antialias=True)
                source = torch.stack(self._predict(chunk, (height, width), votes=False))
            out.append(self.canonical[source])
        return torch.cat(out).to(images.device)
