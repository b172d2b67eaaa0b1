"""Loading weights without ever running code from a file.

A pickled ``.pth``/``.ckpt``/``.bin`` file can carry code that ``torch.load`` runs while unpickling.
geoxai therefore reads every weights file in one of two ways:

- ``read_weights``: ``torch.load(..., weights_only=True)`` (only tensors, numbers, strings and
  plain containers are rebuilt; anything else is refused) or safetensors;
- library helpers that load on our behalf (torchvision ``weights=``, torchmetrics' LPIPS and FID
  backbones, segment-anything) run inside ``weights_only_loads()``, which sets torch's
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``: from torch 2.6 on it turns even an explicit
  ``weights_only=False`` inside a library into ``True``. The ``geoxai`` command sets it for its
  whole process.

Lightning checkpoints go through ``geoxai.trainer.SafeCheckpointIO`` (``weights_only=True``) and
diffusers reads ``.bin`` files with ``weights_only=True`` itself (and ``.safetensors`` without
pickle). See docs/security.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from geoxai.errors import GeoxaiError

FORCE_VARIABLE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_REFUSED = ("holds Python objects besides tensors, which geoxai never unpickles (unpickling can run code "
            "from the file); re-save it as a plain state dict of tensors or as .safetensors")


def refused_pickle(exc: BaseException) -> bool:
    """Whether ``exc`` is torch refusing a pickle that would build Python objects (a GLOBAL: a class
    or function to call) under ``weights_only=True``, as opposed to a file that is just not weights."""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in text.upper() and "Weights only" in text


def _reason(exc: BaseException) -> str:
    """The informative line of a loading error (torch's weights-only errors are paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Check the documentation", "Weights only load failed"))]
    specific = [line for line in lines if "Unsupported" in line or "GLOBAL" in line or "invalid" in line.lower()]
    text = (specific or lines or [type(exc).__name__])[-1]
    return text[:200]


# ------------------------------------------------------------------------------ sizes before loading
# The largest checkpoint geoxai loads is SAM ViT-H (2.6 GB); 16 GiB leaves six times that for
# larger segmenters or float32 copies, and still refuses a crafted file before it fills memory.
MAX_WEIGHTS_BYTES = 16 * 2**30
MAX_WEIGHTS_VARIABLE = "GEOXAI_MAX_WEIGHTS_BYTES"  # raises the limit for a genuinely larger model
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_SAFETENSORS_HEADER_LIMIT = 100 * 2**20  # what the safetensors library itself accepts


def max_weights_bytes() -> int:
    """The most bytes a weights file may hold once read: ``GEOXAI_MAX_WEIGHTS_BYTES``, else 16 GiB."""
    raw = os.environ.get(MAX_WEIGHTS_VARIABLE, "").strip()
    if not raw:
        return MAX_WEIGHTS_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise GeoxaiError(f"{MAX_WEIGHTS_VARIABLE}={raw!r}: give a positive whole number of bytes")
    return int(raw)


def inflated_size(path: str | Path) -> int:
    """How many bytes reading ``path`` produces, from its index alone: a zip checkpoint's central
    directory (uncompressed sizes), a safetensors header (tensor extents), else the file size.

    Raises ``ValueError`` for a safetensors header that cannot be right.
    """
    path = Path(path)
    size = path.stat().st_size
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    if path.suffix.lower() == ".safetensors":
        with open(path, "rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < length <= min(size - 8, _SAFETENSORS_HEADER_LIMIT):
                raise ValueError(f"its header claims {length} bytes of a {size}-byte file")
            header = json.loads(handle.read(length))
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items()
                if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
        return 8 + length + max(ends, default=0)
    return size


def check_size(path: str | Path, setting: str) -> None:
    """Refuse a weights file whose contents would take more memory than any model geoxai knows.

    A file whose index cannot be read passes: the loader that follows names what is wrong with it.
    """
    path = Path(path)
    limit = max_weights_bytes()
    try:
        size = inflated_size(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
        return
    if size > limit:
        raise GeoxaiError(f"{setting} {path}: refused: its contents take {_amount(size)} once read, more than the "
                          f"limit of {_amount(limit)} ({_amount(MAX_WEIGHTS_BYTES)} by default, beyond any model "
                          f"geoxai knows); if the model is genuine, set {MAX_WEIGHTS_VARIABLE} to a larger number "
                          "of bytes")


def _amount(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def weights_in(folder: str | Path) -> list[Path]:
    """The weights files directly inside ``folder`` (what a library's ``from_pretrained`` reads)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in WEIGHTS_SUFFIXES)


# Errors a library raises for a file it cannot load (safetensors' own type is a plain Exception subclass).
_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, KeyError, TypeError,
                                                    EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


def _library_errors() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:
        return _LIBRARY_ERRORS
    return (*_LIBRARY_ERRORS, SafetensorError)


@contextlib.contextmanager
def library_load(source: str | Path, setting: str, fix: str) -> Iterator[None]:
    """Around a library's load of the weights at ``source`` (a file or a model folder): sizes checked
    first, and a failure one ``GeoxaiError`` naming the weights file and its folder, and ``fix``."""
    source = Path(source)
    files = [source] if source.is_file() else weights_in(source)
    for file in files:
        check_size(file, setting)
    try:
        yield
    except GeoxaiError:
        raise
    except _library_errors() as exc:
        chain = [c for c in (exc, exc.__cause__, exc.__context__) if c is not None]
        named = [f for f in files if any(f.name in str(c) for c in chain)]
        culprit = (named or files or [None])[0]
        what = f"weights file {culprit.name} in {culprit.parent}" if culprit is not None else \
            f"{source} (no weights file in it)"
        refused = [c for c in chain if refused_pickle(c) or "Weights only load failed" in str(c)]
        if refused:
            raise GeoxaiError(f"{setting}: {what}: refused ({_reason(refused[0])}): the file {_REFUSED}") from None
        raise GeoxaiError(f"{setting}: {what}: cannot be loaded ({_reason(exc)}); {fix}") from None


def read_weights(path: str | Path, setting: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """The content of a weights file, loaded with ``weights_only=True`` (or from safetensors).

    ``setting`` names where the path came from (``--weights``, ``embedder.weights``); every
    failure is a one-line ``GeoxaiError`` naming it, and a file holding code is refused.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise GeoxaiError(f"{setting} {path}: no such file")
    check_size(path, setting)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=str(map_location))
        with warnings.catch_warnings():  # torch's note on the pickle protocol of a file it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle, zip, safetensors and torch each raise their own types
        if refused_pickle(exc):
            raise GeoxaiError(f"{setting} {path}: refused: the file {_REFUSED} ({_reason(exc)})") from None
        raise GeoxaiError(f"{setting} {path}: not readable as weights ({_reason(exc)}); give a state dict "
                          "saved with torch.save, a Lightning checkpoint or a .safetensors file") from None


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside the block loads weights only, even where a library asks otherwise."""
    previous = os.environ.get(FORCE_VARIABLE)
    os.environ[FORCE_VARIABLE] = "1"
    try:
        yield
    except Exception as exc:
        if refused_pickle(exc):
            raise GeoxaiError(f"refused: a weights file loaded by a library {_REFUSED} ({_reason(exc)})") from None
        raise
    finally:
        if previous is None:
            os.environ.pop(FORCE_VARIABLE, None)
        else:
            os.environ[FORCE_VARIABLE] = previous


def _listed(items: list[str], limit: int = 3) -> str:
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_state_dict(expected: Mapping[str, Any], found: Mapping[str, Any], where: str, fix: str) -> None:
    """One ``GeoxaiError`` naming every missing, unexpected and mis-shaped tensor when ``found`` does not
    fit a model whose state dict is ``expected``; ``fix`` says what to do (e.g. the options to use)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [f"{k} {list(found[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
                  if k in found and tuple(found[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches, file vs model ({_listed(mismatched)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    raise GeoxaiError(f"{where}: the weights do not fit the model: {'; '.join(problems)}; {fix}")
