"""Nearest-neighbour search over L2-normalised embeddings, behind one interface.

* ``ExactIndex``: brute-force cosine (one matrix product), exact; the default for small galleries.
* ``HnswIndex``: hnswlib's HNSW graph on inner product, approximate; for large galleries.
  ``ef`` trades recall for speed; the cloud benchmark reports its recall against exact search.

Both return cosine similarities (higher is closer) and row indices into the gallery, best first.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class VectorIndex(Protocol):
    kind: str
    dim: int

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) float32 queries -> (n, k') cosines and (n, k') int64 rows, k' = min(k, len)."""


def single_thread_blas() -> None:
    """Run BLAS on one thread in this process. A cloud window is one small matrix-vector product;
    OpenBLAS's threads only add wake-up jitter to it (measured: 10k references, 0.5 ms on one
    thread vs 2-25 ms with two threads on a busy 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl missing: BLAS keeps its default threads")
        return
    threadpool_limits(1, user_api="blas")


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class ExactIndex:
    kind = "exact"

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.dim = self.vectors.shape[1] if self.vectors.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.atleast_2d(np.asarray(queries, np.float32))
        n = len(self.vectors)
        k = min(k, n)
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        sims = q @ self.vectors.T
        if k < n:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (len(q), n))
        psims = np.take_along_axis(sims, part, 1)
        order = np.argsort(-psims, axis=1, kind="stable")
        return np.take_along_axis(psims, order, 1), np.take_along_axis(part, order, 1).astype(np.int64)


class HnswIndex:
    kind = "hnsw"

    def __init__(self, vectors: np.ndarray, m: int = 16, ef_construction: int = 100, ef: int = 64,
                 threads: int = -1, cache: Path | None = None):
        import hnswlib

        vectors = np.ascontiguousarray(vectors, np.float32)
        self.dim = vectors.shape[1]
        self._n = len(vectors)
        self.ef = ef
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        key = _fingerprint(vectors, m, ef_construction)
        if cache is not None and cache.exists() and cache.with_suffix(".key").exists() \
                and cache.with_suffix(".key").read_text() == key:
            self.index.load_index(str(cache), max_elements=self._n)
            log.info("loaded HNSW index %s (%d vectors)", cache, self._n)
        else:
            self.index.init_index(max_elements=max(self._n, 1), ef_construction=ef_construction, M=m)
            if self._n:
                self.index.add_items(vectors, np.arange(self._n), num_threads=threads)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                self.index.save_index(str(cache))
                cache.with_suffix(".key").write_text(key)
        self.index.set_ef(ef)
        self.index.set_num_threads(1)   # single-window queries: threads only add overhead

    def __len__(self) -> int:
        return self._n

    def set_ef(self, ef: int) -> None:
        """Query-time beam width (>= k): recall against speed."""
        self.ef = int(ef)
        self.index.set_ef(self.ef)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.atleast_2d(np.asarray(queries, np.float32))
        k = min(k, self._n)
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.ef < k:
            self.set_ef(k)
        labels, dists = self.index.knn_query(q, k=k)
        return (1.0 - dists).astype(np.float32), labels.astype(np.int64)


def _fingerprint(vectors: np.ndarray, m: int, efc: int) -> str:
    h = hashlib.sha256(vectors.tobytes())
    h.update(f"{vectors.shape}/{m}/{efc}".encode())
    return h.hexdigest()


def build_index(vectors: np.ndarray, *, exact_max: int = 20000, m: int = 16, ef_construction: int = 100,
                ef: int = 64, kind: str = "auto", cache: Path | None = None) -> VectorIndex:
    """Exact search up to `exact_max` vectors, HNSW above (or as `kind` says: exact|hnsw|auto)."""
    if kind == "auto":
        kind = "exact" if len(vectors) <= exact_max else "hnsw"
    if kind == "exact":
        return ExactIndex(vectors)
    if kind == "hnsw":
        return HnswIndex(vectors, m=m, ef_construction=ef_construction, ef=ef, cache=cache)
    raise ValueError(f"unknown index kind {kind!r} (exact, hnsw, auto)")
