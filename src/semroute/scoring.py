"""Pure functions: similarities → per-route confidence → decision.

Vectors of one route are stored contiguously, so a route is the slice ``starts[r]:starts[r+1]``
and per-route reductions are single ``numpy.ufunc.reduceat`` calls with no Python loop over routes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from semroute.decision import Reason

__all__ = ["best_per_route", "decide", "route_of_vectors"]

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


def decide(
    confidence: FloatArray, thresholds: FloatArray, min_margin: float
) -> tuple[int, Reason, float, IntArray]:
    """Pick a route for one query from every route's confidence.

    Only the best route is considered: if it is under its own threshold the query goes to the
    default model even when a runner-up clears a lower threshold, because the runner-up is by
    definition the worse match. Returns (route index or -1, reason, margin, order best first).
    The margin is best minus runner-up (minus 0 when there is a single route).
    """
    order = np.argsort(-confidence, kind="stable")
    top = int(order[0])
    runner_up = float(confidence[order[1]]) if len(order) > 1 else 0.0
    margin = float(confidence[top]) - runner_up
    if confidence[top] < thresholds[top]:
        return -1, Reason.BELOW_THRESHOLD, margin, order
    if margin < min_margin:
        return -1, Reason.AMBIGUOUS, margin, order
    return top, Reason.MATCHED, margin, order
