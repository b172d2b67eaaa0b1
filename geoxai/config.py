"""YAML configs with dotted command-line overrides (``trainer.devices=2``).

Configs are plain nested dicts: every stage reads the keys it owns and rejects unknown ones, so a
typo in a config fails loudly instead of being ignored.
"""

from __future__ import annotations

import copy
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geoxai.errors import GeoxaiError, config_key, did_you_mean

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


# -------------------------------------------------------------------------------- value rules
@dataclass(frozen=True)
class Number:
    """What one numeric config value may be: whole or real, its range, and what else it may be.

    Stages list their numeric keys with a rule each (``RULES``) and ``check_values`` checks them all
    after defaults are merged, before any work starts: a NaN, an infinity, a negative step count or
    a number that YAML read as text is one line naming the key, not a crash hours later or a run of
    blank images.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused (a learning rate > 0)
    high_open: bool = False
    whole: bool = False
    optional: bool = False  # null is allowed (a default chosen elsewhere, or "off")
    special: tuple[tuple[Any, str], ...] = ()  # exact values with a meaning of their own: ((-1, "no limit"),)
    text: str | None = None  # a pattern of text also accepted, e.g. a duration DD:HH:MM:SS
    text_hint: str = ""  # how that text is described in errors
    each: bool = False  # the value is a list and the rule applies to every item
    or_list: Number | None = None  # a list is also accepted, each item under this rule (device indices)

    def describe(self) -> str:
        """``a whole number >= 1``, ``a number > 0 and <= 1``, ... for the error's "give ..." part."""
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        noun = "whole number" if self.whole else "number"
        text = f"a list of {noun}s" if self.each else f"a {noun}"
        text += (" " + " and ".join(bounds) if bounds else "")
        text += "".join(f" or {value} ({meaning})" for value, meaning in self.special)
        if self.text_hint:
            text += f" or {self.text_hint}"
        if self.or_list is not None:
            text += " or " + self.or_list.describe().replace("a ", "a list of ", 1).replace("number", "numbers", 1)
        return text + (" or null" if self.optional else "")

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``is negative``), or None when it is allowed."""
        if value is None:
            return None if self.optional else "is not set (null)"
        if isinstance(value, bool):
            return "is a yes/no value, not a number"
        if isinstance(value, str):
            if self.text is not None and re.fullmatch(self.text, value.strip()):
                return None
            if re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value.strip()):
                return ("is text, not a number (YAML reads a number with an exponent but no dot, like 1e-5, as "
                        "text: write 1.0e-5)")
            return "is text, not a number"
        if not isinstance(value, numbers.Real):
            return "is not a number"
        if any(value == special for special, _ in self.special):
            return None
        if math.isnan(value):
            return "is not a number (NaN)"
        if math.isinf(value):
            return "is not finite"
        if self.whole and not isinstance(value, numbers.Integral):
            return "is not a whole number"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return "is negative" if value < 0 <= self.low else "is too small"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return "is too large"
        return None


def check_values(config: Mapping[str, Any], rules: Mapping[str, Number]) -> None:
    """Check every ``dotted.key`` of ``rules`` present in ``config``; the first bad value is one
    line naming the key (with the config file under ``geoxai train``) and what to give instead."""
    for key, rule in rules.items():
        node: Any = config
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            items = [(key, node)]
            if rule.or_list is not None and isinstance(node, (list, tuple)):
                rule = rule.or_list
                items = [(f"{key}[{i}]", item) for i, item in enumerate(node)]
            elif rule.each:
                if not isinstance(node, (list, tuple)):
                    raise GeoxaiError(f"{config_key(key)}: {_shown(node)} is not a list; give {rule.describe()}")
                items = [(f"{key}[{i}]", item) for i, item in enumerate(node)]
            for name, value in items:
                problem = rule.problem(value)
                if problem is not None:
                    raise GeoxaiError(f"{config_key(name)}: {_shown(value)} {problem}; give {rule.describe()}")


def _number(value: float) -> str:
    """1 rather than 1.0, 4294967295 rather than 4.29497e+09."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shown(value: Any) -> str:
    """A value as the user wrote it in YAML (null, true, nan, 'text')."""
    if value is None or isinstance(value, bool):
        return yaml.safe_dump(value).split("\n")[0]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value)


# The rules most keys share.
COUNT = Number(low=1, whole=True)  # batch sizes, steps, channels: at least one
WHOLE_OR_OFF = Number(low=0, whole=True)  # workers, warm-up steps, "every N steps" (0: off)
POSITIVE = Number(low=0, low_open=True)  # learning rates, scales, radii
NON_NEGATIVE = Number(low=0)  # loss weights, decays, jitter strengths
PROBABILITY = Number(low=0, high=1)
BETAS = Number(low=0, high=1, high_open=True, each=True)  # Adam's (beta1, beta2)
