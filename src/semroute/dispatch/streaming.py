"""Streamed answers: chunks as they arrive, with the decision known before the first one.

A stream is returned once a model has sent its first chunk, so a model whose stream fails before
that has already been failed over (see :mod:`semroute.dispatch.dispatcher`). When the stream ends, or is
closed, its chunks make up one response (taken in as they pass: :class:`Assembly`) and the
request is logged; a stream may send at most :data:`MAX_STREAM_CHUNKS` of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from semroute.dispatch.chunks import Assembly, RawChunk
from semroute.dispatch.result import text_of
from semroute.dispatch.upstream_read import upstream_error

if TYPE_CHECKING:
    from semroute.decision import Skip
    from semroute.dispatch.call import Call
    from semroute.dispatch.loop import BackgroundLoop
    from semroute.records import Attempt, Usage

__all__ = ["END", "MAX_STREAM_CHUNKS", "AsyncDispatchStream", "DispatchStream"]

END = object()
"""The first chunk of a stream that ended before sending any."""

DROPPED = "the stream was dropped before its end: neither read to its end nor closed"
"""The log line's error of a stream its caller let go of (see AsyncDispatchStream.__del__)."""

MAX_STREAM_CHUNKS = 1 << 18
"""The most chunks one stream may send: one more breaks the stream, and that is its attempt's
error. What a stream's chunks make up is kept until it ends, to log its answer (about 0.3 kB a
chunk from a model called directly, 3.4 kB for LiteLLM's: see :class:`Assembly`), so a model
that never stops would otherwise take memory without end. The longest answers models write
(about 128k tokens, a token or more a chunk) fit in half of it."""


class AsyncDispatchStream:
    """A streamed answer: ``async for chunk in stream`` gives LiteLLM's chunks
    (``ModelResponseStream``), whichever way the model was called.

    ``decision``, ``model`` and ``attempts`` are known before the first chunk (a model whose
    stream fails before it has been failed over already); ``response``, ``usage`` and
    ``cost_usd`` once the stream has ended. The log line is written when it ends or is closed.
    """

    def __init__(self, call: Call, first: Any, rest: AsyncIterator[Any]) -> None:
        self._call = call
        self.request_id = call.request_id
        self.decision = call.decision
        self.model = call.attempts[-1].model
        self.response: Any = None
        """The assembled ``ModelResponse``, once the stream has ended."""
        self.usage: Usage | None = None
        self.cost_usd: float | None = None
        self._done = False
        self._error: str | None = None
        self._chunks = self._run(first, rest)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return tuple(self._call.attempts)

    @property
    def skipped(self) -> tuple[Skip, ...]:
        """The models passed over without being tried (e.g. unhealthy), with why."""
        return tuple(self._call.skipped)

    @property
    def text(self) -> str | None:
        return text_of(self.response)

    @property
    def cache_status(self) -> str | None:
        """The semantic cache's word on the request (see :class:`DispatchResult`)."""
        status: str | None = self._call.log_extra.get("cache")
        return status

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._public()

    def raw(self) -> AsyncIterator[Any]:
        """The chunks as they come: a :class:`RawChunk` from a model called directly, else
        LiteLLM's object (for a relay that needs only :func:`chunk_fields`)."""
        return self._chunks

    async def _public(self) -> AsyncGenerator[Any, None]:
        async for chunk in self._chunks:
            yield chunk.chunk if isinstance(chunk, RawChunk) else chunk

    def stopping(self, error: str) -> None:
        """Say why the stream is about to be stopped (cancelled or closed) before its end: the
        log line carries ``error`` unless the stream ends first."""
        self._error = error

    async def aclose(self) -> None:
        """Stop reading: the connection is released and the log line written."""
        await self._chunks.aclose()
        self._finish(Assembly())  # a stream closed before its first chunk was read

    def __del__(self) -> None:
        # A stream its caller dropped, unread and unclosed, still gets its one log line (what
        # was read of it is gone with it); the gateway always closes its streams.
        if not self._done:
            self._error = self._error or DROPPED
            with contextlib.suppress(Exception):  # also at interpreter exit, modules half gone
                self._finish(Assembly())

    async def __aenter__(self) -> AsyncDispatchStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _finish(self, assembly: Assembly, ended: bool = False) -> None:
        if not self._done:
            self._done = True
            error = None if ended else self._error
            self.response, self.usage, self.cost_usd = self._call.streamed(
                assembly, ended=ended, error=error
            )

    async def _run(self, first: Any, rest: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
        assembly = Assembly()
        ended = False
        try:
            if first is not END:
                assembly.add(first)
                yield first
                async for chunk in rest:
                    if assembly.count >= MAX_STREAM_CHUNKS:
                        text = f"the stream sent more than {MAX_STREAM_CHUNKS} chunks"
                        raise upstream_error(502, text, self.model)
                    assembly.add(chunk)
                    yield chunk
            ended = True
        except self._call.provider.errors as exc:
            self._done = True
            # The provider's exception may hold an echoed key; its masked text is in the attempt.
            raise self._call.broke(exc) from None
        finally:
            self._finish(assembly, ended)
            close = getattr(rest, "aclose", None)
            if callable(close):
                await close()


class DispatchStream:
    """The synchronous :class:`AsyncDispatchStream`: ``for chunk in stream``.

    Its chunks are read on ``loop``, the loop the stream was opened on.
    """

    def __init__(self, inner: AsyncDispatchStream, loop: BackgroundLoop) -> None:
        self._inner = inner
        self._loop = loop
        self.request_id = inner.request_id
        self.decision = inner.decision
        self.model = inner.model

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self._inner.attempts

    @property
    def skipped(self) -> tuple[Skip, ...]:
        return self._inner.skipped

    @property
    def response(self) -> Any:
        """The assembled ``ModelResponse``, once the stream has ended."""
        return self._inner.response

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def cost_usd(self) -> float | None:
        return self._inner.cost_usd

    @property
    def text(self) -> str | None:
        return self._inner.text

    def __iter__(self) -> Iterator[Any]:
        chunks = aiter(self._inner)
        while True:
            try:
                yield self._loop.run(_next(chunks))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Stop reading: the connection is released and the log line written."""
        self._loop.run(self._inner.aclose())

    def __enter__(self) -> DispatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _next(chunks: AsyncIterator[Any]) -> Any:
    return await anext(chunks)
