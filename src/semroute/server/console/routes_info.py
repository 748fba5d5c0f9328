"""The routes page's figures: each route of the served index, its calibration, and the
utterances of different routes that sit so close together that the router cannot tell them apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from semroute.routing.router import Router

__all__ = ["CONFLICT_SIMILARITY", "MAX_CHECKED", "routes_summary"]

CONFLICT_SIMILARITY = 0.9
"""Two utterances of different routes at least this similar are shown as a conflict."""
MAX_CHECKED = 20_000
"""Utterances compared for conflicts (the first ones of a larger index; the page says so)."""
NEIGHBOURS = 5
MAX_CONFLICTS = 100


def routes_summary(router: Router) -> dict[str, Any]:
    """Routes (name, model, threshold, utterances, description), the index's calibration and
    settings, and the conflicting utterance pairs, most similar first."""
    index = router.index
    routes = [
        {
            "name": r.name,
            "model": r.model,
            "threshold": r.threshold,
            "utterances": r.stop - r.start,
            "description": r.description,
        }
        for r in index.routes
    ]
    return {
        "routes": routes,
        "default_model": router.default_model,
        "scorer": index.scorer,
        "min_margin": router.min_margin,
        "calibration": index.manifest.calibration or {},
        "out_of_scope": len(index.out_of_scope),
        "conflicts": _conflicts(router),
        "checked": min(index.routes[-1].stop if index.routes else 0, MAX_CHECKED),
        "utterance_count": index.routes[-1].stop if index.routes else 0,
        "similarity": CONFLICT_SIMILARITY,
    }


def _conflicts(router: Router) -> list[dict[str, Any]]:
    index = router.index
    if not index.routes:
        return []
    stop = index.routes[-1].stop
    owner = np.full(index.store.count, -1, dtype=np.int64)
    for i, r in enumerate(index.routes):
        owner[r.start : r.stop] = i
    n = min(stop, MAX_CHECKED)
    vectors = index.route_vectors[:n]
    sims, ids = index.store.search(np.ascontiguousarray(vectors, dtype=np.float32), NEIGHBOURS)
    seen: set[tuple[int, int]] = set()
    found = []
    for a in range(n):
        for sim, b in zip(sims[a], ids[a], strict=True):
            b = int(b)
            if b < 0 or b >= stop or owner[b] == owner[a] or sim < CONFLICT_SIMILARITY:
                continue
            pair = (min(a, b), max(a, b))
            if pair in seen:
                continue
            seen.add(pair)
            found.append((float(sim), a, b))
    found.sort(reverse=True)
    names = [r.name for r in index.routes]
    return [
        {
            "similarity": round(sim, 4),
            "route_a": names[owner[a]],
            "utterance_a": index.utterances[a],
            "route_b": names[owner[b]],
            "utterance_b": index.utterances[b],
        }
        for sim, a, b in found[:MAX_CONFLICTS]
    ]
