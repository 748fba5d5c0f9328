"""uvicorn's HTTP protocol, with a response's status line and headers sent with its first body.

uvicorn writes a response's head (status line and headers) and then its body in two socket
sends. On loopback and in virtual machines a send is what costs: each wakes the peer, which
reads the head, finds no body yet and sleeps again until the second. Here the head is held
until the end of the event loop's turn: a body written in the same turn (every non-streamed
response, and a stream whose first chunk is ready) goes out with it in one send; otherwise the
head goes alone when the turn ends, so a stream's head is never held back waiting for its model.
Every other write is sent at once, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["HeadWithBody", "HeadWithBodyProtocol"]

_HEAD = b"HTTP/1."


class HeadWithBody:
    """An asyncio transport that holds a response's head until the next write or the end of
    the loop's turn, whichever comes first (see the module's docstring); everything else is
    the transport it wraps."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif bytes(data[: len(_HEAD)]) == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self._release)
        else:
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def write_eof(self) -> None:
        self._release()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBodyProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own HTTP protocol (httptools where installed, else h11) on a
    :class:`HeadWithBody` transport: uvicorn's ``http`` option for the gateway."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        super().connection_made(wrapped)
