"""Feedback on a request's answer: one more record kind of the decision log, and what `semroute
stats` makes of it.

    {"kind": "feedback", "time": ..., "request_id": "9f1c...", "score": -1.0,
     "route": "billing", "comment": "..."}

``score`` is a number in [-1, 1] (``"up"`` is 1, ``"down"`` -1). ``route`` is written only when
the caller named one: the route that should have answered, or null for "none of them" (the
default model). ``comment`` is user text: it is written only when ``log_content`` is on, cut to
:data:`MAX_COMMENT_CHARS` characters; otherwise the record says ``"comment_chars"`` only.
A feedback record is keyed by request id, like shadow evaluation's quality records, and is not
a request. The request id is not looked up: a log may be rotated or shared by replicas, so
feedback for a request this process never saw is recorded all the same.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import semroute.text as text

__all__ = [
    "MAX_COMMENT_CHARS",
    "MAX_REQUEST_ID_CHARS",
    "FeedbackGroup",
    "feedback_entry",
    "feedback_record",
    "group_feedback",
    "score_of",
]

MAX_COMMENT_CHARS = 2000
MAX_REQUEST_ID_CHARS = 128
MAX_ROUTE_CHARS = 200
UNSET: Any = object()
"""``route`` not given (as opposed to ``None``: "none of the routes")."""


def score_of(value: object) -> float:
    """``value`` as a score in [-1, 1]: a finite number in range, ``"up"`` (1) or ``"down"``
    (-1). Raises ValueError saying what is allowed."""
    if value == "up" and isinstance(value, str):
        return 1.0
    if value == "down" and isinstance(value, str):
        return -1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError('should be a number in [-1, 1], "up" or "down"')
    score = float(value)
    if not math.isfinite(score) or not -1.0 <= score <= 1.0:
        raise ValueError('should be a number in [-1, 1], "up" or "down"')
    return score


def feedback_entry(
    request_id: str,
    score: float,
    *,
    route: str | None = UNSET,
    comment: str | None = None,
    log_content: bool = False,
) -> dict[str, Any]:
    """One feedback line (see the module docstring); ``score`` already checked."""
    record: dict[str, Any] = {
        "kind": "feedback",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "score": float(score),
    }
    if route is not UNSET:
        record["route"] = route
    if comment:
        if log_content:
            record["comment"] = comment[:MAX_COMMENT_CHARS]
        else:
            record["comment_chars"] = min(len(comment), MAX_COMMENT_CHARS)
    return record


def feedback_record(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields stats reads from a feedback record, or None when one has the wrong type
    (``score`` a number in [-1, 1], ``route`` text or null when present)."""
    try:
        score = score_of(raw.get("score"))
    except ValueError:
        return None
    out: dict[str, Any] = {"request_id": raw["request_id"], "score": score}
    if "route" in raw:
        route = raw["route"]
        if route is not None and not isinstance(route, str):
            return None
        out["route"] = text.clean(route) if route is not None else None
    return out


@dataclass
class FeedbackGroup:
    """The feedback on one route's or tier's requests."""

    records: int = 0
    score_sum: float = 0.0
    up: int = 0
    down: int = 0
    corrections: Counter[str] = field(default_factory=Counter)
    """The routes feedback named instead ("(no route)": none of them)."""

    def add(self, record: Mapping[str, Any], answered_route: str) -> None:
        self.records += 1
        self.score_sum += record["score"]
        self.up += record["score"] > 0
        self.down += record["score"] < 0
        if "route" in record and (record["route"] or NO_ROUTE) != answered_route:
            self.corrections[record["route"] or NO_ROUTE] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "feedback": self.records,
            "mean_score": round(self.score_sum / self.records, 4) if self.records else None,
            "up": self.up,
            "down": self.down,
            "corrections": dict(self.corrections.most_common()),
        }


NO_ROUTE = "(no route)"
UNKNOWN = "(unknown request)"


def group_feedback(
    requests: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, FeedbackGroup]]:
    """Feedback per route and per tier of the request it is about (``requests``: the log's
    request records with ``request_id``, ``route`` and ``tier``). Feedback on a request the log
    does not hold is counted under ``(unknown request)``; the last feedback on a request is the
    one counted."""
    latest = {f["request_id"]: f for f in feedback}
    groups: dict[str, dict[str, FeedbackGroup]] = {
        "routes": defaultdict(FeedbackGroup),
        "tiers": defaultdict(FeedbackGroup),
    }
    seen: set[str] = set()
    for r in requests:
        found = latest.get(r["request_id"])
        if found is None or r["request_id"] in seen:
            continue
        seen.add(r["request_id"])
        route = r["route"] or NO_ROUTE
        groups["routes"][route].add(found, route)
        if r["tier"] is not None:
            groups["tiers"][r["tier"]].add(found, route)
    for request_id, found in latest.items():
        if request_id not in seen:
            groups["routes"][UNKNOWN].add(found, UNKNOWN)
    return {scope: dict(sorted(g.items())) for scope, g in groups.items()}


FIELDS = frozenset({"request_id", "score", "route", "comment"})


def check_feedback(
    request_id: object,
    score: object,
    *,
    route: object = UNSET,
    comment: object = None,
    routes: Iterable[str] = (),
) -> tuple[str, float, str | None, str | None]:
    """The checked fields (request id, score, route or :data:`UNSET`, comment); raises
    :class:`~semroute.errors.FeedbackError` naming the field at fault. ``routes``: the names
    ``route`` may take."""
    from semroute.errors import FeedbackError

    if (
        not isinstance(request_id, str)
        or not 0 < len(request_id) <= MAX_REQUEST_ID_CHARS
        or not request_id.isprintable()
        or request_id.strip() != request_id
    ):
        raise FeedbackError(
            f"should be the request's id (x-semroute-request-id), printable text of 1 to "
            f"{MAX_REQUEST_ID_CHARS} characters",
            field="request_id",
        )
    try:
        checked = score_of(score)
    except ValueError as exc:
        raise FeedbackError(str(exc), field="score") from None
    if route is not UNSET and route is not None:
        known = set(routes)
        if not isinstance(route, str) or route not in known:
            shown = ", ".join(sorted(known)[:20])
            raise FeedbackError(
                f"should name a route of the index ({shown}) or be null for none of them",
                field="route",
            )
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise FeedbackError(
            f"should be text of at most {MAX_COMMENT_CHARS} characters", field="comment"
        )
    return request_id, checked, route, comment
