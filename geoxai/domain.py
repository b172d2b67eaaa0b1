"""Whether the shipped models see the kind of images they were trained on.

The shipped models (``geoxai.pretrained``: ``--embedder synthcity``, ``--checkpoint synthcity``,
``--segmenter synthcity``) were trained on SynthCity renders only. On real photos every command still
runs and prints plausible numbers (a SynthCity segmenter calls sky "building"), so ``retrieve``,
``sample`` and ``evaluate`` say so once and record it under a ``domain`` key.

The rule is cheap, deterministic and reads no pixel: an image folder holds SynthCity renders when it,
or a folder above it, is a SynthCity world, i.e. holds the world's ``synthcity.yaml`` (written first
by ``geoxai data synthcity``). Any other folder is taken as not SynthCity, whatever its images look
like: renders copied out of their world count as foreign until they are put back inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoxai import pretrained

# The parameters file `geoxai data synthcity` writes first into a world (``geoxai.synthcity.world.PARAMS_FILE``,
# not imported: that module pulls in torch, and the report reads this module without a model).
PARAMS_FILE = "synthcity.yaml"

BANNER = "SynthCity models on real photos: numbers describe the synthetic model, not your data"
RULE = (f"images are SynthCity renders when their folder or a folder above it holds {PARAMS_FILE} "
        "(a world written by `geoxai data synthcity`)")
RANDOM_BANNER = "untrained network baseline: descriptors come from a randomly initialised network, not a VPR model"


def shipped_name(value: object, kind: str) -> str | None:
    """The shipped set a model belongs to: ``value`` is its name (``synthcity``) or a path inside
    ``geoxai/pretrained/<name>/``; None for any other model."""
    if value is None:
        return None
    text = str(value)
    if pretrained.is_shipped(text, kind) and not Path(text).exists():
        return text
    try:
        relative = Path(text).expanduser().resolve().relative_to(pretrained.ROOT)
    except (OSError, ValueError):
        return None
    return relative.parts[0] if relative.parts else None


def embedder_model(spec: Mapping[str, Any] | None) -> str | None:
    """``embedder NAME`` when the embedder spec is a shipped model (by name or by its weights file)."""
    if not spec:
        return None
    name = shipped_name(spec.get("name"), "embedder") or shipped_name(spec.get("weights"), "embedder")
    return f"embedder {name}" if name else None


def segmenter_model(spec: Mapping[str, Any] | None) -> str | None:
    """``segmenter NAME`` for the ``synthcity`` backend with shipped weights (its default)."""
    if not spec or spec.get("name") != "synthcity":
        return None
    weights = spec.get("weights")
    if weights is None:  # the backend's default: the shipped set when there is one
        return "segmenter synthcity" if pretrained.is_shipped("synthcity", "segmenter") else None
    name = shipped_name(weights, "segmenter")
    return f"segmenter {name}" if name else None


def ldm_model(checkpoint: object) -> str | None:
    """``ldm NAME`` when the checkpoint is a shipped LDM."""
    name = shipped_name(checkpoint, "ldm")
    return f"ldm {name}" if name else None


def world_of(folder: str | Path) -> Path | None:
    """The SynthCity world holding ``folder`` (the folder itself or one above it), else None."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / PARAMS_FILE).is_file():
            return candidate
    return None


@dataclass
class DomainCheck:
    """Which shipped models were used, and whether the images they saw are SynthCity renders."""

    models: list[str]
    foreign: list[Path] = field(default_factory=list)  # image folders outside any SynthCity world

    @property
    def mismatch(self) -> bool:
        return bool(self.models) and bool(self.foreign)

    @property
    def notice(self) -> str | None:
        """The one line a command prints, or None when the models match their images."""
        if not self.mismatch:
            return None
        shown = ", ".join(str(p) for p in self.foreign[:2]) + (f" and {len(self.foreign) - 2} more folders"
                                                               if len(self.foreign) > 2 else "")
        return (f"{BANNER} ({', '.join(self.models)} trained on SynthCity renders; the images in {shown} are not "
                f"inside a SynthCity world: no {PARAMS_FILE} there or above)")

    def record(self) -> dict[str, Any] | None:
        """What run.yaml and results.json keep under ``domain``; None when no shipped model was used."""
        if not self.models:
            return None
        return {"models": list(self.models), "images": "not synthcity" if self.foreign else "synthcity",
                "folders": [str(p) for p in self.foreign[:10]], "rule": RULE, "notice": self.notice}


def merged(check: DomainCheck, record: object) -> DomainCheck:
    """``check`` joined with an earlier ``domain`` record of the same EVAL folder (its reused plugins used
    those models on those images)."""
    if not isinstance(record, Mapping):
        return check
    models = list(dict.fromkeys([*check.models, *(str(m) for m in record.get("models") or [])]))
    foreign = list(dict.fromkeys([*check.foreign, *(Path(f) for f in record.get("folders") or [])]))
    return DomainCheck(models, sorted(foreign))


def check_domain(models: Iterable[str | None], images: Iterable[str | Path]) -> DomainCheck:
    """Check ``images`` (files) against the shipped ``models`` used on them (None entries are other models)."""
    used = list(dict.fromkeys(m for m in models if m))
    if not used:
        return DomainCheck([])
    folders = {Path(p).parent for p in images}  # a few folders for millions of files: resolve those only
    foreign = sorted({folder.resolve() for folder in folders if world_of(folder) is None})
    return DomainCheck(used, foreign)


def mismatch_of(record: object) -> bool:
    """Whether a recorded ``domain`` (from run.yaml or results.json) says the images were not SynthCity."""
    return isinstance(record, Mapping) and record.get("images") == "not synthcity" and bool(record.get("models"))
