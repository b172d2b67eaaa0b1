"""Small trained models shipped inside the package, loaded by name.

``synthcity`` is the set trained by the project's own configs on the default SynthCity world
(docs/pretrained.md gives the commands, the steps and what they measure):

    embedder     CosPlace ResNet18, 512-d            --embedder synthcity
    ldm          the descriptor-conditioned LDM      --checkpoint synthcity
    autoencoder  the LDM's autoencoder (ldm/vae)     autoencoder.path: synthcity
    segmenter    the 11-class SynthCity UNet         --segmenter synthcity

Each lives in ``geoxai/pretrained/<name>/<kind>/`` as safetensors (fp16 storage, read back as
fp32) with a ``MODEL_CARD.md``. Nothing is downloaded and no pickle is read.
"""

from __future__ import annotations

from pathlib import Path

from geoxai.errors import GeoxaiError, did_you_mean

ROOT = Path(__file__).resolve().parent
KINDS = ("embedder", "ldm", "autoencoder", "segmenter")
# Where each kind lives inside a shipped set: the autoencoder is the LDM's own vae/ (not a copy).
_FOLDERS = {"embedder": "embedder", "ldm": "ldm", "autoencoder": "ldm/vae", "segmenter": "segmenter"}
# The file that marks a kind as present (a set may ship only some kinds).
_MARKERS = {"embedder": "embedder.yaml", "ldm": "geoxai.yaml", "autoencoder": "config.json",
            "segmenter": "segmenter.yaml"}


def names(kind: str) -> list[str]:
    """Shipped model names of ``kind`` (embedder, ldm, autoencoder, segmenter)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    return sorted(p.name for p in ROOT.iterdir()
                  if p.is_dir() and (p / _FOLDERS[kind] / _MARKERS[kind]).is_file())


def is_shipped(name: object, kind: str) -> bool:
    """Whether ``name`` (a string, not a path) names a shipped model of ``kind``."""
    return isinstance(name, str) and "/" not in name and "\\" not in name and name in names(kind)


def folder(name: str, kind: str) -> Path:
    """The folder of the shipped ``kind`` model ``name``; an unknown name is a one-line error listing them."""
    if not is_shipped(name, kind):
        raise GeoxaiError(unknown_name_message(name, kind))
    return ROOT / name / _FOLDERS[kind]


def unknown_name_message(name: str, kind: str, setting: str | None = None) -> str:
    """``<setting> <name>: not a file or folder, nor a shipped <kind> (shipped: ...)`` with "did you mean"."""

    shipped = names(kind)
    setting = setting or {"embedder": "--embedder", "ldm": "--checkpoint", "autoencoder": "autoencoder.path",
                          "segmenter": "--segmenter"}[kind]
    return (f"{setting} {name}: no such file or folder, nor a shipped {kind} (shipped: "
            f"{', '.join(shipped) or 'none'}).{did_you_mean(str(name), shipped)}")


def looks_like_name(value: object) -> bool:
    """A bare word (no folder separator, no file suffix): meant as a shipped name rather than a path."""
    text = str(value)
    return bool(text) and "/" not in text and "\\" not in text and "." not in text
