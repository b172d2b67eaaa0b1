"""YAML configs with dotted command-line overrides (``trainer.devices=2``).

Configs are plain nested dicts: every stage reads the keys it owns and rejects unknown ones, so a
typo in a config fails loudly instead of being ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from geoxai.errors import GeoxaiError

MAX_YAML_BYTES = 4 * 2**20  # geoxai's configs and run.yaml files are a few KB


MAX_YAML_VALUES = 1_000_000  # values of a YAML file once its aliases are expanded; configs have hundreds


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a document whose aliases (``*name``) expand to more than
    ``MAX_YAML_VALUES`` values (a "billion laughs": a few lines that any walk of the result, e.g. a
    deep copy or a JSON dump, turns into billions of values) or refer to themselves. Aliases as
    ``yaml.safe_dump`` writes them (a value repeated) still load."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _expanded_values(node, {}, set())
        return node


def _expanded_values(node: yaml.Node, sizes: dict[int, int], active: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (shared nodes measured once)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise yaml.composer.ComposerError(None, None, "an alias refers to the value that contains it", node.start_mark)
    active.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total = 1 + sum(_expanded_values(child, sizes, active) for child in children)
    active.discard(key)
    if total > MAX_YAML_VALUES:
        raise yaml.composer.ComposerError(None, None, f"its aliases (*name) expand to more than {MAX_YAML_VALUES} "
                                          "values, refused as an alias bomb", node.start_mark)
    sizes[key] = total
    return total


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The content of a YAML file; a syntax error names the file, line and column.

    Files over ``MAX_YAML_BYTES``, and aliases that expand beyond ``MAX_YAML_VALUES``, are refused before
    anything is built from them.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise GeoxaiError(f"{path}: refused: the {what} is larger than {MAX_YAML_BYTES // 2**20} MiB, far "
                              "beyond any geoxai file; give the right file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GeoxaiError(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise GeoxaiError(f"{where}: invalid YAML in the {what} ({detail})") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a YAML file and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise GeoxaiError(f"{path}: config file not found; see configs/ for examples")
    config = read_yaml(path, "config") or {}
    if not isinstance(config, dict):
        raise GeoxaiError(f"{path}: a config must be a mapping of keys to values")
    return apply_overrides(config, overrides)


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with each ``a.b.c=value`` override set."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise GeoxaiError(f"override {item!r}: write it as key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise GeoxaiError(f"override {item!r}: the value is not valid YAML ({problem}); quote it") from None
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise GeoxaiError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return config


def merge(defaults: dict[str, Any], config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Deep-merge ``config`` over ``defaults``; keys absent from ``defaults`` are errors."""
    out = copy.deepcopy(defaults)
    for key, value in config.items():
        if key not in defaults:
            from geoxai.registry import did_you_mean

            raise GeoxaiError(
                f"{where}: unknown key {key!r}.{did_you_mean(key, list(defaults))} "
                f"Valid keys: {', '.join(defaults)}"
            )
        if isinstance(defaults[key], dict) and isinstance(value, dict) and defaults[key]:
            out[key] = merge(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def save_config(config: dict[str, Any], path: str | Path) -> None:
    """Write ``config`` as YAML atomically."""
    from geoxai.files import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config, sort_keys=False))
