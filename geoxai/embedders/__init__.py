"""Descriptor models behind one interface, found through the ``geoxai.embedders`` entry points.

``load("cosplace", backbone="resnet50", dim=512, weights="hub")`` or ``from_spec(spec_dict)``; a
third-party package registers its own class (an ``Embedder`` subclass) under that entry-point group.
A shipped model loads by its name (``load("synthcity")``, ``--embedder synthcity``; see
``geoxai.pretrained``).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from geoxai import pretrained
from geoxai.devices import resolve_device
from geoxai.embedders.base import Embedder
from geoxai.embedders.specs import SIDECAR, read_spec, write_sidecar
from geoxai.errors import GeoxaiError, did_you_mean
from geoxai.registry import EMBEDDERS
from geoxai.registry import load as load_entry
from geoxai.registry import names as group_names

__all__ = ["Embedder", "load", "from_spec", "names", "read_spec", "write_sidecar", "SIDECAR"]


def names() -> list[str]:
    """Registered embedder names (nothing is imported)."""
    return group_names(EMBEDDERS)


def load(name: str = "cosplace", **options: Any) -> Embedder:
    """Build the embedder registered as ``name`` (or ``module:Class`` / ``file.py:Class``) with ``options``.

    ``device`` works for every embedder: one whose constructor does not take it is moved there.
    Unknown options are a ``GeoxaiError`` listing the accepted ones, not a ``TypeError``.
    """
    if name not in names() and pretrained.is_shipped(name, "embedder"):
        extra = [k for k in options if k != "device"]
        if extra:
            raise GeoxaiError(f"embedder {name!r} is a shipped model and takes no options besides device "
                              f"(got {extra[0]!r}); use --embedder cosplace with --weights to change it")
        return from_spec(read_spec(pretrained.folder(name, "embedder") / SIDECAR), **options)
    cls = load_entry(EMBEDDERS, name)
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = [k for k, p in parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    device = options.pop("device", None) if "device" not in accepted and not takes_any else None
    unknown = [k for k in options if k not in accepted]
    if unknown and not takes_any:
        raise GeoxaiError(f"embedder {name!r}: unknown option {unknown[0]!r}.{did_you_mean(unknown[0], accepted)} "
                          f"Options: {', '.join(accepted)}")
    embedder = cls(**options)
    if not isinstance(embedder, Embedder):
        raise GeoxaiError(f"embedder {name!r}: {cls.__module__}.{cls.__qualname__} is not a "
                          "geoxai.embedders.Embedder subclass")
    if device is not None:
        embedder.to(resolve_device(device))
    return embedder


def from_spec(spec: Mapping[str, Any], **overrides: Any) -> Embedder:
    """Rebuild an embedder from its spec (``Embedder.spec()``, a sidecar, a CLI option set).

    ``overrides`` (e.g. ``device``) are applied on top without changing the spec itself.
    """
    if not isinstance(spec, Mapping):
        raise GeoxaiError(f"embedder spec must be a mapping like {{name: cosplace, backbone: resnet50}}, "
                          f"got {type(spec).__name__}")
    options = {k: v for k, v in {**spec, **overrides}.items() if v is not None}
    name = options.pop("name", "cosplace")
    return load(name, **options)
