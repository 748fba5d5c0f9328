"""uvicorn's HTTP protocol, with fewer socket sends: a response's head goes out with its body,
and a burst of a stream's events in one send.

uvicorn writes a response's head (status line and headers), then its body, then each event of a
stream, each in a send of its own. On loopback and in virtual machines a send is what costs:
each wakes the peer, which reads a piece, finds no more and sleeps again until the next. Here,
per connection and per turn of the event loop:

- the first write of the turn leaves at once (a stream's event that came alone is never held);
- a head waits for the body written after it, and the two leave in one send;
- what is written after the turn's first send (the rest of a burst: events a model sent
  together, read at once) is gathered and leaves in one send when the turn ends.

Nothing waits past the end of its turn: a head without a body yet (a stream's, while its model
has sent nothing) leaves then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["Coalescing", "CoalescingProtocol"]

_HEAD = b"HTTP/1."


class Coalescing:
    """An asyncio transport that sends fewer, larger pieces (see the module's docstring);
    everything else is the transport it wraps."""

    __slots__ = ("_held", "_loop", "_sent", "_transport", "_turn")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._turn = False  # the end of this turn is scheduled
        self._sent = False  # this turn has sent already

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        data = bytes(data)
        if not self._turn:
            self._turn = True
            self._loop.call_soon(self._end_turn)
        if self._sent or data.startswith(_HEAD):
            self._held.append(data)  # until the body, or the end of the turn
            return
        self._sent = True
        self._held.append(data)  # after a held head, if there is one
        self._release()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _end_turn(self) -> None:
        self._turn = self._sent = False
        self._release()

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


class CoalescingProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own HTTP protocol (httptools where installed, else h11) on a
    :class:`Coalescing` transport: uvicorn's ``http`` option for the gateway."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = Coalescing(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        super().connection_made(wrapped)
