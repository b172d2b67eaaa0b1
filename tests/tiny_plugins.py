"""Plugins for tests: well-behaved, failing and malformed ones (loaded as ``tiny_plugins:Name``)."""

from __future__ import annotations

from geoxai.evaluation import Metric, Plugin, Skip


class ConstantPlugin(Plugin):
    """Scores every pair 1 (and skips the reference pairs): the simplest correct plugin."""

    name = "constant"
    description = "one per pair"
    metrics = {"one": Metric("always 1", True)}

    def score(self, pairs, ctx):
        return [pair.record(one=1.0 if pair.pairing != "reference" else Skip("not for real photos")) for pair in pairs]


class BrightnessPlugin(Plugin):
    """Reads pixels only (no needs): the mean brightness of each image."""

    name = "brightness"
    description = "mean pixel value"
    metrics = {"brightness": Metric("mean pixel value of the image in [0, 1]", None)}

    def score(self, pairs, ctx):
        return [pair.record(brightness=float(ctx.image(pair.other).mean())) for pair in pairs]


class DescriptorNormPlugin(Plugin):
    """Reads descriptors too, so that two plugins share one artifact."""

    name = "norm"
    description = "descriptor norms"
    needs = ("descriptor",)
    metrics = {"norm": Metric("L2 norm of the image's descriptor", None)}

    def score(self, pairs, ctx):
        import numpy as np

        norms = np.linalg.norm(ctx.descriptors([p.other for p in pairs]), axis=1)
        return [pair.record(norm=float(n)) for pair, n in zip(pairs, norms, strict=True)]


class RaisingPlugin(Plugin):
    name = "raising"
    description = "fails while scoring"
    metrics = {"x": Metric("never computed")}

    def score(self, pairs, ctx):
        raise RuntimeError("this plugin always fails")


class NaNPlugin(Plugin):
    name = "nan"
    description = "returns NaN"
    metrics = {"x": Metric("NaN")}

    def score(self, pairs, ctx):
        return [pair.record(x=float("nan")) for pair in pairs]


class UndeclaredMetricPlugin(Plugin):
    name = "undeclared"
    description = "returns a metric it does not declare"
    metrics = {"x": Metric("declared")}

    def score(self, pairs, ctx):
        return [pair.record(y=1.0) for pair in pairs]


class WrongColumnsPlugin(Plugin):
    name = "columns"
    description = "returns records without the pair's keys"
    metrics = {"x": Metric("declared")}

    def score(self, pairs, ctx):
        return [{"x": 1.0} for _ in pairs]


class DroppingPlugin(Plugin):
    """Scores the generated pairs but returns nothing for the shuffled ones: a shortfall."""

    name = "dropping"
    description = "leaves the shuffled pairs out"
    metrics = {"x": Metric("declared")}

    def score(self, pairs, ctx):
        return [pair.record(x=1.0) for pair in pairs if pair.pairing != "shuffled"]
