"""semroute: decide, per request, which model should answer.

    >>> import semroute
    >>> decision = semroute.route("fix this TypeError in my Python script")
    >>> decision.route, decision.model, decision.reason
    >>> result = semroute.complete("fix this TypeError in my Python script")  # via LiteLLM
    >>> result.text, result.model, result.attempts, result.cost_usd

Heavy dependencies (numpy, onnxruntime, FAISS, torch, LiteLLM) load on first use, not on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semroute.decision import Decision, Reason, RouteScore
from semroute.errors import (
    CorruptIndexError,
    DataError,
    DispatchError,
    EncoderError,
    EncoderMismatchError,
    IndexLoadError,
    IndexNotFoundError,
    InvalidQueryError,
    RouteConfigError,
    SemrouteError,
    StaleIndexError,
)

if TYPE_CHECKING:
    from semroute.build import BuildReport, build_index
    from semroute.config import Route, RouterSettings, RouteSet, load_routes
    from semroute.dispatch import (
        AsyncDispatchStream,
        Attempt,
        DispatchResult,
        DispatchStream,
        Usage,
    )
    from semroute.models import UnknownPriceWarning
    from semroute.router import Router, acomplete, complete, route

__version__ = "0.1.0"

__all__ = [
    "AsyncDispatchStream",
    "Attempt",
    "BuildReport",
    "CorruptIndexError",
    "DataError",
    "Decision",
    "DispatchError",
    "DispatchResult",
    "DispatchStream",
    "EncoderError",
    "EncoderMismatchError",
    "IndexLoadError",
    "IndexNotFoundError",
    "InvalidQueryError",
    "Reason",
    "Route",
    "RouteConfigError",
    "RouteScore",
    "RouteSet",
    "Router",
    "RouterSettings",
    "SemrouteError",
    "StaleIndexError",
    "UnknownPriceWarning",
    "Usage",
    "__version__",
    "acomplete",
    "build_index",
    "complete",
    "load_routes",
    "route",
]

_LAZY = {
    "Route": "semroute.config",
    "RouteSet": "semroute.config",
    "RouterSettings": "semroute.config",
    "load_routes": "semroute.config",
    "BuildReport": "semroute.build",
    "build_index": "semroute.build",
    "Router": "semroute.router",
    "route": "semroute.router",
    "complete": "semroute.router",
    "acomplete": "semroute.router",
    "AsyncDispatchStream": "semroute.dispatch",
    "Attempt": "semroute.dispatch",
    "DispatchResult": "semroute.dispatch",
    "DispatchStream": "semroute.dispatch",
    "Usage": "semroute.dispatch",
    "UnknownPriceWarning": "semroute.models",
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
