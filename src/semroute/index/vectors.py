"""Where the example vectors live: the :class:`VectorStore` interface and FAISS behind it.

Up to ``FLAT_LIMIT`` route utterances the index is exact: every query is compared with every
example (a flat inner-product index, searched with FAISS's single-threaded kernel). Beyond that
an exact scan costs more than the encoder, so the index is an HNSW graph and each query looks at
its ``NEIGHBOURS`` nearest examples. The build measures how well the graph agrees with exact
search on the index's own embeddings and records it in the manifest.

Another store (Qdrant, pgvector) implements :class:`VectorStore`; FAISS is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "FLAT_LIMIT",
    "NEIGHBOURS",
    "FaissStore",
    "VectorStore",
    "build_store",
    "choose_type",
    "inner_products",
    "read_store",
]

FLAT_LIMIT = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
NEIGHBOURS = 100
RECALL_SAMPLE = 1000

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class VectorStore(Protocol):
    """Unit-length example vectors, searched by inner product (cosine)."""

    @property
    def count(self) -> int:
        """How many vectors are stored."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def approximate(self) -> bool:
        """True when :meth:`search` walks a graph instead of comparing every vector."""
        ...

    def similarities(self, queries: FloatArray, stop: int) -> FloatArray:
        """Exact cosine of each query to each of the first ``stop`` vectors: (queries, stop)."""
        ...

    def search(self, queries: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
        """Each query's ``k`` most similar vectors, best first: (similarities, positions), with
        position -1 padding a short list."""
        ...

    def vectors(self) -> FloatArray:
        """Every stored vector, in position order (read-only use)."""
        ...


class FaissStore:
    """A FAISS flat (exact) or HNSW (approximate) inner-product index."""

    def __init__(self, index: Any) -> None:
        import faiss

        self._index = index
        self._vectors = _vectors_of(index)
        self._approximate = not isinstance(index, faiss.IndexFlat)

    @property
    def count(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    @property
    def approximate(self) -> bool:
        return self._approximate

    def similarities(self, queries: FloatArray, stop: int) -> FloatArray:
        return inner_products(queries, self._vectors[:stop])

    def search(self, queries: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
        sims, ids = self._index.search(queries, k)
        return sims, ids

    def vectors(self) -> FloatArray:
        return self._vectors

    def write(self, file: Path) -> None:
        """Save the index to ``file`` (what :func:`read_store` reads)."""
        import faiss

        faiss.write_index(self._index, str(file))


def inner_products(queries: FloatArray, rows: FloatArray) -> FloatArray:
    """Each query's inner product with each of ``rows`` (C-contiguous float32): (queries, rows).

    One query goes through FAISS's single-threaded SIMD kernel: numpy's multi-threaded BLAS
    would have to wake a worker thread after the encoder ran, which costs milliseconds when the
    other core is busy. Several go through BLAS, best for throughput.
    """
    if len(queries) != 1:
        out: FloatArray = queries @ rows.T
        return out
    import faiss

    n, dim = rows.shape
    sims = np.empty((1, n), dtype=np.float32)
    query = np.ascontiguousarray(queries[0], dtype=np.float32)
    faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
        faiss.swig_ptr(sims), faiss.swig_ptr(query), faiss.swig_ptr(rows), dim, n
    )
    return sims


def read_store(file: Path) -> FaissStore:
    """The index saved at ``file``; raises RuntimeError when FAISS cannot read it."""
    import faiss

    return FaissStore(faiss.read_index(str(file)))


def choose_type(n_route_vectors: int, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "flat" if n_route_vectors <= FLAT_LIMIT else "hnsw"


def build_store(
    vectors: FloatArray, owner: IntArray, kind: str
) -> tuple[FaissStore, dict[str, Any]]:
    """Index ``vectors`` as a ``kind`` ("flat" or "hnsw") store; ``owner`` is each vector's route
    (-1: none). Returns the store and what the manifest should say about it."""
    import faiss

    dim = vectors.shape[1]
    if kind == "flat":
        flat = faiss.IndexFlatIP(dim)
        flat.add(vectors)
        return FaissStore(flat), {"type": "flat", "metric": "inner_product"}
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(vectors)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    meta = {
        "type": "hnsw",
        "metric": "inner_product",
        "m": HNSW_M,
        "ef_construction": HNSW_EF_CONSTRUCTION,
        "ef_search": HNSW_EF_SEARCH,
        "neighbours": NEIGHBOURS,
        **_measure_agreement(index, vectors, owner),
    }
    return FaissStore(index), meta


def _measure_agreement(index: Any, vectors: FloatArray, owner: IntArray) -> dict[str, Any]:
    """Recall@10 and nearest-route agreement of ``index`` against exact search, using a sample
    of the index's own utterance vectors as queries (each one's own vector left out)."""
    import faiss

    routed = np.flatnonzero(owner >= 0)
    rng = np.random.default_rng(0)
    sample = rng.choice(routed, size=min(RECALL_SAMPLE, len(routed)), replace=False)
    queries = np.ascontiguousarray(vectors[sample])
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 11)
    _, found = index.search(queries, 11)
    hits, wanted, agree = 0, 0, 0
    for q, t, f in zip(sample, truth, found, strict=True):
        # FAISS pads short result lists with -1; the query's own vector is left out.
        t, f = t[(t != q) & (t >= 0)][:10], f[(f != q) & (f >= 0)][:10]
        hits += len(np.intersect1d(t, f))
        wanted += len(t)
        agree += int(owner[t[0]] == owner[f[0]]) if len(t) and len(f) else int(not len(t))
    return {
        "recall_at_10": round(hits / max(wanted, 1), 4),
        "nearest_route_agreement": round(agree / len(sample), 4),
        "agreement_sample": len(sample),
    }


def _vectors_of(index: Any) -> FloatArray:
    """The stored vectors as a numpy view (no copy; valid while ``index`` lives)."""
    import faiss

    flat = index if isinstance(index, faiss.IndexFlat) else faiss.downcast_index(index.storage)
    raw = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)  # type: ignore[attr-defined]
    return np.asarray(raw).reshape(flat.ntotal, flat.d)
