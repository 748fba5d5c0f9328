"""What a directly called OpenAI-compatible model answers when it is not an answer: an error
object sent with a 200, an answer without choices, an error event in a stream, a stream cut
short, a stream that trickles before its first event or stalls after it.

Each test runs the real Dispatcher (one, the gateway) against a small HTTP server on 127.0.0.1
standing in for the model (weather-model, called directly), with a FakeProvider serving the
model it falls back to (backup)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from semroute import Dispatcher
from semroute.errors import DispatchError
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.gateway_kit import Served
from tests.provider_kit import KEY, KEY_ENV, build, deployment, log_lines, routes_spec, run


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    reply: Callable[[_Upstream], None]
    stop: threading.Event
    """Set when the test ends: a reply that hangs or trickles stops."""
    body: dict[str, Any]

    def do_POST(self) -> None:
        self.body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.close_connection = True
        with contextlib.suppress(ConnectionError):  # the client gave up (timed out)
            type(self).reply(self)

    def log_message(self, *args: Any) -> None:
        pass

    def sse_head(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def piece(self, data: bytes) -> None:
        """One piece of the chunked body, sent now; an empty one ends the body."""
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.flush()

    def trickle(self, data: bytes) -> None:
        """``data`` one byte every 0.2 s, until the test ends (or 15 s)."""
        end = time.monotonic() + 15
        for byte in data * 100:
            if self.stop.wait(0.2) or time.monotonic() > end:
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


@contextmanager
def _model(reply: Callable[[_Upstream], None]) -> Iterator[str]:
    """A model on 127.0.0.1 answering every request by ``reply``; yields its ``api_base``."""
    handler = type("Upstream", (_Upstream,), {"reply": reply, "stop": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        handler.stop.set()
        server.shutdown()
        server.server_close()


def _answer(payload: dict[str, Any]) -> Callable[[_Upstream], None]:
    """A reply: ``payload`` as JSON, with a 200."""

    def reply(h: _Upstream) -> None:
        data = json.dumps(payload).encode()
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def _events(*events: dict[str, Any] | bytes) -> Callable[[_Upstream], None]:
    """A reply: a stream of ``events`` (bytes: that data line as it is), then the body's end,
    with no ``data: [DONE]`` unless it is one of them."""

    def reply(h: _Upstream) -> None:
        h.sse_head()
        for event in events:
            data = event if isinstance(event, bytes) else json.dumps(event).encode()
            h.piece(b"data: " + data + b"\n\n")
        h.piece(b"")

    return reply


def _chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"} | {
        "choices": [choice]
    }


USAGE = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}

OVERLOADED = {"error": {"message": "model overloaded", "type": "server_error"}}


def _models(provider: FakeProvider, api_base: str, **params: Any) -> list[dict[str, Any]]:
    """The kit's models, weather-model served from ``api_base`` with ``params`` in its
    ``litellm_params``; the others by ``provider``."""
    models = [deployment(provider, n) for n in ("frontier", "backup", "last-resort")]
    return [*models, deployment(provider, "weather-model", api_base=api_base, **params)]


@contextmanager
def _dispatcher(
    tmp_path: Path, reply: Callable[[_Upstream], None], **params: Any
) -> Iterator[Dispatcher]:
    """A dispatcher whose weather-model answers by ``reply`` and whose backup answers
    "From backup."."""
    with _model(reply) as api_base, FakeProvider() as provider:
        provider.answer("backup", text="From backup.")
        _, dispatcher = build(tmp_path, provider, models=_models(provider, api_base, **params))
        yield dispatcher


def _ask(dispatcher: Dispatcher) -> Any:
    return run(
        dispatcher.acomplete("will it rain today", model="weather-model", fallbacks=["backup"])
    )


def _stream(dispatcher: Dispatcher, texts: list[str], started: list[float] | None = None) -> Any:
    """Stream the request, collecting each chunk's text in ``texts`` (and in ``started`` the
    latency of the attempt that started the stream); the stream."""

    async def read() -> Any:
        stream = await dispatcher.acomplete(
            "will it rain today", model="weather-model", fallbacks=["backup"], stream=True
        )
        if started is not None:
            started.append(stream.attempts[-1].latency_ms)
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
        return stream

    return run(read())


def _failed_over(tmp_path: Path, result: Any, error: str) -> None:
    """``result`` came from backup after weather-model failed with ``error``; so says the log."""
    assert (result.model, result.text) == ("backup", "From backup.")
    assert [a.model for a in result.attempts] == ["weather-model", "backup"]
    first = result.attempts[0]
    assert first.error is not None and error in first.error
    (line,) = log_lines(tmp_path)
    assert line["model"] == "backup" and line["fallbacks"] == ["weather-model"]
    assert line["error"] is None and error in line["attempts"][0]["error"]
    assert line["cost_usd"] is not None and line["cost_usd"] == pytest.approx(result.cost_usd)


# --- whole answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (OVERLOADED, "the model sent an error: model overloaded"),
        ({"error": "model overloaded"}, "the model sent an error: model overloaded"),
        (
            {"object": "error", "message": "model overloaded", "code": 503},
            "the model sent an error: model overloaded",
        ),
        ({"id": "c1", "object": "chat.completion", "choices": []}, "the answer has no choices"),
        ({"id": "c1", "object": "chat.completion"}, "the answer has no choices"),
        ([1, 2], "the answer is not a chat completion: a JSON list"),
    ],
    ids=["error-object", "error-text", "vllm-error", "empty-choices", "no-choices", "a-list"],
)
def test_an_answer_that_is_not_one_fails_over(tmp_path: Path, answer: Any, error: str) -> None:
    with _dispatcher(tmp_path, _answer(answer)) as dispatcher:
        result = _ask(dispatcher)
    _failed_over(tmp_path, result, error)
    assert result.attempts[0].error.startswith("InternalServerError: ")
    assert dispatcher.health is not None
    assert dispatcher.health.health("weather-model").failures_in_a_row == 1


# --- streams: errors and their end -------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "error"),
    [
        (
            [{"error": {"message": "overloaded mid-stream"}}, b"[DONE]"],
            "the model sent an error: overloaded mid-stream",
        ),
        ([], "the stream ended before its end"),
    ],
    ids=["error-event", "no-event"],
)
def test_a_stream_failing_before_its_first_chunk_fails_over(
    tmp_path: Path, events: list[Any], error: str
) -> None:
    texts: list[str] = []
    with _dispatcher(tmp_path, _events(*events)) as dispatcher:
        stream = _stream(dispatcher, texts)
    assert "".join(texts) == "From backup."
    _failed_over(tmp_path, stream, error)
    assert stream.usage is not None


@pytest.mark.parametrize(
    ("events", "error"),
    [
        (
            [_chunk("Sunny"), {"error": {"message": "overloaded mid-stream"}}, b"[DONE]"],
            "the model sent an error: overloaded mid-stream",
        ),
        ([_chunk("Sunny")], "the stream ended before its end"),
        ([_chunk("Sunny"), USAGE], "the stream ended before its end"),
    ],
    ids=["error-event", "cut-short", "cut-short-after-usage"],
)
def test_a_stream_failing_after_its_first_chunk_breaks(
    tmp_path: Path, events: list[Any], error: str
) -> None:
    texts: list[str] = []
    broke = pytest.raises(DispatchError, match="broke after it started")
    with _dispatcher(tmp_path, _events(*events)) as dispatcher, broke as raised:
        _stream(dispatcher, texts)
    assert "".join(texts) == "Sunny"  # what came before was relayed
    assert error in str(raised.value)
    (attempt,) = raised.value.attempts
    assert attempt.model == "weather-model" and error in (attempt.error or "")
    (line,) = log_lines(tmp_path)
    assert line["error"] == "the stream from 'weather-model' broke"
    assert error in line["attempts"][0]["error"]
    assert dispatcher.health is not None
    assert dispatcher.health.health("weather-model").failures_in_a_row == 1


@pytest.mark.parametrize(
    "events",
    [
        [_chunk("Sunny"), _chunk(finish="stop"), USAGE],
        [_chunk("Sunny"), _chunk(finish="stop")],
        [_chunk("Sunny", finish="stop")],
        [_chunk("Sunny"), b"[DONE]"],
    ],
    ids=["finish-then-usage", "finish", "finish-with-text", "done-without-finish"],
)
def test_a_stream_ends_at_done_or_after_a_finish_reason(tmp_path: Path, events: list[Any]) -> None:
    # Some servers end a stream without data: [DONE]; its last chunks' finish_reason ends it.
    texts: list[str] = []
    with _dispatcher(tmp_path, _events(*events)) as dispatcher:
        stream = _stream(dispatcher, texts)
    assert "".join(texts) == stream.text == "Sunny"
    assert [(a.model, a.error) for a in stream.attempts] == [("weather-model", None)]
    (line,) = log_lines(tmp_path)
    assert line["model"] == "weather-model" and line["error"] is None
    if USAGE in events:
        assert stream.usage is not None and stream.usage.prompt_tokens == 5


# --- streams: time ---------------------------------------------------------------------------


def _trickle_body(h: _Upstream) -> None:
    h.sse_head()
    h.piece(b"data: ")
    end = time.monotonic() + 15
    while not h.stop.wait(0.2) and time.monotonic() < end:
        h.piece(b"x")


def _trickle_headers(h: _Upstream) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
    h.trickle(b"x-slow: abcdefghij")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_trickle_body, "Timeout: no first chunk in 1 s"),
        (_trickle_headers, "Timeout: no answer in 1 s"),
    ],
    ids=["body", "headers"],
)
def test_a_stream_trickling_before_its_first_event_fails_over_in_its_timeout(
    tmp_path: Path, reply: Callable[[_Upstream], None], error: str
) -> None:
    # A byte every 0.2 s keeps each read within the timeout; the first chunk is what is bounded.
    texts: list[str] = []
    with _dispatcher(tmp_path, reply, timeout=1) as dispatcher:
        stream = _stream(dispatcher, texts)
    assert "".join(texts) == "From backup."
    _failed_over(tmp_path, stream, error)
    assert stream.attempts[0].status == 408
    assert 1000 <= stream.attempts[0].latency_ms < 10_000  # not the trickle's 15 s


def _stall(h: _Upstream) -> None:
    h.sse_head()
    h.piece(b"data: " + json.dumps(_chunk("Sunny")).encode() + b"\n\n")
    h.stop.wait(15)
    h.piece(b"")


def test_a_stream_stalling_after_its_first_chunk_breaks_after_its_timeout(
    tmp_path: Path,
) -> None:
    texts: list[str] = []
    started: list[float] = []
    broke = pytest.raises(DispatchError, match="broke after it started")
    with _dispatcher(tmp_path, _stall, timeout=1) as dispatcher, broke as raised:
        _stream(dispatcher, texts, started)
    assert texts == ["Sunny"]
    (attempt,) = raised.value.attempts
    assert attempt.error == "Timeout: no chunk for 1 s" and attempt.status == 408
    # The time until it broke (the first chunk, then the second's wait), as the log says too.
    (first_chunk_ms,) = started
    assert first_chunk_ms + 990 <= attempt.latency_ms < first_chunk_ms + 10_000
    (line,) = log_lines(tmp_path)
    assert line["error"] == "the stream from 'weather-model' broke"
    assert line["attempts"][0]["latency_ms"] == pytest.approx(attempt.latency_ms, abs=0.01)
    assert line["model_ms"] == pytest.approx(attempt.latency_ms, abs=0.01)


# --- through the gateway -----------------------------------------------------------------------


def _overloaded(h: _Upstream) -> None:
    """An error object with a 200, or for a stream an error event after one chunk."""
    if not h.body.get("stream"):
        _answer(OVERLOADED)(h)
        return
    _events(_chunk("Sunny"), {"error": {"message": "overloaded mid-stream"}}, b"[DONE]")(h)


def test_the_gateway_fails_over_and_ends_a_broken_stream_with_an_error_event(
    tmp_path: Path,
) -> None:
    with _model(_overloaded) as api_base, FakeProvider() as provider:
        provider.answer("backup", text="From backup.")
        routes = tmp_path / "routes"
        routes.mkdir()
        spec = routes_spec(tmp_path, provider, models=_models(provider, api_base))
        (routes / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        build_index(routes, tmp_path / "index", encoder=FakeEncoder())
        with Served(tmp_path / "index") as served:
            url = served.url + "/v1/chat/completions"
            ask = [{"role": "user", "content": "will it rain today"}]
            body = {"model": "auto", "messages": ask}
            answered = httpx.post(url, json=body, timeout=30)
            with httpx.stream("POST", url, json=body | {"stream": True}, timeout=30) as raw:
                lines = [line for line in raw.iter_lines() if line]
    assert answered.status_code == 200
    assert answered.json()["choices"][0]["message"]["content"] == "From backup."
    assert answered.headers["x-semroute-fallbacks"] == "weather-model"
    data = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert data[0]["choices"][0]["delta"]["content"] == "Sunny"
    assert "overloaded mid-stream" in json.dumps(data[-1]["error"])
    assert lines[-1] == "data: [DONE]"
    plain, streamed = log_lines(tmp_path)
    assert plain["model"] == "backup" and "model overloaded" in plain["attempts"][0]["error"]
    assert streamed["error"] == "the stream from 'weather-model' broke"
