"""User-facing errors, and how they name the setting the user actually gave.

A ``GeoxaiError`` is a mistake the user can fix (a bad path, option or file). The CLI prints its
message on one line and exits with status 2 instead of showing a traceback; anything else is a bug
and keeps its traceback.

The same library code runs from command-line flags (``geoxai retrieve --weights ...``), from a
config section (``embedder: {weights: ...}`` of ``geoxai train``) and from a checkpoint's stored
config (``geoxai sample``). An error must name the setting as the user wrote it, so library code
spells settings through ``setting("weights")``: ``--weights`` by default, ``embedder.weights``
inside ``with settings_from("embedder")``.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from typing import Iterator


class GeoxaiError(Exception):
    """An error caused by user input; the message names the culprit and the fix."""


class UnreadableImageError(GeoxaiError):
    """An image file that cannot be decoded (truncated, corrupt or not an image)."""


class OutputError(GeoxaiError):
    """An output file or folder that cannot be written (permissions, read-only or full disk)."""


_SECTION: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("geoxai_settings", default=None)


def setting(name: str) -> str:
    """How the user spelled the setting ``name`` (``image_size``): ``--image-size`` on the command
    line, ``embedder.image_size`` inside ``settings_from("embedder")``, with the source it came from
    (``the training config of CKPT: embedder.image_size``) when one was given."""
    section = _SECTION.get()
    if section is None:
        return "--" + name.replace("_", "-")
    prefix, source = section
    key = f"{prefix}.{name}" if prefix else name
    return f"{source}: {key}" if source else key


def config_key(key: str) -> str:
    """How the config key ``key`` (``trainer.max_steps``) is named in an error: with the config file
    under ``geoxai train`` (``configs/x.yaml: trainer.max_steps``), ``config: trainer.max_steps``
    when a stage is called from Python."""
    return setting(key) if _SECTION.get() is not None else f"config: {key}"


@contextlib.contextmanager
def settings_from(section: str, source: str = "") -> Iterator[None]:
    """Within the block, ``setting(name)`` reads ``section.name`` (optionally ``source: section.name``)."""
    token = _SECTION.set((section, source))
    try:
        yield
    finally:
        _SECTION.reset(token)


@contextlib.contextmanager
def command_line_settings() -> Iterator[None]:
    """Within the block, settings are command-line flags again (``--weights``)."""
    token = _SECTION.set(None)
    try:
        yield
    finally:
        _SECTION.reset(token)


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' did you mean ...?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
