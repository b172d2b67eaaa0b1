"""The 25 m positive radius is one convention: every radius default, in the library and on the command
line, is ``POSITIVE_RADIUS_M``."""

from __future__ import annotations

import inspect

import click

from geoxai.cli import cli
from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.data.info import dataset_info
from geoxai.data.vpr import VPRTestSet
from geoxai.evaluation.pairs import build_pairs
from geoxai.evaluation.runner import evaluate
from geoxai.retrieval import RetrievalResult, evaluate_retrieval


def radius_options(group: click.Group, prefix: str = "") -> dict[str, object]:
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(radius_options(command, f"{prefix}{name} "))
        for param in command.params:
            if param.name == "radius":
                found[prefix + name] = param.default
    return found


def test_every_radius_default_is_the_positive_radius():
    assert POSITIVE_RADIUS_M == 25.0  # the community's convention
    defaults = {f.__qualname__: inspect.signature(f).parameters["radius"].default
                for f in (VPRTestSet, dataset_info, evaluate_retrieval, build_pairs, evaluate)}
    defaults["RetrievalResult.radius"] = RetrievalResult.__dataclass_fields__["radius"].default
    options = radius_options(cli)
    assert {"data info", "retrieve", "evaluate"} <= set(options)
    assert set(defaults.values()) | set(options.values()) == {POSITIVE_RADIUS_M}, (defaults, options)
