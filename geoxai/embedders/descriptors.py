"""Descriptors of image files: computed once per image content and embedder, kept in the artifact store.

Every command that needs descriptors (``retrieve``, ``sample``, ``evaluate``, the LDM's latent cache
aside) goes through ``embed_files``: images are loaded in a data loader, resized and centre-cropped
to the embedder's input side while loading (so photos of different sizes share a batch), embedded
in batches, and stored under the embedder's identity. A second run, or another command on the same
images, reads them back instead of recomputing. Unreadable files are skipped and listed; images that
had to be scaled up or mostly cropped away are counted (``geoxai.data.images.ReshapeReport``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from geoxai.data.images import ImageDataset, ReshapeReport, collate_images, resize_center_crop
from geoxai.devices import resolve_device
from geoxai.errors import GeoxaiError, setting
from geoxai.store import ArtifactStore, compute_for_images, file_digests

DESCRIPTOR_KIND, SIZE_KIND = "descriptor", "image-size"
PREPROCESSING = "resize-shorter-side+center-crop/antialias/1"  # part of the key: change it, recompute


def default_workers() -> int:
    """Data-loader workers: enough to keep decoding off the model's path, one core left free."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


@dataclass
class Descriptors:
    """Descriptors of a list of files (one row per file), and what happened on the way."""

    array: np.ndarray  # float32 [N, dim]; rows of unreadable files are NaN
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    reshaped: ReshapeReport | None = None
    computed: int = 0  # distinct images embedded by this call; the others came from the store
    digests: list[str] = field(default_factory=list)

    @property
    def readable(self) -> np.ndarray:
        """Boolean mask of the rows that hold a descriptor."""
        return ~np.isnan(self.array).any(axis=1)


def embed_files(embedder: Any, paths: Sequence[str | Path], batch_size: int = 32,
                device: str | torch.device | None = None, progress: bool = True,
                num_workers: int | None = None, desc: str = "descriptors", store: Any = None,
                shard: tuple[int, int] = (0, 1)) -> Descriptors:
    """Descriptors float32 [N, dim] of ``paths`` in order, from the store or computed once per image.

    ``store``: a ``geoxai.store.ArtifactStore`` (default: the one in ``GEOXAI_CACHE``).
    ``shard=(rank, world)`` computes a share of the missing images (see ``compute_for_images``).
    """
    if batch_size < 1:
        raise GeoxaiError(f"{setting('batch_size')} {batch_size}: must be at least 1")
    if device is not None:
        embedder.to(resolve_device(device))
    store = store or ArtifactStore()
    identity = embedder.identity()
    settings = {"preprocessing": PREPROCESSING, "image_size": int(embedder.image_size)}
    descriptors = store.namespace(DESCRIPTOR_KIND, identity, settings)
    sizes = store.namespace(SIZE_KIND, "pil", {})
    paths = [Path(p) for p in paths]

    def compute(batch: dict[str, Any]) -> np.ndarray:
        return embedder.embed(batch["image"]).float().cpu().numpy()

    def remember_sizes(batch: dict[str, Any], batch_paths: list[Path]) -> None:
        if batch["image"] is not None:
            keys = [digest_of[p] for p in batch_paths]
            sizes.put_many({k: np.asarray(s, dtype=np.int32) for k, s in zip(keys, batch["sizes"], strict=True)
                            if k not in sizes})

    digests = file_digests(paths, progress=progress, store=store)
    digest_of = dict(zip(paths, digests, strict=True))
    result = compute_for_images(
        descriptors, paths, compute, collate=collate_images, batch_size=batch_size,
        dataset=lambda todo: ImageDataset(todo, transform=functools.partial(resize_center_crop,
                                                                            size=int(embedder.image_size))),
        num_workers=default_workers() if num_workers is None else num_workers, progress=progress, desc=desc,
        shard=shard, digests=digests, on_batch=remember_sizes, pin_memory=embedder.device.type == "cuda")
    reshaped = ReshapeReport(int(embedder.image_size))
    for path, key in zip(paths, digests, strict=True):
        if key in result.values and key in sizes:
            height, width = (int(v) for v in sizes.get(key))
            reshaped.add(path, height, width)
    return Descriptors(array=result.stacked((int(embedder.dim),)), skipped=result.skipped, reshaped=reshaped,
                       computed=result.computed, digests=digests)
