"""``semroute suggest``: routes the traffic asks for, found in a decision log.

The requests looked at (their content must have been logged): those that went to the default
model below threshold, those decided by a low margin (under :data:`LOW_MARGIN`), and those
whose feedback named another route or none. They are embedded with the index's encoder and
clustered (k-means, fixed seed, inputs sorted and de-duplicated, so one log gives one answer).
A cluster of at least ``min_size`` queries that no route matches becomes a proposed new route
(a placeholder name, its most central queries as utterances); queries whose feedback named an
existing route, and near misses (under a route's threshold by less than :data:`NEAR_MISS`),
are proposed as utterances for that route. The patch is a route file of the new routes (valid
as it is; rename them), with the utterances for existing routes as comments to copy over.

The requests are picked by how the router that served them decided, so the index given may
already route a cluster's queries: the log may predate a route, or the index may be a newer
one. Each proposed cluster is routed with the index, and one whose queries mostly (more than
:data:`EXISTING_SHARE`) go to one of its routes says so (``existing_route``).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from semroute.errors import DataError

if TYPE_CHECKING:
    from semroute.routing.router import Router
    from semroute.tuning.logread import LogData, Logged

__all__ = ["EXISTING_SHARE", "LOW_MARGIN", "NEAR_MISS", "patch_yaml", "suggest"]

LOW_MARGIN = 0.05
NEAR_MISS = 0.1
MAX_POINTS = 20_000
"""At most this many distinct queries are clustered (a fixed, hash-ordered sample beyond)."""
MAX_CLUSTERS = 30
KMEANS_ITERATIONS = 50
KMEANS_RESTARTS = 10
"""faiss starts k-means from random points (no k-means++), so the best of several starts is
kept: with 4, the 8 planted queries of tests/test_learning_e2e.py were split; 8 or more keep
them whole, and each start costs milliseconds."""
UTTERANCES = 8
EXAMPLES = 5
MAX_QUERY_CHARS = 500
MIN_COHESION = 0.3
"""A cluster whose queries are on average less similar than this to its centre is noise."""
EXISTING_SHARE = 0.5
"""A proposed cluster more than this share of whose queries the index routes to one of its
routes names that route."""


def _picked(r: Logged, data: LogData) -> str | None:
    """Why ``r`` is looked at (None: it is not)."""
    found = data.feedback.get(r.request_id)
    if found is not None and "route" in found and found["route"] != r.route:
        return "feedback"
    if r.route is None and r.reason == "below_threshold":
        return "below_threshold"
    if r.margin is not None and (r.reason == "ambiguous" or r.margin < LOW_MARGIN):
        return "low_margin"
    return None


def suggest(
    router: Router, data: LogData, *, min_size: int = 5, source: str = "the log"
) -> dict[str, Any]:
    """The clusters and proposals ``semroute suggest --json`` prints."""
    if data.requests and not data.with_content:
        raise DataError(
            "no request in this log has its content: suggest needs the queries, logged only "
            "with `log_content: true` under `router.dispatch`",
            file=source,
        )
    names = {r.name for r in router.routes}
    thresholds = {r.name: r.threshold for r in router.routes}
    additions: dict[str, set[str]] = defaultdict(set)
    unrouted: set[str] = set()
    why: dict[str, str] = {}
    for r in data.with_content:
        reason = _picked(r, data)
        query = (r.query or "").strip()[:MAX_QUERY_CHARS]
        if reason is None or not query:
            continue
        wanted = data.feedback.get(r.request_id, {}).get("route", r.route)
        if reason == "feedback" and wanted in names:
            additions[wanted].add(query)
            continue
        if r.best is not None and r.best[0] in names and r.route is None:
            gap = thresholds[r.best[0]] - r.best[1]
            if 0 < gap < NEAR_MISS and reason != "feedback":
                additions[r.best[0]].add(query)
        unrouted.add(query)
        why.setdefault(query, reason)
    clusters = _clusters(router, sorted(unrouted), min_size)
    new_routes = [_proposal(router, i, c, why) for i, c in enumerate(clusters, 1)]
    in_clusters = {q for c in clusters for q in c["members"]}
    existing = [
        {"route": name, "utterances": sorted(qs - in_clusters)[:UTTERANCES]}
        for name, qs in sorted(additions.items())
        if qs - in_clusters
    ]
    return {
        "requests": len(data.requests),
        "malformed_lines": data.malformed_lines,
        "looked_at": len(unrouted) + sum(len(v) for v in additions.values()),
        "clusters": new_routes,
        "new_routes": len(new_routes),
        "additions": existing,
    }


def _proposal(router: Router, i: int, c: dict[str, Any], why: dict[str, str]) -> dict[str, Any]:
    """Cluster ``c`` proposed as the ``i``-th new route, with the route of the index its
    queries already go to, if one takes most of them."""
    route, share = _existing_route(router, c["members"])
    return {
        "name": f"new-route-{i}",
        "size": c["size"],
        "cohesion": c["cohesion"],
        "reasons": sorted({why[q] for q in c["members"]}),
        "utterances": c["central"][:UTTERANCES],
        "examples": c["central"][:EXAMPLES],
        "existing_route": route,
        "existing_share": share,
    }


def _existing_route(router: Router, queries: list[str]) -> tuple[str | None, float | None]:
    """The route of the index more than :data:`EXISTING_SHARE` of ``queries`` go to, and the
    share that do ((None, None): no route takes that many)."""
    counts = Counter(d.route for d in router.route_batch(queries) if d.route is not None)
    if not counts:
        return None, None
    route, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    share = n / len(queries)
    return (route, round(share, 4)) if share > EXISTING_SHARE else (None, None)


def _clusters(router: Router, queries: list[str], min_size: int) -> list[dict[str, Any]]:
    if len(queries) < min_size:
        return []
    if len(queries) > MAX_POINTS:  # a fixed sample: the same log gives the same one
        queries = sorted(queries, key=lambda q: hashlib.sha256(q.encode()).digest())[:MAX_POINTS]
        queries.sort()
    import faiss

    vectors = np.ascontiguousarray(router.encoder.encode(queries).vectors, dtype=np.float32)
    k = max(1, min(MAX_CLUSTERS, len(queries) // max(min_size, 1), round(math.sqrt(len(queries)))))
    # k-means restarted from a fixed seed (the same log gives the same clusters); every
    # point is used (no sampling) and small clusters are allowed without faiss's warning.
    kmeans = faiss.Kmeans(
        vectors.shape[1],
        k,
        niter=KMEANS_ITERATIONS,
        nredo=KMEANS_RESTARTS,
        seed=0,
        min_points_per_centroid=1,
        max_points_per_centroid=len(queries),
    )
    kmeans.train(vectors)
    labels = kmeans.index.search(vectors, 1)[1][:, 0]
    out: list[dict[str, Any]] = []
    for label in range(k):
        members = np.flatnonzero(labels == label)
        if len(members) < min_size:
            continue
        centre = vectors[members].mean(axis=0)
        norm = np.linalg.norm(centre)
        sims = vectors[members] @ (centre / norm if norm > 0 else centre)
        cohesion = float(sims.mean())
        if cohesion < MIN_COHESION:
            continue
        order = members[np.argsort(-sims, kind="stable")]
        out.append(
            {
                "size": len(members),
                "cohesion": round(cohesion, 4),
                "central": [queries[int(i)] for i in order[:UTTERANCES]],
                "members": [queries[int(i)] for i in members],
            }
        )
    out.sort(key=lambda c: (-c["size"], c["central"][0]))
    return out


def patch_yaml(report: dict[str, Any]) -> str:
    """The route-file fragment: the proposed routes (rename them), then the utterances for
    existing routes as comments."""
    lines = [
        "# Proposed by `semroute suggest`: rename each route, check its utterances, then copy",
        "# it into your route files and run `semroute validate`.",
    ]
    lines.extend(
        f"# {c['name']}: {existing_note(c)}; add its utterances there instead?"
        for c in report["clusters"]
        if c["existing_route"] is not None
    )
    routes = [{"name": c["name"], "utterances": c["utterances"]} for c in report["clusters"]]
    body = yaml.safe_dump({"routes": routes}, sort_keys=False, allow_unicode=True)
    lines.append(body.rstrip("\n") if routes else "routes: []")
    for add in report["additions"]:
        lines.append(f"# utterances to add to route {add['route']!r}:")
        lines.extend(f"#   - {json_line(u)}" for u in add["utterances"])
    return "\n".join(lines) + "\n"


def existing_note(cluster: dict[str, Any]) -> str:
    """What a cluster whose queries an existing route already takes says about it."""
    share = f"{cluster['existing_share']:.0%}"
    return f"{share} of its queries already go to route {cluster['existing_route']!r}"


def json_line(text: str) -> str:
    import json

    return json.dumps(" ".join(text.split()), ensure_ascii=False)
