"""Latents and descriptors of a training set, computed once into memory-mapped files.

The autoencoder and the embedder are frozen while the diffusion model trains, so encoding every image
at every step would redo the same work each epoch. ``build_latent_cache`` encodes each image once (and
its horizontal flip, for flip augmentation) and stores the KL posterior *moments* (mean and logvar),
not a sample: ``sample_from_moments`` draws a fresh latent every time an image is seen, exactly as
encoding on the fly would.

A cache lives in ``root / key[:16]`` where the key hashes the file list (relative paths, sizes,
mtimes), the autoencoder and embedder identities, the image size, the flip flag and the format
version: change any of them and a new cache is built; leave them and it is reused without encoding
anything. A build writes into a hidden ``.<key>.partial`` folder that is renamed into place only when
complete, so a killed build never leaves a cache that would be reused; the next build resumes the
partial folder batch by batch. See docs/latent-cache.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from geoxai.data.images import ImageDataset, ReshapeReport, collate_images, resize_center_crop
from geoxai.devices import autocast, resolve_device
from geoxai.errors import GeoxaiError
from geoxai.files import atomic_write_text

FORMAT_VERSION = 1
_DTYPES = {"moments": np.float16, "descriptors": np.float32,
           "flipped_moments": np.float16, "flipped_descriptors": np.float32}
_COPY_ROWS = 4096  # rows copied at a time when compacting out skipped images


# ------------------------------------------------------------------------------------- the key
def _stat_files(image_paths: Sequence[str | Path]) -> tuple[Path, list[tuple[str, int, int]]]:
    """The common folder of the images and, sorted by relative path, (relative path, size, mtime_ns)."""
    absolute = sorted({os.path.abspath(p) for p in image_paths})
    if not absolute:
        raise GeoxaiError("latent cache: no images given; check the dataset folder of the config")
    image_root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    files, missing = [], []
    for path in absolute:
        try:
            stat = os.stat(path)
        except OSError:
            missing.append(path)
            continue
        files.append((Path(os.path.relpath(path, image_root)).as_posix(), stat.st_size, stat.st_mtime_ns))
    if missing:
        raise GeoxaiError(f"latent cache: {len(missing)} image(s) do not exist, first {missing[0]}; "
                          "fix the image list or the dataset folder")
    files.sort()
    return Path(image_root), files


def cache_key(files: Sequence[tuple[str, int, int]], *, autoencoder_id: str, embedder_id: str,
              image_size: int, flip: bool) -> str:
    """sha256 over everything that changes the cached arrays (hex)."""
    digest = hashlib.sha256()
    header = {"format_version": FORMAT_VERSION, "autoencoder_id": autoencoder_id,
              "embedder_id": embedder_id, "image_size": int(image_size), "flip": bool(flip)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for relative, size, mtime_ns in files:
        digest.update(f"\n{relative}\t{size}\t{mtime_ns}".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ building
def _is_complete(folder: Path, key: str) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return meta["key"] == key and all((folder / f"{name}.npy").is_file() for name in meta["arrays"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _open_array(folder: Path, name: str, rows: int, shape: Sequence[int] | None = None) -> np.ndarray:
    """One cached array, memory-mapped, checked against what the cache declares: a file that is
    truncated, not an npy, of objects, of another dtype or shape is a ``_DamagedCache``."""
    path = folder / f"{name}.npy"
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, TypeError) as exc:  # what numpy raises for a damaged file
        raise _DamagedCache(f"{path.name} unreadable ({' '.join(str(exc).split())[:120] or type(exc).__name__})") \
            from None
    expected = _DTYPES.get(name)
    if not isinstance(array, np.ndarray) or expected is None or array.dtype != np.dtype(expected):
        raise _DamagedCache(f"{path.name} holds {getattr(array, 'dtype', type(array).__name__)}, not {np.dtype(expected)}")
    if array.ndim < 2 or array.shape[0] != rows or (shape is not None and list(array.shape) != list(shape)):
        raise _DamagedCache(f"{path.name} has shape {tuple(array.shape)}, the cache declares "
                            f"{tuple(shape) if shape is not None else (rows, '...')}")
    return array


def _meta_key(folder: Path) -> str | None:
    """The key a cache folder's meta.json names (None: no readable one)."""
    try:
        key = json.loads((folder / "meta.json").read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


def _cache_problem(folder: Path) -> str | None:
    """Why a finished cache folder cannot be trusted (None: every file agrees with meta.json)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        rows = int(meta["images"])
        for name in meta["arrays"]:
            _open_array(folder, name, rows, meta["shapes"][name])
        if not {"moments", "descriptors"} <= set(meta["arrays"]):
            return "meta.json lists no moments or descriptors"
        index = pd.read_csv(folder / "index.csv", dtype=str, keep_default_na=False)
        pd.read_csv(folder / "skipped.csv", dtype=str, keep_default_na=False)
        if "path" not in index.columns or len(index) != rows:
            return f"index.csv lists {len(index)} images, meta.json {rows}"
    except _DamagedCache as exc:
        return str(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # json, pandas: a damaged meta.json or csv
        return " ".join(str(exc).split())[:160] or type(exc).__name__
    return None


class _DamagedCache(Exception):
    """A cache file that disagrees with meta.json (why in the message)."""


def _read_progress(partial: Path, key: str) -> dict[str, Any] | None:
    """The saved state of an interrupted build of the same key, or None (its arrays checked like a
    finished cache's: a damaged one is said, and the build starts over)."""
    try:
        state = json.loads((partial / "progress.json").read_text())
        usable = state["key"] == key and all((partial / f"{n}.npy").is_file() for n in state["shapes"])
        for name, shape in state["shapes"].items() if usable else ():
            _open_array(partial, name, int(shape[0]), shape)
    except _DamagedCache as exc:
        print(f"latent cache: the interrupted build in {partial} is damaged ({exc}); starting it over", flush=True)
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return state if usable else None


def _check_output(name: str, value: Any, batch: int, ndim: int) -> np.ndarray:
    if not isinstance(value, torch.Tensor) or value.ndim != ndim or value.shape[0] != batch:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"latent cache: {name} returned {shape}; expected a tensor with {ndim} "
                         f"dimensions and {batch} rows")
    return value.detach().float().cpu().numpy()


def build_latent_cache(
    image_paths: list[Path], *, encode_moments: Callable[[torch.Tensor], torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor], autoencoder_id: str, embedder_id: str,
    image_size: int, flip: bool, root: Path, batch_size: int = 32, device: str | torch.device = "cpu",
    progress: bool = True, num_workers: int | None = None,
) -> LatentCache:
    """Encode and embed every image once (and its mirror image when ``flip``), or reuse the cache.

    ``encode_moments(images01 [B,3,S,S]) -> [B, 2C, h, w]`` (posterior mean and logvar) and
    ``embed(images01) -> [B, D]`` run under ``torch.no_grad()`` and bf16 autocast on CUDA. Images
    are resized (shorter side) and centre-cropped to ``image_size``; unreadable ones are skipped and
    listed in ``skipped.csv``. ``num_workers`` image-decoding processes (default: none on CPU, up to
    8 on CUDA).
    """
    if int(image_size) <= 0:
        raise GeoxaiError(f"latent cache: image_size must be a positive number of pixels (got {image_size})")
    if int(batch_size) <= 0:
        raise GeoxaiError(f"latent cache: batch_size must be >= 1 (got {batch_size})")
    from filelock import FileLock, Timeout

    image_root, files = _stat_files(image_paths)
    key = cache_key(files, autoencoder_id=autoencoder_id, embedder_id=embedder_id,
                    image_size=image_size, flip=flip)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key[:16]
    if _is_complete(final, key) and _cache_problem(final) is None:
        return LatentCache.open(final, image_root=image_root)
    lock = FileLock(str(root / f".{key[:16]}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:  # another process (e.g. another DDP rank) builds the same cache: wait for it
        if progress:
            print(f"latent cache: waiting for another process building {final}", flush=True)
        lock.acquire()
    try:
        problem = _cache_problem(final) if final.exists() else None
        if final.exists() and _meta_key(final) not in (None, key):  # same 16-character prefix, another key
            shutil.rmtree(final)
        elif final.exists() and (problem is not None or not _is_complete(final, key)):
            from geoxai.files import set_aside

            moved = set_aside(final)  # said once: set aside, and this build replaces it
            print(f"latent cache: {final} is damaged ({problem or 'incomplete'}); set aside as {moved.name}, "
                  "building it again", flush=True)
        if not _is_complete(final, key):
            partial = root / f".{key[:16]}.partial"
            parts = dict(format_version=FORMAT_VERSION, autoencoder_id=autoencoder_id,
                         embedder_id=embedder_id, image_size=int(image_size), flip=bool(flip),
                         image_root=str(image_root), files=len(files))
            _fill(partial, key, parts, image_root, files, encode_moments, embed, int(image_size),
                  bool(flip), int(batch_size), resolve_device(device), progress, num_workers)
            os.replace(partial, final)
    finally:
        lock.release()
    return LatentCache.open(final, image_root=image_root)


def _fill(partial: Path, key: str, parts: dict[str, Any], image_root: Path,
          files: list[tuple[str, int, int]], encode_moments: Callable, embed: Callable, image_size: int,
          flip: bool, batch_size: int, device: torch.device, progress: bool,
          num_workers: int | None) -> None:
    """Encode into ``partial``, resuming a previous attempt of the same key, then finish the folder."""
    from numpy.lib.format import open_memmap
    from tqdm.auto import tqdm

    started = time.time()
    state = _read_progress(partial, key)
    if state is None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        state = {"key": key, "done": 0, "skipped": [], "shapes": {}}
    arrays = {name: open_memmap(partial / f"{name}.npy", mode="r+") for name in state["shapes"]}
    done = state["done"]
    paths = [image_root / relative for relative, _, _ in files]
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    dataset = ImageDataset(paths[done:], transform=functools.partial(resize_center_crop, size=image_size))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images,
                        pin_memory=device.type == "cuda")
    start = done  # loader indices count from ``start``
    reshaped = ReshapeReport(image_size)
    with tqdm(total=len(paths), initial=done, desc="latent cache", unit="img", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in loader:
            before = done
            state["skipped"] += [[start + index, error] for index, error in batch["skipped"]]
            if batch["image"] is not None:
                for index, (h, w) in zip(batch["index"].tolist(), batch["sizes"], strict=True):
                    reshaped.add(paths[start + index], h, w)
                images = batch["image"].to(device, non_blocking=True)
                outputs = _encode(images, encode_moments, embed, flip, device)
                if not arrays:
                    for name, value in outputs.items():
                        state["shapes"][name] = [len(paths), *value.shape[1:]]
                        arrays[name] = open_memmap(partial / f"{name}.npy", mode="w+", dtype=_DTYPES[name],
                                                   shape=tuple(state["shapes"][name]))
                rows = batch["index"].numpy() + start
                for name, value in outputs.items():
                    if list(value.shape[1:]) != state["shapes"][name][1:]:
                        raise ValueError(f"latent cache: {name} of shape {tuple(value.shape[1:])} per image, "
                                         f"earlier batches gave {tuple(state['shapes'][name][1:])}")
                    arrays[name][rows] = value
            done += len(batch["index"]) + len(batch["skipped"])
            for array in arrays.values():
                array.flush()
            state["done"] = done
            atomic_write_text(partial / "progress.json", json.dumps(state))
            bar.update(done - before)
    del arrays  # close the memory maps before compacting and renaming
    for notice in reshaped.notices("training images"):
        print(f"latent cache: {notice}", flush=True)
    _finish(partial, key, parts, files, image_root, state, time.time() - started)


def _encode(images: torch.Tensor, encode_moments: Callable, embed: Callable, flip: bool,
            device: torch.device) -> dict[str, np.ndarray]:
    batch = images.shape[0]
    with torch.no_grad(), autocast(device):
        out = {"moments": _check_output("encode_moments", encode_moments(images), batch, 4),
               "descriptors": _check_output("embed", embed(images), batch, 2)}
        if flip:
            flipped = images.flip(-1)
            out["flipped_moments"] = _check_output("encode_moments", encode_moments(flipped), batch, 4)
            out["flipped_descriptors"] = _check_output("embed", embed(flipped), batch, 2)
    return out


def _finish(partial: Path, key: str, parts: dict[str, Any], files: list[tuple[str, int, int]],
            image_root: Path, state: dict[str, Any], seconds: float) -> None:
    """Drop skipped rows, write index.csv / skipped.csv / meta.json, remove the progress file."""
    from numpy.lib.format import open_memmap

    skipped_rows = {row for row, _ in state["skipped"]}
    if not state["shapes"]:
        first = state["skipped"][0] if state["skipped"] else (0, "no images")
        shutil.rmtree(partial)
        raise GeoxaiError(f"latent cache: none of the {len(files)} images under {image_root} could be read "
                          f"(first: {first[1]}); check the dataset folder")
    keep = np.array([i for i in range(len(files)) if i not in skipped_rows], dtype=np.int64)
    if skipped_rows:
        for name in state["shapes"]:
            source = open_memmap(partial / f"{name}.npy", mode="r")
            target = open_memmap(partial / f"{name}.compact.npy", mode="w+", dtype=source.dtype,
                                 shape=(len(keep), *source.shape[1:]))
            for start in range(0, len(keep), _COPY_ROWS):
                target[start:start + _COPY_ROWS] = source[keep[start:start + _COPY_ROWS]]
            target.flush()
            del source, target
            os.replace(partial / f"{name}.compact.npy", partial / f"{name}.npy")
    pd.DataFrame({"row": np.arange(len(keep)), "path": [files[i][0] for i in keep]}).to_csv(
        partial / "index.csv", index=False)
    skipped = sorted(state["skipped"])
    pd.DataFrame({"path": [files[row][0] for row, _ in skipped], "error": [e for _, e in skipped]},
                 columns=["path", "error"]).to_csv(partial / "skipped.csv", index=False)
    meta = {
        "key": key, **parts, "arrays": list(state["shapes"]),
        "shapes": {name: [len(keep), *shape[1:]] for name, shape in state["shapes"].items()},
        "images": len(keep), "skipped": len(skipped),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
    }
    atomic_write_text(partial / "meta.json", json.dumps(meta, indent=2))
    (partial / "progress.json").unlink()


# ------------------------------------------------------------------------------------ reading
class LatentCache:
    """A finished cache, opened read-only with memory maps (nothing is loaded until indexed)."""

    def __init__(self, folder: Path, meta: dict[str, Any], image_root: Path) -> None:
        self.folder, self.meta, self.image_root = folder, meta, image_root
        self.key: str = meta["key"]
        self.flip: bool = bool(meta["flip"])
        arrays = {name: _open_array(folder, name, int(meta["images"]), meta["shapes"][name]) for name in meta["arrays"]}
        self.moments: np.ndarray = arrays["moments"]
        self.descriptors: np.ndarray = arrays["descriptors"]
        self.flipped_moments: np.ndarray | None = arrays.get("flipped_moments")
        self.flipped_descriptors: np.ndarray | None = arrays.get("flipped_descriptors")
        index = pd.read_csv(folder / "index.csv", dtype=str, keep_default_na=False)
        skipped = pd.read_csv(folder / "skipped.csv", dtype=str, keep_default_na=False)
        self.relative_paths: list[str] = index["path"].tolist()
        self.paths: list[str] = [str(image_root / p) for p in self.relative_paths]
        self.skipped: list[tuple[str, str]] = [(str(image_root / p), e)
                                               for p, e in zip(skipped["path"], skipped["error"], strict=True)]

    @classmethod
    def open(cls, folder: str | Path, image_root: str | Path | None = None) -> LatentCache:
        """Open a finished cache folder; ``image_root`` overrides where the images now live."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            raise GeoxaiError(f"{folder}: not a finished latent cache (no readable meta.json); "
                              "build it with build_latent_cache") from None
        problem = _cache_problem(folder)
        if problem is not None:
            raise GeoxaiError(f"latent cache {folder} is damaged ({problem}); delete it, and training builds it "
                              "again")
        return cls(folder, meta, Path(image_root if image_root is not None else meta["image_root"]))

    def __len__(self) -> int:
        return int(self.meta["images"])

    def dataset(self, flip_probability: float | None = None) -> LatentDataset:
        """A torch Dataset of (moments, descriptor, index); mirrored pairs with ``flip_probability``."""
        if flip_probability is None:
            flip_probability = 0.5 if self.flip else 0.0
        if not 0.0 <= flip_probability <= 1.0:
            raise GeoxaiError(f"flip_probability must be in [0, 1] (got {flip_probability})")
        if flip_probability > 0 and not self.flip:
            raise GeoxaiError(f"{self.folder}: this latent cache was built without flip; "
                              "set flip_probability 0 or rebuild with flip on")
        return LatentDataset(self.folder, len(self), flip_probability)

    def __repr__(self) -> str:
        return (f"LatentCache({str(self.folder)!r}, images={len(self)}, skipped={len(self.skipped)}, "
                f"moments={tuple(self.moments.shape)}, flip={self.flip})")


class LatentDataset(Dataset):
    """Items of a latent cache as float32 tensors.

    Memory maps are opened lazily in each process (a pickled dataset carries only the folder), and
    the flip is drawn with ``torch.rand`` so the DataLoader's per-worker seeding decides it.
    """

    def __init__(self, folder: Path, length: int, flip_probability: float) -> None:
        self.folder, self.length, self.flip_probability = Path(folder), length, float(flip_probability)
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            names = ["moments", "descriptors"]
            if self.flip_probability > 0:
                names += ["flipped_moments", "flipped_descriptors"]
            try:  # checked again in each worker: a file changed since the cache was opened is never read
                self._arrays = {n: _open_array(self.folder, n, self.length) for n in names}
            except _DamagedCache as exc:
                raise GeoxaiError(f"latent cache {self.folder} is damaged ({exc}); delete it, and training "
                                  "builds it again") from None
        return self._arrays

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = self._open()
        p = self.flip_probability
        flipped = p >= 1.0 or (p > 0.0 and bool(torch.rand(()) < p))
        prefix = "flipped_" if flipped else ""
        return {"moments": torch.from_numpy(np.asarray(arrays[prefix + "moments"][index], dtype=np.float32)),
                "descriptor": torch.from_numpy(np.array(arrays[prefix + "descriptors"][index], dtype=np.float32)),
                "index": int(index)}


def sample_from_moments(moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A latent drawn from the KL posterior: mean + exp(logvar / 2) * eps (CompVis DiagonalGaussian)."""
    mean, logvar = torch.chunk(moments, 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise
