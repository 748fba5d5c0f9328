"""What routing returns: a frozen :class:`Decision` with every route's :class:`RouteScore`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, overload

__all__ = ["Decision", "Reason", "RouteScore", "RouteScores"]


class Reason(StrEnum):
    """Why a decision came out the way it did."""

    MATCHED = "matched"
    """The best route's confidence reached its threshold and led the runner-up by ``min_margin``."""
    BELOW_THRESHOLD = "below_threshold"
    """The best route's confidence is under its threshold: the default model answers."""
    AMBIGUOUS = "ambiguous"
    """Two routes are too close to call (margin under ``min_margin``): the default model answers."""
    EMPTY_QUERY = "empty_query"
    """The query is empty or only whitespace: the default model answers."""
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


class RouteScores(Sequence[RouteScore]):
    """Every route's score, best first, built on first access.

    Routing needs only the best route; building one :class:`RouteScore` per route is left
    until someone looks, so ``route()`` does no per-route Python work.
    """

    __slots__ = ("_build", "_items")

    def __init__(self, build: Callable[[], tuple[RouteScore, ...]]) -> None:
        self._build: Callable[[], tuple[RouteScore, ...]] | None = build
        self._items: tuple[RouteScore, ...] | None = None

    def _all(self) -> tuple[RouteScore, ...]:
        if self._items is None:
            assert self._build is not None
            self._items, self._build = self._build(), None
        return self._items

    @overload
    def __getitem__(self, index: int) -> RouteScore: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RouteScore, ...]: ...
    def __getitem__(self, index: int | slice) -> RouteScore | tuple[RouteScore, ...]:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[RouteScore]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RouteScores | tuple | list):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


@dataclass(frozen=True, slots=True)
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
    scores: Sequence[RouteScore]
    latency_ms: float
    truncated: bool = False
    """The query was longer than the encoder's window; only its start was used."""

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
