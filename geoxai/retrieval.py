"""Place-recognition retrieval with the community's conventions: faiss L2 search, 25 m positives, recall@N.

Recall@N is the percentage of queries with at least one positive (a database image within the
radius) among the N nearest database descriptors. Queries that cannot be right (no positive in the
database) or cannot be read are left out of the percentage and counted beside it; a chance level
(the recall of a random ranking with the same positives) is reported next to every number.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from geoxai.errors import GeoxaiError

RECALL_NS = (1, 5, 10, 20)
DESCRIPTORS_KEY_FILE = "descriptors.json"


# --------------------------------------------------------------------------------- descriptors
def default_workers() -> int:
    """Data-loader workers: enough to keep decoding off the model's path, one core left free."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def compute_descriptors(embedder: Any, paths: Sequence[str | Path], batch_size: int = 32,
                        device: str | torch.device | None = None, progress: bool = True,
                        num_workers: int | None = None, desc: str = "descriptors",
                        ) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Descriptors float32 [N, dim] of ``paths`` in order; rows of unreadable images are NaN.

    Returns the array and the unreadable files as (path, reason); they are skipped, not fatal.
    Each image is resized and cropped to ``embedder.image_size`` while loading so that photos of
    different sizes share a batch (the embedder's own resize is then a no-op).
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from geoxai.data.vpr import ImageDataset, collate_images
    from geoxai.embedders.base import resize_center_crop

    if batch_size < 1:
        raise GeoxaiError(f"--batch-size {batch_size}: must be at least 1")
    if device is not None:
        from geoxai.devices import resolve_device

        embedder.to(resolve_device(device))
    paths = [Path(p) for p in paths]
    workers = default_workers() if num_workers is None else num_workers
    loader = DataLoader(ImageDataset(paths, transform=functools.partial(resize_center_crop, size=embedder.image_size)),
                        batch_size=batch_size, num_workers=workers, collate_fn=collate_images,
                        pin_memory=embedder.device.type == "cuda")
    descriptors = np.full((len(paths), embedder.dim), np.nan, dtype=np.float32)
    skipped: list[tuple[Path, str]] = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch in loader:
            if batch["image"] is not None:
                embedded = embedder.embed(batch["image"])
                descriptors[batch["index"].numpy()] = embedded.float().cpu().numpy()
            skipped.extend((paths[i], error) for i, error in batch["skipped"])
            bar.update(len(batch["index"]) + len(batch["skipped"]))
    return descriptors, skipped


def images_key(identity: str, paths: Sequence[Path]) -> str:
    """Cache key of descriptors: the embedder identity and each file's absolute path, size and mtime."""
    digest = hashlib.sha256(identity.encode())
    for path in paths:
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{os.path.abspath(path)}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    from geoxai.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def cached_descriptors(embedder: Any, paths: Sequence[Path], part: str, out: Path | None, identity: str,
                       **compute: Any) -> tuple[np.ndarray, list[tuple[Path, str]], bool]:
    """``compute_descriptors`` with a cache in ``out/<part>_descriptors.npy``; returns (array, skipped, reused).

    The key file is written after the array, so an interrupted run never passes off stale or
    partial descriptors as valid; any other embedder or image list recomputes them.
    """
    key = images_key(identity, paths)
    array_path = out / f"{part}_descriptors.npy" if out is not None else None
    key_path = out / DESCRIPTORS_KEY_FILE if out is not None else None
    keys: dict[str, Any] = {}
    if key_path is not None and key_path.is_file():
        try:
            keys = json.loads(key_path.read_text())
        except (OSError, ValueError):
            keys = {}
    entry = keys.get(part, {})
    if array_path is not None and entry.get("key") == key and array_path.is_file():
        try:
            array = np.load(array_path)
        except (OSError, ValueError):
            array = None
        if array is not None and array.shape == (len(paths), embedder.dim):
            return array, [(Path(p), e) for p, e in entry.get("skipped", [])], True
    array, skipped = compute_descriptors(embedder, paths, desc=part, **compute)
    if out is not None:
        from geoxai.files import atomic_write_text

        _save_npy(array_path, array)
        keys[part] = {"key": key, "identity": identity, "count": len(paths),
                      "skipped": [[str(p), e] for p, e in skipped]}
        atomic_write_text(key_path, json.dumps(keys, indent=1))
    return array, skipped, False


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
    for q, (row, pos) in enumerate(zip(predictions, positives)):
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
    """Recall of one embedder on one test set, with what was left out and where files went."""

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
    radius: float = 25.0
    reused_descriptors: bool = False
    out: Path | None = None

    def table(self) -> "Any":
        """Recall and chance as a pandas DataFrame (rows recall/chance, columns R@N)."""
        import pandas as pd

        return pd.DataFrame([self.recalls, self.chance], index=["recall", "chance"]).rename(
            columns=lambda n: f"R@{n}")

    def format(self) -> str:
        spec = ", ".join(f"{k}={v}" for k, v in self.spec.items() if v is not None)
        lines = [f"retrieval on {self.dataset} ({self.num_database} database images; {spec})",
                 self.table().to_string(float_format=lambda v: f"{v:6.2f}")]
        excluded = []
        if self.num_without_positives:
            excluded.append(f"{self.num_without_positives} without a database image within {self.radius:g} m")
        if self.skipped_queries:
            excluded.append(f"{self.skipped_queries} unreadable")
        line = f"recall (percent) over {self.num_queries} queries"
        lines.append(line + (f"; excluded queries: {', '.join(excluded)}" if excluded else "; no query excluded"))
        if self.skipped_database:
            lines.append(f"{self.skipped_database} unreadable database images left out of the index")
        lines += [f"unreadable: {error}" for _, error in self.skipped[:5]]
        if len(self.skipped) > 5:
            lines.append(f"... {len(self.skipped) - 5} more unreadable images")
        if self.out is not None:
            reused = " (descriptors reused from an earlier run)" if self.reused_descriptors else ""
            lines.append(f"written: {self.out / 'recalls.csv'}, {self.out / 'predictions.csv'}{reused}")
        return "\n".join(lines)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write_csvs(out: Path, result: RetrievalResult, queries_paths: Sequence[Path], database_paths: Sequence[Path],
                status: np.ndarray, num_positives: np.ndarray, ranks: np.ndarray, indices: np.ndarray,
                distances: np.ndarray) -> None:
    import pandas as pd

    from geoxai.files import atomic_path

    root = result.dataset
    evaluated = status == "ok"
    first_rank = pd.array(ranks, dtype="Int64")
    first_rank[~evaluated | (ranks == 0)] = pd.NA  # empty: not evaluated, or no positive in the top k
    rows: dict[str, Any] = {
        "query": [_relative(p, root) for p in queries_paths],
        "status": status,
        "num_positives": num_positives,
        "first_correct_rank": first_rank,
    }
    for n in result.recalls:
        flags = pd.array((ranks >= 1) & (ranks <= n), dtype="boolean")
        flags[~evaluated] = pd.NA
        rows[f"correct_at_{n}"] = flags
    names = np.array([_relative(p, root) for p in database_paths] + [""], dtype=object)
    for j in range(indices.shape[1]):
        rows[f"prediction_{j + 1}"] = names[indices[:, j]]  # -1 (no prediction) -> ""
    for j in range(indices.shape[1]):
        rows[f"distance_{j + 1}"] = np.sqrt(np.maximum(distances[:, j], 0.0))
    predictions = pd.DataFrame(rows)
    recalls = pd.DataFrame({
        "n": list(result.recalls), "recall": list(result.recalls.values()),
        "chance": [result.chance[n] for n in result.recalls],
        "num_queries": result.num_queries, "num_without_positives": result.num_without_positives,
        "unreadable_queries": result.skipped_queries, "unreadable_database": result.skipped_database,
        "radius_m": result.radius, "embedder_identity": result.identity,
    })
    for name, frame in (("predictions.csv", predictions), ("recalls.csv", recalls)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")


def evaluate_retrieval(dataset: str | Path, spec: Mapping[str, Any], out: str | Path | None = None,
                       batch_size: int = 32, device: str = "auto", radius: float = 25.0,
                       progress: bool = True, ns: Sequence[int] = RECALL_NS,
                       num_workers: int | None = None) -> RetrievalResult:
    """Recall@N of the embedder described by ``spec`` on the VPR test folder ``dataset``.

    With ``out``, writes ``recalls.csv``, ``predictions.csv`` (one row per query) and the
    descriptors, which a re-run with the same embedder and images reuses.
    """
    from geoxai.data.vpr import VPRTestSet
    from geoxai.embedders import from_spec

    test_set = VPRTestSet(dataset, labels=True, radius=radius)
    embedder = from_spec(spec, device=device)
    identity = embedder.identity()
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise GeoxaiError(f"--out {out}: is a file; give a folder for recalls.csv and predictions.csv")
    compute = dict(batch_size=batch_size, progress=progress, num_workers=num_workers)
    db, db_skipped, db_reused = cached_descriptors(embedder, test_set.database_paths, "database", out, identity,
                                                   **compute)
    queries, q_skipped, q_reused = cached_descriptors(embedder, test_set.queries_paths, "queries", out, identity,
                                                      **compute)
    db_ok = ~np.isnan(db).any(axis=1)
    q_ok = ~np.isnan(queries).any(axis=1)
    if not db_ok.any():
        raise GeoxaiError(f"{test_set.folder / 'database'}: no readable database image")

    # positives among the readable database images, in the index's numbering
    index_of = np.cumsum(db_ok) - 1
    positives = [index_of[p[db_ok[p]]] for p in test_set.positives(radius)]
    num_positives = np.array([len(p) for p in positives], dtype=np.int64)
    status = np.where(~q_ok, "unreadable", np.where(num_positives == 0, "no_positives", "ok")).astype(object)
    evaluated = status == "ok"

    k = max(ns)
    distances = np.full((len(queries), min(k, int(db_ok.sum()))), np.nan, dtype=np.float32)
    indices = np.full(distances.shape, -1, dtype=np.int64)
    if q_ok.any():
        distances[q_ok], indices[q_ok] = search(db[db_ok], queries[q_ok], k, progress=progress)
    ranks = first_correct_rank(indices, positives)
    eval_positives = [p for p, e in zip(positives, evaluated) if e]
    result = RetrievalResult(
        dataset=test_set.folder, spec=embedder.spec(), identity=identity,
        recalls=recall_at(indices[evaluated], eval_positives, ns),
        chance=chance_recall(num_positives[evaluated], int(db_ok.sum()), ns),
        num_queries=int(evaluated.sum()),
        num_without_positives=int(((status == "no_positives")).sum()),
        skipped=q_skipped + db_skipped, skipped_queries=len(q_skipped), skipped_database=len(db_skipped),
        num_database=len(test_set.database_paths), radius=float(radius),
        reused_descriptors=db_reused and q_reused, out=out,
    )
    if result.num_queries == 0:
        raise GeoxaiError(f"{test_set.folder}: no readable query has a readable database image within "
                          f"{radius:g} m, so recall is undefined; check the folder or --radius")
    db_indices = np.where(indices >= 0, np.flatnonzero(db_ok)[np.maximum(indices, 0)], -1)
    if out is not None:
        _write_csvs(out, result, test_set.queries_paths, test_set.database_paths, status, num_positives,
                    ranks, db_indices, distances)
    return result
