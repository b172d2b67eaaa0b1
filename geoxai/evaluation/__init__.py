"""Evaluating GenerationRuns: plugins score pairs of images, every number beside its baselines.

A plugin subclasses ``Plugin`` (``name``, ``version``, ``description``, ``needs``, ``metrics`` and
``score``) and registers under the ``geoxai.plugins`` entry-point group; ``evaluate`` runs plugins
on a run and writes an EVAL folder. ``RegionPlugin`` is the base of plugins that compare regions of
label maps (``needs = ("segmentation",)``). See docs/evaluation.md and docs/writing-a-plugin.md.
"""

from geoxai.evaluation.plugin import Metric, Model, Pair, Plugin, Skip

__all__ = ["Metric", "Model", "Pair", "Plugin", "RegionPlugin", "Skip", "evaluate"]


def evaluate(*args, **kwargs):
    """``geoxai.evaluation.runner.evaluate`` (imported on first use)."""
    from geoxai.evaluation.runner import evaluate as run

    return run(*args, **kwargs)


def __getattr__(name: str):
    """``RegionPlugin`` on first use (it brings scipy and torch, which ``geoxai --help`` does not need)."""
    if name == "RegionPlugin":
        from geoxai.evaluation.region_plugin import RegionPlugin

        return RegionPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
