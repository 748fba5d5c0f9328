"""Which FAISS structure holds the vectors, chosen by size.

Up to ``FLAT_LIMIT`` route utterances the index is exact: every query is compared with every
example (a flat inner-product index, searched with FAISS's single-threaded kernel). Beyond that
an exact scan costs more than the encoder, so the index is an HNSW graph and each query looks at
its ``NEIGHBOURS`` nearest examples. The build measures how well the graph agrees with exact
search on the index's own embeddings and records it in the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FLAT_LIMIT", "NEIGHBOURS", "make_index", "vectors_of"]

FLAT_LIMIT = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
NEIGHBOURS = 100
RECALL_SAMPLE = 1000


def choose_type(n_route_vectors: int, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "flat" if n_route_vectors <= FLAT_LIMIT else "hnsw"


def make_index(
    vectors: npt.NDArray[np.float32], owner: npt.NDArray[np.int64], kind: str
) -> tuple[Any, dict[str, Any]]:
    """Build the FAISS index over ``vectors``; ``owner`` is each vector's route (-1: none).
    Returns the index and what the manifest should say about it."""
    import faiss

    dim = vectors.shape[1]
    if kind == "flat":
        flat = faiss.IndexFlatIP(dim)
        flat.add(vectors)
        return flat, {"type": "flat", "metric": "inner_product"}
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
        **measure_agreement(index, vectors, owner),
    }
    return index, meta


def measure_agreement(
    index: Any, vectors: npt.NDArray[np.float32], owner: npt.NDArray[np.int64]
) -> dict[str, Any]:
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


def vectors_of(index: Any) -> npt.NDArray[np.float32]:
    """The stored vectors as a numpy view (no copy; valid while ``index`` lives)."""
    import faiss

    flat = index if isinstance(index, faiss.IndexFlat) else faiss.downcast_index(index.storage)
    raw = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)  # type: ignore[attr-defined]
    return np.asarray(raw).reshape(flat.ntotal, flat.d)
