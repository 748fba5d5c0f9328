"""uvicorn's HTTP protocol, sending what one turn of the event loop writes on a connection in one
socket send.

uvicorn writes a response's head (status line and headers), then its body, then each piece of a
stream, each in a send of its own. On loopback and in virtual machines a send is what costs:
each wakes the peer, which reads a piece, finds no more and sleeps again until the next. Here
the writes a connection gets during one turn of the event loop are held until the turn ends and
go out together: a non-streamed response's head and body, and the events a model sent together
(a burst that arrived in one read), leave in one send. Nothing waits longer than the turn: an
event that came alone still leaves at once, so a stream is never slowed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["OneSendPerTurn", "OneSendPerTurnProtocol"]


class OneSendPerTurn:
    """An asyncio transport that gathers the writes of one turn of the event loop and sends
    them together when the turn ends (see the module's docstring); everything else is the
    transport it wraps."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._release)
        self._held.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _release(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._release()
        self._transport.close()

    def write_eof(self) -> None:
        self._release()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneSendPerTurnProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own HTTP protocol (httptools where installed, else h11) on a
    :class:`OneSendPerTurn` transport: uvicorn's ``http`` option for the gateway."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = OneSendPerTurn(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        super().connection_made(wrapped)
