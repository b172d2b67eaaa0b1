"""Artifacts: what plugins read about an image, computed once per image content for all of them.

A plugin says what it ``needs`` (``descriptor``, ``lab``, ``segmentation``); the runner asks the
provider of each artifact for every distinct image the evaluation touches (originals, generations,
reference photos, database images where a plugin needs them) before any plugin runs. Values live
in the artifact store (``geoxai.store``), so an original is processed once whatever the number of
samples and plugins, and later evaluations reuse them. ``compute`` takes a ``shard=(rank, world)``
so that several processes (one per GPU) split the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geoxai.store import ArtifactStore, ImageArtifacts

LAB_FIELDS = ("L_mean", "L_std", "a_mean", "b_mean")


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an RGB image [H, W, 3] in [0, 1] (scikit-image's conversion)."""
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(image, 0.0, 1.0))


def lab_statistics(image: np.ndarray) -> np.ndarray:
    """[L* mean, L* std (contrast), a* mean, b* mean] of an RGB image [H, W, 3] in [0, 1]."""
    lab = rgb_to_lab(image).reshape(-1, 3)
    return np.array([lab[:, 0].mean(), lab[:, 0].std(), lab[:, 1].mean(), lab[:, 2].mean()], dtype=np.float32)


def collate_list(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Like ``collate_images`` but keeps images of different sizes as a list (no stacking)."""
    import torch

    good = [item for item in batch if item["image"] is not None]
    return {"index": torch.tensor([item["index"] for item in good], dtype=torch.long),
            "image": [item["image"] for item in good] or None,
            "skipped": [(item["index"], item["error"]) for item in batch if item["image"] is None],
            "sizes": [item.get("size") for item in good]}


class DescriptorArtifact:
    """Descriptors of the evaluation's embedder (``geoxai.embedders.descriptors``)."""

    kind = "descriptor"

    def __init__(self, embedder_spec: Mapping[str, Any], device: str = "auto", batch_size: int = 32,
                 num_workers: int | None = None) -> None:
        self.embedder_spec, self.device = dict(embedder_spec), device
        self.batch_size, self.num_workers = int(batch_size), num_workers
        self._embedder = None

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from geoxai.embedders import from_spec

            self._embedder = from_spec(self.embedder_spec, device=self.device)
        return self._embedder

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "descriptors") -> ImageArtifacts:
        from geoxai.embedders.descriptors import embed_files

        found = embed_files(self.embedder, paths, batch_size=self.batch_size, progress=progress,
                            num_workers=self.num_workers, desc=desc, store=store, shard=shard)
        values = {key: row for key, row, ok in zip(found.digests, found.array, found.readable) if ok}
        self.last = found
        return ImageArtifacts(keys=found.digests, values=values, skipped=found.skipped, computed=found.computed)


class LabArtifact:
    """CIELAB statistics of each image: L* mean and standard deviation (contrast), a* and b* means."""

    kind = "lab"
    settings = {"fields": list(LAB_FIELDS), "colour_space": "CIELAB D65 (skimage.color.rgb2lab)", "version": 1}

    def __init__(self, batch_size: int = 32, num_workers: int = 0) -> None:
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "colour statistics") -> ImageArtifacts:
        from geoxai.data.images import ImageDataset
        from geoxai.store import compute_for_images

        namespace = store.namespace(self.kind, "cielab", self.settings)

        def compute(batch: dict[str, Any]) -> np.ndarray:
            return np.stack([lab_statistics(image.permute(1, 2, 0).numpy()) for image in batch["image"]])

        return compute_for_images(namespace, paths, compute, dataset=lambda todo: ImageDataset(todo),
                                  collate=collate_list, batch_size=self.batch_size, num_workers=self.num_workers,
                                  progress=progress, desc=desc, shard=shard)


class SegmentationArtifact:
    """Label maps (canonical ids, uint8 [H, W]) of the evaluation's segmenter, one per image content."""

    kind = "segmentation"

    def __init__(self, segmenter_spec: Mapping[str, Any], batch_size: int = 16, device: str = "auto") -> None:
        self.segmenter_spec, self.batch_size, self.device = dict(segmenter_spec), int(batch_size), device
        self._segmenter = None

    @property
    def segmenter(self) -> Any:
        if self._segmenter is None:
            from geoxai.segmentation.base import from_spec

            self._segmenter = from_spec(self.segmenter_spec, device=self.device)
        return self._segmenter

    def compute(self, paths: Sequence[Path], store: ArtifactStore, shard: tuple[int, int] = (0, 1),
                progress: bool = True, desc: str = "segmentation") -> ImageArtifacts:
        from tqdm.auto import tqdm

        from geoxai.store import file_digests

        segmenter = self.segmenter
        namespace = store.namespace(self.kind, segmenter.identity(), {"inference": segmenter.inference, "version": 1})
        paths = [Path(p) for p in paths]
        keys = file_digests(paths, progress=progress, store=store)
        first: dict[str, Path] = {}
        for path, key in zip(paths, keys):
            first.setdefault(key, path)
        rank, world = shard
        todo = namespace.missing(keys)[rank::world]
        skipped: dict[str, str] = {}
        computed = 0
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or rank != 0) as bar:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                maps = segmenter.segment_files([first[k] for k in batch])
                done = {k: m for k, m in zip(batch, maps) if m is not None}
                skipped.update({k: f"{first[k]}: unreadable image (the segmenter could not read it)"
                                for k, m in zip(batch, maps) if m is None})
                namespace.put_many(done)
                computed += len(done)
                bar.update(len(batch))
        values = {k: namespace.get(k) for k in dict.fromkeys(keys) if k not in skipped and k in namespace}
        unreadable = [(path, skipped[key]) for path, key in zip(paths, keys) if key in skipped]
        return ImageArtifacts(keys=keys, values=values, skipped=unreadable, computed=computed)


def provider(kind: str, **options: Any) -> Any:
    """The provider of ``kind`` (``descriptor``, ``lab``, ``segmentation``) built from its options."""
    if kind == "descriptor":
        return DescriptorArtifact(**options)
    if kind == "lab":
        return LabArtifact(**{k: v for k, v in options.items() if k in ("batch_size", "num_workers")})
    if kind == "segmentation":
        return SegmentationArtifact(**options)
    raise KeyError(kind)
