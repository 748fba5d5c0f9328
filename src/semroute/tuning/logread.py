"""Reading a decision log for the offline tools (replay, suggest, drift, difficulty from
traffic): its requests, with their query when ``log_content`` was on, and the feedback and
shadow verdicts keyed by request id. A line that is not a record is skipped (`semroute stats`
counts them); nothing here calls a model."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from semroute.dispatch.feedback import feedback_record
from semroute.errors import DataError
from semroute.routing.conversation import user_turns

__all__ = ["LogData", "Logged", "parse_since", "read_log"]

MAX_LINE_CHARS = 4 << 20
"""A longer line is skipped unread: no request of a bounded gateway writes one."""


@dataclass(frozen=True)
class Logged:
    """One logged request, as the offline tools read it."""

    request_id: str
    time: str | None
    route: str | None
    reason: str | None
    confidence: float | None
    margin: float | None
    best: tuple[str, float] | None
    """The best route and its confidence (``top_scores[0]``), when logged."""
    model: str | None
    recommended_model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    query: str | None
    """The last user turn (None: ``log_content`` was off, or no user turn)."""
    turns: int = 0
    """How many user turns the messages held."""
    messages: list[Any] | None = None


@dataclass
class LogData:
    requests: list[Logged] = field(default_factory=list)
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The last feedback per request id."""
    verdicts: dict[str, str] = field(default_factory=dict)
    """Shadow evaluation's judged verdict per request id (win, tie, loss)."""
    skipped_lines: int = 0

    @property
    def with_content(self) -> list[Logged]:
        return [r for r in self.requests if r.query is not None]


def parse_since(value: str | None) -> datetime | None:
    """``--since``: an ISO 8601 time (``2026-05-01`` or ``2026-05-01T12:00:00+00:00``)."""
    if value is None:
        return None
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise DataError(
            f"--since {value[:60]!r} is not an ISO 8601 time; write e.g. 2026-05-01 or "
            "2026-05-01T12:00:00+00:00",
            file="--since",
        ) from None
    return since if since.tzinfo else since.astimezone()


def read_log(path: str | Path, since: datetime | None = None) -> LogData:
    """Every record of the log at ``path`` (requests at or after ``since``)."""
    out = LogData()
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as lines:
            for raw in _objects(lines, out):
                kind = raw.get("kind")
                if kind == "feedback":
                    found = feedback_record(raw)
                    if found is not None:
                        out.feedback[found["request_id"]] = found
                elif kind == "quality":
                    if raw.get("status") == "judged" and raw.get("verdict") in (
                        "win",
                        "tie",
                        "loss",
                    ):
                        out.verdicts[raw["request_id"]] = raw["verdict"]
                elif kind is None:
                    logged = _logged(raw)
                    if logged is None or (since is not None and not _after(logged.time, since)):
                        out.skipped_lines += logged is None
                        continue
                    out.requests.append(logged)
    except OSError as exc:
        raise DataError(
            f"cannot read the decision log ({exc.strerror}); pass the file named by "
            "`dispatch.log` or $SEMROUTE_LOG",
            file=path,
        ) from exc
    return out


def _objects(lines: Any, out: LogData) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            out.skipped_lines += 1
            continue
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            out.skipped_lines += 1
            continue
        if isinstance(raw, dict) and isinstance(raw.get("request_id"), str):
            yield raw
        else:
            out.skipped_lines += 1


def _after(time: str | None, since: datetime) -> bool:
    if time is None:
        return False
    try:
        when = datetime.fromisoformat(time)
    except ValueError:
        return False
    return (when if when.tzinfo else when.astimezone()) >= since


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _logged(raw: dict[str, Any]) -> Logged | None:
    route = raw.get("route")
    if route is not None and not isinstance(route, str):
        return None
    best = None
    top = raw.get("top_scores")
    if isinstance(top, list) and top and isinstance(top[0], dict):
        name, conf = _text(top[0].get("route")), _number(top[0].get("confidence"))
        best = (name, conf) if name is not None and conf is not None else None
    messages = raw.get("messages")
    query, turns = None, 0
    if isinstance(messages, list):
        try:
            found = user_turns(messages)
        except (TypeError, ValueError):
            found = []
        turns = len(found)
        query = found[-1] if found else None
    return Logged(
        request_id=raw["request_id"],
        time=_text(raw.get("time")),
        route=route,
        reason=_text(raw.get("reason")),
        confidence=_number(raw.get("confidence")),
        margin=_number(raw.get("margin")),
        best=best,
        model=_text(raw.get("model")),
        recommended_model=_text(raw.get("recommended_model")),
        prompt_tokens=_count(raw.get("prompt_tokens")),
        completion_tokens=_count(raw.get("completion_tokens")),
        query=query,
        turns=turns,
        messages=messages if isinstance(messages, list) else None,
    )
