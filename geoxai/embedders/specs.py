"""Embedder specs on disk: the ``embedder.yaml`` sidecar written next to trained weights.

A spec is the dict ``from_spec`` rebuilds an embedder from. In a sidecar the weights are stored
relative to the sidecar's folder, so a folder of weights can be moved or shared as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoxai.errors import GeoxaiError, setting

SIDECAR = "embedder.yaml"
SHIPPED_SPEC = "configs/embedder/specs/cosplace-resnet50-512-hub.yaml"  # the thesis' model, released weights


def sidecar_path(weights: str | Path) -> Path:
    """Where the spec of ``weights`` lives: ``embedder.yaml`` in the same folder."""
    return Path(weights).parent / SIDECAR


def write_sidecar(weights: str | Path, spec: dict[str, Any]) -> Path:
    """Write ``spec`` (weights given by file name) next to ``weights``; returns the sidecar path."""
    from geoxai.config import save_config

    weights = Path(weights)
    path = sidecar_path(weights)
    save_config({**spec, "weights": weights.name}, path)
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """Read a spec YAML; a relative ``weights`` path is resolved against the file's folder."""
    from geoxai.config import load_config

    path = Path(path)
    if not path.is_file():
        raise GeoxaiError(f"{setting('embedder_config')} {path}: no such file; give the {SIDECAR} written beside "
                          f"trained weights (e.g. runs/embedder/synthcity-resnet18/{SIDECAR}) or a spec such as "
                          f"{SHIPPED_SPEC}")
    spec = load_config(path)
    if "stage" in spec:
        raise GeoxaiError(f"{setting('embedder_config')} {path}: this is a training config (stage: {spec['stage']}), "
                          f"not an embedder spec; after training, give the {SIDECAR} in its output_dir, or a spec "
                          f"such as {SHIPPED_SPEC}")
    weights = spec.get("weights")
    if weights not in (None, "hub", "random") and not Path(str(weights)).is_absolute():
        spec["weights"] = str(path.parent / str(weights))
    return spec
