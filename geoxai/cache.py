"""The one folder where geoxai keeps downloaded weights and computed caches."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """``$GEOXAI_CACHE`` (default: the user cache dir) joined with ``parts``; created on demand."""
    root = Path(os.environ.get("GEOXAI_CACHE") or platformdirs.user_cache_dir("geoxai"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
