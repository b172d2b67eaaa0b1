"""The pairs every plugin scores, and how their partners are chosen.

- ``generated``: the original query photo and each of its generations;
- ``shuffled``: the original and a generation of a query *at another place* — walking a seeded random
  cycle of the queries, the next one more than ``radius`` metres away (or of unknown position) — so
  two queries of one place never count as chance;
- ``reference``: the original and the nearest database photo within ``radius``: another real photo
  of the same place, what a real re-visit changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.evaluation.context import Database
from geoxai.evaluation.plugin import Pair


def reference_photos(manifest: pd.DataFrame, database: Database | None) -> dict[str, Path]:
    """Per query, the nearest database image within the radius: another real photo of its place."""
    if database is None or database.utm is None:
        return {}
    queries = manifest.groupby("query_id")[["utm_east", "utm_north"]].first()
    known = queries.dropna()
    if known.empty:
        return {}
    positives = database.positives(known.to_numpy())
    return {query_id: database.paths[p[0]] for query_id, p in zip(known.index, positives, strict=True) if len(p)}


def shuffled_partners(manifest: pd.DataFrame, seed: int, radius: float) -> dict[str, str]:
    """A seeded partner for each query, at another place (more than ``radius`` away when both
    positions are known): walking a random cycle of the queries, the next one far enough."""
    queries = manifest.groupby("query_id")[["utm_east", "utm_north"]].first().sort_index()
    ids = list(queries.index)
    if len(ids) < 2:
        return {}
    order = np.random.default_rng(seed).permutation(len(ids))
    utm = queries.to_numpy(dtype=np.float64)
    partners = {}
    for position, index in enumerate(order):
        for step in range(1, len(ids)):
            candidate = order[(position + step) % len(ids)]
            distance = float(np.hypot(*(utm[index] - utm[candidate])))
            if not (distance <= radius):  # NaN (unknown position) counts as another place
                partners[ids[index]] = ids[candidate]
                break
    return partners


def build_pairs(manifest: pd.DataFrame, seed: int = 0, database: Database | None = None,
                radius: float = POSITIVE_RADIUS_M) -> dict[str, list[Pair]]:
    """The pairs of every pairing from a run's manifest (absolute paths): ``generated``, ``shuffled``
    and, with a database whose names carry coordinates, ``reference``."""
    rows = manifest.sort_values(["query_id", "sample"])
    by_query: dict[str, list[tuple[int, Path]]] = {}
    original: dict[str, Path] = {}
    utm: dict[str, tuple[float, float]] = {}
    for row in rows.itertuples(index=False):
        by_query.setdefault(row.query_id, []).append((int(row.sample), Path(row.image_path)))
        original[row.query_id] = Path(row.query_path)
        utm[row.query_id] = (float(row.utm_east), float(row.utm_north))
    generated = [Pair(q, s, "generated", original[q], image, q, utm[q]) for q in by_query for s, image in by_query[q]]
    partners = shuffled_partners(rows, seed, radius)
    shuffled = []
    for q, samples in by_query.items():
        partner = partners.get(q)
        if partner is None:
            continue
        theirs = by_query[partner]
        for s, _ in samples:
            their_sample, image = next(((ts, im) for ts, im in theirs if ts == s), theirs[s % len(theirs)])
            shuffled.append(Pair(q, s, "shuffled", original[q], image, partner, utm[q]))
    references = reference_photos(rows, database)
    reference = [Pair(q, -1, "reference", original[q], references[q], references[q].name, utm[q])
                 for q in by_query if q in references]
    return {"generated": generated, "shuffled": shuffled, "reference": reference}
