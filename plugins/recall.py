"""``recall``: do generated images re-identify their place? (thesis finding F9)

Each generation is used as a query against the database with the VPR conventions (faiss L2 search
over L2-normalised descriptors, positives within 25 m of the *original* query's position). Beside
recall@N it reports how close the generation's descriptor is to its original's, whether both have
the same top-1 database image, and the *place verification rate*: the share of generations whose
cosine to their original passes the threshold at which this embedder accepts real re-visits (the
equal-error threshold over the dataset's real same-place and other-place pairs) — the place
analogue of face-verification accuracy in counterfactual-explanation benchmarks.

Baselines: ``shuffled`` (a generation of a query at another place, scored against this query's
place: chance), ``reference`` (for recall: the original query itself, a real re-visit of the
database place; for cosine and verification: another real photo of the place), and ``chance``
(the expected recall of a random ranking with the same positives).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from geoxai.evaluation import Metric, Pair, Plugin, Skip

RECALL_NS = (1, 5, 10, 20)


class RecallPlugin(Plugin):
    name = "recall"
    headline = ("recall@1", "verified")  # what the report's summary shows
    version = "1"
    description = "Generated images as queries against the database: recall@N, descriptor cosine, top-1 agreement, place verification"
    needs = ("descriptor", "database")
    metrics = {
        **{f"recall@{n}": Metric(f"percent of images with a database image within the radius of the original "
                                 f"query among their {n} nearest", True, "%") for n in RECALL_NS},
        "cosine": Metric("cosine similarity of the image's descriptor to its original's", True),
        "top1_agreement": Metric("percent of images whose nearest database image is the original's", True, "%"),
        "verified": Metric("percent of images whose cosine to their original passes the embedder's equal-error "
                           "threshold for real same-place pairs (place verification rate)", True, "%"),
    }

    def score(self, pairs: list[Pair], ctx: Any) -> Iterable[dict]:
        from geoxai.retrieval import search

        database = ctx.database
        db = ctx.descriptors(database.paths)
        readable = np.flatnonzero(~np.isnan(db).any(axis=1))
        db = db[readable]
        k = min(max(RECALL_NS), len(db))
        originals = sorted({pair.original for pair in pairs})
        original_index = {path: i for i, path in enumerate(originals)}
        original_desc = ctx.descriptors(originals)
        original_utm = np.array([next(p.utm for p in pairs if p.original == path) for path in originals])
        has_utm = np.isfinite(original_utm).all(axis=1)
        positives = [np.array([], dtype=np.int64)] * len(originals)
        if has_utm.any():
            found = database.positives(original_utm[has_utm])
            remap = -np.ones(len(database.paths), dtype=np.int64)
            remap[readable] = np.arange(len(readable))
            for i, p in zip(np.flatnonzero(has_utm), found, strict=True):
                p = remap[p]
                positives[i] = p[p >= 0]
        _, original_top = search(db, original_desc, k)
        threshold = self._threshold(original_desc, db, positives, ctx)

        others = [pair.other for pair in pairs]
        other_desc = ctx.descriptors(others)
        _, other_top = search(db, other_desc, k)
        records = []
        for pair, descriptor, top in zip(pairs, other_desc, other_top, strict=True):
            q = original_index[pair.original]
            cosine = float(np.dot(descriptor, original_desc[q]))
            values: dict[str, float | Skip] = {"cosine": cosine}
            if np.isfinite(threshold):
                values["verified"] = 100.0 * (cosine >= threshold)
            else:
                values["verified"] = Skip("no same-place and other-place pairs to set the verification threshold")
            if pair.pairing != "reference":
                values["top1_agreement"] = 100.0 * (top[0] == original_top[q][0])
            if len(positives[q]) == 0:
                reason = "the original query has no database image within the radius" if has_utm[q] else \
                    "the original query's position is unknown (no UTM in its name)"
                values.update({f"recall@{n}": Skip(reason) for n in RECALL_NS})
            elif pair.pairing != "reference":
                hits = np.isin(top, positives[q])
                values.update({f"recall@{n}": 100.0 * bool(hits[:n].any()) for n in RECALL_NS})
            records.append(pair.record(**values))

        # reference for recall: the original query itself (a real re-visit); chance: a random ranking
        from geoxai.retrieval import chance_recall

        query_of = {pair.original: pair.query_id for pair in pairs}
        for path, q in original_index.items():
            if len(positives[q]) == 0:
                continue
            hits = np.isin(original_top[q], positives[q])
            base = {"query_id": query_of[path], "sample": -1}
            records.append({**base, "pairing": "reference", **{f"recall@{n}": 100.0 * bool(hits[:n].any())
                                                              for n in RECALL_NS}})
            chance = chance_recall([len(positives[q])], len(db), RECALL_NS)
            records.append({**base, "pairing": "chance", **{f"recall@{n}": chance[n] for n in RECALL_NS}})
        return records

    @staticmethod
    def _threshold(originals: np.ndarray, db: np.ndarray, positives: list[np.ndarray], ctx: Any) -> float:
        """Equal-error cosine threshold over real pairs: each original with its positives (same place)
        and with as many database images outside the radius (other places), drawn with the evaluation seed."""
        from geoxai.statistics import equal_error_threshold

        rng = ctx.rng("recall/verification")
        same, other = [], []
        for q, pos in enumerate(positives):
            if len(pos) == 0 or not np.isfinite(originals[q]).all():
                continue
            same.extend(db[pos] @ originals[q])
            negatives = np.setdiff1d(np.arange(len(db)), pos)
            if len(negatives):
                pick = rng.choice(negatives, size=min(len(negatives), max(len(pos), 5)), replace=False)
                other.extend(db[pick] @ originals[q])
        threshold, eer = equal_error_threshold(np.array(same), np.array(other))
        if np.isfinite(threshold):
            ctx.notice(f"recall: place verification threshold cosine {threshold:.3f} (equal error rate "
                       f"{100 * eer:.1f}% over {len(same)} real same-place and {len(other)} other-place pairs)")
        return threshold
