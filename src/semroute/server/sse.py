"""A streamed answer as server-sent events, in OpenAI's chunk format, ending ``data: [DONE]``.

Each chunk is sent as it arrives (nothing is buffered); chunks that arrive together, in one read
of the model's answer, leave together, in one send. While it streams, the response also
listens for the client: a client that disconnects cancels the read from the model, which closes
the upstream connection, and the request's log line is written all the same. A stream that
breaks after it started ends with an ``error`` event in OpenAI's error shape (the official
clients raise it) and then ``[DONE]``. So does a stream cut because the server shuts down (the
stream outlived ``server.drain_timeout_s`` after SIGTERM: the server cancels it): its log line
says it was cut, and the response ends cleanly, so no traceback is written.

The chunks are OpenAI's: the usage chunk (sent when the client asks for it with
``stream_options.include_usage``) has ``"choices": []``, and a chunk that carries nothing (no
delta, no finish reason, no usage) is not sent. A chunk of a model called directly is sent as
the model wrote it (its null fields too, as OpenAI's own API sends them), unless something of
it must go; LiteLLM's chunks, and those, are written without the fields that are null.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.types import Message, Receive, Scope, Send

from semroute.dispatch.chunks import chunk_fields
from semroute.dispatch.streaming import AsyncDispatchStream
from semroute.errors import DispatchError
from semroute.server.errors import ApiError, from_semroute

__all__ = ["CUT", "EventStream", "Streams", "uncancel"]

DONE = b"data: [DONE]\n\n"
CLOSE_SECONDS = 5.0
"""How long closing the upstream stream may take once the client is gone."""
CUT_SECONDS = 1.0
"""How long telling the client that its stream is cut (and closing upstream) may take."""
CUT = "the stream was cut: the server shut down before it ended (server.drain_timeout_s)"
"""The error of a stream the server cut when it shut down (the log line's and the client's)."""
LEFT = "the client disconnected before the stream ended"
"""The error in the log line of a stream whose client went away before its end."""


class Streams:
    """The streams being sent, so that shutdown can wait for cut ones to end cleanly."""

    def __init__(self) -> None:
        self._open: set[asyncio.Event] = set()

    def __len__(self) -> int:
        return len(self._open)

    async def settled(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no stream is being sent."""
        with anyio.move_on_after(timeout):
            while self._open:
                await next(iter(self._open)).wait()
        return not self._open


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
        streams: Streams | None = None,
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
        self._streams = streams if streams is not None else Streams()
        self._sent = False
        self.outcome = "ok"
        """``ok``, ``broken`` (the model's stream failed), ``disconnected`` or ``cut``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ended = asyncio.Event()
        self._streams._open.add(ended)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            await self._serve(receive, send)
        except anyio.get_cancelled_exc_class():
            # Only the server cancels a response: its drain timeout passed. The answer is
            # ended here, so the cancellation stops with it (no traceback in the server log).
            uncancel()
            self._cut()
            with anyio.CancelScope(shield=True), anyio.move_on_after(CUT_SECONDS):
                await self._end(send, _cut_event())
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
                # Writes the log line if the stream did not end.
                await self._stream.aclose()
                await self._done(self.outcome)
            self._streams._open.discard(ended)
            ended.set()

    async def _serve(self, receive: Receive, send: Send) -> None:
        chunks = self._stream.raw()
        # The model's first chunk is in hand (a stream is returned once it has come): relayed
        # here, it leaves with the head in one send, and the pump's first write, a turn of the
        # loop later, is the next chunk, which leaves at once.
        if not await self._pump(send, chunks, first=True):
            return
        async with anyio.create_task_group() as group:

            async def pump() -> None:
                await self._pump(send, chunks)
                group.cancel_scope.cancel()

            group.start_soon(pump)
            try:
                await self._listen(receive)
            except anyio.get_cancelled_exc_class():
                if not group.cancel_scope.cancel_called:  # the server's, not the pump's
                    self._cut()
                raise
            group.cancel_scope.cancel()

    def _cut(self) -> None:
        # Said before the read from the model is cancelled, so that its log line says it.
        self.outcome = "cut"
        self._stream.stopping(CUT)

    async def _listen(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                # Also what the server says once the whole answer is sent.
                if not self._sent:
                    self.outcome = "disconnected"
                    # Said before the read from the model is cancelled, so that its log line
                    # tells a stream the client left from one that ended.
                    self._stream.stopping(LEFT)
                return

    async def _pump(self, send: Send, chunks: AsyncIterator[Any], *, first: bool = False) -> bool:
        """Relay ``chunks`` as they come (:func:`chunk_fields`), then the end; with ``first``,
        only the first chunk and those that came with it. Chunks that came in one read of the
        model's answer (:attr:`~semroute.dispatch.chunks.RawChunk.more`) leave in one send: the
        next one follows without a wait, so nothing is held back. True while the stream goes on.
        """
        events = Batch()
        try:
            async for chunk in chunks:
                await self._send_chunk(events, chunk)
                if getattr(chunk, "more", False):
                    continue
                if events.parts:
                    await send(events.message(more=True))
                    events = Batch()
                if first:
                    return True
        except DispatchError as exc:
            self.outcome = "broken"
            error = from_semroute(exc)
            payload = error.body() if error is not None else {"error": {"message": str(exc)}}
            await self._end(send, payload, events)
            return False
        await self._end(send, None, events)
        return False

    async def _send_chunk(self, send: Send, chunk: Any) -> None:
        data = _chunk_data(chunk, self._usage)
        if data is not None:
            await send(_body(b"data: " + data + b"\n\n"))

    async def _end(
        self, send: Send, error: dict[str, Any] | None, events: Batch | None = None
    ) -> None:
        """Send the last events (:meth:`_last_events`) and end the body, in one message, after
        ``events`` (those not sent yet)."""
        if self._sent:
            return
        self._sent = True
        events = events if events is not None else Batch()
        await self._last_events(events, error)
        await send(events.message(more=False))

    async def _last_events(self, send: Send, error: dict[str, Any] | None) -> None:
        """``error`` (an event in OpenAI's error shape), then ``[DONE]``."""
        if error is not None:
            await send(_body(b"data: " + json.dumps(error).encode() + b"\n\n"))
        await send(_body(DONE))


class Batch:
    """A ``send`` that gathers the events written to it, to go to the client as one message:
    one socket send for what one chunk (or the stream's end) makes, not one per event."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        self.parts.append(message["body"])

    def message(self, *, more: bool) -> Message:
        return {"type": "http.response.body", "body": b"".join(self.parts), "more_body": more}


def _body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


def _chunk_data(chunk: Any, usage: bool) -> bytes | None:
    """A LiteLLM chunk as OpenAI's JSON, or None when it is not sent.

    LiteLLM gives the usage chunk an empty choice; OpenAI's has ``"choices": []``. The usage
    chunk semroute asks the model for (to log the tokens) reaches the client only if it asked
    for it too (a chunk without choices would break clients that read ``chunk.choices[0]``).
    A chunk with nothing in it (LiteLLM's empty delta after the finish reason) is dropped.
    A directly called model's chunk that needs none of this is sent as the model wrote it.
    """
    raw: bytes | None = getattr(chunk, "raw", None)  # a directly called model's JSON, as it came
    if (
        raw is not None
        and (usage or chunk.data.get("usage") is None)
        and not any(_empty(c) for c in chunk.data["choices"])
    ):
        return raw  # sent on as it is: reading and writing it again would cost every chunk
    data = chunk_fields(chunk)
    if not usage:
        data.pop("usage", None)
    data["choices"] = [c for c in data.get("choices") or () if not _empty(c)]
    if not data["choices"] and "usage" not in data:
        return None
    return json.dumps(data, ensure_ascii=False, default=str).encode()


def _empty(choice: Any) -> bool:
    """Whether a chunk's choice carries nothing: no delta, no finish reason, no logprobs."""
    if not isinstance(choice, dict):
        return False
    return (
        not choice.get("delta") and not choice.get("finish_reason") and not choice.get("logprobs")
    )


def _cut_event() -> dict[str, Any]:
    return ApiError(503, CUT, type="server_error", code="server_shutting_down").body()


def uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
