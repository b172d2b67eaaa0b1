"""Entry-point registries for embedders, segmenters and plugins.

Names are listed from package metadata without importing anything; only what is asked for is
loaded. Besides registered names, ``module:Attr`` and ``path/to/file.py[:Attr]`` are accepted so
that a component under development can be used before it is packaged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from geoxai import pretrained
from geoxai.errors import GeoxaiError, did_you_mean

EMBEDDERS = "geoxai.embedders"
SEGMENTERS = "geoxai.segmenters"
PLUGINS = "geoxai.plugins"


def _distribution(entry_point: Any) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def registered(group: str) -> dict[str, Any]:
    """Entry points of ``group`` by name (not loaded).

    A name registered by two packages with different targets is an error naming both (the same
    target found twice, e.g. an editable and a regular install of one package, is one entry).
    """
    found: dict[str, Any] = {}
    for entry_point in entry_points(group=group):
        other = found.get(entry_point.name)
        if other is not None and other.value != entry_point.value:
            raise GeoxaiError(f"{group}: {entry_point.name!r} is registered twice, by {_distribution(other)} "
                              f"({other.value}) and by {_distribution(entry_point)} ({entry_point.value}); "
                              "uninstall one of them or rename its entry point")
        found.setdefault(entry_point.name, entry_point)
    return found


def names(group: str) -> list[str]:
    """Sorted registered names of ``group``."""
    return sorted(registered(group))


def _load_file(spec: str) -> Any:
    path_text, _, attr = spec.partition(".py")
    path = Path(path_text + ".py")
    attr = attr.lstrip(":")
    if not path.is_file():
        raise GeoxaiError(f"{path}: no such file; give an existing .py file or a registered name")
    module_name = f"_geoxai_dev_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    if not attr:
        raise GeoxaiError(f"{spec}: name the class to load, e.g. {path}:MyClass")
    return _getattr(module, attr, spec)


def _getattr(module: Any, attr: str, spec: str) -> Any:
    try:
        return getattr(module, attr)
    except AttributeError:
        public = [n for n in dir(module) if not n.startswith("_")]
        raise GeoxaiError(f"{spec}: {module.__name__} has no {attr!r}.{did_you_mean(attr, public)}") from None


def load(group: str, name: str) -> Any:
    """Load the object registered as ``name`` in ``group`` (or given as module:Attr / file.py:Attr).

    Import errors of the component itself propagate (the caller decides whether they are fatal);
    an unknown name raises ``GeoxaiError`` with the known names and a suggestion.
    """
    if name.endswith(".py") or ".py:" in name:
        return _load_file(name)
    if ":" in name:
        module_name, attr = name.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise GeoxaiError(f"{name}: cannot import module {module_name!r}") from None
            raise
        return _getattr(module, attr, name)
    eps = registered(group)
    if name not in eps:
        known = sorted(eps)
        kind = group.split(".")[-1]
        singular = kind[:-1] if kind.endswith("s") else kind
        shipped: list[str] = []
        if singular in ("embedder", "segmenter"):
            shipped = [n for n in pretrained.names(singular) if n not in eps]
        listed = ", ".join([*known, *(f"{n} (shipped model)" for n in shipped)])
        raise GeoxaiError(
            f"unknown {singular} {name!r}.{did_you_mean(name, known + shipped)} "
            f"Known: {listed or 'none installed'}"
        )
    return eps[name].load()
