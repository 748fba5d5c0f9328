"""Reading a decision log for the offline tools (replay, suggest, drift, difficulty from
traffic): its requests, with their query when ``log_content`` was on, and the feedback and
shadow verdicts keyed by request id. Lines are read by `semroute stats`'s own reader
(:func:`semroute.dispatch.log_stats.read_lines`), so a line stats counts as malformed is
skipped and counted here too; nothing here calls a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from semroute.dispatch.log_stats import REQUEST, read_lines
from semroute.errors import DataError
from semroute.routing.conversation import user_turns

__all__ = ["LogData", "Logged", "parse_since", "read_log"]


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
    malformed_lines: int = 0
    """Lines that are not records (counted as `semroute stats` counts them)."""

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
            f"{value[:60]!r} is not an ISO 8601 time; write e.g. 2026-05-01 or "
            "2026-05-01T12:00:00+00:00",
            file="--since",
        ) from None
    return since if since.tzinfo else since.astimezone()


def read_log(path: str | Path, since: datetime | None = None) -> LogData:
    """Every record of the log at ``path`` (requests at or after ``since``)."""
    out = LogData()
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as lines:
            for line in read_lines(lines):
                if line is None:
                    out.malformed_lines += 1
                elif line.kind == "feedback":
                    out.feedback[line.raw["request_id"]] = line.read
                elif line.kind == "quality":
                    if line.read["status"] == "judged":
                        out.verdicts[line.raw["request_id"]] = line.read["verdict"]
                elif line.kind == REQUEST:
                    logged = _logged(line.raw)
                    if since is None or _after(logged.time, since):
                        out.requests.append(logged)
    except OSError as exc:
        raise DataError(
            f"cannot read the decision log ({exc.strerror}); pass the file named by "
            "`dispatch.log` or $SEMROUTE_LOG",
            file=path,
        ) from exc
    return out


def _after(time: str | None, since: datetime) -> bool:
    if time is None:
        return False
    try:
        when = datetime.fromisoformat(time)
    except ValueError:
        return False
    return (when if when.tzinfo else when.astimezone()) >= since


def _logged(raw: dict[str, Any]) -> Logged:
    """A request's line (its shape checked by :func:`read_lines`) as the offline tools read it."""
    top = raw.get("top_scores")
    best = (top[0]["route"], float(top[0]["confidence"])) if top else None
    messages = raw.get("messages")
    query, turns = None, 0
    if messages is not None:
        try:
            found = user_turns(messages)
        except (TypeError, ValueError):  # a message's content of no form a query has
            found = []
        turns = len(found)
        query = found[-1] if found else None
    return Logged(
        request_id=raw["request_id"],
        time=raw.get("time"),
        route=raw.get("route"),
        reason=raw.get("reason"),
        confidence=_float(raw.get("confidence")),
        margin=_float(raw.get("margin")),
        best=best,
        model=raw.get("model"),
        recommended_model=raw.get("recommended_model"),
        prompt_tokens=raw.get("prompt_tokens"),
        completion_tokens=raw.get("completion_tokens"),
        query=query,
        turns=turns,
        messages=messages,
    )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
