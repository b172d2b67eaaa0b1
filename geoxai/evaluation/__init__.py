"""Evaluating GenerationRuns: plugins score pairs of images, every number beside its baselines.

A plugin subclasses ``Plugin`` (``name``, ``version``, ``description``, ``needs``, ``metrics`` and
``score``) and registers under the ``geoxai.plugins`` entry-point group; ``evaluate`` runs plugins
on a run and writes an EVAL folder. See docs/evaluation.md and docs/writing-a-plugin.md.
"""

from geoxai.evaluation.plugin import Metric, Model, Pair, Plugin, Skip

__all__ = ["Metric", "Model", "Pair", "Plugin", "Skip", "evaluate"]


def evaluate(*args, **kwargs):
    """``geoxai.evaluation.runner.evaluate`` (imported on first use)."""
    from geoxai.evaluation.runner import evaluate as run

    return run(*args, **kwargs)
