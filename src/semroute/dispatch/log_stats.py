"""`semroute stats`: a decision log summarised. Requests, the share per route, rule and model,
cost, fallbacks, model failures (a request refused by a rule or a budget is not one), latency,
skip reasons, and per route, rule and tier the cost and quality figures of
:mod:`semroute.dispatch.quality_stats`. A line that is not a record is counted, never fatal.

:func:`read_lines` is the one reader of a log's lines: `semroute replay` and `semroute suggest`
(:mod:`semroute.tuning.logread`) read it through the same function, so every tool agrees on what
a request is and on how many lines were malformed."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import semroute.text as text
from semroute.dispatch.cache_stats import cache_summary
from semroute.dispatch.feedback import FeedbackGroup, feedback_record, group_feedback
from semroute.dispatch.quality_stats import GroupQuality, group_quality, quality_record
from semroute.dispatch.rival import challenger_summary

__all__ = [
    "NO_ANSWER",
    "NO_ROUTE",
    "NO_RULE",
    "REFUSALS",
    "REQUEST",
    "LogLine",
    "LogStats",
    "parse_line",
    "read_lines",
    "summarise",
]


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
    with ``"kind": "quality"``) and feedback records. A line that is none of them is counted as
    malformed and skipped, never fatal: see :func:`read_lines` for what a record is."""
    records: list[dict[str, Any]] = []
    malformed = 0
    kinds: dict[str, list[dict[str, Any]]] = {"quality": [], "feedback": []}
    for line in read_lines(lines):
        if line is None:
            malformed += 1
        elif line.kind == REQUEST:
            records.append(line.read)
        else:
            kinds[line.kind].append(line.read)
    quality = kinds["quality"]
    costs = [r["cost_usd"] for r in records if r["cost_usd"] is not None]
    # A request without a timing adds nothing to its percentile (the total needs both).
    latency: dict[str, list[float]] = {"routing": [], "model": [], "total": []}
    for r in records:
        routing, model = r["routing_ms"], r["model_ms"]
        if routing is not None:
            latency["routing"].append(routing)
        if model is not None:
            latency["model"].append(model)
        if routing is not None and model is not None:
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
    """Per reason, how many models were skipped and in how many requests, most frequent first
    (every entry of ``skipped`` has a text ``reason``: see :data:`REQUEST_SHAPE`)."""
    skips: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for r in records:
        reasons = [text.clean(s["reason"]) for s in r["skipped"] or ()]
        skips.update(reasons)
        requests.update(set(reasons))
    return {k: (n, requests[k]) for k, n in skips.most_common()}


# What a request's line may hold. Each field listed is null (or absent) or has its shape, nested
# fields included; any other value makes the line malformed. A field not listed, or a key of an
# object not listed, may hold anything (what a later version adds is not an error).
TEXT, NUMBER, DURATION, COUNT, FLAG = "text", "number", "duration", "count", "flag"
"""Text; a finite number; a finite number of milliseconds, never negative; a whole number, never
negative; true or false."""


@dataclass(frozen=True)
class Each:
    """A list whose every item has this shape (an item is never null)."""

    item: Shape


@dataclass(frozen=True)
class Fields:
    """An object whose listed fields are null or have their shape; ``needs``: never null."""

    shape: Mapping[str, Shape]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Values:
    """An object whose every value has this shape (never null)."""

    value: Shape


Shape = str | Each | Fields | Values

REQUEST_SHAPE = Fields(
    {
        "time": TEXT,
        "route": TEXT,
        "reason": TEXT,
        "confidence": NUMBER,
        "margin": NUMBER,
        "top_scores": Each(Fields({"route": TEXT, "confidence": NUMBER}, ("route", "confidence"))),
        "recommended_model": TEXT,
        "model": TEXT,
        "fallbacks": Each(TEXT),
        "attempts": Each(
            Fields(
                {
                    "model": TEXT,
                    "status": COUNT,
                    "error": TEXT,
                    "latency_ms": DURATION,
                    "note": TEXT,
                },
                ("model",),
            )
        ),
        "skipped": Each(Fields({"model": TEXT, "reason": TEXT, "detail": TEXT}, ("reason",))),
        "routing_ms": DURATION,
        "model_ms": DURATION,
        "prompt_tokens": COUNT,
        "completion_tokens": COUNT,
        "cost_usd": NUMBER,
        "stream": FLAG,
        "error": TEXT,
        "messages": Each(Fields({"role": TEXT}, ("role",))),
        "answer": TEXT,
        "rule": TEXT,
        "tier": TEXT,
        "signals": Fields(
            {
                "input_tokens": COUNT,
                "max_tokens": COUNT,
                "system_prompt_tokens": COUNT,
                "has_tools": FLAG,
                "has_images": FLAG,
                "json_mode": FLAG,
                "task": TEXT,
                "user_tier": TEXT,
                "max_cost_usd": NUMBER,
                "metadata": Fields({}),
                "metadata_truncated": FLAG,
                "route": TEXT,
                "confidence": NUMBER,
                "reason": TEXT,
                "difficulty": NUMBER,
                "n": COUNT,
                "pii": Each(TEXT),
            }
        ),
        "redacted": Values(COUNT),
        "estimated_cost_usd": NUMBER,
        "cost_limit_usd": NUMBER,
        "within_cost_limit": FLAG,
        "default_cost_usd": NUMBER,
        "cascade": Fields(
            {
                "scope": TEXT,
                "name": TEXT,
                "models": Each(TEXT),
                "streamed": FLAG,
                "escalated": FLAG,
                "steps": Each(
                    Fields(
                        {
                            "model": TEXT,
                            "verdict": TEXT,
                            "check": TEXT,
                            "detail": TEXT,
                            "cost_usd": NUMBER,
                            "prompt_tokens": COUNT,
                            "completion_tokens": COUNT,
                        }
                    )
                ),
            }
        ),
        "challenger": Fields({"route": TEXT, "model": TEXT, "reason": TEXT, "confidence": NUMBER}),
        "cache": TEXT,
        "cache_similarity": NUMBER,
        "cache_saved_usd": NUMBER,
        "session": Fields({"id": TEXT, "model": TEXT, "switched_from": TEXT, "why": TEXT}),
    }
)
_READ = (
    "route",
    "rule",
    "tier",
    "model",
    "reason",
    "error",
    "fallbacks",
    "skipped",
    "routing_ms",
    "model_ms",
    "cost_usd",
    "default_cost_usd",
    "cache",
    "cache_saved_usd",
    "cascade",
    "challenger",
)
"""The fields of a request stats reads."""
REQUEST = "request"
_KINDS = {"quality": quality_record, "feedback": feedback_record}
_LARGEST = 1e300
"""Larger numbers are refused: sums and percentiles of them would not stay finite."""


class LogLine(NamedTuple):
    """One record of a decision log."""

    kind: str
    """``request``, ``quality`` or ``feedback``."""
    raw: dict[str, Any]
    """The line's object, its shape checked."""
    read: dict[str, Any]
    """What stats reads from it."""


def read_lines(lines: Iterable[str]) -> Iterator[LogLine | None]:
    """Each non-blank line's record, or None for a malformed line: not one JSON object with a
    string ``request_id`` (see :func:`parse_line`), a request whose line does not fit
    :data:`REQUEST_SHAPE`, a quality or feedback record whose fields have the wrong type, or a
    ``kind`` no tool knows."""
    for line in lines:
        if not line.strip():
            continue
        raw = parse_line(line)
        if raw is None:
            yield None
            continue
        kind = raw.get("kind")
        if kind is None:
            yield LogLine(REQUEST, raw, _read(raw)) if _fits(raw, REQUEST_SHAPE) else None
            continue
        found = _KINDS[kind](raw) if isinstance(kind, str) and kind in _KINDS else None
        yield None if found is None else LogLine(kind, raw, found)


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


def _fits(value: Any, shape: Shape) -> bool:
    """Whether ``value`` (not null) has ``shape``."""
    if shape == TEXT:  # the commonest: a line is mostly text
        return isinstance(value, str)
    if isinstance(shape, Fields):
        if not isinstance(value, dict) or any(value.get(n) is None for n in shape.needs):
            return False
        # The line's own keys, not the shape's: fewer lookups, and a key not listed passes.
        fields = shape.shape
        for key, item in value.items():
            kind = fields.get(key)
            if kind is None or item is None:
                continue
            if kind == TEXT:
                if not isinstance(item, str):
                    return False
            elif not _fits(item, kind):
                return False
        return True
    if isinstance(shape, Each):
        return isinstance(value, list) and all(
            v is not None and _fits(v, shape.item) for v in value
        )
    if isinstance(shape, Values):
        return isinstance(value, dict) and all(
            v is not None and _fits(v, shape.value) for v in value.values()
        )
    if shape == FLAG:
        return isinstance(value, bool)
    if shape == COUNT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return _is_number(value) and (shape == NUMBER or value >= 0)


def _read(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields stats reads from a request's line (whose shape is checked): text cleaned of
    lone surrogates, numbers as floats."""
    record: dict[str, Any] = {"request_id": raw["request_id"]}
    for name in _READ:
        value = raw.get(name)
        if isinstance(value, str):
            value = text.clean(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        record[name] = value
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
