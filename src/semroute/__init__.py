"""semroute: decide, per request, which model should answer.

    >>> import semroute
    >>> decision = semroute.route("fix this TypeError in my Python script")
    >>> decision.route, decision.model, decision.reason
    >>> result = semroute.complete("fix this TypeError in my Python script")  # via LiteLLM
    >>> result.text, result.model, result.attempts, result.cost_usd

With a router and a dispatcher of your own:

    >>> router = semroute.Router.load("indexes/default")
    >>> dispatcher = semroute.Dispatcher.for_index(router.index)
    >>> result = dispatcher.complete("fix this TypeError", router=router)

Heavy dependencies (numpy, onnxruntime, FAISS, torch, LiteLLM) load on first use, not on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semroute.decision import Decision, Reason, RouteScore
from semroute.errors import (
    BlockedError,
    CorruptIndexError,
    CostLimitError,
    DataError,
    DifficultyModelError,
    DispatchError,
    EncoderError,
    EncoderMismatchError,
    FeedbackError,
    IndexLoadError,
    IndexNotFoundError,
    InvalidQueryError,
    RequestRejectedError,
    RouteConfigError,
    SemrouteError,
    StaleIndexError,
)

if TYPE_CHECKING:
    from semroute.api import Router, acomplete, complete, feedback, route
    from semroute.config.pricing import UnknownPriceWarning
    from semroute.config.routes import Route, RouterSettings, RouteSet, load_routes
    from semroute.dispatch.dispatcher import Dispatcher
    from semroute.dispatch.result import DispatchResult
    from semroute.dispatch.streaming import AsyncDispatchStream, DispatchStream
    from semroute.records import Attempt, UnbelievableUsageWarning, Usage
    from semroute.tuning.build import BuildReport, build_index

from semroute.version import __version__

__all__ = [
    "AsyncDispatchStream",
    "Attempt",
    "BlockedError",
    "BuildReport",
    "CorruptIndexError",
    "CostLimitError",
    "DataError",
    "Decision",
    "DifficultyModelError",
    "DispatchError",
    "DispatchResult",
    "DispatchStream",
    "Dispatcher",
    "EncoderError",
    "EncoderMismatchError",
    "FeedbackError",
    "IndexLoadError",
    "IndexNotFoundError",
    "InvalidQueryError",
    "Reason",
    "RequestRejectedError",
    "Route",
    "RouteConfigError",
    "RouteScore",
    "RouteSet",
    "Router",
    "RouterSettings",
    "SemrouteError",
    "StaleIndexError",
    "UnbelievableUsageWarning",
    "UnknownPriceWarning",
    "Usage",
    "__version__",
    "acomplete",
    "build_index",
    "complete",
    "feedback",
    "load_routes",
    "route",
]

_LAZY = {
    "Route": "semroute.config.routes",
    "RouteSet": "semroute.config.routes",
    "RouterSettings": "semroute.config.routes",
    "load_routes": "semroute.config.routes",
    "BuildReport": "semroute.tuning.build",
    "build_index": "semroute.tuning.build",
    "Router": "semroute.api",
    "route": "semroute.api",
    "complete": "semroute.api",
    "acomplete": "semroute.api",
    "feedback": "semroute.api",
    "Dispatcher": "semroute.dispatch.dispatcher",
    "AsyncDispatchStream": "semroute.dispatch.streaming",
    "Attempt": "semroute.records",
    "DispatchResult": "semroute.dispatch.result",
    "DispatchStream": "semroute.dispatch.streaming",
    "Usage": "semroute.records",
    "UnbelievableUsageWarning": "semroute.records",
    "UnknownPriceWarning": "semroute.config.pricing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'semroute' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
