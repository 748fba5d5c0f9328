"""Every error semroute raises on purpose.

    SemrouteError                  base: the CLI prints it as one line and exits 1
    ├── RouteConfigError           a route file is unreadable or invalid (file, route, field, line)
    ├── EncoderError               an embedding model cannot be found, exported or run (model)
    ├── IndexLoadError             an index on disk cannot be used (path)
    │   ├── IndexNotFoundError     nothing has been built there
    │   ├── CorruptIndexError      files are missing, truncated or unreadable
    │   ├── StaleIndexError        the route files changed since the index was built
    │   └── EncoderMismatchError   the index was built with another encoder than the one asked for
    ├── DataError                  a labelled data file is unreadable or names no route (file, line)
    ├── InvalidQueryError          a query is not a string or message list (also a TypeError)
    └── DispatchError              every model of a fallback chain failed, or a stream broke
                                   (attempts: each model tried, its error and latency)

Errors raised by dependencies (pydantic, PyYAML, FAISS, onnxruntime, LiteLLM) are caught where
semroute calls them and re-raised as one of these with ``raise ... from exc``, so callers only need
``SemrouteError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from semroute.decision import Decision
    from semroute.records import Attempt

__all__ = [
    "REBUILD_HINT",
    "CorruptIndexError",
    "DataError",
    "DispatchError",
    "EncoderError",
    "EncoderMismatchError",
    "IndexLoadError",
    "IndexNotFoundError",
    "InvalidQueryError",
    "RouteConfigError",
    "SemrouteError",
    "StaleIndexError",
]

REBUILD_HINT = "run `semroute build-index`"
"""What to do about an index that is stale or unusable, spelled once so every message agrees."""


class SemrouteError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class RouteConfigError(SemrouteError):
    """A route file is unreadable or does not describe a valid router."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        route: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.route = route
        self.field = field
        self.line = line
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        parts = [
            p for p in (where, _quoted("route", self.route), _quoted("field", self.field)) if p
        ]
        return ": ".join([*parts, self.message]) if parts else self.message


class EncoderError(SemrouteError):
    """An embedding model cannot be found, exported or run."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        self.model = model
        super().__init__(f"encoder {model!r}: {message}" if model else message)


class IndexLoadError(SemrouteError):
    """An index directory cannot be used as it is."""

    def __init__(self, message: str, *, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"index at {self.path}: {message}")


class IndexNotFoundError(IndexLoadError):
    """No index has been built at this path."""


class CorruptIndexError(IndexLoadError):
    """Index files are missing, truncated or unreadable."""


class StaleIndexError(IndexLoadError):
    """The route files changed after the index was built."""


class EncoderMismatchError(IndexLoadError):
    """The index was built with a different encoder than the one supplied."""

    def __init__(self, message: str, *, path: str | Path, expected: str, found: str) -> None:
        self.expected = expected
        self.found = found
        super().__init__(message, path=path)


class DataError(SemrouteError):
    """A labelled data file (for import, eval or calibrate) is unreadable or does not fit."""

    def __init__(self, message: str, *, file: str | Path, line: int | None = None) -> None:
        self.file = str(file)
        self.line = line
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {message}")


class InvalidQueryError(SemrouteError, TypeError):
    """A query or a request argument is of the wrong type (a query must be a string or a message list)."""


class DispatchError(SemrouteError):
    """No model answered: every model of the chain failed, or a stream broke part-way.

    ``attempts`` lists each model tried with its error and latency, in order.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: Sequence[Attempt] = (),
        request_id: str | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.attempts = tuple(attempts)
        self.request_id = request_id
        self.decision = decision
        tried = "; ".join(f"{a.model}: {a.error} ({a.latency_ms:.0f} ms)" for a in self.attempts)
        super().__init__(f"{message}: {tried}" if tried else message)


def _quoted(label: str, value: str | None) -> str:
    return f"{label} {value!r}" if value is not None else ""
