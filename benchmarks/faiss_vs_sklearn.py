"""Exact k-NN for retrieval: faiss IndexFlatL2 against scikit-learn's brute-force NearestNeighbors.

Both search the same random L2-normalised float32 descriptors (a stand-in for a CosPlace database);
the script prints each time, the speed-up measured in this run and whether the neighbours agree.

    python benchmarks/faiss_vs_sklearn.py                      # 100k x 512 database, 1000 queries, k=20
    python benchmarks/faiss_vs_sklearn.py --database 10000     # a quick check
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from sklearn.neighbors import NearestNeighbors


def random_descriptors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def faiss_knn(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database)
    distances, indices = index.search(queries, k)
    return np.sqrt(np.maximum(distances, 0)), indices


def sklearn_knn(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    knn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(database)
    return knn.kneighbors(queries)


def timed(func, *args, repeats: int = 1) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Best wall time of ``repeats`` calls (the least disturbed by other load) and the result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", type=int, default=100_000, help="database descriptors")
    parser.add_argument("--queries", type=int, default=1000, help="query descriptors")
    parser.add_argument("--dim", type=int, default=512, help="descriptor dimension")
    parser.add_argument("-k", type=int, default=20, help="neighbours per query")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    database = random_descriptors(args.database, args.dim, rng)
    queries = random_descriptors(args.queries, args.dim, rng)
    print(f"database {args.database} x {args.dim}, {args.queries} queries, k={args.k} (float32, L2-normalised), "
          f"best of {args.repeats}")

    faiss_knn(database[:1000], queries[:10], args.k)  # warm-up both: thread pools, BLAS
    sklearn_knn(database[:1000], queries[:10], args.k)
    faiss_s, (faiss_d, faiss_i) = timed(faiss_knn, database, queries, args.k, repeats=args.repeats)
    sklearn_s, (sklearn_d, sklearn_i) = timed(sklearn_knn, database, queries, args.k, repeats=args.repeats)

    same_ranking = float(np.mean(faiss_i == sklearn_i)) * 100
    same_sets = float(np.mean([len(np.intersect1d(a, b)) / args.k
                               for a, b in zip(faiss_i, sklearn_i, strict=True)])) * 100
    max_gap = float(np.abs(faiss_d - sklearn_d).max())
    print(f"{'faiss IndexFlatL2':<32}{faiss_s:8.3f} s")
    print(f"{'sklearn NearestNeighbors brute':<32}{sklearn_s:8.3f} s")
    print(f"{'speed-up (sklearn / faiss)':<32}{sklearn_s / faiss_s:8.1f} x")
    print(f"neighbours: {same_ranking:.2f}% identical at each rank, {same_sets:.2f}% shared top-{args.k}, "
          f"largest distance difference {max_gap:.2e}")
    if same_sets < 99.0:
        raise SystemExit("faiss and scikit-learn disagree on the neighbours")


if __name__ == "__main__":
    main()
