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
    ├── DifficultyModelError       a difficulty model folder is missing, damaged or for another
    │                              encoder (path)
    ├── InvalidQueryError          a query is not a string or message list (also a TypeError)
    ├── FeedbackError              feedback is malformed or cannot be recorded (field; also a
    │                              ValueError)
    ├── DispatchError              every model of a fallback chain failed, or a stream broke
    │   │                          (attempts: each model tried, its error and latency)
    │   └── RequestRejectedError   a model rejected the request as malformed, or it could not
    │                              be sent; no other model was tried
    ├── BlockedError               a rule blocked the request; no model was called (rule)
    ├── CostLimitError             every candidate's estimated cost is over the ceiling; no
    │                              model was called (cheapest, estimate_usd, ceiling_usd)
    └── ServeError                 `semroute serve` cannot start as configured (an API key's
                                   variable is unset, a public address without keys)

Errors raised by dependencies (pydantic, PyYAML, FAISS, onnxruntime, LiteLLM) are caught where
semroute calls them and re-raised as one of these with ``raise ... from exc``, so callers only need
``SemrouteError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from semroute.decision import Decision, Skip
    from semroute.records import Attempt

__all__ = [
    "REBUILD_HINT",
    "BlockedError",
    "CorruptIndexError",
    "CostLimitError",
    "DataError",
    "DifficultyModelError",
    "DispatchError",
    "EncoderError",
    "EncoderMismatchError",
    "FeedbackError",
    "IndexLoadError",
    "IndexNotFoundError",
    "InvalidQueryError",
    "RequestRejectedError",
    "RouteConfigError",
    "SemrouteError",
    "ServeError",
    "StaleIndexError",
]

REBUILD_HINT = "run `semroute build-index`"
"""What to do about an index that is stale or unusable, spelled once so every message agrees."""


class SemrouteError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class RouteConfigError(SemrouteError):
    """A route file is unreadable or does not describe a valid router."""

    problems: tuple[RouteConfigError, ...] = ()
    """Every problem found where more than one was looked for (this one is the first)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        route: str | None = None,
        field: str | None = None,
        line: int | None = None,
        rule: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.route = route
        self.rule = rule
        self.field = field
        self.line = line
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        labels = (_quoted("route", self.route), _quoted("rule", self.rule))
        parts = [p for p in (where, *labels, _quoted("field", self.field)) if p]
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


class DifficultyModelError(SemrouteError):
    """A difficulty model (``semroute train-difficulty``'s output) cannot be used as it is."""

    def __init__(self, message: str, *, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"difficulty model at {self.path}: {message}")


class InvalidQueryError(SemrouteError, TypeError):
    """A query or a request argument is of the wrong type (a query must be a string or a message list)."""


class FeedbackError(SemrouteError, ValueError):
    """Feedback names no request, has a score out of range, an unknown route, a comment too
    long (``field``: the one at fault), or there is no decision log to record it in."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


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
        skipped: Sequence[Skip] = (),
    ) -> None:
        self.attempts = tuple(attempts)
        self.skipped = tuple(skipped)
        """The models passed over without being tried (e.g. unhealthy), with why."""
        self.request_id = request_id
        self.decision = decision
        tried = [f"{a.model}: {a.error} ({a.latency_ms:.0f} ms)" for a in self.attempts]
        tried += [f"{s.model} skipped: {s.detail}" for s in self.skipped]
        super().__init__(f"{message}: {'; '.join(tried)}" if tried else message)


class RequestRejectedError(DispatchError):
    """A model rejected the request as malformed (HTTP 400 or 422), or LiteLLM could not send
    it (a value with no JSON form): the request is at fault, so the chain's next model, which
    would get the same request, was not tried."""


def _quoted(label: str, value: str | None) -> str:
    return f"{label} {value!r}" if value is not None else ""


class BlockedError(SemrouteError):
    """A rule with ``action: block`` matched the request: no model was called."""

    def __init__(self, rule: str, *, decision: Decision | None = None) -> None:
        self.rule = rule
        self.decision = decision
        super().__init__(f"blocked by rule {rule!r}")


class CostLimitError(SemrouteError):
    """Every candidate model's estimated cost is over the request's cost ceiling: no model was
    called. ``cheapest`` is the candidate with the lowest estimate."""

    def __init__(
        self,
        cheapest: str,
        estimate_usd: float,
        ceiling_usd: float,
        *,
        decision: Decision | None = None,
    ) -> None:
        self.cheapest = cheapest
        self.estimate_usd = estimate_usd
        self.ceiling_usd = ceiling_usd
        self.decision = decision
        super().__init__(
            f"over the cost ceiling: the cheapest candidate, {cheapest!r}, is estimated at "
            f"${estimate_usd:.6g}, over the ${ceiling_usd:.6g} limit"
        )

    @classmethod
    def of(cls, decision: Decision) -> CostLimitError:
        """The error for an ``over_budget`` decision (see :attr:`Decision.over_budget`)."""
        return cls(
            decision.model,
            decision.estimated_cost_usd or 0.0,
            decision.cost_limit_usd or 0.0,
            decision=decision,
        )


class ServeError(SemrouteError):
    """The gateway cannot start as configured (``setting``: the `server:` key at fault)."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        self.setting = setting
        super().__init__(f"server.{setting}: {message}" if setting else message)
