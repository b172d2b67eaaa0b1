"""What every segmenter offers, so plugins never depend on one model's label set.

A segmenter maps images to label maps in the canonical ids of ``geoxai.labels`` and
says which of those classes it can express (a Cityscapes model has no ``window``; an ADE20K one
does). Backends register under the ``geoxai.segmenters`` entry-point group, like embedders and
plugins, and are built from a spec (``{"name": "hf", "model": "..."}``) with ``load``/``from_spec``.

The engine calls ``segment_files(paths)``: by default it decodes the images and calls ``segment``
on batches of one size; a backend that reads labels from disk (``groundtruth``) overrides it. A
backend that tells objects of a class apart (``sam``) also overrides ``instances``, whose one
declared form (``instance_ids`` checks it) the ``windows`` plugin reads.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from geoxai import labels as L
from geoxai.errors import GeoxaiError, UnreadableImageError, did_you_mean, setting
from geoxai.registry import SEGMENTERS, registered
from geoxai.registry import load as load_entry
from geoxai.registry import names as group_names


class Segmenter:
    """Base class of segmenter backends: ``segment(images [B,3,H,W] in [0,1]) -> LongTensor [B,H,W]``.

    Subclasses set ``name`` and ``classes`` (canonical ids they can output), implement ``segment``
    (or ``segment_files``) and ``spec``; ``identity`` hashes the spec and any tensors the backend
    holds (``state_dict`` when it is a module), so another checkpoint gets another cache namespace.
    """

    name: ClassVar[str] = ""
    classes: tuple[int, ...] = tuple(L.NAMES)
    licence: str = ""
    inference: str = "whole image"  # e.g. "resize to 512" or "sliding window 512/384": recorded in results
    # A complete spec for the error that a required option is missing (``--segmenter hf`` alone).
    example: ClassVar[str] = ""

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical label ids [B, H, W] of images [B, 3, H, W] in [0, 1]."""
        raise NotImplementedError

    def instances(self, images: torch.Tensor, class_id: int,
                  semantic_maps: torch.Tensor | None = None) -> torch.Tensor:
        """Instance ids [B, H, W] (an integer tensor; 0 off the class, 1..n one id per object) of the
        pixels of ``class_id`` in images [B, 3, H, W] in [0, 1].

        ``semantic_maps`` (LongTensor [B, H, W] of canonical ids), when given, are the label maps the
        instances must split (the evaluation passes its own, so instances and regions agree); without
        them the backend uses its own ``segment``. Optional: a backend that can tell objects of a class
        apart (``sam``) overrides it; ``has_instances`` says whether one does.
        """
        raise NotImplementedError(f"segmenter {self.name!r} does not split classes into instances")

    def segment_files(self, paths: Sequence[Path]) -> list[np.ndarray | None]:
        """Label maps (uint8 [H, W]) of image files; None for a file that cannot be read."""
        from geoxai.data.images import load_tensor

        images: list[torch.Tensor | None] = []
        for path in paths:
            try:
                images.append(load_tensor(path))
            except UnreadableImageError:
                images.append(None)
        out: list[np.ndarray | None] = [None] * len(paths)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            if image is not None:
                by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
        for indices in by_size.values():
            with torch.no_grad():
                maps = self.segment(torch.stack([images[i] for i in indices]))
            for i, labels in zip(indices, maps, strict=True):
                out[i] = labels.cpu().numpy().astype(np.uint8)
        return out

    def spec(self) -> dict[str, Any]:
        """The dict ``from_spec`` rebuilds this segmenter from."""
        return {"name": self.name}

    def identity(self) -> str:
        """A stable hash of the spec (minus file locations) and of the weights' values."""
        spec = {k: v for k, v in self.spec().items() if k not in ("device",)}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
        state = self.state_dict() if isinstance(self, torch.nn.Module) else {}
        for key, tensor in sorted(state.items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What ``geoxai segmenters`` and results.json show: classes, licence, inference mode."""
        return {"name": self.name, "classes": [L.NAMES[c] for c in self.classes], "licence": self.licence,
                "inference": self.inference, "spec": self.spec()}


def has_instances(segmenter: Any) -> bool:
    """Whether a segmenter overrides ``Segmenter.instances`` (can tell objects of a class apart)."""
    method = getattr(type(segmenter), "instances", None)
    return callable(method) and method is not Segmenter.instances


def instance_ids(segmenter: Any, found: Any, images: torch.Tensor) -> np.ndarray:
    """The answer of ``segmenter.instances(images, ...)`` as int64 ids [B, H, W], checked against its
    declared form (an integer tensor [B, H, W] for images [B, 3, H, W]); anything else is an error
    naming the backend."""
    expected = (images.shape[0], *images.shape[-2:])
    if not isinstance(found, torch.Tensor) or tuple(found.shape) != expected or found.dtype.is_floating_point \
            or found.dtype.is_complex or found.dtype == torch.bool:
        got = f"a {found.dtype} tensor {list(found.shape)}" if isinstance(found, torch.Tensor) else \
            f"a {type(found).__name__}"
        name = getattr(segmenter, "name", "") or type(segmenter).__name__
        raise GeoxaiError(f"segmenter {name!r}: instances() returned {got}; it must return an integer tensor "
                          f"{list(expected)} of instance ids (0: none) for images {list(images.shape)}")
    return found.detach().cpu().numpy().astype(np.int64)


def check_classes(segmenter: Segmenter, plugin: str, needed: Sequence[int]) -> None:
    """Refuse a plugin that needs a class the segmenter cannot express, naming both."""
    missing = [L.NAMES[c] for c in needed if c not in segmenter.classes]
    if missing:
        raise GeoxaiError(f"plugin {plugin} needs class {', '.join(missing)}, which the segmenter "
                          f"{segmenter.name!r} cannot express (its classes: "
                          f"{', '.join(L.NAMES[c] for c in segmenter.classes)}); choose another {setting('segmenter')}")


def load(name: str, **options: Any) -> Segmenter:
    """The segmenter registered as ``name`` (or ``module:Class`` / ``file.py:Class``) built with ``options``."""
    cls = load_entry(SEGMENTERS, name)
    if not (isinstance(cls, type) and issubclass(cls, Segmenter)):
        raise GeoxaiError(f"segmenter {name!r}: {getattr(cls, '__qualname__', cls)!r} is not a "
                          "geoxai.segmentation.Segmenter subclass")
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = [k for k, p in parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if "device" in options and "device" not in accepted and not takes_any:
        options.pop("device")  # backends without a device (ground truth) run where they are
    unknown = [k for k in options if k not in accepted]
    if unknown and not takes_any:
        raise GeoxaiError(f"segmenter {name!r}: unknown option {unknown[0]!r}.{did_you_mean(unknown[0], accepted)} "
                          f"Options: {', '.join(accepted) or 'none'}")
    required = [k for k in accepted if parameters[k].default is inspect.Parameter.empty and k not in options]
    if required:
        example = cls.example or f"`name: {name}` and {' and '.join(f'`{k}: ...`' for k in required)}"
        needs = f"a {required[0]}" if len(required) == 1 else ", ".join(required)
        raise GeoxaiError(f"{setting('segmenter')} {name} needs {needs}: "
                          f"give {setting('segmenter_config')} FILE, e.g. a YAML with {example}")
    return cls(**options)


def from_spec(spec: Mapping[str, Any], **overrides: Any) -> Segmenter:
    """Rebuild a segmenter from its spec (``Segmenter.spec()``, a YAML file, CLI options)."""
    if not isinstance(spec, Mapping) or not spec.get("name"):
        raise GeoxaiError(f"segmenter spec must be a mapping with a name, like {{name: groundtruth}} (got {spec!r})")
    options = {k: v for k, v in {**spec, **overrides}.items() if v is not None}
    return load(options.pop("name"), **options)


def read_segmenter_spec(path: str | Path) -> dict[str, Any]:
    """A segmenter spec YAML (``name:`` plus the backend's options); relative paths stay as written."""
    from geoxai.config import load_config

    path = Path(path)
    if not path.is_file():
        raise GeoxaiError(f"{setting('segmenter_config')} {path}: no such file; write a YAML mapping like "
                          "{name: hf, model: path/to/segformer}")
    spec = load_config(path)
    if not spec.get("name"):
        raise GeoxaiError(f"{setting('segmenter_config')} {path}: no `name:` (the backend, e.g. hf or synthcity)")
    return spec


def describe_segmenters() -> str:
    """The text ``geoxai segmenters`` prints: per backend its classes, licence and inference mode
    (backends that need a model to know their classes say so)."""
    lines = []
    for name, entry_point in sorted(registered(SEGMENTERS).items()):
        try:
            cls = entry_point.load()
            required = [p for p in inspect.signature(cls).parameters.values()
                        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD]
            info = cls().describe() if not required else {
                "classes": None, "licence": getattr(cls, "licence", ""), "inference": getattr(cls, "inference", "")}
        except Exception as exc:  # a broken backend is listed, not fatal to the listing
            lines.append(f"{name}  FAILED TO LOAD ({entry_point.value}): {str(exc).splitlines()[0] if str(exc) else exc}")
            continue
        doc = (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
        lines.append(f"{name}  {doc}")
        classes = ", ".join(info["classes"]) if info["classes"] else \
            "depend on the model it loads (`geoxai segmenters --config SPEC.yaml` shows them)"
        lines.append(f"    classes: {classes}")
        if info.get("licence"):
            lines.append(f"    licence: {info['licence']}")
        if info.get("inference"):
            lines.append(f"    inference: {info['inference']}")
    return "\n".join(lines) if lines else "no segmenters installed (entry-point group geoxai.segmenters)"


def names() -> list[str]:
    """Registered segmenter names (nothing is imported)."""
    return group_names(SEGMENTERS)
