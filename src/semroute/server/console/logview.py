"""The console's view of the decision log: pages of it, newest first, without reading it whole.

A page is read from the end of the file (or from a cursor: the byte offset where the previous
page stopped) backwards, in blocks, and each line is parsed and filtered as it is reached; a page
stops at ``limit`` matching lines or after ``scan_bytes`` bytes, whichever comes first, so a page
of a log of a million lines costs the same as a page of a small one. A line is untrusted input:
one that is not a JSON object with a text ``request_id`` is skipped, and every value shown is
escaped by the templates. A request's shadow verdict and feedback (``"kind": "quality"`` and
``"kind": "feedback"`` lines, written after the request's own line) are found by reading forward
from the request's line, again within a bound.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semroute.dispatch.log_stats import parse_line

__all__ = [
    "FILTERS",
    "LOW_CONFIDENCE",
    "Entry",
    "LogFilter",
    "Page",
    "entry_at",
    "lines_backward",
    "page",
]

BLOCK = 64 << 10
MAX_LINE = 4 << 20
"""A longer line is skipped (a decision log line is a few kB)."""
SCAN_BYTES = 32 << 20
"""At most this much of the file is read for one page."""
RELATED_BYTES = 8 << 20
"""How far past a request's line its shadow verdict and feedback are looked for."""
MAX_MARKS = 100_000
"""At most this many request ids with a verdict or feedback are remembered while scanning."""
LOW_CONFIDENCE = frozenset({"below_threshold", "ambiguous"})
FILTERS = ("route", "model", "reason", "rule", "status", "low", "fallbacks", "feedback")
TEXT_FILTERS = ("route", "model", "reason", "rule")
MAX_FILTER = 200


@dataclass(frozen=True)
class LogFilter:
    """What a page shows: exact route / model / reason / rule (``-`` for none), ``status``
    ``ok`` or ``error``, and the low-confidence, fallback and has-feedback switches."""

    route: str | None = None
    model: str | None = None
    reason: str | None = None
    rule: str | None = None
    status: str | None = None
    low: bool = False
    fallbacks: bool = False
    feedback: bool = False

    @classmethod
    def of(cls, params: Mapping[str, str]) -> LogFilter:
        """From a query string (unknown or empty values are ignored; text is cut short)."""
        text = {k: (params.get(k) or "").strip()[:MAX_FILTER] or None for k in TEXT_FILTERS}
        status = params.get("status")
        return cls(
            **text,
            status=status if status in ("ok", "error") else None,
            low=params.get("low") == "1",
            fallbacks=params.get("fallbacks") == "1",
            feedback=params.get("feedback") == "1",
        )

    def query(self) -> dict[str, str]:
        """The filter as query parameters (for links to the next page)."""
        out = {k: getattr(self, k) for k in TEXT_FILTERS if getattr(self, k)}
        if self.status:
            out["status"] = self.status
        out.update({k: "1" for k in ("low", "fallbacks", "feedback") if getattr(self, k)})
        return out

    def matches(self, record: Mapping[str, Any], marks: Mapping[str, dict[str, Any]]) -> bool:
        for name in TEXT_FILTERS:
            wanted = getattr(self, name)
            if wanted is not None and _text(record.get(name)) != ("" if wanted == "-" else wanted):
                return False
        error = record.get("error")
        if self.status is not None and bool(error) != (self.status == "error"):
            return False
        if self.low and record.get("reason") not in LOW_CONFIDENCE:
            return False
        if self.fallbacks and not record.get("fallbacks"):
            return False
        return not self.feedback or "feedback" in marks.get(record["request_id"], {})


@dataclass(frozen=True)
class Entry:
    """One request's line: where it starts in the file, and its record."""

    offset: int
    record: dict[str, Any]
    marks: dict[str, Any] = field(default_factory=dict)
    """Its shadow ``verdict`` and ``feedback`` score, when seen."""


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    next_before: int | None
    """The cursor of the next (older) page; None at the start of the file."""
    scanned_bytes: int
    size: int
    """The file's size when the page was read."""


def lines_backward(fd: int, end: int, budget: int) -> Iterator[tuple[int, bytes]]:
    """Each non-empty line ending at or before ``end``, newest first, with its start offset;
    reads at most about ``budget`` bytes. A line over :data:`MAX_LINE` is skipped."""
    pos, tail, skipping = end, b"", False
    while pos > 0 and budget > 0:
        size = min(BLOCK, pos)
        pos -= size
        budget -= size
        parts = (os.pread(fd, size, pos) + tail).split(b"\n")
        tail = parts[0]
        if skipping and len(parts) > 1:
            parts, skipping = parts[:-1], False  # the rest of the long line
        offset = pos + len(tail) + 1
        found = []
        for part in parts[1:]:
            found.append((offset, part))
            offset += len(part) + 1
        yield from ((o, p) for o, p in reversed(found) if p.strip())
        if len(tail) > MAX_LINE:
            tail, skipping = b"", True
    if pos == 0 and tail.strip() and not skipping:
        yield 0, tail


def page(
    path: Path,
    where: LogFilter,
    before: int | None = None,
    limit: int = 50,
    scan_bytes: int = SCAN_BYTES,
) -> Page:
    """The newest ``limit`` requests matching ``where`` that start before offset ``before``
    (None: the end of the file). A missing log is an empty page."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Page([], None, 0, 0)
    try:
        size = os.fstat(fd).st_size
        end = size if before is None else max(0, min(before, size))
        entries: list[Entry] = []
        marks: dict[str, dict[str, Any]] = {}
        cursor: int | None = end
        for offset, line in lines_backward(fd, end, scan_bytes):
            cursor = offset
            raw = parse_line(line)
            if raw is None:
                continue
            kind = raw.get("kind")
            if kind is not None:
                _mark(marks, raw)
            elif where.matches(raw, marks):
                entries.append(Entry(offset, raw, marks.get(raw["request_id"], {})))
                if len(entries) >= limit:
                    break
        if cursor == 0 or end == 0:
            cursor = None
        elif cursor == end:  # the budget ran out inside one line: step past it
            cursor = max(0, end - scan_bytes)
        return Page(entries, cursor, end - (cursor or 0), size)
    finally:
        os.close(fd)


def _mark(marks: dict[str, dict[str, Any]], raw: Mapping[str, Any]) -> None:
    kind, rid = raw.get("kind"), raw["request_id"]
    if len(marks) >= MAX_MARKS and rid not in marks:
        return
    if kind == "quality":
        verdict = raw.get("verdict") if raw.get("status") == "judged" else raw.get("status")
        marks.setdefault(rid, {})["verdict"] = _text(verdict)
    elif kind == "feedback":
        marks.setdefault(rid, {}).setdefault("feedback", feedback_score(raw))


def feedback_score(raw: Mapping[str, Any]) -> float | None:
    """A feedback record's score in [-1, 1] (``up`` 1, ``down`` -1; None: none readable)."""
    score = raw.get("score")
    if score in ("up", "down"):
        return 1.0 if score == "up" else -1.0
    if isinstance(score, int | float) and not isinstance(score, bool) and -1 <= score <= 1:
        return float(score)
    return None


def entry_at(path: Path, offset: int, request_id: str) -> tuple[dict[str, Any], list[Any]] | None:
    """The request whose line starts at ``offset`` if it is ``request_id``'s, with the quality
    and feedback records about it found in the next :data:`RELATED_BYTES` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if not 0 <= offset < size or (offset > 0 and os.pread(fd, 1, offset - 1) != b"\n"):
            return None
        lines = _lines_forward(fd, offset, min(size, offset + RELATED_BYTES))
        first = next(lines, None)
        record = parse_line(first) if first is not None else None
        if record is None or record.get("request_id") != request_id or "kind" in record:
            return None
        related = []
        for line in lines:
            if request_id.encode() in line:
                raw = parse_line(line)
                if raw is not None and raw["request_id"] == request_id and "kind" in raw:
                    related.append(raw)
        return record, related
    finally:
        os.close(fd)


def _lines_forward(fd: int, start: int, stop: int) -> Iterator[bytes]:
    pos, rest = start, b""
    while pos < stop:
        chunk = os.pread(fd, min(BLOCK, stop - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
        if len(rest) > MAX_LINE:
            return


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
