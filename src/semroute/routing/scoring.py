"""Per-route confidence: pure functions over similarities, and the scorers built from them.

Vectors of one route are stored contiguously, so a route is the slice ``starts[r]:starts[r+1]``
and per-route reductions are single ``numpy.ufunc.reduceat`` calls with no Python loop over routes.

Each scorer named in the route files' ``router.scorer`` (:data:`semroute.config.routefile.SCORERS`)
has one entry in :data:`SCORING`; a new scorer is a function and an entry there. What turns the
confidences into a decision is :mod:`semroute.routing.rule`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from semroute.index.head import Head

__all__ = [
    "HYBRID_WEIGHT",
    "SCORING",
    "Evidence",
    "Scorer",
    "best_per_route",
    "centroids",
    "from_neighbours",
    "hybrid",
    "route_of_vectors",
    "scorer_for",
    "top_k_mean",
]

HYBRID_WEIGHT = 0.5
"""Share of the head's probability in the hybrid confidence (the rest: closest-example
similarity). Of 0, 0.25, 0.5, 0.75 and 1 it had the lowest cost on CLINC150's validation split
(scripts/bench_choices.py, docs/benchmarks.md)."""

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def route_of_vectors(starts: IntArray, total: int) -> IntArray:
    """The route index of every vector, from each route's first vector position."""
    counts = np.diff(np.append(starts, total))
    return np.repeat(np.arange(len(starts), dtype=np.int64), counts)


def best_per_route(sims: FloatArray, starts: IntArray) -> tuple[FloatArray, IntArray]:
    """Each route's highest similarity and the position of the vector that reached it.

    ``sims`` is (queries, vectors); returns two (queries, routes) arrays. Ties go to the first
    vector of the route.
    """
    sims = np.atleast_2d(sims)
    n = sims.shape[1]
    conf = np.maximum.reduceat(sims, starts, axis=1)
    owner = route_of_vectors(starts, n)
    positions = np.where(sims >= conf[:, owner], np.arange(n), n)
    best = np.minimum.reduceat(positions, starts, axis=1)
    return conf.astype(np.float32, copy=False), best.astype(np.int64, copy=False)


def top_k_mean(sims: FloatArray, starts: IntArray, k: int = 5) -> FloatArray:
    """Mean of each route's ``k`` highest similarities (fewer when a route has fewer examples)."""
    sims = np.atleast_2d(sims)
    n = sims.shape[1]
    owner = route_of_vectors(starts, n)
    counts = np.diff(np.append(starts, n))
    # Sort each row by (route, similarity descending): similarities lie in [-1, 1].
    order = np.argsort(owner * 4.0 - sims, axis=1, kind="stable")
    ranked = np.take_along_axis(sims, order, axis=1)
    rank = np.arange(n) - np.repeat(starts, counts)
    kept = np.where(rank < k, ranked, 0.0)
    return (np.add.reduceat(kept, starts, axis=1) / np.minimum(counts, k)).astype(np.float32)


def from_neighbours(
    sims: FloatArray,
    ids: IntArray,
    owner: IntArray,
    n_routes: int,
    k: int = 1,
    sizes: IntArray | None = None,
) -> tuple[FloatArray, IntArray]:
    """Per-route scores from an approximate search's neighbours (best first per row).

    A route's score is the mean of its ``k`` most similar retrieved examples (``k=1``: the
    closest), or of all of them for a route with fewer than ``k`` (``sizes``: examples per
    route). Retrieved lists are short, so a route with fewer retrieved examples than that, or
    none, is filled with the similarity of the last neighbour retrieved: an upper bound, since
    anything not retrieved is at most that similar. Its closest example is then unknown (-1).
    ``owner`` maps a vector to its route (-1 for out-of-scope examples).
    """
    conf = np.empty((len(sims), n_routes), dtype=np.float32)
    best = np.full((len(sims), n_routes), -1, dtype=np.int64)
    for row in range(len(sims)):
        keep = ids[row] >= 0
        keep[keep] = owner[ids[row][keep]] >= 0
        s, found = sims[row][keep], ids[row][keep]
        floor = float(sims[row][ids[row] >= 0][-1]) if (ids[row] >= 0).any() else 0.0
        conf[row] = floor
        routes = owner[found]
        # Stable sort by route keeps each route's neighbours in descending similarity.
        order = np.argsort(routes, kind="stable")
        routes, s, found = routes[order], s[order], found[order]
        present, first, counts = np.unique(routes, return_index=True, return_counts=True)
        best[row, present] = found[first]
        rank = np.arange(len(routes)) - np.repeat(first, counts)
        limit = np.repeat(np.minimum(sizes[present], k), counts) if sizes is not None else k
        top = np.where(rank < limit, s, 0.0)
        sums = np.add.reduceat(top, first) if len(first) else np.zeros(0)
        wanted = np.minimum(sizes[present], k) if sizes is not None else np.full(len(present), k)
        taken = np.minimum(counts, wanted)
        conf[row, present] = (sums + (wanted - taken) * floor) / wanted
    return conf, best


def centroids(vectors: FloatArray, starts: IntArray) -> FloatArray:
    """Each route's mean example vector, normalised (cosine to it is the centroid score)."""
    counts = np.diff(np.append(starts, len(vectors)))
    means = np.add.reduceat(vectors, starts, axis=0) / counts[:, None]
    norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    out: FloatArray = (means / norms).astype(np.float32)
    return out


def hybrid(probabilities: FloatArray, nearest: FloatArray) -> FloatArray:
    """The default confidence: the head's probability for a route averaged with the query's
    similarity to the route's closest example. The head separates routes well; similarity
    knows when a query resembles nothing seen, which a softmax alone does not."""
    out: FloatArray = HYBRID_WEIGHT * probabilities + (1.0 - HYBRID_WEIGHT) * nearest
    return out


# --- scorers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What a batch of queries shows about each route, for a scorer to turn into confidence."""

    queries: FloatArray
    """(queries, dim) unit query vectors."""
    nearest: FloatArray
    """(queries, routes): similarity to each route's closest example."""
    top_k_mean: Callable[[int], FloatArray]
    """(queries, routes) mean of each route's ``k`` closest examples, computed on demand."""
    head: Head | None
    centroids: FloatArray | None


@dataclass(frozen=True)
class Scorer:
    """How one scorer turns :class:`Evidence` into per-route confidence."""

    name: str
    confidence: Callable[[Evidence], FloatArray]
    needs_head: bool = False
    """The index must hold a learned head (see :mod:`semroute.index.head`)."""
    needs_centroids: bool = False
    """The router precomputes each route's centroid (see :func:`centroids`)."""


def _nearest(e: Evidence) -> FloatArray:
    return e.nearest


def _top5(e: Evidence) -> FloatArray:
    return e.top_k_mean(5)


def _centroid(e: Evidence) -> FloatArray:
    assert e.centroids is not None
    out: FloatArray = e.queries @ e.centroids.T
    return out


def _head(e: Evidence) -> FloatArray:
    assert e.head is not None
    return e.head.probabilities(e.queries)


def _hybrid(e: Evidence) -> FloatArray:
    assert e.head is not None
    return hybrid(e.head.probabilities(e.queries), e.nearest)


SCORING: Mapping[str, Scorer] = MappingProxyType(
    {
        s.name: s
        for s in (
            Scorer("hybrid", _hybrid, needs_head=True),
            Scorer("head", _head, needs_head=True),
            Scorer("nearest", _nearest),
            Scorer("centroid", _centroid, needs_centroids=True),
            Scorer("top5", _top5),
        )
    }
)
"""Every scorer by name; the names are the ones the route files accept."""


def scorer_for(name: str) -> Scorer:
    """The scorer called ``name``; KeyError for a name the route files would not accept."""
    return SCORING[name]
