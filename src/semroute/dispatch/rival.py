"""A challenger index's decision in the decision log, and the agreement `semroute stats` reports.

With ``server.challenger`` set, each routed request is also routed by the challenger index (no
model is called for it) and its log line gains::

    "challenger": {"route": "billing" | null, "model": "...", "reason": "matched", "confidence": 0.71}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import semroute.text as text

if TYPE_CHECKING:
    from semroute.decision import Decision

__all__ = ["TOP_PAIRS", "challenger_entry", "challenger_summary"]

TOP_PAIRS = 10
NO_ROUTE = "(no route)"


def challenger_entry(decision: Decision) -> dict[str, Any]:
    """The ``challenger`` field of a log line."""
    return {
        "route": decision.route,
        "model": decision.model,
        "reason": decision.reason.value,
        "confidence": round(decision.confidence, 4),
    }


def challenger_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """How often the challenger chose the same route as the index that served, and the most
    frequent disagreements (None: no line holds a challenger's decision). A ``challenger``
    whose ``route`` is neither text nor null is not counted."""
    compared = agreed = 0
    pairs: Counter[tuple[str, str]] = Counter()
    for r in records:
        rival = r.get("challenger")
        if not isinstance(rival, Mapping) or "route" not in rival:
            continue
        theirs = rival["route"]
        if theirs is not None and not isinstance(theirs, str):
            continue
        ours = r.get("route") or NO_ROUTE
        theirs = text.clean(theirs) if theirs else NO_ROUTE
        compared += 1
        if ours == theirs:
            agreed += 1
        else:
            pairs[(ours, theirs)] += 1
    if not compared:
        return None
    return {
        "requests": compared,
        "agreement": round(agreed / compared, 4),
        "disagreements": [
            {"from": a, "to": b, "n": n} for (a, b), n in pairs.most_common(TOP_PAIRS)
        ],
    }
