"""What dispatching a request leaves behind: each :class:`Attempt`, each model passed over
(:class:`Skip`) and the :class:`Usage` reported.

Plain data, below everything that produces or reports it (dispatch, errors, the decision log).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_TOKENS", "Attempt", "UnbelievableUsageWarning", "Usage", "unbelievable"]


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


MAX_TOKENS = 10**9
"""The most tokens one response's usage may count (a billion: a hundred times the longest
context window sold); a count above it, negative, or not a whole number cannot be true."""

_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_MAX_WARNED = 64
"""Models warned about, at most: a provider that names a new model in every answer cannot
fill memory or the terminal."""
_warned: set[str] = set()
_warned_lock = threading.Lock()


class UnbelievableUsageWarning(RuntimeWarning):
    """A provider reported token counts that cannot be true: its usage is treated as unknown,
    so cost is None (shown once per model)."""


@dataclass(frozen=True)
class Usage:
    """Tokens a response used, as the provider reported them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, response: Any) -> Usage | None:
        """The response's usage; None when it reports none, or a count that cannot be true
        (see :data:`MAX_TOKENS`; then with an :class:`UnbelievableUsageWarning`, once per
        model): such a count would make a cost negative or absurd, in stats and budgets."""
        usage = getattr(response, "usage", None)
        if usage is None:
            return None
        bad = unbelievable(usage)
        if bad is not None:
            _warn_once(getattr(response, "model", None), *bad)
            return None
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        return cls(
            prompt, completion, int(getattr(usage, "total_tokens", 0) or prompt + completion)
        )


def unbelievable(usage: Any) -> tuple[str, Any] | None:
    """The first token count of a provider's ``usage`` that cannot be true, with its value
    (None: every count is a whole number from 0 to :data:`MAX_TOKENS`, or absent)."""
    for name in _COUNTS:
        value = getattr(usage, name, None)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
            return name, getattr(usage, name)
    return None


def _warn_once(model: Any, count: str, value: Any) -> None:
    name = str(model)[:80] if model else "?"
    with _warned_lock:
        if name in _warned or len(_warned) >= _MAX_WARNED:
            return
        _warned.add(name)
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:40] + "..."
    warnings.warn(
        f"model {name!r} reported {count}={shown}, which cannot be true (a token count is a "
        f"whole number from 0 to {MAX_TOKENS:,}); its usage is treated as unknown, so "
        "cost_usd is None",
        UnbelievableUsageWarning,
        stacklevel=3,
    )
