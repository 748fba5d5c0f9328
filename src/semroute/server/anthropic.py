"""Anthropic's Messages API, ``POST /v1/messages``: the body is mapped onto a chat-completions
request (:mod:`semroute.server.anthropic_schemas`) and walks the gateway as any other (the key,
the budget, the policy with ``model: "auto"`` or a pinned name, the same dispatcher, log and
metrics, endpoint label ``messages``); the answer, the stream and the errors are written in
Anthropic's shapes.

The answer: ``{id: msg_<request id>, type: message, role: assistant, content: [text and
tool_use blocks], model, stop_reason, stop_sequence: null, usage: {input_tokens,
output_tokens}}``; ``stop_reason`` is ``end_turn`` (finish reason ``stop``), ``max_tokens``
(``length``), ``tool_use`` (``tool_calls``) or ``refusal`` (``content_filter``). A stream is
Anthropic's events: ``message_start``, ``ping``, for each block ``content_block_start``,
``content_block_delta`` (``text_delta`` or ``input_json_delta``), ``content_block_stop``, then
``message_delta`` (stop reason and the token counts) and ``message_stop``; a stream that breaks
or is cut at shutdown ends with an ``error`` event.

``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}``, the gateway's estimate (no
model is asked).

Errors are ``{"type": "error", "error": {"type", "message"}}`` with the gateway's status; the
type follows Anthropic's table (see :data:`ERROR_TYPES`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError
from starlette.responses import Response
from starlette.types import Send

from semroute.dispatch.chunks import chunk_fields
from semroute.routing.signals import estimate_tokens, extract
from semroute.server.anthropic_schemas import MessagesRequest, to_chat
from semroute.server.dialect import Done
from semroute.server.errors import ApiError
from semroute.server.schemas import MAX_TOKENS, ChatRequest, invalid_body, parse_body
from semroute.server.sse import EventStream, Streams

if TYPE_CHECKING:
    from semroute.dispatch.result import DispatchResult
    from semroute.dispatch.streaming import AsyncDispatchStream

__all__ = ["ANTHROPIC", "ERROR_TYPES", "Anthropic", "anthropic_error", "count_tokens"]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error type for a status (any other: ``invalid_request_error`` for a 4xx, such as
405, and ``api_error`` for a 5xx: Anthropic keeps ``api_error`` for its own failures)."""
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """The body of an error in Anthropic's shape."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class Anthropic:
    """Anthropic's Messages API."""

    endpoint = "messages"

    def parse(self, raw: bytes) -> ChatRequest:
        try:
            body = parse_body(raw, MessagesRequest)
        except ValidationError as exc:
            raise invalid_body(exc, "Messages API") from None
        try:
            return ChatRequest.model_validate(to_chat(body))
        except ValidationError as exc:
            raise invalid_body(exc) from None

    def error(self, error: ApiError, headers: Mapping[str, str]) -> Response:
        body = anthropic_error(error.status, error.message)
        content = json.dumps(body, ensure_ascii=False).encode()
        return Response(content, error.status, {**headers, **error.headers}, "application/json")

    def answer(self, result: DispatchResult, headers: Mapping[str, str]) -> Response:
        body = message_of(result.response, f"msg_{result.request_id}", result.model)
        content = json.dumps(body, ensure_ascii=False, default=str).encode()
        return Response(content, 200, dict(headers), "application/json")

    def stream(
        self,
        stream: AsyncDispatchStream,
        body: ChatRequest,
        headers: Mapping[str, str],
        done: Done,
        streams: Streams,
    ) -> EventStream:
        return MessageEvents(stream, headers, usage=True, done=done, streams=streams)


ANTHROPIC = Anthropic()


class _CountBody(MessagesRequest):
    """``/v1/messages/count_tokens`` takes the same body without ``max_tokens``."""

    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] = 1


def count_tokens(raw: bytes) -> dict[str, int]:
    """``{"input_tokens": N}`` for a Messages API body, estimated as the router estimates the
    ``input_tokens`` signal (UTF-8 bytes / 4, see :mod:`semroute.routing.signals`), tools
    included; no model is asked. :class:`ApiError` 400 for a bad body."""
    try:
        body = parse_body(raw, _CountBody)
    except ValidationError as exc:
        raise invalid_body(exc, "Messages API") from None
    chat = to_chat(body)
    tools = estimate_tokens(json.dumps(chat["tools"])) if chat.get("tools") else 0
    return {"input_tokens": extract(chat["messages"]).input_tokens + tools}


def message_of(response: Any, ident: str, model: str) -> dict[str, Any]:
    """A chat completion (LiteLLM's response) as an Anthropic message."""
    data: dict[str, Any] = response.model_dump()
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(data.get("usage")),
    }


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` is (a model that wrote
    something else: ``{}``)."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(usage: Any) -> dict[str, int]:
    usage = usage or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }


class MessageEvents(EventStream):
    """A streamed answer as Anthropic's server-sent events (see the module's docstring)."""

    def __init__(self, stream: AsyncDispatchStream, *args: Any, **kwargs: Any) -> None:
        super().__init__(stream, *args, **kwargs)
        self._model = stream.model
        self._ident = f"msg_{stream.request_id}"
        self._started = False
        self._block: tuple[str, int] | None = None  # ("text" | "tool" index, block index)
        self._blocks = 0
        self._stop = "end_turn"
        self._tokens = {"input_tokens": 0, "output_tokens": 0}

    async def _start(self, send: Send) -> None:
        if self._started:
            return
        self._started = True
        message: dict[str, Any] = {
            "id": self._ident,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": dict(self._tokens),
        }
        await _event(send, "message_start", {"message": message})
        await _event(send, "ping", {})

    async def _send_chunk(self, send: Send, chunk: Any) -> None:
        await self._start(send)
        data = chunk_fields(chunk)
        if data.get("usage"):
            self._tokens = _usage(data["usage"])
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                await self._open(send, "text", {"type": "text", "text": ""})
                text = {"type": "text_delta", "text": delta["content"]}
                await self._delta(send, text)
            for call in delta.get("tool_calls") or ():
                await self._tool_call(send, call)
            if choice.get("finish_reason"):
                self._stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")

    async def _tool_call(self, send: Send, call: dict[str, Any]) -> None:
        key = f"tool{call.get('index', 0)}"
        function = call.get("function") or {}
        if self._block is None or self._block[0] != key:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": {},
            }
            await self._open(send, key, block)
        if function.get("arguments"):
            partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
            await self._delta(send, partial)

    async def _open(self, send: Send, key: str, block: dict[str, Any]) -> None:
        if self._block is not None and self._block[0] == key:
            return
        await self._close(send)
        self._block = (key, self._blocks)
        self._blocks += 1
        start = {"index": self._block[1], "content_block": block}
        await _event(send, "content_block_start", start)

    async def _delta(self, send: Send, delta: dict[str, Any]) -> None:
        assert self._block is not None
        await _event(send, "content_block_delta", {"index": self._block[1], "delta": delta})

    async def _close(self, send: Send) -> None:
        if self._block is not None:
            await _event(send, "content_block_stop", {"index": self._block[1]})
            self._block = None

    async def _last_events(self, send: Send, error: dict[str, Any] | None) -> None:
        if error is None:
            await self._start(send)
            await self._close(send)
            delta = {"stop_reason": self._stop, "stop_sequence": None}
            await _event(send, "message_delta", {"delta": delta, "usage": self._tokens})
            await _event(send, "message_stop", {})
        else:
            inner = error.get("error") or {}
            status = 503 if inner.get("code") == "server_shutting_down" else 500
            body = anthropic_error(status, str(inner.get("message") or "the stream failed"))
            await _event(send, "error", {"error": body["error"]})


async def _event(send: Send, kind: str, payload: dict[str, Any]) -> None:
    data = json.dumps({"type": kind, **payload}, ensure_ascii=False, default=str)
    body = f"event: {kind}\ndata: {data}\n\n".encode()
    await send({"type": "http.response.body", "body": body, "more_body": True})
