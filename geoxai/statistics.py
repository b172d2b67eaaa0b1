"""The statistics every number of an evaluation goes through.

The unit of analysis is the *query* (a place photo), not the image: a query's samples are averaged
first, then the mean over queries gets a 95% percentile bootstrap interval. Several generations of
one query are not independent evidence, so counting them as such would make intervals too narrow.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
RESAMPLES = 2000
ONE_QUERY = "no chance baseline: one query"  # said wherever an evaluation of one query is shown


def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int = 0, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE, statistic=np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (NaNs dropped), seeded.

    Constant values give a zero-width interval at that value; fewer than two values give NaNs: an
    interval over one query says nothing about the next, so none is shown rather than a zero-width one.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        point = float(statistic(values))
        return point, point
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(values))  # bounded memory: chunk x n indices at a time
    parts = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, len(values), size=(min(chunk, resamples - start), len(values)))
        parts.append(statistic(values[draws], axis=1) if statistic in (np.mean, np.median) else
                     np.array([statistic(values[row]) for row in draws]))
    stats = np.concatenate(parts)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def per_query_means(records: pd.DataFrame) -> pd.DataFrame:
    """Mean of each (metric, pairing, query) over its samples, skipped values left out.

    Columns: ``metric, pairing, query_id, value`` (one row per query that has at least one value).
    """
    kept = records[np.isfinite(records["value"].to_numpy(dtype=np.float64))]
    return kept.groupby(["metric", "pairing", "query_id"], sort=True)["value"].mean().reset_index()


def summarize_records(records: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The default summary of one plugin's records: per (metric, pairing) the mean over queries of
    each query's mean over samples, its 95% bootstrap CI, the number of queries and of skipped values.

    Columns: ``metric, pairing, mean, ci_low, ci_high, n_queries, n_skipped``.
    """
    rows = []
    skipped = records[records["skip_reason"].astype(str) != ""].groupby(["metric", "pairing"]).size()
    means = per_query_means(records)
    groups = records[["metric", "pairing"]].drop_duplicates().sort_values(["metric", "pairing"])
    for metric, pairing in groups.itertuples(index=False):
        values = means.loc[(means["metric"] == metric) & (means["pairing"] == pairing), "value"].to_numpy()
        low, high = bootstrap_ci(values, seed=seed)
        rows.append({"metric": metric, "pairing": pairing,
                     "mean": float(values.mean()) if len(values) else float("nan"),
                     "ci_low": low, "ci_high": high, "n_queries": int(len(values)),
                     "n_skipped": int(skipped.get((metric, pairing), 0))})
    return pd.DataFrame(rows, columns=["metric", "pairing", "mean", "ci_low", "ci_high", "n_queries", "n_skipped"])


def paired_difference(a: pd.Series, b: pd.Series, seed: int = 0) -> dict[str, float]:
    """Mean of ``b - a`` over the index both share (e.g. per-query means of two checkpoints) with its
    bootstrap CI: did B improve on A on the same queries?"""
    shared = a.index.intersection(b.index)
    diff = (b.loc[shared] - a.loc[shared]).to_numpy(dtype=np.float64)
    low, high = bootstrap_ci(diff, seed=seed)
    return {"mean": float(diff.mean()) if len(diff) else float("nan"), "ci_low": low, "ci_high": high,
            "n": int(len(diff))}


def equal_error_threshold(same: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """The similarity threshold where the false-reject rate on ``same`` (pairs that should match)
    equals the false-accept rate on ``other``; returns (threshold, equal error rate).

    Candidate thresholds lie halfway between consecutive observed similarities; among those minimising
    |FRR - FAR| the middle one is taken (for separable sets, the middle of the gap).
    """
    same, other = np.sort(np.asarray(same, np.float64)), np.sort(np.asarray(other, np.float64))
    if len(same) == 0 or len(other) == 0:
        return float("nan"), float("nan")
    values = np.unique(np.concatenate([same, other]))
    candidates = np.concatenate([values[:1], (values[1:] + values[:-1]) / 2.0, values[-1:]])  # between observations
    frr = np.searchsorted(same, candidates, side="left") / len(same)  # same-place pairs below the threshold
    far = 1.0 - np.searchsorted(other, candidates, side="left") / len(other)  # other-place pairs at or above
    gap = np.abs(frr - far)
    best = np.flatnonzero(gap == gap.min())  # separable sets: every threshold in the gap; take its middle
    threshold = (candidates[best[0]] + candidates[best[-1]]) / 2.0 if len(best) > 1 else candidates[best[0]]
    return float(threshold), float((frr[best[0]] + far[best[0]]) / 2.0)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (NaN pairs dropped; NaN with fewer than 3 pairs or no variation)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(spearmanr(x[keep], y[keep]).statistic)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """Spearman's rho along the last axis (average ranks for ties, then Pearson); NaN below 3 pairs or
    without variation. Works on many bootstrap draws at once."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(axis=-1, keepdims=True), ry - ry.mean(axis=-1, keepdims=True)
    sxx, syy = (rx * rx).sum(axis=-1), (ry * ry).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=-1) / np.sqrt(sxx * syy)
    rho = np.where((sxx > 0) & (syy > 0) & (np.shape(x)[-1] >= 3), np.clip(rho, -1.0, 1.0), np.nan)
    return float(rho) if np.ndim(rho) == 0 else rho


def rank_correlation_row(records: pd.DataFrame, x: str, y: str, pairing: str, seed: int,
                         metric: str, min_queries: int = 3) -> dict[str, Any] | None:
    """A summary row: Spearman's rho between metrics ``x`` and ``y`` over the pairing's pairs, with a
    95% CI from a seeded bootstrap over queries (a query's pairs resampled together). None for a
    baseline pairing with fewer than ``min_queries`` queries; generated always gets a row."""
    sub = records[(records["pairing"] == pairing) & records["metric"].isin([x, y])]
    empty = {"metric": metric, "pairing": pairing, "mean": float("nan"), "ci_low": float("nan"),
             "ci_high": float("nan"), "n_queries": 0, "n_skipped": 0}
    if sub.empty:
        return empty if pairing == "generated" else None
    wide = sub.pivot_table(index=["query_id", "sample"], columns="metric", values="value", aggfunc="mean",
                           dropna=False).reindex(columns=[x, y])
    n_pairs = len(wide)
    wide = wide[np.isfinite(wide.to_numpy(dtype=np.float64)).all(axis=1)]
    queries = wide.index.get_level_values("query_id")
    names = sorted(set(queries))
    if len(names) < min_queries:
        return {**empty, "n_queries": len(names), "n_skipped": n_pairs - len(wide)} if pairing == "generated" else None
    xs, ys = wide[x].to_numpy(np.float64), wide[y].to_numpy(np.float64)
    rho = rank_correlation(xs, ys)
    low = high = float("nan")
    if np.isfinite(rho):
        codes = pd.Index(names).get_indexer(queries)
        members = [np.flatnonzero(codes == i) for i in range(len(names))]
        rng = np.random.default_rng([int(seed), ("generated", "shuffled", "reference").index(pairing)])
        picks = rng.integers(0, len(names), (RESAMPLES, len(names)))
        if len({len(m) for m in members}) == 1:
            rows = np.stack(members)[picks].reshape(RESAMPLES, -1)
            draws = rank_correlation(xs[rows], ys[rows])
        else:
            draws = np.array([rank_correlation(xs[r], ys[r]) for r in
                              (np.concatenate([members[i] for i in pick]) for pick in picks)])
        if np.isfinite(draws).any():
            alpha = (1.0 - CONFIDENCE) / 2.0
            low, high = (float(v) for v in np.nanquantile(draws, [alpha, 1.0 - alpha]))
    return {"metric": metric, "pairing": pairing, "mean": float(rho), "ci_low": low, "ci_high": high,
            "n_queries": len(names), "n_skipped": n_pairs - len(wide)}
