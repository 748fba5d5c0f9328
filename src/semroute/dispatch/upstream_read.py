"""Reading what a directly called model answers (see :mod:`semroute.dispatch.direct`): the
answer, read up to :data:`MAX_ANSWER_BYTES`; a stream, cut into its chunks as the network
delivers it, each line bounded by :data:`MAX_LINE_BYTES` and the whole by
:data:`MAX_ANSWER_BYTES`; and the LiteLLM exception each failure is raised as, so that
failover, health and the attempt's text treat both ways of calling a model alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from semroute.dispatch.chunks import RawChunk

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_LINE_BYTES",
    "Lines",
    "caused",
    "connection_error",
    "read_answer",
    "read_chunks",
    "upstream_error",
]


def caused(error: BaseException, cause: BaseException) -> BaseException:
    """``error``, with ``cause`` as its cause (as ``raise error from cause`` sets it)."""
    error.__cause__ = cause
    return error


def upstream_error(status: int, text: str, model: str) -> BaseException:
    """LiteLLM's exception for an upstream's HTTP status (what it raises for the same answer)."""
    from litellm import exceptions as errors

    message = f"OpenAIException - {text}"
    kinds: dict[int, Any] = {
        400: errors.BadRequestError,
        401: errors.AuthenticationError,
        403: errors.PermissionDeniedError,
        404: errors.NotFoundError,
        408: errors.Timeout,
        422: errors.UnprocessableEntityError,
        429: errors.RateLimitError,
        503: errors.ServiceUnavailableError,
    }
    kind = kinds.get(status)
    if kind is not None:
        error: BaseException = kind(message=message, model=model, llm_provider="openai")
        return error
    if status >= 500:
        return errors.InternalServerError(message=message, model=model, llm_provider="openai")
    return errors.APIError(status_code=status, message=message, llm_provider="openai", model=model)


def connection_error(exc: BaseException, model: str) -> BaseException:
    """LiteLLM's exception for a network failure talking to an upstream (``exc``, its cause)."""
    from litellm import exceptions as errors

    error = errors.APIConnectionError(
        message=f"{type(exc).__name__}: {exc}", llm_provider="openai", model=model
    )
    return caused(error, exc)


MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The largest answer read from a model, whole or streamed (a stream's body as it is sent,
every event counted): a larger one is an error (a whole answer fails over, a stream breaks),
not memory that grows without end."""


async def read_answer(response: Any, model: str) -> bytes:
    """The answer's body, read up to :data:`MAX_ANSWER_BYTES`."""
    length = response.content_length
    if length is not None and length <= MAX_ANSWER_BYTES:
        return bytes(await response.read())  # the parser stops at the length
    parts: list[bytes] = []
    size = 0
    while part := await response.content.readany():
        size += len(part)
        if size > MAX_ANSWER_BYTES:
            response.close()
            raise upstream_error(502, f"the answer is longer than {MAX_ANSWER_BYTES} bytes", model)
        parts.append(part)
    return b"".join(parts)


async def read_chunks(response: Any, model: str) -> AsyncIterator[RawChunk]:
    """A streamed answer's chunks, as they came (LiteLLM's objects are built on demand).

    The body is read as it arrives and cut into lines here: one read often holds a whole event
    (its ``data:`` line and the blank line after it), and aiohttp's line reader costs a round of
    Python calls per line. A chunk whose next one came in the same read says so
    (:attr:`RawChunk.more`).
    """
    import aiohttp

    lines = Lines(model)
    size = 0
    try:
        while True:
            part = await response.content.readany()
            size += len(part)
            if size > MAX_ANSWER_BYTES:
                raise upstream_error(
                    502, f"the streamed answer is longer than {MAX_ANSWER_BYTES} bytes", model
                )
            read = lines.feed(part or b"\n")  # at the end: a last line without its newline
            last = _last_chunk_line(read)
            for i, line in enumerate(read):
                chunk = _chunk(line, model)
                if chunk is _DONE:
                    return
                if chunk is not None:
                    chunk.more = i < last
                    yield chunk
            if not part:
                return
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise connection_error(exc, model) from None
    finally:
        response.release()


MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line a streamed answer may send (one chunk's JSON). A longer one breaks the
stream (a 502 in the attempt) instead of growing the buffer without end."""

_DONE = RawChunk({})
"""What :func:`_chunk` gives for ``data: [DONE]``."""


class Lines:
    """A streamed body cut into lines (at ``\\n``, as an event's data line ends), part by part."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._held: list[bytes] = []  # the start of a line whose end has not come yet
        self._size = 0

    def feed(self, part: bytes) -> list[bytes]:
        """The lines ``part`` ends (without their ``\\n``)."""
        if b"\n" not in part:
            self._size += len(part)
            self._check()
            self._held.append(part)
            return []
        if self._held:
            part = b"".join((*self._held, part))
        lines = part.split(b"\n")
        rest = lines.pop()
        self._held, self._size = ([rest], len(rest)) if rest else ([], 0)
        if len(part) > MAX_LINE_BYTES:  # else no line in it can be too long
            self._check(*lines)
        return lines

    def _check(self, *lines: bytes) -> None:
        if self._size > MAX_LINE_BYTES or any(len(line) > MAX_LINE_BYTES for line in lines):
            raise upstream_error(
                502, f"a streamed line is longer than {MAX_LINE_BYTES} bytes", self._model
            )


def _last_chunk_line(lines: list[bytes]) -> int:
    """The index of the last of ``lines`` that carries a chunk (a ``data:`` line other than
    ``[DONE]``), -1 for none. The end is not counted: what came before it is sent on before the
    finished answer is assembled and logged."""
    for i in range(len(lines) - 1, -1, -1):
        data = _data(lines[i])
        if data is not None and data != _DONE_DATA:
            return i
    return -1


_DONE_DATA = b"[DONE]"
"""The data of a stream's last event."""


def _data(line: bytes) -> bytes | None:
    """What a ``data:`` line carries, None for another line."""
    return line[5:].strip() if line.startswith(b"data:") else None


def _chunk(line: bytes, model: str) -> RawChunk | None:
    """The chunk a line of the stream carries: :data:`_DONE` for ``[DONE]``, None for a line
    that is not a ``data:`` line."""
    data = _data(line)
    if data is None:
        return None
    if data == _DONE_DATA:
        return _DONE
    try:
        chunk = json.loads(data)
    except (ValueError, TypeError) as exc:
        error = upstream_error(502, f"a streamed chunk is not JSON: {exc}", model)
        raise caused(error, exc) from None
    problem = _unlike_a_chunk(chunk)
    if problem:
        raise upstream_error(
            502, f"a streamed chunk is not a chat completion chunk: {problem}", model
        )
    if not chunk.get("choices"):  # the usage chunk: an empty choice, as LiteLLM's
        chunk["choices"] = [{"index": 0, "delta": {}}]
        return RawChunk(chunk)
    # a carriage return would end the event's line for the client
    return RawChunk(chunk, None if b"\r" in data else data)


def _unlike_a_chunk(chunk: Any) -> str | None:
    """What keeps ``chunk`` (parsed JSON) from being read as a chat completion chunk, or None."""
    if not isinstance(chunk, dict):
        return f"a JSON {type(chunk).__name__}, not an object"
    choices = chunk.get("choices")
    if not choices:
        return None
    if not isinstance(choices, list):
        return "its choices are not a list"
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta") or {}, dict):
            return "a choice is not an object with a delta object"
    return None
