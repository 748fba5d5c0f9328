"""What routing returns: a frozen :class:`Decision` with every route's :class:`RouteScore`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Decision", "Reason", "RouteScore"]


class Reason(StrEnum):
    """Why a decision came out the way it did."""

    MATCHED = "matched"
    """The best route's confidence reached its threshold and led the runner-up by ``min_margin``."""
    BELOW_THRESHOLD = "below_threshold"
    """The best route's confidence is under its threshold: the default model answers."""
    AMBIGUOUS = "ambiguous"
    """Two routes are too close to call (margin under ``min_margin``): the default model answers."""
    EMPTY_QUERY = "empty_query"
    """The query shows no visible character (empty, whitespace, zero-width or control
    characters only): the default model answers."""
    STICKY = "sticky"
    """A follow-up turn matched no other route confidently: the conversation keeps its route."""
    PINNED = "pinned"
    """The caller named the model: nothing was routed."""


@dataclass(frozen=True, slots=True)
class RouteScore:
    """One route's confidence for a query."""

    route: str
    confidence: float
    threshold: float
    utterance: str | None
    """The route's example most similar to the query (None for an empty query)."""
    model: str

    @property
    def passed(self) -> bool:
        return self.confidence >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "confidence": round(self.confidence, 6),
            "threshold": self.threshold,
            "utterance": self.utterance,
            "model": self.model,
        }


class _LazyScores:
    """The ``scores`` field of :class:`Decision`: given a builder, it builds the tuple on first
    read, once, under a lock. Routing needs only the best route, so ``route()`` does no
    per-route Python work unless someone looks at every route."""

    _lock = threading.Lock()

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_{name}"

    def __get__(self, obj: object, objtype: type | None = None) -> tuple[RouteScore, ...]:
        if obj is None:
            return ()  # the dataclass default
        value = obj.__dict__[self._attr]
        if callable(value):
            with self._lock:
                value = obj.__dict__[self._attr]
                if callable(value):
                    value = obj.__dict__[self._attr] = value()
        return value  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: object) -> None:
        obj.__dict__[self._attr] = value


@dataclass(frozen=True)
class Decision:
    """Where a query goes and why.

    ``route`` is None when no route matched confidently; ``model`` is then the router's default.
    ``confidence`` is the best route's confidence (see the README for what it measures),
    ``margin`` how far it leads the runner-up, ``scores`` every route, best first.
    """

    route: str | None
    model: str
    confidence: float
    margin: float
    reason: Reason
    latency_ms: float
    truncated: bool = False
    """The query was longer than the encoder's window; only its start was used."""
    scores: tuple[RouteScore, ...] = _LazyScores()  # type: ignore[assignment]
    """Every route, best first (built on first access; a callable may be passed to defer it)."""

    def __getstate__(self) -> dict[str, Any]:
        self.scores  # noqa: B018 - pickle the built tuple, never the builder
        return self.__dict__

    @property
    def matched(self) -> bool:
        return self.route is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "model": self.model,
            "confidence": round(self.confidence, 6),
            "margin": round(self.margin, 6),
            "reason": self.reason.value,
            "truncated": self.truncated,
            "latency_ms": round(self.latency_ms, 3),
            "scores": [s.to_dict() for s in self.scores],
        }
