"""What dispatching a request leaves behind: each :class:`Attempt`, each model passed over
(:class:`Skip`) and the :class:`Usage` reported.

Plain data, below everything that produces or reports it (dispatch, errors, the decision log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Attempt", "Usage"]


@dataclass(frozen=True)
class Attempt:
    """One model tried for a request: ``error`` is None for the one that answered."""

    model: str
    error: str | None
    latency_ms: float
    status: int | None = None
    """The provider's HTTP status, when it sent one."""
    note: str | None = None
    """Why a model judged unhealthy was tried anyway (every model of the chain was)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Usage:
    """Tokens a response used, as the provider reported them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, response: Any) -> Usage | None:
        usage = getattr(response, "usage", None)
        if usage is None:
            return None
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        return cls(
            prompt, completion, int(getattr(usage, "total_tokens", 0) or prompt + completion)
        )
