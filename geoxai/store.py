"""The artifact store: what a model computes from an image, computed once and kept on disk.

Descriptors, segmentations, colour statistics: every per-image result of a frozen model is stored
under a *namespace* (the kind of artifact, the backend's identity and the settings that change the
result) and keyed by the image's *content* (sha256 of its bytes, ``geoxai.data.digests``). So an
image is processed once whatever its name, however many samples or plugins read it, and a renamed
or copied dataset reuses everything; another model or setting gets another namespace.

Layout: ``<root>/<kind>/<namespace id>/meta.json`` and ``chunks/*.npz``. Each chunk holds the keys
and values of one batch and is written atomically, so a killed process loses at most the batch in
flight and several processes (one per GPU) can fill one namespace at the same time without locks.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import GeoxaiError

FORMAT = 1
_CHUNKS = "chunks"


def namespace_id(kind: str, backend: str, settings: Mapping[str, Any]) -> str:
    """The folder name of a namespace: a hash of everything that changes its values."""
    text = json.dumps({"format": FORMAT, "kind": kind, "backend": backend, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Namespace:
    """The values of one kind of artifact from one backend with one set of settings, by key."""

    def __init__(self, folder: Path, kind: str, backend: str, settings: Mapping[str, Any]) -> None:
        self.folder, self.kind, self.backend, self.settings = Path(folder), kind, backend, dict(settings)
        self._index: dict[str, tuple[str, int]] = {}
        self._seen: set[str] = set()
        self._loaded: dict[str, dict[str, np.ndarray]] = {}

    # ----------------------------------------------------------------------------- reading
    def _refresh(self) -> None:
        """Index chunks written since the last look (by this or another process)."""
        try:
            names = [n for n in os.listdir(self.folder / _CHUNKS) if n.endswith(".npz") and not n.startswith(".")]
        except FileNotFoundError:
            return
        for name in sorted(set(names) - self._seen):
            try:
                with np.load(self.folder / _CHUNKS / name, allow_pickle=False) as chunk:
                    keys = chunk["keys"]
            except (OSError, ValueError, KeyError):  # a damaged chunk is recomputed, never trusted
                continue
            for position, key in enumerate(keys.tolist()):
                self._index.setdefault(key, (name, position))
            self._seen.add(name)

    def __contains__(self, key: str) -> bool:
        if key not in self._index:
            self._refresh()
        return key in self._index

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys without a stored value, once each, in first-seen order."""
        self._refresh()
        return list(dict.fromkeys(k for k in keys if k not in self._index))

    def _chunk(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._loaded:
            if len(self._loaded) > 64:  # bounded memory on huge namespaces
                self._loaded.clear()
            with np.load(self.folder / _CHUNKS / name, allow_pickle=False) as chunk:
                self._loaded[name] = {k: chunk[k] for k in chunk.files}
        return self._loaded[name]

    def get(self, key: str) -> np.ndarray:
        if key not in self:
            raise KeyError(key)
        name, position = self._index[key]
        chunk = self._chunk(name)
        return chunk["values"][position] if "values" in chunk else chunk[f"value_{position}"]

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray]:
        """Values in the order of ``keys`` (a ``KeyError`` names the first missing one)."""
        self._refresh()
        return [self.get(k) for k in keys]

    # ----------------------------------------------------------------------------- writing
    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        """Store values as one new chunk (atomic: all of them or none)."""
        from geoxai.files import atomic_path

        if not items:
            return
        keys = list(items)
        values = [np.asarray(items[k]) for k in keys]
        arrays: dict[str, np.ndarray] = {"keys": np.asarray(keys)}
        if len({(v.shape, v.dtype.str) for v in values}) == 1:
            arrays["values"] = np.stack(values)
        else:  # ragged (e.g. label maps of images of different sizes)
            arrays.update({f"value_{i}": v for i, v in enumerate(values)})
        name = f"{uuid.uuid4().hex}.npz"
        with atomic_path(self.folder / _CHUNKS / name) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        for position, key in enumerate(keys):
            self._index.setdefault(key, (name, position))
        self._seen.add(name)

    def __len__(self) -> int:
        self._refresh()
        return len(self._index)

    def __repr__(self) -> str:
        return f"Namespace({self.kind!r}, backend={self.backend!r}, values={len(self)}, folder={str(self.folder)!r})"


class ArtifactStore:
    """A folder of namespaces; ``GEOXAI_CACHE``'s ``artifacts/`` unless another root is given."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from geoxai.cache import cache_dir

            root = cache_dir("artifacts")
        self.root = Path(root)

    def namespace(self, kind: str, backend: str, settings: Mapping[str, Any] | None = None) -> Namespace:
        """The namespace of ``kind`` computed by ``backend`` (an identity) with ``settings``."""
        from geoxai.files import atomic_write_text, make_folder

        settings = dict(settings or {})
        folder = self.root / kind / namespace_id(kind, backend, settings)
        meta = folder / "meta.json"
        if not meta.is_file():
            make_folder(folder / _CHUNKS, "the artifact store (GEOXAI_CACHE)")
            atomic_write_text(meta, json.dumps({"format": FORMAT, "kind": kind, "backend": backend,
                                                "settings": settings}, indent=1, default=str))
        return Namespace(folder, kind, backend, settings)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"


# ------------------------------------------------------------------------ computing for images
@dataclass
class ImageArtifacts:
    """What ``compute_for_images`` found or computed for a list of images (one row per path)."""

    keys: list[str]  # the content digest of each path
    values: dict[str, np.ndarray]  # digest -> value, for every readable image
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files and why
    computed: int = 0  # distinct images computed by this call (the rest came from the store)

    def stacked(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """Values as one array [N, *shape] in path order; rows of unreadable images are NaN."""
        out = np.full((len(self.keys), *shape), np.nan, dtype=dtype)
        for row, key in enumerate(self.keys):
            if key in self.values:
                out[row] = self.values[key]
        return out


def compute_for_images(namespace: Namespace, paths: Sequence[str | Path],
                       compute: Callable[[dict[str, Any]], Mapping[str, np.ndarray] | np.ndarray],
                       dataset: Callable[[list[Path]], Any], collate: Callable | None = None,
                       batch_size: int = 32, num_workers: int = 0, progress: bool = True, desc: str = "images",
                       shard: tuple[int, int] = (0, 1), digests: Sequence[str] | None = None,
                       on_batch: Callable[[dict[str, Any], list[Path]], None] | None = None,
                       pin_memory: bool = False) -> ImageArtifacts:
    """Values of ``namespace`` for every image of ``paths``: read from the store, else computed once.

    Distinct contents are computed once (duplicates share a digest), in batches of ``dataset``
    items (a torch Dataset over the missing paths, e.g. ``geoxai.data.images.ImageDataset``), each
    batch stored as soon as it is done: an interrupted call resumes where it stopped. ``compute``
    maps a collated batch to values in batch order (an array, or a dict digest -> value).
    ``shard=(rank, world)`` computes only every world-th missing image (one process per GPU); the
    caller synchronises before reading the rest. ``on_batch`` sees each batch and its paths.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from geoxai.data.digests import file_digests

    paths = [Path(p) for p in paths]
    keys = list(digests) if digests is not None else file_digests(paths, progress=progress)
    first_path: dict[str, Path] = {}
    for path, key in zip(paths, keys):
        first_path.setdefault(key, path)
    missing = namespace.missing(keys)
    rank, world = shard
    mine = missing[rank::world]
    todo = [first_path[k] for k in mine]
    skipped: dict[str, str] = {}
    computed = 0
    if todo:
        loader = DataLoader(dataset(todo), batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                            pin_memory=pin_memory)
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or rank != 0) as bar:
            for batch in loader:
                indices = batch["index"].tolist()
                for index, error in batch.get("skipped", []):
                    skipped[mine[index]] = error
                if indices and batch.get("image") is not None:
                    out = compute(batch)
                    if not isinstance(out, Mapping):
                        out = {mine[i]: value for i, value in zip(indices, np.asarray(out))}
                    namespace.put_many(out)
                    computed += len(out)
                if on_batch is not None:
                    on_batch(batch, [todo[i] for i in indices])
                bar.update(len(indices) + len(batch.get("skipped", [])))
    values: dict[str, np.ndarray] = {}
    for key in dict.fromkeys(keys):
        if key in skipped:
            continue
        if key in namespace:
            values[key] = namespace.get(key)
        elif world == 1:
            raise GeoxaiError(f"artifact store {namespace.folder}: no value for {first_path[key]} after computing "
                              "it; is the store being cleared by another process?")
    unreadable = [(path, skipped[key]) for path, key in zip(paths, keys) if key in skipped]
    return ImageArtifacts(keys=keys, values=values, skipped=unreadable, computed=computed)
