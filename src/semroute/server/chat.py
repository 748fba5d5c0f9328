"""``POST /v1/chat/completions`` and ``POST /v1/route``: a request's walk through the gateway.

key → body → hints (headers, and the key's tier) → budget → the pinned model, if one is named
(what the key may use) → the current index's router and dispatcher → the answer (JSON, or server-sent events) with the ``x-semroute-*`` headers → the
metrics and the key's spend. Routing runs in a worker thread (see
:meth:`~semroute.dispatch.dispatcher.Dispatcher.acomplete`); nothing here reads a file or builds a
client per request.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from semroute.decision import Reason
from semroute.dispatch.routing_threads import in_routing_thread
from semroute.dispatch.sessions import SESSION_HEADER, session_key
from semroute.dispatch.streaming import AsyncDispatchStream
from semroute.errors import SemrouteError
from semroute.server.auth import Client, Keys
from semroute.server.cache_report import cache_headers, cache_scope, count_cache
from semroute.server.dialect import OPENAI, Dialect
from semroute.server.errors import ApiError, from_semroute
from semroute.server.headers import decision_headers, hint, safe, served_headers
from semroute.server.quota import charge, check_budget
from semroute.server.ratelimit import check_rate, estimate
from semroute.server.schemas import ChatRequest, invalid_body, parse_chat
from semroute.server.spend import SpendStore
from semroute.server.sse import EventStream, Streams, uncancel
from semroute.server.state import AUTO

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from semroute.decision import Decision
    from semroute.dispatch.result import DispatchResult
    from semroute.server.metrics import Metrics
    from semroute.server.reload import IndexHolder
    from semroute.server.state import Loaded

__all__ = ["Gateway"]

T = TypeVar("T")

TASK_HEADER = "x-task-type"
TIER_HEADER = "x-user-tier"
COST_HEADER = "x-max-cost-usd"
CLIENT_GONE = 499
"""The status counted for a request whose client disconnected before its answer (nginx's)."""
NONE = "none"
"""The model and reason counted for a routed request whose client left before its decision
was returned."""
CUT_REQUEST = (
    "the request was cut: the server shut down before it was answered (server.drain_timeout_s)"
)
"""The error of a request the server cut when it shut down."""
_STREAM_STATUS = {"broken": 502, "disconnected": CLIENT_GONE, "cut": 503}
"""The status counted for a stream that did not end well, by its outcome."""


@dataclass
class Gateway:
    """What every request needs, made once at start."""

    holder: IndexHolder
    spend: SpendStore
    metrics: Metrics
    streams: Streams = field(default_factory=Streams)
    busy: int = 0
    """Chat requests in flight, streams until they end (what the ``in_flight`` gauge shows)."""

    @property
    def keys(self) -> Keys:
        """The keys in force (a reload replaces them)."""
        return self.holder.keys

    @property
    def max_body_bytes(self) -> int:
        return self.holder.settings.max_body_bytes

    async def chat(self, request: Request, dialect: Dialect = OPENAI) -> Response | ASGIApp:
        """A chat request in ``dialect``'s API (default: OpenAI's chat completions)."""
        request_id = uuid.uuid4().hex
        self._in_flight(1)
        out: Response | ASGIApp | None = None
        try:
            out = await self._chat(request, request_id, dialect)
            return out
        finally:
            if not isinstance(out, EventStream):  # a stream is in flight until it ends
                self._in_flight(-1)

    def _in_flight(self, change: int) -> None:
        """Count a chat request in (+1) or out (-1): the gauge, and :attr:`busy`."""
        self.metrics.in_flight.inc(change)
        self.busy += change

    async def route(self, request: Request) -> Response:
        """The decision alone (what `semroute route --json` prints); no model is called."""
        request_id = uuid.uuid4().hex
        loaded = self.holder.current
        decision = None
        try:
            client = self.keys.check(request.headers)
            body = await self._body(request, route_only=True)
            hints = _hints(request.headers, client)
            pin = self._pin(body.model, client, loaded)
            messages = body.message_list()
            request_fields = {"messages": messages, **body.params()}
            decision = await in_routing_thread(
                loaded.router.route, messages, request=request_fields, pin=pin, **hints
            )
        except ApiError as exc:
            return self._refuse("route", exc, request_id, None, loaded.catalog.label)
        except SemrouteError as exc:
            return self._failed("route", exc, request_id, loaded.catalog.label)
        self.metrics.observe("route", 200, decision, loaded.catalog.label, skipped=decision.skipped)
        content = json.dumps(decision.to_dict(), ensure_ascii=False).encode()
        return Response(content, 200, decision_headers(request_id, decision), "application/json")

    async def _chat(
        self, request: Request, request_id: str, dialect: Dialect
    ) -> Response | ASGIApp:
        loaded = self.holder.current  # kept to the end, whatever a reload does meanwhile
        label = loaded.catalog.label
        endpoint = dialect.endpoint
        try:
            client = self.keys.check(request.headers)
            body = dialect.parse(await _read(request, self.max_body_bytes))
            kwargs = {**body.params(), **_hints(request.headers, client)}
            check_budget(self.spend, client)
            check_rate(loaded.shared.limiter, client, lambda: _tokens(body, loaded))
            pin = self._pin(body.model, client, loaded)
        except ApiError as exc:
            return self._refuse(endpoint, exc, request_id, None, label, dialect)
        common: dict[str, Any] = {"stream": body.stream, "request_id": request_id, **kwargs}
        common["cache_scope"] = cache_scope(self.holder.settings.cache_scope, client)
        messages = body.message_list()
        if loaded.router.conversation.sticky:  # an agent run stays on its model
            given = request.headers.get(SESSION_HEADER)
            common["session"] = session_key(client.spend_id, messages, given)
        # Alone, the request is routed on the event loop: it has nothing else to do, and a
        # worker thread's hand-off and return would add about 0.25 ms.
        common["route_inline"] = self.busy == 1
        call = loaded.dispatcher.acomplete(messages, router=loaded.router, model=pin, **common)
        try:
            out = await _unless_disconnected(request, call)
        except SemrouteError as exc:
            return self._failed(endpoint, exc, request_id, label, dialect)
        except asyncio.CancelledError:
            # Only the server cancels a request: it is shutting down and its drain timeout
            # passed. The call was cancelled (and logged); the client is told why, in
            # OpenAI's shape, instead of getting a 500 and the server log a traceback.
            uncancel()
            return self._refuse(endpoint, _cut_request(), request_id, None, label, dialect)
        if out is None:  # the client left: the call was cancelled (and logged)
            # A routed request's decision went with the cancelled call: counted as `none`.
            model = label(pin.chain[0]) if pin is not None else NONE
            reason = Reason.PINNED.value if pin is not None else NONE
            self.metrics.requests.labels(endpoint, "", model, "", reason, str(CLIENT_GONE)).inc()
            return Response(status_code=CLIENT_GONE)
        if isinstance(out, AsyncDispatchStream):
            return self._stream(out, body, client, label, dialect)
        return self._answer(out, client, label, dialect)

    def settle(self, result: DispatchResult, client: Client, label: Any, endpoint: str) -> None:
        """Charge an answered request's cost to its key and count it under ``endpoint``."""
        charge(self.spend, client, result.cost_usd)
        self.metrics.observe(
            endpoint,
            200,
            result.decision,
            label,
            attempts=result.attempts,
            skipped=result.skipped,
            model=result.model,
            cost_usd=result.cost_usd,
        )

    def _answer(
        self, result: DispatchResult, client: Client, label: Any, dialect: Dialect
    ) -> Response:
        self.settle(result, client, label, dialect.endpoint)
        headers = served_headers(
            result.request_id,
            result.decision,
            result.model,
            result.attempts,
            result.skipped,
            result.cost_usd,
        ) | cache_headers(result)
        count_cache(self.metrics, result)
        return dialect.answer(result, headers)

    def _stream(
        self,
        stream: AsyncDispatchStream,
        body: ChatRequest,
        client: Client,
        label: Any,
        dialect: Dialect,
    ) -> ASGIApp:
        headers = served_headers(
            stream.request_id,
            stream.decision,
            stream.model,
            stream.attempts,
            (*stream.decision.skipped, *stream.skipped),
            None,
        ) | cache_headers(stream)

        async def done(outcome: str) -> None:
            self._in_flight(-1)
            count_cache(self.metrics, stream)
            charge(self.spend, client, stream.cost_usd)
            self.metrics.observe(
                dialect.endpoint,
                _STREAM_STATUS.get(outcome, 200),
                stream.decision,
                label,
                attempts=stream.attempts,
                skipped=(*stream.decision.skipped, *stream.skipped),
                model=stream.model,
                cost_usd=stream.cost_usd,
            )

        return dialect.stream(stream, body, headers, done, self.streams)

    @staticmethod
    def _pin(model: str, client: Client, loaded: Loaded) -> Any:
        """The chain a named model pins (None for `auto`). A named model takes the same way as
        `auto` (rules, checks, ceilings), restricted to what the key may use; an undeclared
        name is refused (400) unless the operator allows, one the key may not use too (403)."""
        if model == AUTO:
            return None
        unlisted = loaded.settings.allow_unlisted_models
        return loaded.catalog.pin(model, client, allow_unlisted=unlisted)

    async def _body(self, request: Request, *, route_only: bool = False) -> ChatRequest:
        raw = await _read(request, self.max_body_bytes)
        try:
            return parse_chat(raw, _RouteBody if route_only else ChatRequest)
        except ValidationError as exc:
            raise invalid_body(exc) from None

    def _refuse(
        self,
        endpoint: str,
        exc: ApiError,
        request_id: str,
        decision: Decision | None,
        label: Any,
        dialect: Dialect = OPENAI,
    ) -> Response:
        self.metrics.observe(endpoint, exc.status, decision, label)
        return dialect.error(exc, decision_headers(request_id, decision))

    def _failed(
        self,
        endpoint: str,
        exc: SemrouteError,
        request_id: str,
        label: Any,
        dialect: Dialect = OPENAI,
    ) -> Response:
        error = from_semroute(exc) or ApiError(400, str(exc), code="invalid_request")
        decision: Decision | None = getattr(exc, "decision", None)
        attempts = getattr(exc, "attempts", ())
        # A refusal for cost passed its candidates over too: the decision holds them.
        skipped = getattr(exc, "skipped", ()) or (decision.skipped if decision else ())
        self.metrics.observe(
            endpoint, error.status, decision, label, attempts=attempts, skipped=skipped
        )
        headers = decision_headers(getattr(exc, "request_id", None) or request_id, decision)
        headers["x-semroute-fallbacks"] = safe(",".join(a.model for a in attempts))
        return dialect.error(error, headers)


def _cut_request() -> ApiError:
    return ApiError(503, CUT_REQUEST, type="server_error", code="server_shutting_down")


async def _unless_disconnected(request: Request, call: Awaitable[T]) -> T | None:
    """``call``'s result, or None (``call`` cancelled) if the client disconnects first: a
    model's answer nobody waits for is not worth paying for."""
    work = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        gone.cancel()
    if work.cancelled():
        return None
    return work.result()


async def _disconnected(request: Request) -> None:
    # The body has been read: the next message the server has for this request is that the
    # client went away (or that the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _RouteBody(ChatRequest):
    """``/v1/route`` takes the same body; its ``model`` may be left out (``auto``). A named
    model is checked and pinned as for an answer: the decision is the one the request would
    get."""

    model: str = AUTO


async def _read(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before it is all read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection while sending the body") from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the body is over {limit} bytes (server.max_body_bytes)",
        code="body_too_large",
    )


def _hints(headers: Mapping[str, str], client: Client) -> dict[str, Any]:
    """The routing hints of a request: ``X-Task-Type``, ``X-User-Tier`` (unless the key fixes
    the tier) and ``X-Max-Cost-USD``."""
    hints: dict[str, Any] = {}
    task = hint(headers, TASK_HEADER)
    if task is not None:
        hints["task"] = task
    tier = client.user_tier or hint(headers, TIER_HEADER)
    if tier is not None:
        hints["user_tier"] = tier
    cost = headers.get(COST_HEADER)
    if cost is not None:
        try:
            value = float(cost)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ApiError(
                400,
                f"header X-Max-Cost-USD: should be a positive number of US dollars, not "
                f"{cost[:40]!r}",
                code="invalid_request",
            )
        hints["max_cost_usd"] = value
    return hints


def _tokens(body: ChatRequest, loaded: Loaded) -> int:
    """The tokens a request counts for against its key's ``tpm``."""
    expected = loaded.router.policy.expected_output_tokens
    return estimate(body.message_list(), body.params(), expected)
