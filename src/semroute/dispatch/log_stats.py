"""`semroute stats`: a decision log summarised. Requests, the share per route, rule and model,
cost, fallbacks, model failures (a request refused by a rule or a budget is not one), latency,
skip reasons, and per route, rule and tier the cost and quality figures of
:mod:`semroute.dispatch.quality_stats`. A line that is not a record is counted, never fatal."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import semroute.text as text
from semroute.dispatch.cache_stats import cache_summary
from semroute.dispatch.feedback import FeedbackGroup, feedback_record, group_feedback
from semroute.dispatch.quality_stats import GroupQuality, group_quality, quality_record
from semroute.dispatch.rival import challenger_summary

__all__ = ["NO_ANSWER", "NO_ROUTE", "NO_RULE", "REFUSALS", "LogStats", "parse_line", "summarise"]


@dataclass(frozen=True)
class LogStats:
    """What `semroute stats` reports about a log."""

    requests: int
    malformed_lines: int
    errors: int
    """Requests no model answered because models failed (refusals are not counted)."""
    answered_by_fallback: int
    routes: Mapping[str, int]
    models: Mapping[str, int]
    cost_usd_total: float
    priced_requests: int
    latency_ms: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """p50 and p95 of ``routing``, ``model`` and ``total`` latency."""
    skip_reasons: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Per skip reason (e.g. ``unhealthy``): models skipped, and requests with such a skip."""
    rules: Mapping[str, int] = field(default_factory=dict)
    """Requests per matched rule (``(no rule)`` for the others)."""
    quality_records: int = 0
    """Shadow evaluation's quality records (not requests; see :mod:`semroute.dispatch.shadow`)."""
    quality: Mapping[str, Mapping[str, GroupQuality]] = field(default_factory=dict)
    """Cost and quality per route, rule and tier (see :mod:`semroute.dispatch.quality_stats`)."""
    refused: Mapping[str, int] = field(default_factory=dict)
    """Requests no model was asked to answer, per reason (``blocked``, ``over_budget``)."""
    feedback_records: int = 0
    feedback: Mapping[str, Mapping[str, FeedbackGroup]] = field(default_factory=dict)
    """Feedback per route and tier (see :mod:`semroute.dispatch.feedback`)."""
    challenger: Mapping[str, Any] | None = None
    """Agreement with a challenger index (see :mod:`semroute.dispatch.rival`)."""
    cache: Mapping[str, Any] = field(default_factory=dict)
    """The semantic cache's hits and savings (see :mod:`semroute.dispatch.cache_stats`)."""

    def to_dict(self) -> dict[str, Any]:
        n = self.requests
        return {
            "requests": n,
            "malformed_lines": self.malformed_lines,
            "error_rate": _share(self.errors, n),
            "refused": {k: {"requests": v, "share": _share(v, n)} for k, v in self.refused.items()},
            "fallback_rate": _share(self.answered_by_fallback, n),
            # Finite or None: `semroute stats --json` must stay valid JSON whatever the log held.
            "avg_cost_usd": (
                _finite(self.cost_usd_total / self.priced_requests)
                if self.priced_requests
                else None
            ),
            "priced_requests": self.priced_requests,
            "routes": {k: {"requests": v, "share": _share(v, n)} for k, v in self.routes.items()},
            "models": {k: {"requests": v, "share": _share(v, n)} for k, v in self.models.items()},
            "latency_ms": {k: {"p50": v[0], "p95": v[1]} for k, v in self.latency_ms.items()},
            "rules": {k: {"requests": v, "share": _share(v, n)} for k, v in self.rules.items()},
            "skip_reasons": {
                k: {"skips": skips, "requests": requests, "share": _share(requests, n)}
                for k, (skips, requests) in self.skip_reasons.items()
            },
            "quality_records": self.quality_records,
            "cache": dict(self.cache),
            "quality": {
                scope: {k: g.to_dict() for k, g in groups.items()}
                for scope, groups in self.quality.items()
            },
            "feedback_records": self.feedback_records,
            "feedback": {
                scope: {k: g.to_dict() for k, g in groups.items()}
                for scope, groups in self.feedback.items()
            },
            "challenger": self.challenger,
        }


NO_ROUTE = "(no route)"
NO_RULE = "(no rule)"
NO_ANSWER = "(failed)"
REFUSALS = {"blocked": "(blocked)", "over_budget": "(over budget)"}
"""Decision reasons that mean no model was asked, and how the model table names them."""


def summarise(lines: Iterable[str]) -> LogStats:
    """Summarise log lines: one per request, and shadow evaluation's quality records (lines
    with ``"kind": "quality"``). A line that is neither is counted as malformed and skipped,
    never fatal: see :func:`_record` and
    :func:`~semroute.dispatch.quality_stats.quality_record` for what a record is."""
    records, malformed = [], 0
    kinds: dict[str, list[dict[str, Any]]] = {"quality": [], "feedback": []}
    for line in lines:
        if not line.strip():
            continue
        raw = parse_line(line)
        kind = raw.get("kind") if raw is not None else None
        if raw is None:
            malformed += 1
        elif kind is None:
            record = _record(raw)
            malformed += record is None
            records += [record] if record is not None else []
        else:  # a quality or feedback record; a kind stats does not know is malformed
            found = _KINDS[kind](raw) if isinstance(kind, str) and kind in _KINDS else None
            if found is None:
                malformed += 1
            else:
                kinds[kind].append(found)
    quality = kinds["quality"]
    costs = [r["cost_usd"] for r in records if r["cost_usd"] is not None]
    latency: dict[str, list[float]] = {"routing": [], "model": [], "total": []}
    for r in records:
        routing, model = r["routing_ms"] or 0.0, r["model_ms"] or 0.0
        latency["routing"].append(routing)
        latency["model"].append(model)
        latency["total"].append(routing + model)
    return LogStats(
        requests=len(records),
        malformed_lines=malformed,
        errors=sum(1 for r in records if r["error"] and r["reason"] not in REFUSALS),
        answered_by_fallback=sum(1 for r in records if r["model"] and r["fallbacks"]),
        routes=dict(Counter(r["route"] or NO_ROUTE for r in records).most_common()),
        models=dict(Counter(r["model"] or _no_answer(r) for r in records).most_common()),
        cost_usd_total=float(sum(costs)),
        priced_requests=len(costs),
        latency_ms={k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in latency.items()},
        skip_reasons=_skip_reasons(records),
        rules=dict(Counter(r["rule"] or NO_RULE for r in records).most_common()),
        quality_records=len(quality),
        quality=group_quality(records, quality),
        refused=dict(Counter(r["reason"] for r in records if r["reason"] in REFUSALS)),
        feedback_records=len(kinds["feedback"]),
        feedback=group_feedback(records, kinds["feedback"]),
        challenger=challenger_summary(records),
        cache=cache_summary(records),
    )


def _no_answer(record: Mapping[str, Any]) -> str:
    """The model table's name for a request no model answered: refused, or failed."""
    return REFUSALS.get(record["reason"] or "", NO_ANSWER)


def _skip_reasons(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per reason, how many models were skipped and in how many requests, most frequent first.
    An entry of ``skipped`` without a text ``reason`` is not counted."""
    skips: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for r in records:
        reasons = [
            text.clean(s["reason"])
            for s in r["skipped"] or ()
            if isinstance(s, dict) and isinstance(s.get("reason"), str)
        ]
        skips.update(reasons)
        requests.update(set(reasons))
    return {k: (n, requests[k]) for k, n in skips.most_common()}


# What stats reads from a line, and what each field may hold; any other value makes the line
# malformed. Other fields are not read, so they may hold anything.
_TEXT, _NUMBER, _LIST = "text", "number", "list"
_FIELDS = {
    "route": _TEXT,
    "rule": _TEXT,
    "model": _TEXT,
    "error": _TEXT,
    "fallbacks": _LIST,
    "skipped": _LIST,
    "routing_ms": _NUMBER,
    "model_ms": _NUMBER,
    "cost_usd": _NUMBER,
    "tier": _TEXT,
    "default_cost_usd": _NUMBER,
    "reason": _TEXT,
    "cache": _TEXT,
    "cache_saved_usd": _NUMBER,
}
_KINDS = {"quality": quality_record, "feedback": feedback_record}
_LARGEST = 1e300
"""Larger numbers are refused: sums and percentiles of them would not stay finite."""


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """A line's JSON object with a string ``request_id`` (None: not one JSON object, nested
    deeper than Python's recursion limit, or without one)."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("request_id"), str):
        return None
    return raw


def _record(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields stats reads from a request's line, or None when one has the wrong type
    (``route``, ``rule``, ``tier``, ``model``, ``reason`` and ``error`` text or null, ``fallbacks`` and
    ``skipped`` a list or null, ``routing_ms``, ``model_ms``, ``cost_usd`` and
    ``default_cost_usd`` a finite number or null). ``cascade`` is read only if a mapping."""
    cascade, rival = raw.get("cascade"), raw.get("challenger")
    record: dict[str, Any] = {"cascade": cascade if isinstance(cascade, dict) else None}
    record["request_id"] = raw["request_id"]
    record["challenger"] = rival if isinstance(rival, dict) else None
    for name, kind in _FIELDS.items():
        value = raw.get(name)
        if value is None:
            record[name] = None
        elif kind == _TEXT and isinstance(value, str):
            record[name] = text.clean(value)
        elif kind == _LIST and isinstance(value, list):
            record[name] = value
        elif kind == _NUMBER and _is_number(value):
            record[name] = float(value)
        else:
            return None
    return record


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return -_LARGEST <= value <= _LARGEST  # False for NaN too


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the data at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)
