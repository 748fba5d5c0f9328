"""The gateway's ASGI app: OpenAI's chat-completions API over one index, plus its decisions,
models, health and metrics.

    POST /v1/chat/completions   model "auto" routes; a model or tier name pins it
    POST /v1/messages           Anthropic's Messages API, routed the same way
    POST /v1/messages/count_tokens  its input-token estimate (no model is asked)
    POST /v1/route              the decision only (what `semroute route --json` prints)
    POST /v1/feedback           a score (and the right route) for an answer, into the log
    GET  /v1/models             auto, the declared models, the tiers
    GET  /healthz               the process is up
    GET  /readyz                an index is loaded (and the shared store answers, when set)
    GET  /metrics               Prometheus
    GET  /ui                    the console (see semroute.server.console; server.ui: false: off)

:func:`create_app` builds it from a loaded index; :func:`app_from_env` is the factory uvicorn's
worker processes import (``semroute serve`` passes the index in ``$SEMROUTE_INDEX``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from semroute.config.server import ServerSettings
from semroute.dispatch.direct import close_direct_clients
from semroute.dispatch.providers import CLOSE_TRIES, close_litellm_clients, import_litellm
from semroute.routing.router import default_index_path
from semroute.server.anthropic import ANTHROPIC, count_tokens
from semroute.server.chat import Gateway
from semroute.server.chat import _read as read_body
from semroute.server.console import console_routes
from semroute.server.errors import ApiError, error_response
from semroute.server.feedback import FeedbackEndpoint
from semroute.server.metrics import CONTENT_TYPE, Metrics
from semroute.server.reload import IndexHolder
from semroute.server.sse import CUT_SECONDS
from semroute.server.state import Loaded, load
from semroute.server.traced import TraceRequests
from semroute.tracing import shutdown as shutdown_tracing

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["app_from_env", "create_app", "quick_exit"]

log = logging.getLogger("semroute.server")

SWITCH_INTERVAL_S = 0.001
"""How long a thread may hold the interpreter lock before the event loop gets a turn (Python's
default: 5 ms). Queries are routed in worker threads; with the default, a chunk of a stream being
relayed could wait for a routing thread's turn to end. At 1 ms, the p99 of the time between a
long stream's chunks through the gateway came down from +4.1 and +5.2 ms over direct's to +3.0
and +3.3 ms (scripts/bench_gateway.py --smoke --slow-streams 256, two runs each, interleaved),
throughput unchanged. Set while the server runs, restored when it stops."""


def create_app(
    loaded: Loaded, settings: ServerSettings | None = None, *, freeze_loaded: bool = False
) -> Starlette:
    """The app serving ``loaded`` (``settings``: default the index's own `server:` block).
    Raises :class:`~semroute.errors.ServeError` when a key's variable is not set.

    ``freeze_loaded``: the app is its process's one job (``semroute serve``): once started,
    what is loaded is left out of every later garbage collection (see :func:`_freeze`)."""
    holder = IndexHolder(loaded, settings)
    metrics = Metrics(
        lambda: (holder.shared.health, holder.current.catalog.models), lambda: holder.current.drift
    )
    gateway = Gateway(holder, loaded.shared.spend, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # LiteLLM takes a second or two to import: pay it now, not on the first request.
        await asyncio.to_thread(import_litellm)
        if freeze_loaded:
            _freeze()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        watch = asyncio.create_task(holder.watch())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, holder.reload_soon, "SIGHUP")
        try:
            yield
        finally:
            # The server cancels the streams that outlived its drain timeout: let each send its
            # error event and write its log line before the logs and clients close.
            await gateway.streams.settled(CUT_SECONDS + 0.5)
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            holder.close()
            sys.setswitchinterval(switch)
            await close_direct_clients()
            await _close_litellm_clients()
            await asyncio.to_thread(shutdown_tracing)  # send the last spans

    api = _routes(gateway, holder, metrics)
    # Probes and scrapes are not traced, nor the console's pages: a trace per API request.
    untraced = ("/healthz", "/readyz", "/metrics")
    tracing = [Middleware(TraceRequests, paths=[r.path for r in api], untraced=untraced)]
    routes: list[BaseRoute] = [*api]
    if holder.settings.ui:
        routes += console_routes(holder, gateway)
    app = Starlette(routes=routes, lifespan=lifespan, middleware=tracing)
    app.state.holder = holder
    app.state.gateway = gateway
    _add_error_handlers(app)
    return app


def _routes(gateway: Gateway, holder: IndexHolder, metrics: Metrics) -> list[Route]:
    async def chat(request: Request) -> Any:
        return await gateway.chat(request)

    async def messages(request: Request) -> Any:
        return await gateway.chat(request, ANTHROPIC)

    async def count(request: Request) -> Response:
        try:
            gateway.keys.check(request.headers)
            raw = await read_body(request, gateway.max_body_bytes)
            return _json(count_tokens(raw))
        except ApiError as exc:
            return ANTHROPIC.error(exc, {})

    async def route(request: Request) -> Response:
        return await gateway.route(request)

    feedback_endpoint = FeedbackEndpoint(holder)

    async def feedback(request: Request) -> Response:
        return await feedback_endpoint(request)

    async def models(request: Request) -> Response:
        try:
            gateway.keys.check(request.headers)
        except ApiError as exc:
            return error_response(exc)
        current = holder.current
        return _json(current.catalog.listing(current.created))

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        shared = holder.shared
        # May PING Redis (at most once per back-off, up to its timeout): off the event loop.
        if not await asyncio.to_thread(shared.ready):
            problem = f"the shared state at {shared.where} cannot be reached"
            return _json({"status": "unavailable", "problem": problem}, 503)
        return _json({"status": "ready", "index": str(holder.path), "reloads": holder.reloads})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), 200, media_type=CONTENT_TYPE)

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count, methods=["POST"]),
        Route("/v1/route", route, methods=["POST"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


async def _close_litellm_clients() -> None:
    """Close the HTTP clients LiteLLM cached and stop its logging worker (it keeps both per
    loop and never closes them itself: they would outlive the server)."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    error = await close_litellm_clients()
    if error is not None:
        log.warning(
            "semroute serve: LiteLLM's HTTP clients were not all closed (%s tries): "
            "%s; the process exits all the same",
            CLOSE_TRIES,
            error,
        )
    with contextlib.suppress(ValueError, RuntimeError):  # a worker started on another loop
        await GLOBAL_LOGGING_WORKER.stop()


def _add_error_handlers(app: Starlette) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        known = {
            404: (f"no such endpoint: {request.url.path}", "not_found"),
            405: (f"{request.method} is not allowed on {request.url.path}", "method_not_allowed"),
        }
        message, code = known.get(status, ("request refused", "invalid_request"))
        # A 405 says which methods the path takes (`Allow`, which HTTP requires of a 405).
        headers = exc.headers if isinstance(exc, HTTPException) else None
        error = ApiError(status, message, code=code, headers=headers)
        return _error_for(request, error)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # A bug of the gateway: the traceback goes to the server's log, never to the client.
        log.error("semroute serve: internal error on %s", request.url.path, exc_info=exc)
        error = ApiError(500, "internal error; see the server log", type="server_error")
        return _error_for(request, error)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


def _error_for(request: Request, error: ApiError) -> Response:
    """``error`` in the shape of the API the request's path belongs to."""
    if "/messages" in request.url.path:
        return ANTHROPIC.error(error, {})
    return error_response(error)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload).encode(), status, media_type="application/json")


def _freeze() -> None:
    """Leave what the server has loaded (the index, the encoder, LiteLLM's modules: some
    340,000 objects) out of every later garbage collection. Python's full collection walks every
    object there is: with LiteLLM loaded, one took up to 219 ms, a pause of the event loop and
    of every stream it relays, several times a minute under load. Garbage already made is
    collected first, so none of it is kept for good. Not undone: the process ends with the
    server (and :func:`quick_exit` freezes what is left at exit)."""
    gc.collect()
    gc.freeze()


def quick_exit() -> None:
    """Let the process exit as soon as the server is done: at exit, the interpreter's last
    garbage collection walks every object LiteLLM created (seconds on a busy machine, past
    ``drain_timeout_s``); frozen objects are skipped. Files and logs are closed already."""
    atexit.register(gc.freeze)


def app_from_env() -> ASGIApp:
    """The app for the index in ``$SEMROUTE_INDEX`` (else ``indexes/default``): what each of
    uvicorn's worker processes builds."""
    quick_exit()
    path = Path(default_index_path())
    return create_app(load(path), freeze_loaded=True)
