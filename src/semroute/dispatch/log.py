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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import semroute.text as text
from semroute.dispatch.log_stats import NO_ROUTE, NO_RULE, LogStats, summarise

if TYPE_CHECKING:
    from semroute.decision import Decision, Skip
    from semroute.records import Attempt, Usage

# The summary lives in log_stats; these names stay importable from here.
__all__ = [
    "LOG_ENV",
    "NO_ROUTE",
    "NO_RULE",
    "DecisionLog",
    "DecisionLogs",
    "LogStats",
    "entry",
    "summarise",
]

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
        self._file = (0, 0)
        """The device and inode of the file ``_fd`` holds."""
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
                if (current.st_dev, current.st_ino) == self._file:
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
            opened = os.fstat(fd)
            _regular(opened.st_mode)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._file = (opened.st_dev, opened.st_ino)  # what the descriptor holds, for good
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
