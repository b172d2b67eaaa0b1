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
import os
import pickle
import warnings
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


def read_weights(path: str | Path, setting: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """The content of a weights file, loaded with ``weights_only=True`` (or from safetensors).

    ``setting`` names where the path came from (``--weights``, ``embedder.weights``); every
    failure is a one-line ``GeoxaiError`` naming it, and a file holding code is refused.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise GeoxaiError(f"{setting} {path}: no such file")
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
