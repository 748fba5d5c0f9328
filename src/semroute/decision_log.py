"""The decision log: one JSON line per dispatched request, and the summary `semroute stats` prints.

A line holds the time, the request id, the routing decision (route, reason, confidence, margin,
top scores), the recommended and the final model, the fallbacks taken and every attempt, routing
and model latency, tokens, cost and the error, if any. Prompts and answers are only written when
``log_content`` is on. Credentials never are: nothing from the request's LiteLLM parameters is
logged, and error texts have the values of the deployments' ``os.environ/VAR`` secrets masked
before they get here.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semroute.decision import Decision
    from semroute.dispatch import Attempt, Usage

__all__ = ["LOG_ENV", "DecisionLog", "LogStats", "entry", "open_log", "summarise"]

LOG_ENV = "SEMROUTE_LOG"
TOP_SCORES = 3


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
) -> dict[str, Any]:
    """One log line: ``content`` is (messages, answer), given only when the user opted in."""
    answered = attempts[-1].model if attempts and attempts[-1].error is None else None
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
        self._warned = False

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record. A failing disk is reported once as a warning, never raised."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        data = memoryview((line + "\n").encode())
        with self._lock:
            try:
                fd = self._open()
                while data:
                    data = data[os.write(fd, data) :]
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"cannot write the decision log {self.path} ({exc}); requests go on "
                        "without it",
                        RuntimeWarning,
                        stacklevel=2,
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
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o644)
        return self._fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


_logs: dict[Path, DecisionLog] = {}
_logs_lock = threading.Lock()


def open_log(configured: str | None) -> DecisionLog | None:
    """The log for ``$SEMROUTE_LOG``, else the configured path, else None; one per file."""
    path = os.environ.get(LOG_ENV) or configured
    if not path:
        return None
    key = Path(path).expanduser().absolute()
    with _logs_lock:
        log = _logs.get(key)
        if log is None:
            log = _logs[key] = DecisionLog(key)
        return log


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

    def to_dict(self) -> dict[str, Any]:
        n = self.requests
        return {
            "requests": n,
            "malformed_lines": self.malformed_lines,
            "error_rate": _share(self.errors, n),
            "fallback_rate": _share(self.answered_by_fallback, n),
            "avg_cost_usd": (
                self.cost_usd_total / self.priced_requests if self.priced_requests else None
            ),
            "priced_requests": self.priced_requests,
            "routes": {k: {"requests": v, "share": _share(v, n)} for k, v in self.routes.items()},
            "models": {k: {"requests": v, "share": _share(v, n)} for k, v in self.models.items()},
            "latency_ms": {k: {"p50": v[0], "p95": v[1]} for k, v in self.latency_ms.items()},
        }


NO_ROUTE = "(no route)"
NO_ANSWER = "(failed)"


def summarise(lines: Iterable[str]) -> LogStats:
    """Summarise log lines; lines that are not log records are counted, not fatal."""
    records, malformed = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            malformed += 1
            continue
        if not isinstance(record, dict) or "request_id" not in record:
            malformed += 1
            continue
        records.append(record)
    costs = [r["cost_usd"] for r in records if isinstance(r.get("cost_usd"), int | float)]
    latency: dict[str, list[float]] = {"routing": [], "model": [], "total": []}
    for r in records:
        routing, model = float(r.get("routing_ms") or 0), float(r.get("model_ms") or 0)
        latency["routing"].append(routing)
        latency["model"].append(model)
        latency["total"].append(routing + model)
    return LogStats(
        requests=len(records),
        malformed_lines=malformed,
        errors=sum(1 for r in records if r.get("error")),
        answered_by_fallback=sum(1 for r in records if r.get("model") and r.get("fallbacks")),
        routes=dict(Counter(r.get("route") or NO_ROUTE for r in records).most_common()),
        models=dict(Counter(r.get("model") or NO_ANSWER for r in records).most_common()),
        cost_usd_total=float(sum(costs)),
        priced_requests=len(costs),
        latency_ms={k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in latency.items()},
    )


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the data at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)
