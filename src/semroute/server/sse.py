"""A streamed answer as server-sent events, in OpenAI's chunk format, ending ``data: [DONE]``.

Each chunk is sent as it arrives (nothing is buffered). While it streams, the response also
listens for the client: a client that disconnects cancels the read from the model, which closes
the upstream connection, and the request's log line is written all the same. A stream that
breaks after it started ends with an ``error`` event in OpenAI's error shape (the official
clients raise it) and then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.types import Message, Receive, Scope, Send

from semroute.dispatch.streaming import AsyncDispatchStream
from semroute.errors import DispatchError
from semroute.server.errors import from_semroute

__all__ = ["EventStream"]

DONE = b"data: [DONE]\n\n"
CLOSE_SECONDS = 5.0
"""How long closing the upstream stream may take once the client is gone."""


class EventStream:
    """An ASGI response streaming ``stream``'s chunks; ``done(outcome)`` is awaited at the end
    with ``"ok"``, ``"broken"`` or ``"disconnected"``."""

    def __init__(
        self,
        stream: AsyncDispatchStream,
        headers: Mapping[str, str],
        *,
        usage: bool,
        done: Callable[[str], Awaitable[None]],
    ) -> None:
        self._stream = stream
        self._headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # a proxy in front must not buffer the events
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]
        self._usage = usage
        self._done = done
        self._sent = False
        self.outcome = "ok"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        try:
            async with anyio.create_task_group() as group:

                async def pump() -> None:
                    await self._pump(send)
                    group.cancel_scope.cancel()

                group.start_soon(pump)
                await self._listen(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
                await self._stream.aclose()  # writes the log line if the stream did not end
                await self._done(self.outcome)

    async def _listen(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                # Also what the server says once the whole answer is sent.
                if not self._sent:
                    self.outcome = "disconnected"
                return

    async def _pump(self, send: Send) -> None:
        try:
            async for chunk in self._stream:
                data = _chunk_data(chunk, self._usage)
                if data is not None:
                    await send(_body(b"data: " + data + b"\n\n"))
        except DispatchError as exc:
            self.outcome = "broken"
            error = from_semroute(exc)
            payload = error.body() if error is not None else {"error": {"message": str(exc)}}
            await send(_body(b"data: " + json.dumps(payload).encode() + b"\n\n"))
        await send(_body(DONE))
        self._sent = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


def _chunk_data(chunk: Any, usage: bool) -> bytes | None:
    """A LiteLLM chunk as OpenAI's JSON. The usage chunk semroute asks the model for (to log
    the tokens) reaches the client only if it asked for it too: a chunk without choices would
    break clients that read ``chunk.choices[0]``."""
    data: dict[str, Any] = chunk.model_dump(exclude_none=True)
    if not usage:
        data.pop("usage", None)
        if not data.get("choices"):
            return None
    return json.dumps(data, ensure_ascii=False, default=str).encode()
