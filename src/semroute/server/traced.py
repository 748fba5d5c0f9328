"""The gateway's server span: one per HTTP request, when tracing is on (see
:mod:`semroute.tracing`).

An incoming ``traceparent`` (W3C trace context) makes it a child of the caller's trace; routing's
and each model call's spans are its children. It is named ``POST /v1/chat/completions`` (the
method alone for a path the gateway does not serve) and carries the HTTP conventions'
attributes, plus the request id and the decision the gateway's ``x-semroute-*`` headers state.
Health probes and metrics scrapes get no span.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from semroute.tracing import enabled, end_span, start_span, use_span

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TraceRequests"]

HEADERS = {
    "x-semroute-request-id": "semroute.request_id",
    "x-semroute-route": "semroute.route",
    "x-semroute-model": "semroute.model",
    "x-semroute-reason": "semroute.reason",
}
"""Response headers recorded on the server span, and their attribute names."""


class TraceRequests:
    """ASGI middleware giving each HTTP request a server span (nothing when tracing is off)."""

    def __init__(
        self, app: ASGIApp, paths: Collection[str] = (), untraced: Collection[str] = ()
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        """The paths the app serves (a span is named after one of them, else the method)."""
        self.untraced = frozenset(untraced)
        """The paths that get no span (health probes, metrics scrapes)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.untraced or not enabled():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        known = path in self.paths
        server = scope.get("server") or (None, None)
        client = scope.get("client") or (None, None)
        span = start_span(
            f"{method} {path}" if known else method,
            {
                "http.request.method": method,
                "http.route": path if known else None,
                "url.path": path,
                "url.scheme": scope.get("scheme"),
                "server.address": server[0],
                "server.port": server[1],
                "client.address": client[0],
                "user_agent.original": headers.get("user-agent"),
            },
            kind="server",
            carrier=headers,
        )
        answered: dict[str, object] = {}

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["http.response.status_code"] = message["status"]
                for key, value in message.get("headers", ()):
                    name = HEADERS.get(key.decode("latin-1").lower())
                    if name is not None:
                        answered[name] = value.decode("latin-1")
            await send(message)

        try:
            with use_span(span):
                await self.app(scope, receive, sent)
        except BaseException as exc:
            end_span(span, {**answered, "error.type": type(exc).__name__}, error=str(exc))
            raise
        status = answered.get("http.response.status_code")
        failed = isinstance(status, int) and status >= 500
        end_span(span, answered, error=f"status {status}" if failed else None)
