"""Reading what a directly called model answers (see :mod:`semroute.dispatch.direct`): the
answer, read up to :data:`MAX_ANSWER_BYTES`; a stream, cut into its chunks as the network
delivers it, each line bounded by :data:`MAX_LINE_BYTES` and the whole by
:data:`MAX_ANSWER_BYTES`, its first chunk by a deadline, and its end checked (see
:func:`read_chunks`); and the LiteLLM exception each failure is raised as, so that failover,
health and the attempt's text treat both ways of calling a model alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from semroute.dispatch.chunks import RawChunk

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_LINE_BYTES",
    "Lines",
    "answer_problem",
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


def answer_problem(answer: Any) -> str | None:
    """Why ``answer`` (a whole answer's parsed JSON) is not a chat completion, when it plainly
    is not: an error object sent with a 200 (its message named), or no choices; else None."""
    if not isinstance(answer, dict):
        return f"the answer is not a chat completion: a JSON {type(answer).__name__}"
    if answer.get("choices"):
        return None
    return _error_text(answer) or "the answer has no choices"


def _error_text(data: dict[str, Any]) -> str | None:
    """What an error object an upstream sent in place of an answer or a chunk says (OpenAI's
    ``{"error": {"message": ...}}``, or vLLM's older ``{"object": "error", "message": ...}``);
    None when ``data`` is not one."""
    error = data.get("error")
    if error is None and data.get("object") == "error":
        error = data
    if error is None:
        return None
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message:
        message = json.dumps(error)[:500]
    return f"the model sent an error: {message}"


async def read_chunks(
    response: Any, model: str, seconds: float = 0.0, first_by: float | None = None
) -> AsyncIterator[RawChunk]:
    """A streamed answer's chunks, as they came (LiteLLM's objects are built on demand).

    The body is read as it arrives and cut into lines here: one read often holds a whole event
    (its ``data:`` line and the blank line after it), and aiohttp's line reader costs a round of
    Python calls per line. A chunk whose next one came in the same read says so
    (:attr:`RawChunk.more`).

    ``first_by`` (the event loop's clock) bounds the wait for the first chunk, however the
    bytes trickle in; after it, each read is bounded by the response's own read timeout,
    ``seconds`` (both named in the :class:`litellm.Timeout` raised). An event in OpenAI's error
    shape is an error. The stream ends at ``data: [DONE]``; a body that ends without it is whole
    only when one of its last two chunks (the last, or the one before a usage chunk) carries a
    ``finish_reason``, as servers that do not send ``[DONE]`` end theirs: otherwise it was cut
    short, and that is an error too.
    """
    import asyncio

    import aiohttp

    lines = Lines(model)
    size = 0
    before: RawChunk | None = None  # the last two chunks, for how the stream ended
    latest: RawChunk | None = None
    try:
        while True:
            if first_by is None:
                part = await response.content.readany()
            else:
                async with asyncio.timeout_at(first_by):
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
                    first_by = None
                    before, latest = latest, chunk
                    yield chunk
            if not part:
                if _finished(before) or _finished(latest):
                    return
                text = "the stream ended before its end (no data: [DONE], no finish_reason)"
                raise upstream_error(502, text, model)
    except TimeoutError as exc:  # aiohttp's read timeout is one too
        raise _timeout(first_by is not None, seconds, model) from exc
    except aiohttp.ClientError as exc:
        raise connection_error(exc, model) from None
    finally:
        response.release()


def _finished(chunk: RawChunk | None) -> bool:
    return chunk is not None and any(c.get("finish_reason") for c in chunk.data["choices"])


def _timeout(first: bool, seconds: float, model: str) -> BaseException:
    from litellm import exceptions as errors

    text = f"no first chunk in {seconds:g} s" if first else f"no chunk for {seconds:g} s"
    return errors.Timeout(message=text, model=model, llm_provider="openai")


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
        if sent := _error_text(chunk):
            raise upstream_error(502, sent, model)
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
