"""Place-recognition retrieval with the community's conventions: faiss L2 search, 25 m positives, recall@N.

Recall@N is the percentage of queries with at least one positive (a database image within the
radius) among the N nearest database descriptors. Queries that cannot be right (no positive in the
database) or cannot be read are left out of the percentage and counted beside it; a chance level
(the recall of a random ranking with the same positives) is reported next to every number.
Descriptors come from ``geoxai.embedders.descriptors`` (computed once per image, kept in the
artifact store); this module holds the search and the recall maths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.data.digests import find_duplicates
from geoxai.domain import check_domain, embedder_model
from geoxai.errors import GeoxaiError, setting

RECALL_NS = (1, 5, 10, 20)


# ---------------------------------------------------------------------------------- search
def search(database: np.ndarray, queries: np.ndarray, k: int, progress: bool = False,
           chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN by L2 distance with faiss (on every GPU when faiss has them).

    Returns squared L2 distances float32 [Q, k'] and database indices int64 [Q, k'],
    nearest first, with k' = min(k, len(database)).
    """
    import faiss
    from tqdm.auto import tqdm

    database = np.ascontiguousarray(database, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(database) == 0:
        raise GeoxaiError("retrieval needs at least one database descriptor")
    index = faiss.IndexFlatL2(database.shape[1])
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(database)
    k = min(k, len(database))
    distances = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(queries), chunk), desc="search", unit="batch", disable=not progress):
        distances[start:start + chunk], indices[start:start + chunk] = index.search(queries[start:start + chunk], k)
    return distances, indices


# ---------------------------------------------------------------------------------- recall
def first_correct_rank(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """Per query, the 1-based rank of the first positive among ``predictions``; 0 when none."""
    ranks = np.zeros(len(predictions), dtype=np.int64)
    for q, (row, pos) in enumerate(zip(predictions, positives, strict=True)):
        hits = np.flatnonzero(np.isin(row, pos))
        if len(hits):
            ranks[q] = hits[0] + 1
    return ranks


def recall_at(predictions: np.ndarray, positives: Sequence[np.ndarray],
              ns: Sequence[int] = RECALL_NS) -> dict[int, float]:
    """Recall@N in percent over the queries that have at least one positive (others are excluded).

    ``predictions`` [Q, k] are database indices, best first; ``positives`` holds each query's
    positive database indices. NaN when no query has a positive.
    """
    has_positive = np.array([len(p) > 0 for p in positives], dtype=bool)
    ranks = first_correct_rank(np.asarray(predictions), positives)[has_positive]
    if len(ranks) == 0:
        return {n: float("nan") for n in ns}
    return {n: float(np.mean((ranks >= 1) & (ranks <= n)) * 100.0) for n in ns}


def chance_recall(num_positives: Sequence[int], num_database: int,
                  ns: Sequence[int] = RECALL_NS) -> dict[int, float]:
    """Expected recall@N (percent) of a uniformly random ranking, over queries with positives.

    A query with P positives among D images is hit by N random picks with probability
    1 - C(D-P, N) / C(D, N) = 1 - prod_{i<N} (D-P-i) / (D-i), computed as that product (no
    overflow for large D, unlike the binomials).
    """
    counts = np.asarray([p for p in num_positives if p > 0], dtype=np.float64)
    if len(counts) == 0 or num_database == 0:
        return {n: float("nan") for n in ns}
    picks = np.arange(min(max(ns), num_database), dtype=np.float64)
    miss = np.cumprod(np.clip((num_database - counts[:, None] - picks) / (num_database - picks), 0, 1), axis=1)
    return {n: float(np.mean(1.0 - miss[:, min(n, num_database) - 1]) * 100.0) for n in ns}


# ------------------------------------------------------------------------------- evaluation
@dataclass
class RetrievalResult:
    """Recall of one embedder on one test set (or nearest neighbours alone in the no-labels mode),
    with what was left out, what was reshaped or duplicated, and where files went."""

    dataset: Path
    spec: dict[str, Any]
    identity: str
    recalls: dict[int, float]
    chance: dict[int, float]
    num_queries: int  # queries in the recall: readable, with at least one readable positive
    num_without_positives: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable queries and database images
    skipped_queries: int = 0
    skipped_database: int = 0
    num_database: int = 0
    radius: float = POSITIVE_RADIUS_M
    reused_descriptors: bool = False
    out: Path | None = None
    labels: bool = True
    random_weights: bool = False
    identical_in_database: int = 0  # queries whose exact bytes are also a database image
    notices: list[str] = field(default_factory=list)
    domain: dict[str, Any] | None = None  # geoxai.domain record when a shipped model was used

    def table(self) -> "Any":
        """Recall and chance as a pandas DataFrame (rows recall/chance, columns R@N)."""
        import pandas as pd

        return pd.DataFrame([self.recalls, self.chance], index=["recall", "chance"]).rename(
            columns=lambda n: f"R@{n}")

    def format(self) -> str:
        spec = ", ".join(f"{k}={v}" for k, v in self.spec.items() if v is not None)
        lines = []
        if self.random_weights:
            lines.append(f"WARNING: the embedder has RANDOM weights (seeded init, {spec}): these numbers are an "
                         "untrained network baseline, not a trained model")
        lines.append(f"retrieval on {self.dataset} ({self.num_database} database images; {spec})")
        if self.labels:
            lines.append(self.table().to_string(float_format=lambda v: f"{v:6.2f}"))
            excluded = []
            if self.num_without_positives:
                excluded.append(f"{self.num_without_positives} without a database image within {self.radius:g} m")
            if self.skipped_queries:
                excluded.append(f"{self.skipped_queries} unreadable")
            line = f"recall (percent) over {self.num_queries} queries"
            lines.append(line + (f"; excluded queries: {', '.join(excluded)}" if excluded else "; no query excluded"))
        else:
            lines.append(f"no-labels mode: nearest database images of {self.num_queries} queries, no recall "
                         "(file names carry no UTM coordinates)")
        if self.skipped_database:
            lines.append(f"{self.skipped_database} unreadable database images left out of the index")
        lines += [f"unreadable: {error}" for _, error in self.skipped[:5]]
        if len(self.skipped) > 5:
            lines.append(f"... {len(self.skipped) - 5} more unreadable images")
        lines += [f"notice: {notice}" for notice in self.notices]
        if self.out is not None:
            reused = " (descriptors from the artifact store)" if self.reused_descriptors else ""
            written = ["predictions.csv", "database_descriptors.npy", "queries_descriptors.npy"]
            if self.labels:
                written.insert(0, "recalls.csv")
            lines.append(f"written: {', '.join(str(self.out / name) for name in written)}{reused}")
        return "\n".join(lines)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write_outputs(out: Path, result: RetrievalResult, queries_paths: Sequence[Path],
                   database_paths: Sequence[Path], status: np.ndarray, num_positives: np.ndarray | None,
                   ranks: np.ndarray | None, indices: np.ndarray, distances: np.ndarray, identical: np.ndarray,
                   database: np.ndarray, queries: np.ndarray) -> None:
    import pandas as pd

    from geoxai.files import atomic_path

    root = result.dataset
    rows: dict[str, Any] = {"query": [_relative(p, root) for p in queries_paths], "status": status}
    if result.labels:
        evaluated = status == "ok"
        first_rank = pd.array(ranks, dtype="Int64")
        first_rank[~evaluated | (ranks == 0)] = pd.NA  # empty: not evaluated, or no positive in the top k
        rows["num_positives"] = num_positives
        rows["first_correct_rank"] = first_rank
        for n in result.recalls:
            flags = pd.array((ranks >= 1) & (ranks <= n), dtype="boolean")
            flags[~evaluated] = pd.NA
            rows[f"correct_at_{n}"] = flags
    rows["identical_in_database"] = identical
    names = np.array([_relative(p, root) for p in database_paths] + [""], dtype=object)
    for j in range(indices.shape[1]):
        rows[f"prediction_{j + 1}"] = names[indices[:, j]]  # -1 (no prediction) -> ""
    for j in range(indices.shape[1]):
        rows[f"distance_{j + 1}"] = np.sqrt(np.maximum(distances[:, j], 0.0))
    frames = {"predictions.csv": pd.DataFrame(rows)}
    if result.labels:
        frames["recalls.csv"] = pd.DataFrame({
            "n": list(result.recalls), "recall": list(result.recalls.values()),
            "chance": [result.chance[n] for n in result.recalls],
            "num_queries": result.num_queries, "num_without_positives": result.num_without_positives,
            "unreadable_queries": result.skipped_queries, "unreadable_database": result.skipped_database,
            "queries_identical_in_database": result.identical_in_database,
            "radius_m": result.radius, "embedder_identity": result.identity,
            "weights": str(result.spec.get("weights")), "random_weights": result.random_weights,
        })
    for name, frame in frames.items():
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    for name, array in (("database_descriptors.npy", database), ("queries_descriptors.npy", queries)):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)


def check_trained(embedder: Any, spec: Mapping[str, Any]) -> None:
    """Refuse an untrained (random) embedder unless ``weights: random`` asked for it by name."""
    if embedder.random_weights and str(spec.get("weights")) != "random":
        raise GeoxaiError(f"no {setting('weights')} given, so the embedder would be an untrained random network; "
                          f"give {setting('weights')} FILE (or hub for released weights), or "
                          f"{setting('weights')} random for an untrained network baseline")


def evaluate_retrieval(dataset: str | Path, spec: Mapping[str, Any], out: str | Path | None = None,
                       batch_size: int = 32, device: str = "auto", radius: float = POSITIVE_RADIUS_M,
                       progress: bool = True, ns: Sequence[int] = RECALL_NS,
                       num_workers: int | None = None, labels: bool = True, store: Any = None) -> RetrievalResult:
    """Recall@N of the embedder described by ``spec`` on the VPR test folder ``dataset``.

    With ``labels=False`` (folders whose names carry no coordinates) only the nearest database
    images are found. With ``out``, writes ``recalls.csv`` (labels only), ``predictions.csv`` (one
    row per query) and the descriptors; the output folder is checked before any work.
    """
    from geoxai.data.vpr import VPRTestSet
    from geoxai.embedders import from_spec
    from geoxai.embedders.descriptors import embed_files
    from geoxai.synthcity.world import check_world_complete

    check_world_complete(dataset)  # a half-written SynthCity world: one line naming the command that completes it
    test_set = VPRTestSet(dataset, labels=labels, radius=radius)
    out = Path(out) if out is not None else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise GeoxaiError(f"--out {out}: is a file; give a folder for recalls.csv and predictions.csv")
        from geoxai.files import writable_folder

        writable_folder(out, "--out")
    embedder = from_spec(spec, device=device)
    check_trained(embedder, spec)
    identity = embedder.identity()
    domain = check_domain([embedder_model(spec), embedder_model(embedder.spec())],
                          [*test_set.database_paths, *test_set.queries_paths])
    compute = dict(batch_size=batch_size, progress=progress, num_workers=num_workers, store=store)
    db = embed_files(embedder, test_set.database_paths, desc="database", **compute)
    queries = embed_files(embedder, test_set.queries_paths, desc="queries", **compute)
    db_ok, q_ok = db.readable, queries.readable
    if not db_ok.any():
        raise GeoxaiError(f"{test_set.folder / 'database'}: no readable database image")

    duplicates = find_duplicates({"database": test_set.database_paths, "queries": test_set.queries_paths})
    twins = set(duplicates.across("queries", "database"))
    identical = np.array([p in twins for p in test_set.queries_paths], dtype=bool)
    notices = [domain.notice] if domain.notice else []
    notices += db.reshaped.notices("database images") + queries.reshaped.notices("queries")
    if identical.any():
        notices.append(f"{int(identical.sum())} queries have a byte-identical copy in the database: their top match is "
                       "themselves, which inflates recall (column identical_in_database of predictions.csv)")
    for name in ("queries", "database"):
        if duplicates.within(name):
            notices.append(f"{duplicates.within(name)} {name} images are byte-identical copies of other {name} "
                           f"images ({duplicates.format()})")

    # folders that could not be listed count and show as unreadable images do (their images are absent)
    q_folders, db_folders = ([(path, f"{path}: {reason}") for path, reason in paths.unreadable_folders]
                             for paths in (test_set.queries_paths, test_set.database_paths))
    k = max(ns)
    distances = np.full((len(queries.array), min(k, int(db_ok.sum()))), np.nan, dtype=np.float32)
    indices = np.full(distances.shape, -1, dtype=np.int64)
    if q_ok.any():
        distances[q_ok], indices[q_ok] = search(db.array[db_ok], queries.array[q_ok], k, progress=progress)
    db_indices = np.where(indices >= 0, np.flatnonzero(db_ok)[np.maximum(indices, 0)], -1)
    common = dict(dataset=test_set.folder, spec=embedder.spec(), identity=identity,
                  skipped=queries.skipped + db.skipped + q_folders + db_folders,
                  skipped_queries=len(queries.skipped) + len(q_folders),
                  skipped_database=len(db.skipped) + len(db_folders), num_database=len(test_set.database_paths),
                  radius=float(radius), reused_descriptors=db.computed == 0 and queries.computed == 0, out=out,
                  random_weights=bool(embedder.random_weights), identical_in_database=int(identical.sum()),
                  notices=notices, domain=domain.record())
    if not labels:
        status = np.where(q_ok, "ok", "unreadable").astype(object)
        result = RetrievalResult(recalls={}, chance={}, num_queries=int(q_ok.sum()), num_without_positives=0,
                                 labels=False, **common)
        if out is not None:
            _write_outputs(out, result, test_set.queries_paths, test_set.database_paths, status, None, None,
                           db_indices, distances, identical, db.array, queries.array)
        return result

    # positives among the readable database images, in the index's numbering
    index_of = np.cumsum(db_ok) - 1
    positives = [index_of[p[db_ok[p]]] for p in test_set.positives(radius)]
    num_positives = np.array([len(p) for p in positives], dtype=np.int64)
    status = np.where(~q_ok, "unreadable", np.where(num_positives == 0, "no_positives", "ok")).astype(object)
    evaluated = status == "ok"
    ranks = first_correct_rank(indices, positives)
    eval_positives = [p for p, e in zip(positives, evaluated, strict=True) if e]
    result = RetrievalResult(
        recalls=recall_at(indices[evaluated], eval_positives, ns),
        chance=chance_recall(num_positives[evaluated], int(db_ok.sum()), ns),
        num_queries=int(evaluated.sum()), num_without_positives=int((status == "no_positives").sum()), **common)
    if result.num_queries == 0:
        raise GeoxaiError(f"{test_set.folder}: no readable query has a readable database image within "
                          f"{radius:g} m, so recall is undefined; check the folder or --radius")
    if out is not None:
        _write_outputs(out, result, test_set.queries_paths, test_set.database_paths, status, num_positives,
                       ranks, db_indices, distances, identical, db.array, queries.array)
    return result
