"""``semroute replay``: what a candidate index would have decided for the requests a decision log
holds, without calling a model.

Every request whose content was logged (``log_content: true``) is routed again by the candidate
index: single-turn requests in batches (the encoder's batch API, each distinct query once),
multi-turn ones one by one with the candidate's conversation settings. The route's rules are not applied (the log does not
keep what they test: tools, headers, the request's other fields), so the comparison is of the
semantic decision: the route, and the model that route sends to. Each request's cost before and
after is estimated from its logged tokens at the prices the candidate index knows (the cost
model routing uses, :class:`~semroute.routing.candidates.Candidates`).

A candidate that holds few of the routes the log's requests went to is probably not a candidate
for the router that wrote the log: every request of a missing route would show as a change. The
report then carries a ``warning`` (see :data:`MIN_KNOWN_SHARE`).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semroute.errors import DataError

if TYPE_CHECKING:
    from semroute.decision import Decision
    from semroute.routing.router import Router
    from semroute.tuning.logread import LogData, Logged

__all__ = ["EXAMPLES_PER_PAIR", "MIN_KNOWN_SHARE", "redecide", "replay"]

EXAMPLES_PER_PAIR = 3
EXAMPLE_CHARS = 200
MIN_KNOWN_SHARE = 0.5
"""When, of the replayed requests the log sent to a route, under this share went to a route the
candidate index has too, the report warns that the index does not match the log."""
SHOWN_MISSING = 5


def redecide(router: Router, requests: list[Logged], batch_size: int = 256) -> list[Decision]:
    """The candidate's decision for each request (each must have its content logged)."""
    conversation = router.conversation
    simple = conversation.turns == 1 and not conversation.sticky
    out: list[Decision | None] = [None] * len(requests)
    batch = [i for i, r in enumerate(requests) if simple or r.turns <= 1]
    # A log repeats its popular queries: each distinct one is encoded once.
    texts = sorted({requests[i].query or "" for i in batch})
    decided = dict(zip(texts, router.route_batch(texts, batch_size=batch_size), strict=True))
    for i in batch:
        out[i] = decided[requests[i].query or ""]
    for i, r in enumerate(requests):
        if out[i] is None:
            out[i] = router.route(r.messages or r.query or "")
    return [d for d in out if d is not None]


@dataclass(frozen=True)
class _Cost:
    router: Router

    def of(self, model: str | None, r: Logged) -> float | None:
        if model is None or r.prompt_tokens is None:
            return None
        facts = self.router.candidates.facts(model)
        return facts.cost(r.prompt_tokens, r.completion_tokens or 0)


def replay(router: Router, data: LogData, *, source: str = "the log") -> dict[str, Any]:
    """The report ``semroute replay --json`` prints (see the README's "Learning from traffic")."""
    requests = _with_content(data, source)
    started = time.perf_counter()
    decisions = redecide(router, requests)
    seconds = time.perf_counter() - started
    cost = _Cost(router)
    pairs: Counter[tuple[str | None, str | None]] = Counter()
    examples: dict[tuple[str | None, str | None], list[dict[str, Any]]] = defaultdict(list)
    before_usd = after_usd = 0.0
    priced = with_feedback = 0
    scores: list[float] = []
    for r, d in zip(requests, decisions, strict=True):
        was = cost.of(r.model or r.recommended_model, r)
        now = cost.of(d.model, r)
        if was is not None and now is not None:
            before_usd += was
            after_usd += now
            priced += 1
        if d.route == r.route:
            continue
        pair = (r.route, d.route)
        pairs[pair] += 1
        found = data.feedback.get(r.request_id)
        if found is not None:
            with_feedback += 1
            scores.append(found["score"])
        if len(examples[pair]) < EXAMPLES_PER_PAIR:
            examples[pair].append(_example(r, d))
    changed = sum(pairs.values())
    missing = _missing_routes(router, requests)
    return {
        "n": len(data.requests),
        "malformed_lines": data.malformed_lines,
        "replayed": len(requests),
        "changed": changed,
        "changed_share": round(changed / len(requests), 4) if requests else None,
        "by_pair": [
            {"from": a, "to": b, "n": n}
            for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ],
        "cost_usd_before": round(before_usd, 8) if priced else None,
        "cost_usd_after": round(after_usd, 8) if priced else None,
        "priced": priced,
        "feedback": {
            "changed_with_feedback": with_feedback,
            "mean_score_before": round(sum(scores) / len(scores), 4) if scores else None,
        },
        "examples": [
            {"from": a, "to": b, "requests": examples[(a, b)]}
            for (a, b), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ],
        "seconds": round(seconds, 3),
        "routes_not_in_index": [{"route": k, "n": n} for k, n in missing.items()],
        "warning": _mismatch(missing, requests),
    }


def _with_content(data: LogData, source: str) -> list[Logged]:
    """The requests of ``data`` logged with their content, refused when it holds requests but
    none of them has it."""
    if data.requests and not data.with_content:
        raise DataError(
            "no request in this log has its content: replay needs the messages, logged only "
            "with `log_content: true` under `router.dispatch`; turn it on and replay later "
            "traffic",
            file=source,
        )
    return data.with_content


def _example(r: Logged, d: Any) -> dict[str, Any]:
    """A request whose decision changed, as the report shows it."""
    return {
        "request_id": r.request_id,
        "query": (r.query or "")[:EXAMPLE_CHARS],
        "confidence": round(d.confidence, 4),
    }


def _missing_routes(router: Router, requests: list[Logged]) -> dict[str, int]:
    """The routes the log sent replayed requests to that the candidate index lacks, with how
    many requests each, most first."""
    names = {r.name for r in router.routes}
    found = Counter(r.route for r in requests if r.route is not None and r.route not in names)
    return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0])))


def _mismatch(missing: dict[str, int], requests: list[Logged]) -> str | None:
    """The warning when under :data:`MIN_KNOWN_SHARE` of the routed requests went to a route
    the candidate index has (None: enough did, or the log routed none)."""
    routed = sum(1 for r in requests if r.route is not None)
    known = routed - sum(missing.values())
    if not routed or known >= MIN_KNOWN_SHARE * routed:
        return None
    names = ", ".join(list(missing)[:SHOWN_MISSING]) + (
        ", ..." if len(missing) > SHOWN_MISSING else ""
    )
    share = "none" if not known else f"only {known}"
    return (
        f"{share} of the {routed} replayed requests the log sent to a route went to a route "
        f"of this index (not in it: {names}); is --index a candidate for the router that "
        "wrote this log?"
    )
