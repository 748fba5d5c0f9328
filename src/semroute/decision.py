"""What routing returns: a frozen :class:`Decision` with every route's :class:`RouteScore`."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Decision", "Reason", "RouteScore", "Skip"]


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
    SESSION = "session"
    """The conversation's session (an agent run) stays on the model it is on (see
    :mod:`semroute.dispatch.sessions`)."""
    PINNED = "pinned"
    """The caller named the model: nothing was routed."""
    RULE = "rule"
    """A rule (``rules:`` in the route files) chose the model or tier."""
    BLOCKED = "blocked"
    """A rule with ``action: block`` matched: no model may be called."""
    OVER_BUDGET = "over_budget"
    """Every candidate's estimated cost is over the cost ceiling: no model may be called
    (dispatching raises :class:`~semroute.errors.CostLimitError`)."""


@dataclass(frozen=True, slots=True)
class Skip:
    """A candidate model passed over without being tried: ``reason`` is ``capability`` or
    ``over_budget`` (routing) or ``unhealthy`` (dispatch); ``detail`` says why, for a person."""

    model: str
    reason: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reason": self.reason, "detail": self.detail}


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
    signals: Mapping[str, Any] | None = None
    """The request's signals (see :mod:`semroute.routing.signals`), when rules or hints were used."""
    rule: str | None = None
    """The rule that decided (None: no rule matched)."""
    recommended_model: str | None = None
    """The semantic router's model, before rules (None: the same as ``model``)."""
    chain: tuple[str, ...] | None = None
    """The models to try in order, when a rule, tier or check set them (empty when blocked or
    over budget)."""
    skipped: tuple[Skip, ...] = ()
    """The candidates passed over before dispatch (capability, over budget), in chain order."""
    estimated_cost_usd: float | None = None
    """The estimated cost of ``model`` (the cheapest candidate's when over budget; None:
    unknown price, or the request's signals were not read)."""
    cost_limit_usd: float | None = None
    """The cost ceiling applied (None: no ceiling)."""
    within_cost_limit: bool | None = None
    """Whether ``model``'s estimate fits the ceiling (None: no ceiling, or no estimate)."""
    challenger: Decision | None = None
    """A challenger index's decision for the same query (None: no challenger; see
    :meth:`semroute.routing.router.Router.with_challenger`)."""
    language_warning: str | None = None
    """Set when the query is probably not in the language of an English-only encoder, whose
    confidences then mean little (see :mod:`semroute.routing.language`)."""
    redact: tuple[str, ...] = ()
    """The kinds of personal data replaced by placeholders before the request leaves (rules'
    ``redact:``)."""

    def __getstate__(self) -> dict[str, Any]:
        self.scores  # noqa: B018 - pickle the built tuple, never the builder
        return self.__dict__

    @property
    def matched(self) -> bool:
        return self.route is not None

    def evolve(self, **changes: Any) -> Decision:
        """A copy with ``changes``; unbuilt ``scores`` stay unbuilt, the :attr:`vector` stays."""
        changes.setdefault("scores", self.__dict__["_scores"])
        out = dataclasses.replace(self, **changes)
        return out.with_vector(self.vector) if self.vector is not None else out

    @property
    def vector(self) -> Any:
        """The embedding routing made of the last user turn (with
        ``router.conversation.turns`` above 1: of the last turns joined), a read-only float32
        vector; None when nothing was embedded. What the semantic cache compares. Not a field:
        not in :meth:`to_dict` nor ``dataclasses.asdict``, which stay plain data."""
        return self.__dict__.get("_vector")

    def with_vector(self, vector: Any) -> Decision:
        """This decision, holding ``vector`` (for the router that made it, before it is
        returned)."""
        object.__setattr__(self, "_vector", vector)
        return self

    @property
    def blocked(self) -> bool:
        return self.reason == Reason.BLOCKED

    @property
    def over_budget(self) -> bool:
        return self.reason == Reason.OVER_BUDGET

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
            "signals": dict(self.signals) if self.signals is not None else None,
            "rule": self.rule,
            "recommended_model": self.recommended_model or self.model,
            "chain": list(self.chain) if self.chain is not None else None,
            "skipped": [s.to_dict() for s in self.skipped],
            "estimated_cost_usd": _cost(self.estimated_cost_usd),
            "cost_limit_usd": self.cost_limit_usd,
            "within_cost_limit": self.within_cost_limit,
            "language_warning": self.language_warning,
            **({"redact": list(self.redact)} if self.redact else {}),
        } | ({"challenger": self.challenger.to_dict()} if self.challenger is not None else {})


def _cost(usd: float | None) -> float | None:
    return None if usd is None else float(f"{usd:.6g}")
