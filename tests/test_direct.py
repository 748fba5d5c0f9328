"""OpenAI-compatible deployments called directly (semroute.dispatch.direct), not through LiteLLM.

Each test runs against the FakeProvider over real HTTP, and checks which way the call went
(LiteLLM's router is built only when a call needs it)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semroute import Dispatcher
from semroute.config.deployments import DispatchConfig, DispatchSettings, ModelDeployment
from semroute.dispatch.direct import endpoints
from semroute.errors import DispatchError, RequestRejectedError
from semroute.testing import FakeProvider
from tests.fuzz_support import fuzz
from tests.provider_kit import KEY, KEY_ENV, PRICED, build, deployment, log_lines, run


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def _through_litellm(dispatcher: Dispatcher) -> bool:
    return dispatcher._provider._router is not None


def _weather_model(provider: FakeProvider, **params: Any) -> list[dict[str, Any]]:
    """The kit's models, with ``params`` in weather-model's ``litellm_params``."""
    models = [deployment(provider, n) for n in ("frontier", "backup", "last-resort")]
    return [*models, deployment(provider, "weather-model", **params)]


def test_an_openai_compatible_deployment_is_called_directly(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.answer("weather-model", text="Sunny.")
        router, dispatcher = build(tmp_path, provider)
        result = run(dispatcher.acomplete("will it rain today", router=router, temperature=0.2))
        assert not _through_litellm(dispatcher)
        assert result.text == "Sunny." and result.model == "weather-model"
        sent = provider.requests[-1]
        assert sent.authorization == f"Bearer {KEY}"  # os.environ/VAR read at the call
        assert sent.body["model"] == "weather-model" and sent.body["temperature"] == 0.2
        assert "metadata" not in sent.body and "disable_fallbacks" not in sent.body
        usage = result.usage
        assert usage is not None and usage.prompt_tokens > 0
        price = usage.prompt_tokens * PRICED["input_cost_per_token"]
        price += usage.completion_tokens * PRICED["output_cost_per_token"]
        assert result.cost_usd == pytest.approx(price)
        (line,) = log_lines(tmp_path)
        assert line["model"] == "weather-model" and line["cost_usd"] == pytest.approx(price)


def test_direct_false_and_litellm_only_arguments_go_through_litellm(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.answer("weather-model", text="Sunny.")
        router, dispatcher = build(tmp_path / "a", provider, dispatch={"direct": False})
        assert run(dispatcher.acomplete("will it rain today", router=router)).text == "Sunny."
        assert _through_litellm(dispatcher)
        router, dispatcher = build(tmp_path / "b", provider)
        result = run(dispatcher.acomplete("will it rain", router=router, mock_response="Mocked."))
        assert result.text == "Mocked." and _through_litellm(dispatcher)


def test_only_plain_single_deployments_qualify() -> None:
    def config(*models: ModelDeployment, direct: bool = True) -> DispatchConfig:
        return DispatchConfig(models=models, settings=DispatchSettings(direct=direct))

    base = {"api_base": "http://127.0.0.1:1/v1", "api_key": "os.environ/K"}
    plain = ModelDeployment("a", {"model": "openai/x", **base, **PRICED})
    assert set(endpoints(config(plain))) == {"a"}
    assert endpoints(config(plain))["a"].url == "http://127.0.0.1:1/v1/chat/completions"
    assert endpoints(config(plain))["a"].model == "x"
    assert endpoints(config(plain, direct=False)) == {}
    others = [
        ModelDeployment("a", {"model": "gpt-4o", **base}),  # LiteLLM's OpenAI handling
        ModelDeployment("a", {"model": "anthropic/claude", **base}),
        ModelDeployment("a", {"model": "openai/x"}),  # no api_base
        ModelDeployment("a", {"model": "openai/x", **base, "max_retries": 3}),
        ModelDeployment("a", {"model": "openai/x", **base, "extra_headers": {"h": 1}}),
    ]
    for other in others:
        assert endpoints(config(other)) == {}, other
    assert endpoints(config(plain, plain)) == {}  # two deployments: LiteLLM balances them


def test_a_failing_model_fails_over_and_counts_against_its_health(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.error("weather-model", 500)
        provider.answer("backup", text="From backup.")
        router, dispatcher = build(tmp_path, provider)
        result = run(dispatcher.acomplete("will it rain today", router=router))
        assert result.model == "backup" and not _through_litellm(dispatcher)
        failed = result.attempts[0]
        assert failed.model == "weather-model" and failed.status == 500
        assert failed.error is not None and "InternalServerError" in failed.error
        assert dispatcher.health is not None
        assert dispatcher.health.health("weather-model").failures_in_a_row == 1


def test_a_request_the_model_rejects_ends_the_walk(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.error("weather-model", 400)
        provider.answer("backup")
        router, dispatcher = build(tmp_path, provider)
        with pytest.raises(RequestRejectedError):
            run(dispatcher.acomplete("will it rain today", router=router))
        assert provider.hits("backup") == 0
        assert dispatcher.health is not None
        assert dispatcher.health.health("weather-model").failures_in_a_row == 0


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 in a thread; yields the server's ``api_base``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _json_upstream(answer: bytes, *, length: bool) -> Iterator[str]:
    """An upstream on 127.0.0.1 answering every request with ``answer``, with its
    content-length or (``length`` false) without one, the body ending when the connection
    closes; yields its ``api_base``."""

    class Upstream(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            if length:
                self.send_header("content-length", str(len(answer)))
            self.end_headers()
            for at in range(0, len(answer), 1000):  # in pieces, as a network delivers it
                self.wfile.write(answer[at : at + 1000])
                self.wfile.flush()

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Upstream) as api_base:
        yield api_base


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_an_answer_longer_than_the_limit_fails_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: bool, over: int
) -> None:
    from semroute.dispatch import upstream_read

    text = "Sunny " * 2000
    message = {"role": "assistant", "content": text}
    answer = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    ).encode()
    monkeypatch.setattr(upstream_read, "MAX_ANSWER_BYTES", len(answer) - over)
    with _json_upstream(answer, length=length) as api_base, FakeProvider() as provider:
        provider.answer("backup", text="From backup.")
        models = _weather_model(provider, api_base=api_base)
        router, dispatcher = build(tmp_path, provider, models=models)
        result = run(dispatcher.acomplete("will it rain today", router=router))
    if not over:
        assert (result.model, result.text) == ("weather-model", text)
        return
    assert (result.model, result.text) == ("backup", "From backup.")
    error = result.attempts[0].error
    assert error is not None and f"the answer is longer than {len(answer) - 1} bytes" in error


def test_retries_and_unreachable_upstreams(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.error("weather-model", 429)
        provider.answer("backup")
        router, dispatcher = build(tmp_path / "a", provider, dispatch={"retries": 2})
        assert run(dispatcher.acomplete("will it rain today", router=router)).model == "backup"
        assert provider.hits("weather-model") == 3  # one try and two retries
        gone = _weather_model(provider, api_base="http://127.0.0.1:9/v1")
        router, dispatcher = build(tmp_path / "b", provider, models=gone)
        result = run(dispatcher.acomplete("will it rain today", router=router))
        assert result.model == "backup"
        assert "APIConnectionError" in (result.attempts[0].error or "")


def test_streams_chunk_by_chunk_and_fail_over_before_the_first(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.break_stream("weather-model", after=0)
        provider.answer("backup", text="Streamed from backup.")
        router, dispatcher = build(tmp_path, provider)

        async def read() -> tuple[list[Any], Any]:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            return [chunk async for chunk in stream], stream

        chunks, stream = run(read())
        assert not _through_litellm(dispatcher)
        assert stream.model == "backup" and len(chunks) > 2
        # Every chunk has a choice, the usage chunk too (an empty one, as LiteLLM's).
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == stream.text == "Streamed from backup."
        assert stream.usage is not None and stream.cost_usd is not None
        assert provider.requests[-1].body["stream_options"] == {"include_usage": True}
        assert log_lines(tmp_path)[-1]["model"] == "backup"


def test_a_stream_that_breaks_midway_is_an_error(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        provider.break_stream("weather-model", after=2)
        router, dispatcher = build(tmp_path, provider)

        async def read() -> None:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            async for _ in stream:
                pass

        with pytest.raises(DispatchError, match="broke after it started"):
            run(read())


def test_the_pooled_session_closes_with_its_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from semroute.dispatch import direct

    with FakeProvider() as provider:
        provider.answer("weather-model")
        router, dispatcher = build(tmp_path, provider)
        loops = []

        async def ask() -> None:
            loops.append(asyncio.get_running_loop())
            await dispatcher.acomplete("will it rain today", router=router)
            assert loops[-1] in direct._sessions

        for _ in range(3):  # a loop each, as asyncio.run makes
            asyncio.run(ask())
        # Each closed as its loop ended (another test's background loop may hold one).
        assert not any(loop in direct._sessions for loop in loops)
        import gc

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            gc.collect()
        assert "Unclosed" not in caplog.text


def test_a_relay_reads_chunks_as_they_came_and_callers_get_litellms(tmp_path: Path) -> None:
    """The gateway relays a directly called model's chunks without building LiteLLM's object
    for each (RawChunk); a Python caller iterating the stream still gets LiteLLM's chunks."""
    import litellm

    from semroute.dispatch.chunks import RawChunk, chunk_fields

    with FakeProvider() as provider:
        provider.answer("weather-model", text="Light rain later.")
        router, dispatcher = build(tmp_path, provider)

        async def read(raw: bool) -> list[Any]:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            return [c async for c in (stream.raw() if raw else stream)]

        relayed = run(read(raw=True))
        assert relayed and all(isinstance(c, RawChunk) for c in relayed)
        assert all(c._chunk is None for c in relayed)  # none was built
        fields = [chunk_fields(c) for c in relayed]
        assert all(None not in _leaves(f) for f in fields)
        text = "".join(f["choices"][0].get("delta", {}).get("content", "") for f in fields)
        assert text == "Light rain later."
        assert relayed[0].data["choices"][0]["finish_reason"] is None  # not changed
        public = run(read(raw=False))
        assert all(isinstance(c, litellm.ModelResponseStream) for c in public)
        assert "".join(c.choices[0].delta.content or "" for c in public) == "Light rain later."
        lines = log_lines(tmp_path)
        assert [line["completion_tokens"] > 0 for line in lines] == [True, True]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_a_stream_costs_what_the_same_answer_costs_unstreamed(tmp_path: Path) -> None:
    # The upstream serves a model whose name LiteLLM knows (its list price for gpt-4o-mini is
    # not the $1/$2 per million this deployment is priced at): the deployment's price counts,
    # streamed or not.
    with FakeProvider() as provider:
        provider.answer("gpt-4o-mini", text="Sunny and warm all day.")
        models = _weather_model(provider, model="openai/gpt-4o-mini")
        router, dispatcher = build(tmp_path, provider, models=models)
        plain = run(dispatcher.acomplete("will it rain today", router=router))

        async def read() -> Any:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            async for _ in stream:
                pass
            return stream

        streamed = run(read())
        assert not _through_litellm(dispatcher)
        for result in (plain, streamed):
            usage = result.usage
            assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
            price = usage.prompt_tokens * PRICED["input_cost_per_token"]
            price += usage.completion_tokens * PRICED["output_cost_per_token"]
            assert result.cost_usd == pytest.approx(price)
        assert streamed.text == plain.text == "Sunny and warm all day."
        assert [line["cost_usd"] for line in log_lines(tmp_path)] == pytest.approx(
            [plain.cost_usd, streamed.cost_usd]
        )


@contextmanager
def _sse_upstream(events: Sequence[dict[str, Any] | bytes], model: str = "m") -> Iterator[str]:
    """An OpenAI-compatible upstream on 127.0.0.1 streaming ``events`` as chunks of ``model``
    (an event given as bytes: that data line, as it is) to every request; yields its
    ``api_base``."""

    class Upstream(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for event in events:
                if not isinstance(event, bytes):
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1}
                    event = json.dumps({**chunk, "model": model, **event}).encode()
                self.wfile.write(b"data: " + event + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Upstream) as api_base:
        yield api_base


def _stream_through(tmp_path: Path, api_base: str) -> tuple[Dispatcher, list[Any], Any]:
    """Stream one request routed to weather-model, served from ``api_base``."""
    with FakeProvider() as provider:
        router, dispatcher = build(
            tmp_path, provider, models=_weather_model(provider, api_base=api_base)
        )

        async def read() -> tuple[list[Any], Any]:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            return [chunk async for chunk in stream], stream

        chunks, stream = run(read())
    return dispatcher, chunks, stream


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "many", "completion_tokens": 2, "total_tokens": 3},
        {"prompt_tokens": 1, "completion_tokens": 1e308, "total_tokens": None},
    ],
    ids=["tokens-not-a-number", "tokens-out-of-range"],
)
def test_a_stream_whose_usage_cannot_be_read_is_relayed_and_logged(
    tmp_path: Path, usage: dict[str, Any]
) -> None:
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Sunny"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": usage},
    ]
    with _sse_upstream(events) as api_base:
        dispatcher, chunks, stream = _stream_through(tmp_path, api_base)
    assert not _through_litellm(dispatcher)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Sunny"
    assert stream.usage is None and stream.cost_usd is None
    (line,) = log_lines(tmp_path)
    assert line["model"] == "weather-model" and line["cost_usd"] is None


def test_a_stream_left_to_litellms_assembler_costs_the_deployments_price(tmp_path: Path) -> None:
    # A reasoning delta is not read by semroute's assembler; LiteLLM's prices the answer at its
    # list price for gpt-4o-mini, which is not this deployment's $1/$2 per million.
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Hm."}}]},
        {"choices": [{"index": 0, "delta": {"content": "Sunny"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": usage},
    ]
    with _sse_upstream(events, model="gpt-4o-mini") as api_base:
        dispatcher, _, stream = _stream_through(tmp_path, api_base)
    assert not _through_litellm(dispatcher)
    assert stream.text == "Sunny"
    price = 1000 * PRICED["input_cost_per_token"] + 500 * PRICED["output_cost_per_token"]
    assert stream.cost_usd == pytest.approx(price)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"id": "c1", "choices": 5}', "its choices are not a list"),
        (b'{"id": "c1", "choices": ["x"]}', "a choice is not an object with a delta object"),
        (b'{"choices": [{"index": 0, "delta": [1]}]}', "a choice is not an object with a delta"),
    ],
    ids=["not-an-object", "choices-not-a-list", "choice-not-an-object", "delta-not-an-object"],
)
def test_a_streamed_chunk_not_shaped_like_one_breaks_the_stream_with_a_reason(
    tmp_path: Path, event: bytes, problem: str
) -> None:
    first: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": "Sunny"}}]}
    with _sse_upstream([first, event]) as api_base, FakeProvider() as provider:
        models = _weather_model(provider, api_base=api_base)
        router, dispatcher = build(tmp_path, provider, models=models)
        texts: list[str] = []

        async def read() -> None:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "")

        with pytest.raises(DispatchError, match="broke after it started") as raised:
            run(read())
    assert texts == ["Sunny"]
    assert f"not a chat completion chunk: {problem}" in str(raised.value)
    (line,) = log_lines(tmp_path)
    assert line["error"] == "the stream from 'weather-model' broke"
    assert problem in line["attempts"][0]["error"]


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_a_streamed_line_longer_than_the_limit_breaks_the_stream(tmp_path: Path, over: int) -> None:
    from semroute.dispatch.upstream_read import MAX_LINE_BYTES

    first: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": "Sunny"}}]}
    head, tail = b'{"choices": [{"index": 0, "delta": {"content": "', b'"}}]}'
    long = MAX_LINE_BYTES - len(b"data: ") - len(head) - len(tail) + over
    with _sse_upstream([first, head + b"x" * long + tail]) as api_base, FakeProvider() as provider:
        router, dispatcher = build(
            tmp_path, provider, models=_weather_model(provider, api_base=api_base)
        )
        texts: list[str] = []

        async def read() -> None:
            stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "")

        if over:
            with pytest.raises(DispatchError, match="broke after it started") as raised:
                run(read())
            assert f"a streamed line is longer than {MAX_LINE_BYTES} bytes" in str(raised.value)
        else:
            run(read())
    assert texts == (["Sunny"] if over else ["Sunny", "x" * long])


@fuzz(200)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=20),
    ends_with_newline=st.booleans(),
)
def test_a_stream_cut_anywhere_gives_the_same_lines(
    lines: list[bytes], cuts: list[int], ends_with_newline: bool
) -> None:
    from semroute.dispatch.upstream_read import Lines

    body = b"\n".join(lines) + (b"\n" if ends_with_newline else b"")
    at = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    parts = [body[a:b] for a, b in itertools.pairwise(at)]
    reader = Lines("m")
    # The relay feeds a newline at the body's end: the last line may lack its own.
    assert [line for part in [*parts, b"\n"] for line in reader.feed(part)] == body.split(b"\n")


def test_a_relay_sends_a_models_chunks_as_it_wrote_them(tmp_path: Path) -> None:
    from semroute.server.sse import _chunk_data

    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    content = b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Sun"},"finish_reason":null}]}'
    extra = b'{"id":"c1","x_extra":1,"choices":[{"index":0,"delta":{"content":"ny"}}],"usage":null}'
    spaced = b'{"id": "c1",\r"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}'
    finish = b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":'
    finish += json.dumps(usage).encode() + b"}"  # as some models report it
    last = json.dumps({"id": "c1", "choices": [], "usage": usage}).encode()
    with (
        _sse_upstream([content, extra, spaced, finish, last]) as api_base,
        FakeProvider() as provider,
    ):
        models = _weather_model(provider, api_base=api_base)
        router, dispatcher = build(tmp_path, provider, models=models)

        async def read() -> list[Any]:
            stream = await dispatcher.acomplete("will it rain", router=router, stream=True)
            return [chunk async for chunk in stream.raw()]

        relayed = run(read())
    sent = [_chunk_data(chunk, usage=False) for chunk in relayed]
    # As written, nulls and unknown fields too; the carriage return is not sent on, nor the
    # usage the client did not ask for.
    assert sent[:2] == [content, extra] and sent[4] is None
    assert sent[2] == json.dumps(json.loads(spaced.replace(b"\r", b" "))).encode()
    assert json.loads(sent[3] or b"") == {
        k: v for k, v in json.loads(finish).items() if k != "usage"
    }
    asked = [_chunk_data(chunk, usage=True) for chunk in relayed]
    assert asked[:4] == [*sent[:3], finish]
    assert json.loads(asked[4] or b"") == {"id": "c1", "choices": [], "usage": usage}
    (line,) = log_lines(tmp_path)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (5, 2)


def _event(text: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": {"content": text}}]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class _Read:
    """An aiohttp response whose body comes in ``parts``, one per read."""

    def __init__(self, parts: list[bytes]) -> None:
        self.content = self
        self._parts = parts

    async def readany(self) -> bytes:
        return self._parts.pop(0) if self._parts else b""

    def release(self) -> None:
        pass


def test_a_chunk_says_whether_the_next_came_in_the_same_read() -> None:
    from semroute.dispatch.upstream_read import read_chunks

    parts = [
        _event("a") + b": a comment\n\n" + _event("b"),
        _event("c") + b": keep-alive\n\n",
        _event("d") + b"data: [DONE]\n\n",  # the end is not waited for: d is sent at once
    ]

    async def read() -> list[tuple[str, bool]]:
        chunks = read_chunks(_Read(parts), "m")
        return [(c.data["choices"][0]["delta"]["content"], c.more) async for c in chunks]

    assert run(read()) == [("a", True), ("b", False), ("c", False), ("d", False)]


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_a_streamed_answer_longer_than_the_limit_breaks_the_stream(
    monkeypatch: pytest.MonkeyPatch, over: int
) -> None:
    from semroute.dispatch import upstream_read

    parts = [_event("a"), _event("b") + b": keep-alive\n\n" + _event("c"), b"data: [DONE]\n\n"]
    limit = len(b"".join(parts)) - over  # every byte of the body counts, the end's too
    monkeypatch.setattr(upstream_read, "MAX_ANSWER_BYTES", limit)
    texts: list[str] = []

    async def read() -> None:
        async for chunk in upstream_read.read_chunks(_Read(list(parts)), "m"):
            texts.append(chunk.data["choices"][0]["delta"]["content"])

    if over:
        with pytest.raises(Exception, match=f"the streamed answer is longer than {limit} bytes"):
            run(read())
    else:
        run(read())
    assert texts == ["a", "b", "c"]  # what came before the read that went over was relayed
