"""The artifact store: what a model computes from an image, computed once and kept on disk.

Descriptors, segmentations, colour statistics: every per-image result of a frozen model is stored
under a *namespace* (the kind of artifact, the backend's identity and the settings that change the
result) and keyed by the image's *content* (sha256 of its bytes, ``file_digests``). So an
image is processed once whatever its name, however many samples or plugins read it, and a renamed
or copied dataset reuses everything; another model or setting gets another namespace.

Layout: ``<root>/<kind>/<namespace id>/meta.json``, ``values.json`` (dtype, rank, shape of the values)
and ``chunks/*.npz``. Each chunk holds the keys and values of one batch and is written atomically, so
a killed process loses at most the batch in flight and several processes (one per GPU) can fill one
namespace at the same time without locks. A chunk damaged on disk (truncated, not an npz, objects,
another dtype, rank or shape, fewer values than keys) is set aside as ``*.damaged-<time>`` with one warning
and its images are computed again: a damaged cache costs time, never a wrong value.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import GeoxaiError

FORMAT = 1
_CHUNKS = "chunks"
_SPEC = "values.json"  # dtype, rank and shape of a namespace's values, from its first chunk
_NUMERIC = "biuf"  # bool, integers, floats: what an artifact is (never objects or strings)


# what reading a damaged npz raises: a bad zip, a bad deflate stream, a bad header, a short file,
# objects refused (allow_pickle=False), an npy where an npz belongs (no context manager, no keys)
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, zlib.error)


# damaged files that could not be set aside (a read-only store): said once per process, never read
_LEFT_IN_PLACE: set[Path] = set()


class _DamagedChunk(Exception):
    """A chunk file that cannot be trusted (why in the message)."""


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
        """Index chunks written since the last look (by this or another process); a damaged chunk is
        set aside with one warning, so its images are computed again instead of read wrong."""
        try:
            names = [n for n in os.listdir(self.folder / _CHUNKS) if n.endswith(".npz") and not n.startswith(".")]
        except FileNotFoundError:
            return
        for name in sorted(set(names) - self._seen):
            path = self.folder / _CHUNKS / name
            if path in _LEFT_IN_PLACE:
                continue
            try:
                keys = self._checked_chunk(path)
            except FileNotFoundError:  # set aside meanwhile by another process
                continue
            except _DamagedChunk as exc:
                self._seen.add(name)  # said once, never indexed
                self._set_aside(path, str(exc), "its images are computed again")
                continue
            for position, key in enumerate(keys):
                self._index.setdefault(key, (name, position))
            self._seen.add(name)

    def _checked_chunk(self, path: Path) -> list[str]:
        """The keys of a chunk whose every array reads back whole (the zip's checksums), numeric, one
        value per key, of the dtype and rank this namespace's values have (``values.json``)."""
        try:
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as chunk:
                arrays = {k: chunk[k] for k in chunk.files}
        except FileNotFoundError:
            raise
        except _READ_ERRORS as exc:  # what zipfile, zlib and numpy raise for a damaged file
            raise _DamagedChunk(f"unreadable ({' '.join(str(exc).split())[:120] or type(exc).__name__})") from None
        keys = arrays.pop("keys", None)
        if keys is None or keys.ndim != 1 or keys.dtype.kind != "U":
            raise _DamagedChunk("no list of keys")
        values = [arrays.get("values")] if "values" in arrays else [arrays.get(f"value_{i}") for i in range(len(keys))]
        if any(v is None for v in values) or ("values" in arrays and len(values[0]) != len(keys)):
            raise _DamagedChunk(f"not one value for each of its {len(keys)} keys")
        spec = self._spec()
        for value in values:
            shape = value.shape[1:] if "values" in arrays else value.shape
            if value.dtype.kind not in _NUMERIC:
                raise _DamagedChunk(f"values of dtype {value.dtype}, not numbers")
            if spec is not None and (value.dtype.str != spec["dtype"] or len(shape) != spec["ndim"]):
                raise _DamagedChunk(f"values of dtype {value.dtype.str} and rank {len(shape)}, where this namespace "
                                    f"holds {spec['dtype']} of rank {spec['ndim']}")
            if spec is not None and spec.get("shape") is not None and list(shape) != spec["shape"]:
                raise _DamagedChunk(f"values of shape {tuple(shape)}, where this namespace holds {tuple(spec['shape'])}")
        return keys.tolist()

    def _spec(self) -> dict[str, Any] | None:
        """The dtype, rank and shape (None: values of several shapes) of this namespace's values, written
        with its first chunk (None before)."""
        path = self.folder / _SPEC
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and isinstance(spec.get("ndim"), int):
                return spec
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
        self._set_aside(path, "not a description of the values", "the next chunk writes it again")
        return None

    def _write_spec(self, spec: dict[str, Any]) -> None:
        from geoxai.files import atomic_write_text

        atomic_write_text(self.folder / _SPEC, json.dumps(spec))

    def _has_chunks(self) -> bool:
        try:
            return any(n.endswith(".npz") for n in os.listdir(self.folder / _CHUNKS))
        except FileNotFoundError:
            return False

    def _set_aside(self, path: Path, problem: str, then: str) -> None:
        from geoxai.files import set_aside

        try:
            moved = f"set aside as {set_aside(path).name}"
        except FileNotFoundError:
            return  # another process set it aside (and said so) first
        except GeoxaiError:  # a read-only store: left in place, ignored by this process
            if path in _LEFT_IN_PLACE:
                return
            _LEFT_IN_PLACE.add(path)
            moved = "left in place (the store is read-only)"
        warnings.warn(f"artifact store: {path} is damaged ({problem}); {moved}, {then}", stacklevel=3)

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
            try:
                with np.load(self.folder / _CHUNKS / name, allow_pickle=False) as chunk:
                    self._loaded[name] = {k: chunk[k] for k in chunk.files}
            except _READ_ERRORS as exc:  # checked when indexed: changed on disk since
                raise GeoxaiError(f"artifact store: {self.folder / _CHUNKS / name} changed while being read "
                                  f"({' '.join(str(exc).split())[:120]}); run the command again") from None
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
        dtypes, ranks = {v.dtype.str for v in values}, {v.ndim for v in values}
        if len(dtypes) > 1 or len(ranks) > 1 or values[0].dtype.kind not in _NUMERIC:
            raise GeoxaiError(f"artifact store {self.folder}: values of {self.kind} must be numbers of one dtype and "
                              f"rank (got {sorted(dtypes)}, ranks {sorted(ranks)})")
        spec = self._spec()
        shapes = {v.shape for v in values}
        if spec is None:  # chunks from before values.json was kept: their shapes are not known to agree
            shape = list(values[0].shape) if len(shapes) == 1 and not self._has_chunks() else None
            self._write_spec({"dtype": values[0].dtype.str, "ndim": values[0].ndim, "shape": shape})
        elif (values[0].dtype.str, values[0].ndim) != (spec["dtype"], spec["ndim"]):
            raise GeoxaiError(f"artifact store {self.folder}: {self.kind} values are {spec['dtype']} of rank "
                              f"{spec['ndim']}, not {values[0].dtype.str} of rank {values[0].ndim}")
        elif spec.get("shape") is not None and shapes != {tuple(spec["shape"])}:
            # values of several shapes (label maps of images of different sizes): from now on only the
            # rank is checked; said before the chunk is written, so no reader sees it checked by shape
            self._write_spec({**spec, "shape": None})
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

    paths = [Path(p) for p in paths]
    keys = list(digests) if digests is not None else file_digests(paths, progress=progress)
    first_path: dict[str, Path] = {}
    for path, key in zip(paths, keys, strict=True):
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
                        out = {mine[i]: value for i, value in zip(indices, np.asarray(out), strict=True)}
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
    unreadable = [(path, skipped[key]) for path, key in zip(paths, keys, strict=True) if key in skipped]
    return ImageArtifacts(keys=keys, values=values, skipped=unreadable, computed=computed)


_BLOCK = 1 << 20


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return hashlib.sha1(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode()).hexdigest()


def _digest_or_missing(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError:  # a vanished or unreadable file: its own key, so loading it reports the error
        return "unreadable:" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()


def file_digests(paths: Sequence[str | Path], progress: bool = False, store: object | None = None) -> list[str]:
    """Content digests of ``paths`` in order, remembered in the artifact store by path, size and mtime."""
    from tqdm.auto import tqdm

    paths = [Path(p) for p in paths]
    memory = (store or ArtifactStore()).namespace("digest", "sha256", {})
    stat_keys = [_stat_key(p) for p in paths]
    known = {k for k in stat_keys if k is not None and k in memory}
    todo = [i for i, k in enumerate(stat_keys) if k is None or k not in known]
    found: dict[int, str] = {}
    if todo:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool, \
                tqdm(total=len(todo), desc="hashing", unit="img", disable=not progress or len(todo) < 2000) as bar:
            for start in range(0, len(todo), 4096):
                chunk = todo[start:start + 4096]
                for i, digest in zip(chunk, pool.map(_digest_or_missing, [paths[i] for i in chunk]), strict=True):
                    found[i] = digest
                bar.update(len(chunk))
                new = {stat_keys[i]: np.frombuffer(bytes.fromhex(found[i]), dtype=np.uint8) for i in chunk
                       if stat_keys[i] is not None and not found[i].startswith("unreadable:")}
                memory.put_many(new)
    out = []
    for i, key in enumerate(stat_keys):
        out.append(found[i] if i in found else bytes(memory.get(key)).hex())
    return out
