"""The console's routes under ``/ui``: pages, their small JSON and fragments, sign-in and the
playground's send (see :mod:`semroute.server.console.session` for who may use them).

    GET  /ui                 playground (``?q=TEXT`` renders the decision for TEXT)
    GET  /ui/decision        the playground's decision as an HTML fragment (for typing)
    POST /ui/send            dispatch the playground's query through the gateway (CSRF)
    GET  /ui/traffic         traffic page;  GET /ui/traffic.json  its figures, polled each second
    GET  /ui/log             the decision log, newest first, filtered and paged
    GET  /ui/log/entry       one request's full decision (``?at=OFFSET&id=REQUEST_ID``)
    GET  /ui/routes          routes, calibration, conflicting utterances
    GET|POST /ui/login, POST /ui/logout
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from semroute.errors import SemrouteError
from semroute.server.auth import Client
from semroute.server.console.pages import MAX_QUERY, TOOLS, Pages, hints_of
from semroute.server.console.session import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_S,
    csrf_ok,
    csrf_token,
    new_session,
    session_client,
    set_cookie,
)
from semroute.server.console.traffic import Traffic
from semroute.server.errors import ApiError, from_semroute
from semroute.server.quota import check_budget

if TYPE_CHECKING:
    from semroute.server.chat import Gateway
    from semroute.server.reload import IndexHolder

__all__ = ["console_routes"]

MAX_FORM = 16 << 10
Handler = Callable[[Request, Client], Awaitable[Response]]
SECURITY_HEADERS = {
    # No inline script or style: a value that escaped escaping still could not run.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class _Send(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: str = Field(min_length=1, max_length=MAX_QUERY)
    task: str = Field(default="", max_length=200)
    tier: str = Field(default="", max_length=200)
    max_cost: str = Field(default="", max_length=40)
    tools: bool = False


class Console:
    def __init__(self, holder: IndexHolder, gateway: Gateway) -> None:
        self.holder = holder
        self.gateway = gateway
        self.traffic = Traffic()
        gateway.metrics.listeners.append(self.traffic)
        self.pages = Pages(holder, self.traffic)
        self.env = Environment(
            loader=PackageLoader("semroute.server.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        token, new = csrf_token(request)
        client = session_client(self.holder.keys, request)
        body = self.env.get_template(name).render(
            csrf=token,
            signed_in=client is not None and client.key is not None,
            **context,
        )
        response = Response(body, status, SECURITY_HEADERS, "text/html; charset=utf-8")
        if new:
            set_cookie(response, request, CSRF_COOKIE, token, SESSION_S)
        return response

    def guard(
        self, handler: Handler, *, page: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for a signed-in admin (or anyone, without keys); others are sent to the
        sign-in page (``page``) or get 401."""

        async def guarded(request: Request) -> Response:
            client = session_client(self.holder.keys, request)
            if client is None:
                if not page:
                    return _json({"error": "sign in to the console first"}, 401)
                target = request.url.path
                return RedirectResponse("/ui/login?" + urlencode({"next": target}), 303)
            return await handler(request, client)

        return guarded

    # --- pages --------------------------------------------------------------------------

    async def playground(self, request: Request, client: Client) -> Response:
        data = await self.pages.decision(request.query_params)
        return self.render(request, "playground.html", page="playground", **data)

    async def decision(self, request: Request, client: Client) -> Response:
        data = await self.pages.decision(request.query_params)
        return self.render(request, "decision.html", **data)

    async def traffic_page(self, request: Request, client: Client) -> Response:
        return self.render(request, "traffic.html", page="traffic")

    async def traffic_json(self, request: Request, client: Client) -> Response:
        return _json(await self.pages.traffic_data())

    async def log(self, request: Request, client: Client) -> Response:
        data = await self.pages.log_page(request.query_params)
        return self.render(request, "log.html", page="log", urlencode=urlencode, **data)

    async def entry(self, request: Request, client: Client) -> Response:
        data = await self.pages.entry(request.query_params)
        if data is None:
            return self.render(request, "entry.html", 404, page="log", missing=True)
        pretty = json.dumps(data["record"], indent=2, ensure_ascii=False, default=str)
        return self.render(request, "entry.html", page="log", pretty=pretty, **data)

    async def routes(self, request: Request, client: Client) -> Response:
        data = await self.pages.routes()
        return self.render(request, "routes.html", page="routes", **data)

    # --- sign-in and send ---------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not self.holder.keys.required:
            return RedirectResponse("/ui", 303)
        return self.render(request, "login.html", next=_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return _json({"error": "the form is too large"}, 413)
        given = form.get("key")
        target = _next(form.get("next"))
        if not csrf_ok(request, form.get("csrf")):
            return self.render(
                request, "login.html", 403, next=target, problem="the form expired; try again"
            )
        found = self.holder.keys.find(given.encode("utf-8", "replace")) if given else None
        if found is None or not found.admin:
            problem = (
                "unknown key" if found is None else "this key is not an admin key (admin: true)"
            )
            return self.render(request, "login.html", 403, next=target, problem=problem)
        response = RedirectResponse(target, 303)
        set_cookie(
            response, request, SESSION_COOKIE, new_session(self.holder.keys, found), SESSION_S
        )
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        if form is None or not csrf_ok(request, form.get("csrf")):
            return _json({"error": "missing or wrong CSRF token"}, 403)
        response = RedirectResponse("/ui/login", 303)
        set_cookie(response, request, SESSION_COOKIE, "", 0)
        return response

    async def send(self, request: Request, client: Client) -> Response:
        """The playground's query, dispatched as a chat request (the one state change)."""
        if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
            return _json({"error": "missing or wrong CSRF token; reload the page"}, 403)
        try:
            body = _Send.model_validate_json(await request.body())
        except ValidationError as exc:
            problem = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in problem["loc"]) or "body"
            return _json({"error": f"{where}: {problem['msg']}"}, 400)
        hints, _ = hints_of(body.model_dump(exclude={"tools"}, mode="json"))
        request_fields: dict[str, Any] = {"tools": TOOLS} if body.tools else {}
        return await self._dispatch(body.q, hints, request_fields, client)

    async def _dispatch(
        self, query: str, hints: dict[str, Any], fields: dict[str, Any], client: Client
    ) -> Response:
        loaded = self.holder.current
        metrics, label = self.gateway.metrics, loaded.catalog.label
        try:
            check_budget(self.gateway.spend, client)
            result = await loaded.dispatcher.acomplete(
                [{"role": "user", "content": query}],
                router=loaded.router,
                stream=False,
                request_id=uuid.uuid4().hex,
                **fields,
                **hints,
            )
        except ApiError as exc:
            return _json({"error": exc.message}, exc.status)
        except SemrouteError as exc:
            error = from_semroute(exc) or ApiError(400, str(exc))
            metrics.observe("console", error.status, getattr(exc, "decision", None), label)
            return _json({"error": error.message}, error.status)
        self.gateway.settle(result, client, label, "console")
        choice = result.response.choices[0]
        return _json(
            {
                "request_id": result.request_id,
                "model": result.model,
                "answer": getattr(getattr(choice, "message", None), "content", None) or "",
                "cost_usd": result.cost_usd,
                "fallbacks": [a.model for a in result.attempts if a.error is not None],
            }
        )


async def _form(request: Request) -> dict[str, str] | None:
    """A small url-encoded form (None: over :data:`MAX_FORM` bytes)."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FORM:
                return None
            chunks.append(chunk)
        raw = b"".join(chunks).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(raw, max_num_fields=10).items()}
    except (ClientDisconnect, ValueError):
        return None


def _next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if target and target.startswith("/ui") and "//" not in target and "\\" not in target:
        return target
    return "/ui"


def _json(payload: Any, status: int = 200) -> Response:
    content = json.dumps(payload, ensure_ascii=False, default=str).encode()
    return Response(content, status, {"cache-control": "no-store"}, "application/json")


def console_routes(holder: IndexHolder, gateway: Gateway) -> list[BaseRoute]:
    """The console's routes (mounted by the app when ``server.ui`` is on)."""
    c = Console(holder, gateway)
    g = c.guard
    return [
        Route("/ui", g(c.playground), methods=["GET"]),
        Route("/ui/", g(c.playground), methods=["GET"]),
        Route("/ui/decision", g(c.decision), methods=["GET"]),
        Route("/ui/send", g(c.send, page=False), methods=["POST"]),
        Route("/ui/traffic", g(c.traffic_page), methods=["GET"]),
        Route("/ui/traffic.json", g(c.traffic_json, page=False), methods=["GET"]),
        Route("/ui/log", g(c.log), methods=["GET"]),
        Route("/ui/log/entry", g(c.entry), methods=["GET"]),
        Route("/ui/routes", g(c.routes), methods=["GET"]),
        Route("/ui/login", c.login_form, methods=["GET"]),
        Route("/ui/login", c.login, methods=["POST"]),
        Route("/ui/logout", c.logout, methods=["POST"]),
        Mount("/ui/static", StaticFiles(packages=[("semroute.server.console", "static")])),
    ]
