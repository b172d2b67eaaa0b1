"""The place-recognition conventions geoxai follows, as named constants (light: the command line reads
them for its defaults without importing numpy)."""

from __future__ import annotations

POSITIVE_RADIUS_M = 25.0
"""A database image shows the query's place when it lies within this many metres (UTM) of the query:
the community's convention (Pittsburgh, Tokyo 24/7, CosPlace), the default of every ``radius``."""
