"""The decision log: one JSON line per dispatched request, and the summary `semroute stats` prints.

A line holds the time, the request id, the routing decision (route, reason, confidence, margin,
top scores), the recommended and the final model, the fallbacks taken, every attempt and every
model passed over without an attempt (``skipped``, with its reason), routing
and model latency, tokens, cost and the error, if any; with a cascade, its steps. Prompts and
answers are only written when ``log_content`` is on. Credentials never are: nothing from the
request's LiteLLM parameters is logged, and error texts have every credential LiteLLM could
send masked (see :mod:`semroute.config.secrets`) before they get here. Shadow evaluation adds
quality records (``"kind": "quality"``, see :mod:`semroute.dispatch.shadow`), keyed by request
id; they are not requests.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import semroute.text as text
from semroute.dispatch.cache_stats import cache_summary
from semroute.dispatch.quality_stats import GroupQuality, group_quality, quality_record

if TYPE_CHECKING:
    from semroute.decision import Decision, Skip
    from semroute.records import Attempt, Usage

__all__ = ["LOG_ENV", "DecisionLog", "DecisionLogs", "LogStats", "entry", "summarise"]

LOG_ENV = "SEMROUTE_LOG"
TOP_SCORES = 3
REPORT_EVERY_S = 60.0
"""A problem writing the log is reported at once, then at most once a minute while it lasts."""
MAX_REPORTED = 64


def entry(
    *,
    request_id: str,
    decision: Decision,
    attempts: Sequence[Attempt],
    usage: Usage | None,
    cost_usd: float | None,
    stream: bool,
    error: str | None,
    content: tuple[Any, str | None] | None = None,
    skipped: Sequence[Skip] = (),
    model: str | None = None,
) -> dict[str, Any]:
    """One log line: ``content`` is (messages, answer), given only when the user opted in;
    ``model`` the model that answered when it was not the last one tried (a cascade's)."""
    answered = attempts[-1].model if attempts and attempts[-1].error is None else None
    answered = model or answered
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "route": decision.route,
        "reason": decision.reason.value,
        "confidence": round(decision.confidence, 4),
        "margin": round(decision.margin, 4),
        "top_scores": [
            {"route": s.route, "confidence": round(s.confidence, 4)}
            for s in decision.scores[:TOP_SCORES]
        ],
        "recommended_model": decision.model,
        "model": answered,
        "fallbacks": [a.model for a in attempts if a.error is not None],
        "attempts": [a.to_dict() for a in attempts],
        "skipped": [s.to_dict() for s in skipped],
        "routing_ms": round(decision.latency_ms, 3),
        "model_ms": round(sum(a.latency_ms for a in attempts), 3),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "cost_usd": cost_usd,
        "stream": stream,
        "error": error,
    }
    if content is not None:
        record["messages"], record["answer"] = content
    return record


class DecisionLog:
    """Appends JSON lines to one file, from any number of threads, asyncio tasks and processes.

    Each line goes out in a single ``os.write`` to a descriptor opened with ``O_APPEND``, under
    a lock. ``O_APPEND`` moves the offset to the end and writes as one step, so lines from other
    processes never overwrite or split each other; the lock orders this process's threads and
    covers the rare short write. A write costs one system call (microseconds) against a model
    call's milliseconds, so no background thread is needed, and there is no queue to lose
    when the process is killed: a line is in the file when the request returns. A file moved or
    deleted by log rotation is noticed (as ``logging.handlers.WatchedFileHandler`` does) and
    created anew.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._reported: dict[str, tuple[float, int]] = {}
        """Per distinct problem: when it was last reported, and how many since were not."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record. A record that cannot be written (a failing disk, a path that is
        not a regular file, a value JSON cannot hold) is reported as a warning (see
        :meth:`_warn`), never raised: the request it describes has already been answered."""
        try:
            data = memoryview(_encode(record))
        except (TypeError, ValueError, RecursionError) as exc:
            self._warn(f"cannot write a line of the decision log {self.path} ({exc})")
            return
        with self._lock:
            try:
                fd = self._open()
                while data:
                    data = data[os.write(fd, data) :]
            except OSError as exc:
                self._warn(f"cannot write the decision log {self.path} ({exc})")

    def _warn(self, problem: str) -> None:
        """Report ``problem`` as a RuntimeWarning: each distinct one at once, then at most once
        per :data:`REPORT_EVERY_S` seconds, with how many were not reported in between."""
        now = time.monotonic()
        with self._report_lock:
            last, held_back = self._reported.get(problem, (None, 0))
            if last is not None and now - last < REPORT_EVERY_S:
                self._reported[problem] = (last, held_back + 1)
                return
            if len(self._reported) >= MAX_REPORTED:  # forget the oldest distinct problem
                del self._reported[next(iter(self._reported))]
            self._reported.pop(problem, None)
            self._reported[problem] = (now, 0)
        more = f" ({held_back} more since the last report)" if held_back else ""
        frame = sys._getframe(2)  # the caller of write(), as stacklevel=3 would name
        # warn_explicit with no registry: Python's own once-per-place filter would hide every
        # later report of the same problem; the rate limit above is the one that applies.
        warnings.warn_explicit(
            f"{problem}; requests go on without it{more}",
            RuntimeWarning,
            frame.f_code.co_filename,
            frame.f_lineno,
            module=frame.f_globals.get("__name__", "semroute"),
        )

    def _open(self) -> int:
        """The descriptor, reopened when the file was moved or deleted (log rotation)."""
        if self._fd is not None:
            try:
                current = os.stat(self.path)
                held = os.fstat(self._fd)
                if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Anything but a regular file (a FIFO, a device, a socket) is refused before a byte is
        # written: opening a FIFO for writing waits for a reader, and every request with it.
        # The check after opening covers a path swapped in between; O_NONBLOCK keeps that open
        # from waiting.
        with contextlib.suppress(FileNotFoundError):
            _regular(os.stat(self.path).st_mode)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(self.path, flags, 0o644)
        try:
            _regular(os.fstat(fd).st_mode)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        # A log dropped with its dispatcher must not keep its descriptor until exit.
        if self._fd is not None:
            os.close(self._fd)


def _regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise OSError(
            errno.EINVAL, "not a regular file; point dispatch.log or $SEMROUTE_LOG at a file"
        )


def _encode(record: Mapping[str, Any]) -> bytes:
    """One UTF-8 line of valid JSON: lone surrogates (from a prompt or an answer) become U+FFFD,
    which UTF-8 can hold, and non-finite numbers, which JSON cannot, become null."""
    try:
        line = json.dumps(
            record, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
        )
    except ValueError:
        line = json.dumps(
            _finite(record), ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
        )
    return (text.clean(line) + "\n").encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class DecisionLogs:
    """The decision logs one owner (a dispatcher) writes: one writer, and one lock, per file."""

    def __init__(self) -> None:
        self._logs: dict[Path, DecisionLog] = {}
        self._lock = threading.Lock()

    def open(self, configured: str | None) -> DecisionLog | None:
        """The log for ``$SEMROUTE_LOG``, else the configured path, else None."""
        path = os.environ.get(LOG_ENV) or configured
        if not path:
            return None
        key = Path(path).expanduser().absolute()
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = DecisionLog(key)
            return log

    def close(self) -> None:
        """Close every file; a later :meth:`open` reopens it."""
        with self._lock:
            logs = list(self._logs.values())
            self._logs.clear()
        for log in logs:
            log.close()


# --- stats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogStats:
    """What `semroute stats` reports about a log."""

    requests: int
    malformed_lines: int
    errors: int
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
    cache: Mapping[str, Any] = field(default_factory=dict)
    """The semantic cache's hits and savings (see :mod:`semroute.dispatch.cache_stats`)."""

    def to_dict(self) -> dict[str, Any]:
        n = self.requests
        return {
            "requests": n,
            "malformed_lines": self.malformed_lines,
            "error_rate": _share(self.errors, n),
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
        }


NO_ROUTE = "(no route)"
NO_RULE = "(no rule)"
NO_ANSWER = "(failed)"


def summarise(lines: Iterable[str]) -> LogStats:
    """Summarise log lines: one per request, and shadow evaluation's quality records (lines
    with ``"kind": "quality"``). A line that is neither is counted as malformed and skipped,
    never fatal: see :func:`_record` and
    :func:`~semroute.dispatch.quality_stats.quality_record` for what a record is."""
    records, quality, malformed = [], [], 0
    for line in lines:
        if not line.strip():
            continue
        raw = _parse(line)
        kind = raw.get("kind") if raw is not None else None
        if raw is None:
            malformed += 1
        elif kind is None:
            record = _record(raw)
            malformed += record is None
            records += [record] if record is not None else []
        else:  # a quality record; a kind stats does not know is malformed
            found = quality_record(raw) if kind == "quality" else None
            malformed += found is None
            quality += [found] if found is not None else []
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
        errors=sum(1 for r in records if r["error"]),
        answered_by_fallback=sum(1 for r in records if r["model"] and r["fallbacks"]),
        routes=dict(Counter(r["route"] or NO_ROUTE for r in records).most_common()),
        models=dict(Counter(r["model"] or NO_ANSWER for r in records).most_common()),
        cost_usd_total=float(sum(costs)),
        priced_requests=len(costs),
        latency_ms={k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in latency.items()},
        skip_reasons=_skip_reasons(records),
        rules=dict(Counter(r["rule"] or NO_RULE for r in records).most_common()),
        quality_records=len(quality),
        quality=group_quality(records, quality),
        cache=cache_summary(records),
    )


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
    "cache": _TEXT,
    "cache_saved_usd": _NUMBER,
}
_LARGEST = 1e300
"""Larger numbers are refused: sums and percentiles of them would not stay finite."""


def _parse(line: str) -> dict[str, Any] | None:
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
    (``route``, ``rule``, ``tier``, ``model`` and ``error`` text or null, ``fallbacks`` and
    ``skipped`` a list or null, ``routing_ms``, ``model_ms``, ``cost_usd`` and
    ``default_cost_usd`` a finite number or null). ``cascade`` is read only if a mapping."""
    cascade = raw.get("cascade")
    record: dict[str, Any] = {"cascade": cascade if isinstance(cascade, dict) else None}
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
