"""What a dispatched request returns: :class:`DispatchResult`, the answer and how it was reached."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from semroute.decision import Decision, Skip
from semroute.records import Attempt, Usage

__all__ = ["CascadeStep", "DispatchResult", "text_of"]


def text_of(response: Any) -> str | None:
    """The first choice's message content of a LiteLLM response (None if it has none)."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


@dataclass(frozen=True)
class CascadeStep:
    """One model of a cascade and what became of its answer.

    ``verdict``: ``accepted`` (every check passed), ``rejected`` (``check`` failed, ``detail``
    says why), ``no_logprobs`` (``min_logprob`` asked, the answer had none), ``judge_error``
    (the judge failed or answered neither yes nor no), ``failed`` (the model gave no answer) or
    ``final`` (the last model's answer, taken unchecked). Every verdict but ``accepted`` and
    ``final`` escalates.
    """

    model: str
    verdict: str
    check: str | None = None
    detail: str | None = None
    cost_usd: float | None = None
    """This answer's cost plus its judge call's (None: a price is unknown)."""
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "verdict": self.verdict,
            "check": self.check,
            "detail": self.detail,
            "cost_usd": self.cost_usd,
            "prompt_tokens": self.usage.prompt_tokens if self.usage else None,
            "completion_tokens": self.usage.completion_tokens if self.usage else None,
        }


@dataclass(frozen=True)
class DispatchResult:
    """A dispatched request's answer and how it was reached."""

    request_id: str
    decision: Decision
    model: str
    """The model that answered (a fallback, when ``decision.model`` failed)."""
    response: Any
    """LiteLLM's ``ModelResponse``."""
    attempts: tuple[Attempt, ...]
    usage: Usage | None
    cost_usd: float | None
    """From LiteLLM's cost map or the prices in the config; None (with a warning) if unknown.
    For a cascade: every answer's and judge call's cost added up."""
    skipped: tuple[Skip, ...] = ()
    """The models of the chain passed over without being tried (e.g. unhealthy), with why."""
    cascade: tuple[CascadeStep, ...] = ()
    """A cascade's models in the order tried, each with its verdict (empty: no cascade)."""
    cache: Any = None
    """The semantic cache's :class:`~semroute.dispatch.cache.Hit` when the answer came from
    it (no model was called; ``cost_usd`` is 0)."""
    cache_status: str | None = None
    """``hit``, ``miss``, ``bypass`` (not cacheable), or None (no cache for the request)."""

    @property
    def text(self) -> str | None:
        """The first choice's message content."""
        return text_of(self.response)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """The models that failed before one answered."""
        return tuple(a.model for a in self.attempts if a.error is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "text": self.text,
            "model": self.model,
            "fallbacks": list(self.fallbacks),
            "attempts": [a.to_dict() for a in self.attempts],
            "skipped": [s.to_dict() for s in self.skipped],
            "usage": dataclasses.asdict(self.usage) if self.usage else None,
            "cost_usd": self.cost_usd,
            "decision": self.decision.to_dict(),
            "cascade": [s.to_dict() for s in self.cascade],
        }
