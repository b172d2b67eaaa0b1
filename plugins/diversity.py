"""``diversity``: do generations of one descriptor vary?

The method reads "what changes freely across generations is what the descriptor ignores". That
only holds if generations do vary: a generator that returns the same image for every seed shows
nothing. This plugin measures how much the images compared differ from each other, with three
distances: mean absolute pixel difference (``pixel_l1``, RGB in [0, 1] after ``ctx.aligned``),
LPIPS (AlexNet; skipped with the reason when its backbone weights are not cached) and the
descriptor distance 1 - cosine (``descriptor_distance``).

- ``generated``: between the generations of one query. Sample ``s`` records its mean distance to
  the query's other samples, so a query's mean over samples is the mean over its sample pairs
  (s, t), s < t. A query with a single sample has no spread (skipped).
- ``reference``: between the original and another real photo of its place: what a real re-visit
  changes (lighting, vehicles, people, camera), the scale the generated spread is read against.
- ``shuffled``: between a generation and the generation of a query at another place with the same
  sample index: what changing the place changes, the ceiling of any spread.

Summary: beside each distance, its ``*_ratio`` = generated spread / reference spread over the
queries that have both (95% bootstrap CI over those queries); the target is >= 0.5 at the default
guidance (generations vary at least half as much as a real re-visit). No direction is better:
diversity is neither good nor bad by itself, it is what makes the explanation readable.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from geoxai.evaluation import Metric, Pair, Plugin, Skip
from geoxai.evaluation.perceptual import (
    LPIPS_MODELS,
    evaluation_device,
    lpips_model,
    lpips_or_skips,
    unavailable_reason,
)

LPIPS_NET = "alex"  # the LPIPS paper's choice as a distance (fidelity uses the same)
DISTANCES = ("pixel_l1", "lpips", "descriptor_distance")
RATIO_TARGET = 0.5
BATCH = 16
Comparison = tuple[Path, Path]  # (image a, image b); b is aligned to a


class DiversityPlugin(Plugin):
    name = "diversity"
    headline = ("pixel_l1", "descriptor_distance")  # what the report's summary shows
    version = "1"
    description = ("How much generations of one query differ from each other (pixels, LPIPS, descriptor), beside "
                   "what a real re-visit and a change of place change")
    needs = ("descriptor", "image")
    metrics = {
        "pixel_l1": Metric("mean absolute RGB difference (pixels in [0, 1]) between the two images: generated, "
                           "between generations of one query (mean over sample pairs); reference, the original and "
                           "another real photo of its place; shuffled, generations of two places"),
        "lpips": Metric("LPIPS distance (AlexNet backbone, torchmetrics) between the two images, same pairs"),
        "descriptor_distance": Metric("1 - cosine between the embedder's descriptors of the two images, same pairs"),
        **{f"{d}_ratio": Metric(f"generated {d} spread / reference {d} spread, over queries with both (target >= "
                                f"{RATIO_TARGET:g}: generations vary at least half as much as a real re-visit)")
           for d in DISTANCES},
    }
    models = LPIPS_MODELS

    def score(self, pairs: list[Pair], ctx: Any) -> Iterable[dict]:
        lpips_reason = unavailable_reason(lpips_model, LPIPS_NET)
        if lpips_reason:
            ctx.notice(f"diversity: lpips skipped: {lpips_reason}")
        else:
            lpips_model(LPIPS_NET).to(evaluation_device(ctx))
        own: dict[tuple[str, int], Path] = {}
        samples: dict[str, list[tuple[int, Path]]] = defaultdict(list)
        for pair in pairs:
            if pair.pairing == "generated":
                own[(pair.query_id, pair.sample)] = pair.other
                samples[pair.query_id].append((pair.sample, pair.other))

        # every comparison needed, each computed once
        wanted: set[Comparison] = set()
        for items in samples.values():
            wanted |= {_key(a, b) for i, (_, a) in enumerate(items) for _, b in items[i + 1:]}
        for pair in pairs:
            if pair.pairing == "reference":
                wanted.add((pair.original, pair.other))
            elif pair.pairing == "shuffled" and (pair.query_id, pair.sample) in own:
                wanted.add((own[(pair.query_id, pair.sample)], pair.other))
        distances = _distances(sorted(wanted), ctx, lpips_reason)

        records = []
        for pair in pairs:
            if pair.pairing == "generated":
                others = [path for sample, path in samples[pair.query_id] if sample != pair.sample]
                if not others:
                    records.append(pair.record(**{d: Skip("one sample: no spread") for d in DISTANCES}))
                    continue
                found = [distances[_key(pair.other, path)] for path in others]
                records.append(pair.record(**{d: _mean([f[d] for f in found]) for d in DISTANCES}))
            elif pair.pairing == "reference":
                records.append(pair.record(**distances[(pair.original, pair.other)]))
            else:
                mine = own.get((pair.query_id, pair.sample))
                if mine is None:
                    reason = f"no generation of {pair.query_id} with sample {pair.sample} to compare"
                    records.append(pair.record(**{d: Skip(reason) for d in DISTANCES}))
                else:
                    records.append(pair.record(**distances[(mine, pair.other)]))
        return records

    def summarize(self, records: pd.DataFrame, ctx: Any) -> pd.DataFrame:
        """Per-pair distances as usual, plus per distance the generated / reference spread ratio."""
        from geoxai.statistics import per_query_means, summarize_records

        summary = summarize_records(records, seed=ctx.seed)
        means = per_query_means(records)
        rows, said = [], []
        for distance in DISTANCES:
            mine = means[means["metric"] == distance]
            generated = mine[mine["pairing"] == "generated"].set_index("query_id")["value"]
            reference = mine[mine["pairing"] == "reference"].set_index("query_id")["value"]
            shared = generated.index.intersection(reference.index)
            if len(shared) == 0 or reference.loc[shared].mean() <= 0:
                continue
            g, r = generated.loc[shared].to_numpy(), reference.loc[shared].to_numpy()
            ratio = float(g.mean() / r.mean())
            low, high = _ratio_ci(g, r, ctx.rng(f"diversity/{distance}_ratio"))
            rows.append({"metric": f"{distance}_ratio", "pairing": "generated", "mean": ratio, "ci_low": low,
                         "ci_high": high, "n_queries": int(len(shared)), "n_skipped": 0})
            said.append(f"{distance} {ratio:.2f}" + (f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else ""))
        if said:
            ctx.notice(f"diversity: generated spread / reference spread: {', '.join(said)} (target >= "
                       f"{RATIO_TARGET:g}: generations should vary at least half as much as a real re-visit)")
        elif not records.empty:
            if ctx.database is None:
                missing = "give --database"
            elif ctx.database.utm is None:
                missing = "--database was given, but its file names carry no UTM coordinates (@east@north@...@.jpg)"
            else:
                missing = f"a database image within {ctx.database.radius:g} m"
            ctx.notice("diversity: no generated / reference spread ratio (needs queries with at least two samples "
                       f"and a reference photo: {missing})")
        return pd.concat([summary, pd.DataFrame(rows)], ignore_index=True) if rows else summary


# ---------------------------------------------------------------------------------- distances
def _key(a: Path, b: Path) -> Comparison:
    """Sample pairs are stored once, in path order."""
    return (a, b) if a <= b else (b, a)


def _mean(values: list[float | Skip]) -> float | Skip:
    numbers = [v for v in values if not isinstance(v, Skip)]
    if len(numbers) < len(values):  # any skipped partner makes the sample's spread incomplete
        return next(v for v in values if isinstance(v, Skip))
    return float(np.mean(numbers))


def _distances(comparisons: list[Comparison], ctx: Any, lpips_reason: str | None) -> dict[Comparison, dict]:
    """pixel_l1, lpips and descriptor_distance of each comparison (values or Skips)."""
    paths = sorted({p for c in comparisons for p in c})
    descriptors = dict(zip(paths, ctx.descriptors(paths), strict=True)) if paths else {}
    out: dict[Comparison, dict] = {}
    buckets: dict[tuple[int, ...], list[tuple[Comparison, np.ndarray, np.ndarray]]] = defaultdict(list)

    def flush(bucket: list[tuple[Comparison, np.ndarray, np.ndarray]]) -> None:
        a = np.stack([x for _, x, _ in bucket])
        b = np.stack([y for _, _, y in bucket])
        l1 = np.abs(a - b).mean(axis=(1, 2, 3))
        lpips = lpips_or_skips(a, b, lpips_reason, LPIPS_NET)
        for (key, _, _), pixel, perceptual in zip(bucket, l1, lpips, strict=True):
            out[key].update(pixel_l1=float(pixel), lpips=perceptual)
        bucket.clear()

    for key in comparisons:
        da, db = descriptors[key[0]], descriptors[key[1]]
        if np.isfinite(da).all() and np.isfinite(db).all():
            da, db = da.astype(np.float64), db.astype(np.float64)  # renormalised: float32 norms drift by ~1e-7
            cosine = float(np.dot(da, db) / (np.linalg.norm(da) * np.linalg.norm(db)))
            out[key] = {"descriptor_distance": min(2.0, max(0.0, 1.0 - cosine))}
        else:
            out[key] = {"descriptor_distance": Skip("no descriptor (unreadable image)")}
        images = ctx.aligned(*key)
        if images is None:
            out[key].update(pixel_l1=Skip("image unreadable"), lpips=Skip("image unreadable"))
            continue
        bucket = buckets[images[0].shape]
        bucket.append((key, *images))
        if len(bucket) >= BATCH:
            flush(bucket)
    for bucket in buckets.values():
        if bucket:
            flush(bucket)
    return out


def _ratio_ci(generated: np.ndarray, reference: np.ndarray, rng: np.random.Generator,
              resamples: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of mean(generated) / mean(reference), resampling queries."""
    if len(generated) < 2:  # no interval over one query (never a zero-width one)
        return float("nan"), float("nan")
    draws = rng.integers(0, len(generated), size=(resamples, len(generated)))
    denominators = reference[draws].mean(axis=1)
    ratios = generated[draws].mean(axis=1)[denominators > 0] / denominators[denominators > 0]
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)
