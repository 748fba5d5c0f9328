"""Hostile input to the decision log and to streams: a log write never fails or blocks a request,
every line is valid UTF-8 JSON, and a stream that breaks or is closed early is reported and logged.

Streams are broken for real: FakeProvider sends some events, then drops the connection.
"""

from __future__ import annotations

import json
import os
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from semroute import DispatchError
from semroute.dispatch.log import DecisionLog, summarise
from semroute.testing import FakeProvider
from tests.provider_kit import build, log_lines, run

# Every test here reaches FakeProvider with its key, and writes no log $SEMROUTE_LOG names.
pytestmark = pytest.mark.usefixtures("provider_key")


def strict_json(line: bytes) -> Any:
    """Parse as a strict reader would: UTF-8 only, no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line.decode("utf-8"), parse_constant=refuse)


# A model under a loaded CI machine may take longer than the shared tests' one second to send its
# first event; a timeout then would fail the stream over and prove nothing about breaking it.
PATIENT = {"timeout": 30}


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- lone surrogates and values JSON cannot hold ----------------------------------------------


def test_an_answer_with_a_lone_surrogate_is_answered_and_logged_as_utf8(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.answer("weather-model", text="fix \ud800 this")
    router, dispatcher = build(tmp_path, provider, dispatch={**PATIENT, "log_content": True})
    result = dispatcher.complete("will it rain today", router=router)
    assert result.text == "fix \ud800 this"  # the caller gets what the provider sent
    (raw,) = (tmp_path / "decisions.jsonl").read_bytes().splitlines()
    line = strict_json(raw)
    assert line["answer"] == "fix \ufffd this"
    assert line["messages"] == [{"role": "user", "content": "will it rain today"}]


def test_a_record_json_cannot_hold_is_made_valid_or_skipped_never_raised(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.jsonl")
    log.write({"request_id": "a", "answer": "x\udfffy", "cost_usd": float("nan")})
    log.write({"request_id": "b", "model_ms": float("inf"), "messages": [{"content": "\ud83d"}]})
    first, second = (strict_json(raw) for raw in (tmp_path / "log.jsonl").read_bytes().splitlines())
    assert (first["answer"], first["cost_usd"]) == ("x\ufffdy", None)
    assert (second["model_ms"], second["messages"]) == (None, [{"content": "\ufffd"}])
    with pytest.warns(RuntimeWarning, match="cannot write a line of the decision log"):
        log.write({"request_id": "c", "bad": {("tuple", "key"): 1}})
    assert len((tmp_path / "log.jsonl").read_bytes().splitlines()) == 2


# --- a log path that is not a regular file ----------------------------------------------------


def write_in_thread(log: DecisionLog) -> tuple[threading.Thread, list[Any]]:
    caught: list[Any] = []

    def work() -> None:
        with pytest.warns(RuntimeWarning) as record:
            log.write({"request_id": "r"})
        caught.extend(record)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=10)
    return thread, caught


def test_a_fifo_without_a_reader_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "log.jsonl"
    os.mkfifo(fifo)
    thread, caught = write_in_thread(DecisionLog(fifo))
    blocked = thread.is_alive()
    if blocked:  # release the writer stuck in open() so the test process can end
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(timeout=10)
    assert not blocked, "writing the log blocked on a FIFO nobody reads"
    assert len(caught) == 1 and "not a regular file" in str(caught[0].message)


def test_a_fifo_with_a_reader_is_refused_too(tmp_path: Path) -> None:
    fifo = tmp_path / "log.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        thread, caught = write_in_thread(DecisionLog(fifo))
        assert not thread.is_alive()
        assert len(caught) == 1 and "not a regular file" in str(caught[0].message)
        assert os.read(reader, 100) == b""  # nothing went into the pipe
    finally:
        os.close(reader)


def test_a_request_logged_to_a_fifo_is_answered_with_a_warning(
    tmp_path: Path, provider: FakeProvider
) -> None:
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    router, dispatcher = build(tmp_path, provider, dispatch={**PATIENT, "log": str(fifo)})
    outcome: list[Any] = []

    def request() -> None:
        with pytest.warns(RuntimeWarning, match="decision log"):
            outcome.append(dispatcher.complete("will it rain today", router=router).text)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(timeout=10)
        pytest.fail("the request blocked on the FIFO log")
    assert outcome == ["Hello from weather-model."]


# --- stats on lines of the wrong shape --------------------------------------------------------


def good(i: int, **fields: Any) -> str:
    record = {"request_id": f"r{i}", "route": "code", "model": "m", "fallbacks": []}
    return json.dumps({**record, "routing_ms": 2.0, "model_ms": 10.0, "cost_usd": 0.5, **fields})


@pytest.mark.parametrize(
    "bad",
    [
        good(9, routing_ms="fast"),
        good(9, route=["a", "list"]),
        good(9, model={"a": "dict"}),
        good(9, fallbacks="backup"),
        good(9, error=True),
        good(9, cost_usd=True),
        good(9, request_id=7),
        good(9).replace('"cost_usd": 0.5', '"cost_usd": NaN'),
        good(9).replace('"routing_ms": 2.0', '"routing_ms": Infinity'),
        good(9).replace('"model_ms": 10.0', '"model_ms": 1e999'),
        good(9).replace('"model_ms": 10.0', '"model_ms": ' + "9" * 400),
        "[" * 100_000 + "]" * 100_000,
        '{"request_id": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=lambda bad: bad[:40],
)
def test_a_line_of_the_wrong_shape_is_counted_as_malformed(bad: str) -> None:
    stats = summarise([good(1), bad, good(2)]).to_dict()
    assert (stats["requests"], stats["malformed_lines"]) == (2, 1)
    assert stats["avg_cost_usd"] == 0.5
    assert stats["latency_ms"]["total"] == {"p50": 12.0, "p95": 12.0}
    strict_json(json.dumps(stats, allow_nan=False).encode())


# --- streams that break, and streams closed early ---------------------------------------------


def test_a_stream_that_breaks_midway_raises_dispatch_error_and_logs_it(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.break_stream("weather-model", after=2, text="rain is likely tomorrow")
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    assert stream.model == "weather-model"
    received: list[Any] = []
    with pytest.raises(DispatchError, match="broke") as info:
        for chunk in stream:
            received.append(chunk)
    # The role event arrives, then at most the one word sent before the drop (LiteLLM's stream
    # wrapper may still hold a chunk back when the connection breaks).
    assert received and "rain".startswith(text_of(received))
    (attempt,) = info.value.attempts
    assert attempt.model == "weather-model" and attempt.error
    (line,) = log_lines(tmp_path)
    assert line["error"] and line["model"] is None and line["stream"] is True
    assert line["request_id"] == info.value.request_id == stream.request_id


async def _read_async(dispatcher: Any, router: Any) -> tuple[list[Any], DispatchError | None]:
    """Stream one weather question to its end: the chunks read, and the error that ended it."""
    stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
    received: list[Any] = []
    try:
        async for chunk in stream:
            received.append(chunk)
    except DispatchError as exc:
        return received, exc
    return received, None


def test_an_async_stream_that_breaks_midway_raises_dispatch_error_and_logs_it(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.break_stream("weather-model", after=3, text="rain is likely tomorrow")
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)

    received, error = run(_read_async(dispatcher, router))
    assert error is not None, "the broken stream ended as if it had finished"
    assert received and "rain is".startswith(text_of(received))
    (line,) = log_lines(tmp_path)
    assert line["error"] and line["request_id"] == error.request_id


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "litellm"])
@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-chunk-over"])
def test_a_stream_with_more_chunks_than_the_limit_breaks_and_is_logged(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, direct: bool, over: int
) -> None:
    from semroute.dispatch import streaming

    text = "rain is likely tomorrow and the day after"
    provider.answer("weather-model", text=text)
    router, dispatcher = build(tmp_path, provider, dispatch={**PATIENT, "direct": direct})

    whole, error = run(_read_async(dispatcher, router))  # the stream's length, unbounded
    assert error is None and text_of(whole) == text
    limit = len(whole) - over
    monkeypatch.setattr(streaming, "MAX_STREAM_CHUNKS", limit)
    received, error = run(_read_async(dispatcher, router))
    lines = log_lines(tmp_path)
    assert len(lines) == 2
    if not over:
        assert error is None and text_of(received) == text and not lines[1]["error"]
        return
    assert error is not None, "a stream past the limit ended as if it had finished"
    assert len(received) == limit  # every chunk up to the limit was relayed
    (attempt,) = error.attempts
    assert f"the stream sent more than {limit} chunks" in (attempt.error or "")
    assert lines[1]["error"] == "the stream from 'weather-model' broke"
    assert lines[1]["request_id"] == error.request_id


def test_a_stream_broken_before_its_first_chunk_fails_over(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.break_stream("weather-model", after=0)
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    assert stream.model == "backup"
    assert text_of(list(stream)) == "Hello from backup."
    (line,) = log_lines(tmp_path)
    assert line["model"] == "backup" and line["fallbacks"] == ["weather-model"]


def test_close_writes_the_log_line_once(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("weather-model", text="rain is likely tomorrow afternoon")
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    chunks = iter(stream)
    next(chunks)
    assert log_lines(tmp_path) == []  # still streaming
    stream.close()
    (line,) = log_lines(tmp_path)
    assert line["request_id"] == stream.request_id and line["error"] is None
    assert line["model"] == "weather-model" and line["stream"] is True
    stream.close()
    assert len(log_lines(tmp_path)) == 1


def test_close_before_the_first_chunk_is_read_writes_the_log_line(
    tmp_path: Path, provider: FakeProvider
) -> None:
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    stream.close()
    (line,) = log_lines(tmp_path)
    assert line["request_id"] == stream.request_id


def test_leaving_the_with_block_writes_the_log_line(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("weather-model", text="rain is likely tomorrow afternoon")
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    with stream as open_stream:
        assert open_stream is stream
        next(iter(stream))
        assert log_lines(tmp_path) == []
    (line,) = log_lines(tmp_path)
    assert line["request_id"] == stream.request_id


def test_aclose_and_async_with_write_the_log_line(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("weather-model", text="rain is likely tomorrow afternoon")
    router, dispatcher = build(tmp_path, provider, dispatch=PATIENT)

    async def main() -> list[int]:
        seen = []
        stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
        await anext(aiter(stream))
        seen.append(len(log_lines(tmp_path)))
        await stream.aclose()
        seen.append(len(log_lines(tmp_path)))
        async with await dispatcher.acomplete(
            "will it rain today", router=router, stream=True
        ) as other:
            await anext(aiter(other))
            seen.append(len(log_lines(tmp_path)))
        seen.append(len(log_lines(tmp_path)))
        return seen

    assert run(main()) == [0, 1, 1, 2]


def test_chunks_held_to_go_with_the_next_are_sent_when_the_next_breaks_the_stream() -> None:
    from semroute.dispatch.chunks import RawChunk
    from semroute.server.sse import EventStream

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def raw() -> Any:
        first = RawChunk({"choices": [{"index": 0, "delta": {"content": "Sunny"}}]})
        first.more = True  # the next line came in the same read: it is not JSON
        yield first
        raise DispatchError("the stream from 'm' broke")

    stream: Any = types.SimpleNamespace(raw=raw)
    events = EventStream(stream, {}, usage=False, done=None)  # type: ignore[arg-type]
    assert run(events._pump(send, raw(), first=True)) is False
    (message,) = sent
    body = message["body"].split(b"\n\n")
    assert b'"Sunny"' in body[0] and b"broke" in body[1] and body[2] == b"data: [DONE]"
    assert message["more_body"] is False and events.outcome == "broken"
