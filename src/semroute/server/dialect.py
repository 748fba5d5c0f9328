"""The API a request speaks: how its body is read and how its answer, stream and errors are
written. A request's walk (:mod:`semroute.server.chat`) is the same for every dialect; only
these four steps differ. :data:`OPENAI` is chat completions; Anthropic's Messages API is
:mod:`semroute.server.anthropic`'s.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from pydantic import ValidationError
from starlette.responses import Response

from semroute.server.errors import ApiError, error_response
from semroute.server.schemas import ChatRequest, invalid_body, parse_chat
from semroute.server.sse import EventStream, Streams

if TYPE_CHECKING:
    from semroute.dispatch.result import DispatchResult
    from semroute.dispatch.streaming import AsyncDispatchStream

__all__ = ["OPENAI", "Dialect", "OpenAI"]

Done = Callable[[str], Awaitable[None]]


class Dialect(Protocol):
    """What differs between the APIs the gateway speaks."""

    endpoint: str
    """The ``endpoint`` label of the request metrics."""

    def parse(self, raw: bytes) -> ChatRequest:
        """The body as a chat-completions request; :class:`ApiError` 400 when it is not one."""
        ...

    def error(self, error: ApiError, headers: Mapping[str, str]) -> Response: ...

    def answer(self, result: DispatchResult, headers: Mapping[str, str]) -> Response: ...

    def stream(
        self,
        stream: AsyncDispatchStream,
        body: ChatRequest,
        headers: Mapping[str, str],
        done: Done,
        streams: Streams,
    ) -> EventStream: ...


class OpenAI:
    """OpenAI's chat completions: ``POST /v1/chat/completions``."""

    endpoint = "chat"

    def parse(self, raw: bytes) -> ChatRequest:
        try:
            return parse_chat(raw)
        except ValidationError as exc:
            raise invalid_body(exc) from None

    def error(self, error: ApiError, headers: Mapping[str, str]) -> Response:
        return error_response(error, headers)

    def answer(self, result: DispatchResult, headers: Mapping[str, str]) -> Response:
        content = json.dumps(result.response.model_dump(), ensure_ascii=False, default=str)
        return Response(content.encode(), 200, dict(headers), "application/json")

    def stream(
        self,
        stream: AsyncDispatchStream,
        body: ChatRequest,
        headers: Mapping[str, str],
        done: Done,
        streams: Streams,
    ) -> EventStream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return EventStream(stream, headers, usage=usage, done=done, streams=streams)


OPENAI = OpenAI()
