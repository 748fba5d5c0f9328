"""How :meth:`Dispatcher.complete`'s arguments are read: the routing hints among the keyword
arguments, what ``model=`` pins, and the decision of a request pinned without a router."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from semroute.decision import Decision, Reason
from semroute.errors import InvalidQueryError
from semroute.routing.policy import Pin

if TYPE_CHECKING:
    from semroute.routing.router import Router

__all__ = [
    "HINTS",
    "REQUEST_KEYS",
    "fallbacks_of",
    "pin_of",
    "pinned",
    "router_of",
    "routing_hints",
]

HINTS = ("task", "user_tier", "max_cost_usd")
# Read by rules and left in for LiteLLM: the request's fields, and `metadata`, which LiteLLM
# also takes (for its callbacks and logging; it is never sent to the provider).
REQUEST_KEYS = (
    "tools",
    "functions",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "n",
)


def routing_hints(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The routing hints in ``kwargs``: ``task``, ``user_tier`` and ``max_cost_usd`` taken out
    (LiteLLM never sees them); ``metadata`` and the request fields rules read left in."""
    hints = {k: kwargs.pop(k) for k in HINTS if k in kwargs}
    if "metadata" in kwargs:
        hints["metadata"] = kwargs["metadata"]
    request = {k: kwargs[k] for k in REQUEST_KEYS if k in kwargs}
    return {**hints, "request": request} if request else hints


def router_of(router: Router | None) -> Router:
    if router is None:
        raise TypeError("pass router= to route the request, or model= to pin a model")
    if not callable(getattr(router, "route", None)):
        raise TypeError(
            f"router= must be a semroute Router (Router.load(index)), not {type(router).__name__}"
        )
    return router


def pin_of(model: str | Pin | None, fallbacks: Sequence[str] | None) -> Pin | None:
    """What ``model=`` (and ``fallbacks=``) pin (None: nothing, route the request)."""
    names = fallbacks_of(fallbacks)
    if model is None or isinstance(model, Pin):
        return model
    if not isinstance(model, str):
        raise InvalidQueryError(f"model= must be a string, not {type(model).__name__}")
    if not model.strip():
        raise InvalidQueryError(
            "model= is empty; name a model, or leave model= out to route the request"
        )
    return Pin((model, *names))


def fallbacks_of(fallbacks: Sequence[str] | None) -> tuple[str, ...]:
    """``fallbacks=`` checked: a list of model names (a string would be read letter by letter)."""
    if fallbacks is None:
        return ()
    if isinstance(fallbacks, str | bytes) or not isinstance(fallbacks, Sequence):
        raise InvalidQueryError(
            f"fallbacks= must be a list of model names, not {type(fallbacks).__name__}"
        )
    for i, name in enumerate(fallbacks):
        if not isinstance(name, str) or not name.strip():
            raise InvalidQueryError(
                f"fallbacks[{i}] must be a model's name, not {reprlib.repr(name)}"
            )
    return tuple(fallbacks)


def pinned(model: str) -> Decision:
    """The decision of a request pinned to ``model`` with no router to check it."""
    return Decision(
        route=None,
        model=model,
        confidence=0.0,
        margin=0.0,
        reason=Reason.PINNED,
        latency_ms=0.0,
        scores=(),
    )
