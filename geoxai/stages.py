"""The training stages ``geoxai train`` runs: one registry keyed by a config's ``stage:`` name, and
one runner for the steps every stage shares.

Each stage is a module with the same contract: ``defaults`` (the config with every key filled in),
``rules`` (its numeric keys, checked by ``geoxai.config.check_values`` before any work starts), a
``checked`` function (the config merged over the defaults, its values, folders, protocol and worlds
checked) and ``fit(config, out, resume)`` (data, module, ``Trainer``, ``geoxai.trainer.fit_stage``,
outputs). ``Stage.run`` does what lies between for every stage: the output folder refused when it
holds a run (or, with ``--resume``, when it holds none) and proven writable. The registry names the
modules as text, so listing the stages or rejecting an unknown one imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoxai.errors import GeoxaiError, did_you_mean, settings_from


@dataclass(frozen=True)
class Stage:
    """One training stage: its module and the names of its contract's parts there."""

    name: str
    module: str
    checked: str = "checked_config"
    fit: str = "fit"
    defaults: str = "DEFAULTS"
    rules: str = "RULES"

    def attribute(self, name: str) -> Any:
        """The stage module's ``name`` (its module is imported on first use)."""
        return getattr(importlib.import_module(self.module), name)

    def default_config(self) -> dict[str, Any]:
        return self.attribute(self.defaults)

    def rule_table(self) -> Mapping[str, Any]:
        return self.attribute(self.rules)

    def run(self, config: Mapping[str, Any], resume: bool = False) -> Path | None:
        """Train (or with ``resume`` continue) this stage; returns what the stage saved."""
        from geoxai.trainer import check_output_dir, resume_checkpoint

        config = self.attribute(self.checked)(config)
        out = Path(config["output_dir"])
        resume_checkpoint(out, resume)
        check_output_dir(out)
        return self.attribute(self.fit)(config, out, resume)


STAGES: dict[str, Stage] = {
    stage.name: stage for stage in (
        Stage("embedder", "geoxai.embedders.training", checked="training_config"),
        Stage("autoencoder", "geoxai.ldm.autoencoder_training", defaults="AE_DEFAULTS", rules="AE_RULES"),
        Stage("ldm", "geoxai.ldm.training", defaults="LDM_DEFAULTS", rules="LDM_RULES"),
        Stage("segmenter", "geoxai.segmentation.synthcity_training"),
    )
}


def stage_names() -> list[str]:
    """The ``stage:`` values a config may give, in the order a project trains them."""
    return list(STAGES)


def get_stage(name: Any, where: str = "config") -> Stage:
    """The stage called ``name``; anything else is a one-line error with the names and a suggestion."""
    stage = STAGES.get(name) if isinstance(name, str) else None
    if stage is None:
        raise GeoxaiError(f"{where}: `stage:` must be one of {', '.join(STAGES)} (got {name!r})."
                          f"{did_you_mean(str(name), stage_names())}")
    return stage


def run_stage(config: dict[str, Any], resume: bool = False, where: str = "config") -> Path | None:
    """Train the stage a config's ``stage:`` names; returns what the stage saved (weights or checkpoint).

    Errors about config keys name ``where`` (the config file) and the key, not command-line flags.
    """
    stage = get_stage(config.get("stage"), where)
    with settings_from("", where):
        return stage.run(config, resume)
