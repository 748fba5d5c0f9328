"""The module-level API: ``semroute.route``, ``complete``, ``acomplete`` and ``feedback``.

They use one :class:`Router` and one :class:`~semroute.dispatch.dispatcher.Dispatcher` per index
(``$SEMROUTE_INDEX``, else ``indexes/default``), loaded on first use and kept for the life of the
process: this module owns them. A router routes; a dispatcher sends (``Router.complete`` and
``Router.acomplete`` are gone: use :func:`complete`, or
``Dispatcher.for_index(router.index).complete(messages, router=router)``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from semroute.dispatch.dispatcher import Dispatcher
from semroute.dispatch.feedback import UNSET, check_feedback, feedback_entry
from semroute.dispatch.log import DecisionLogs
from semroute.errors import FeedbackError
from semroute.routing.router import Router, default_index_path

if TYPE_CHECKING:
    from semroute.decision import Decision
    from semroute.dispatch.result import DispatchResult
    from semroute.dispatch.streaming import AsyncDispatchStream, DispatchStream
    from semroute.routing.conversation import Message

__all__ = [
    "Router",
    "acomplete",
    "complete",
    "default_dispatcher",
    "default_router",
    "feedback",
    "route",
]

# --- the defaults: one router and one dispatcher per index path, for the process's life -------

_defaults: dict[Path, tuple[Router, Dispatcher]] = {}
_defaults_lock = threading.Lock()


def _default() -> tuple[Router, Dispatcher]:
    path = default_index_path().resolve()
    found = _defaults.get(path)
    if found is None:
        with _defaults_lock:
            found = _defaults.get(path)
            if found is None:
                router = Router.load(path)
                found = _defaults[path] = (router, Dispatcher.for_index(router.index))
    return found


def default_router() -> Router:
    """The router for ``$SEMROUTE_INDEX`` (or ``indexes/default``), loaded once per process."""
    return _default()[0]


def default_dispatcher() -> Dispatcher:
    """The dispatcher for the same index as :func:`default_router`, made once per process."""
    return _default()[1]


def route(
    query: str | Sequence[Message],
    *,
    request: Mapping[str, Any] | None = None,
    task: str | None = None,
    user_tier: str | None = None,
    max_cost_usd: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Decision:
    """Route ``query`` with the default router (see :func:`default_router`); the request and
    hints feed the index's rules (see :meth:`semroute.routing.router.Router.route`)."""
    return default_router().route(
        query,
        request=request,
        task=task,
        user_tier=user_tier,
        max_cost_usd=max_cost_usd,
        metadata=metadata,
    )


@overload
def complete(
    messages: str | Sequence[Message], *, stream: Literal[False] = ..., **kwargs: Any
) -> DispatchResult: ...
@overload
def complete(
    messages: str | Sequence[Message], *, stream: Literal[True], **kwargs: Any
) -> DispatchStream: ...
def complete(
    messages: str | Sequence[Message], *, stream: bool = False, **kwargs: Any
) -> DispatchResult | DispatchStream:
    """Route ``messages`` with the default router and dispatch them through LiteLLM.

    ``model=`` pins a model (not routed, but held to the rules and cost checks); ``stream=True`` returns a stream of chunks; every
    other keyword goes to LiteLLM. See :meth:`Dispatcher.complete`.
    """
    router, dispatcher = _default()
    return dispatcher.complete(messages, router=router, stream=stream, **kwargs)  # type: ignore[call-overload,no-any-return]


@overload
async def acomplete(
    messages: str | Sequence[Message], *, stream: Literal[False] = ..., **kwargs: Any
) -> DispatchResult: ...
@overload
async def acomplete(
    messages: str | Sequence[Message], *, stream: Literal[True], **kwargs: Any
) -> AsyncDispatchStream: ...
async def acomplete(
    messages: str | Sequence[Message], *, stream: bool = False, **kwargs: Any
) -> DispatchResult | AsyncDispatchStream:
    """The asynchronous :func:`complete`."""
    router, dispatcher = _default()
    return await dispatcher.acomplete(messages, router=router, stream=stream, **kwargs)  # type: ignore[call-overload,no-any-return]


_feedback_logs = DecisionLogs()


def feedback(
    request_id: str,
    *,
    score: float | str,
    route: str | None = UNSET,
    comment: str | None = None,
) -> None:
    """Record feedback on the request ``request_id`` (a result's ``request_id``) in the default
    dispatcher's decision log: ``score`` in [-1, 1], or ``"up"`` / ``"down"``; ``route`` the
    route that should have answered (None: none of them). Raises
    :class:`~semroute.errors.FeedbackError` naming a bad field, or when no decision log is kept."""
    router, dispatcher = _default()
    request_id, checked, route, comment = check_feedback(
        request_id,
        score,
        route=route,
        comment=comment,
        routes=(r.name for r in router.routes),
    )
    settings = dispatcher.config.settings
    log = _feedback_logs.open(settings.log)
    if log is None:
        raise FeedbackError(
            "no decision log is kept; set dispatch.log in the route files or $SEMROUTE_LOG"
        )
    log.write(
        feedback_entry(
            request_id, checked, route=route, comment=comment, log_content=settings.log_content
        )
    )
