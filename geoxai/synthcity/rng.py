"""Keyed random streams: every SynthCity choice draws from the stream of its ``(seed, ...)`` key."""

from __future__ import annotations

import random
from typing import Any


class Rng:
    """A random stream keyed by a tuple; built on ``random.Random.random()`` only, whose sequence for
    a given seed Python keeps stable across versions (numpy's samplers may change between releases)."""

    def __init__(self, *key: int):
        self._random = random.Random("synthcity/" + "/".join(str(int(k)) for k in key))

    def random(self) -> float:
        return self._random.random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random.random()

    def integers(self, low: int, high: int | None = None) -> int:
        """An integer in [low, high), or in [0, low) when ``high`` is omitted (numpy's convention)."""
        if high is None:
            low, high = 0, low
        return low + min(int((high - low) * self._random.random()), high - low - 1)

    def choice(self, options: Any, p: Any = None) -> Any:
        if p is None:
            return options[self.integers(len(options))]
        x, total = self._random.random(), 0.0
        for option, weight in zip(options, p, strict=True):
            total += weight
            if x < total:
                return option
        return options[-1]
