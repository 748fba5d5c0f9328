"""The gateway as its users meet it: the official `openai` client (sync, async, streaming, tools)
against a real uvicorn server on 127.0.0.1, whose models live on a FakeProvider."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.server.app import SWITCH_INTERVAL_S
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines

pytestmark = pytest.mark.usefixtures("provider_key")

ASK_WEATHER = [{"role": "user", "content": "will it rain today"}]
SAY_HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gateway(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    with Served(build(tmp_path, provider)) as served:
        yield served


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def test_worker_threads_hand_the_event_loop_the_lock_every_millisecond_while_it_serves(
    tmp_path: Path, provider: FakeProvider
) -> None:
    before = sys.getswitchinterval()
    assert before != SWITCH_INTERVAL_S  # Python's default, 5 ms
    with Served(build(tmp_path, provider)) as served:
        assert httpx.get(served.url + "/healthz", timeout=10).status_code == 200
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == before  # the process's own setting, back


def client(served: Served) -> openai.OpenAI:
    """The official client, pointed at the gateway (closed when the test ends)."""
    _OPEN.append(openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0))
    return _OPEN[-1]


def semroute_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("x-semroute-")}


def post(served: Served, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        served.url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=30
    )


# --- answers -----------------------------------------------------------------------------------


def test_auto_routes_and_answers_with_the_sync_client(gateway: Served, tmp_path: Path) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="auto", messages=ASK_WEATHER
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from weather-model."
    headers = semroute_headers(raw.headers)
    assert headers["x-semroute-route"] == "weather"
    assert headers["x-semroute-model"] == "weather-model"
    assert headers["x-semroute-reason"] == "matched"
    assert headers["x-semroute-fallbacks"] == ""
    assert float(headers["x-semroute-confidence"]) > 0.5
    assert float(headers["x-semroute-cost-usd"]) > 0
    [line] = log_lines(tmp_path)
    assert line["request_id"] == headers["x-semroute-request-id"]
    assert line["model"] == "weather-model"


def test_the_async_client_gets_every_concurrent_request_answered(
    gateway: Served, tmp_path: Path
) -> None:
    async def ask_all() -> list[str | None]:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="unused", max_retries=0
        ) as aclient:
            asks = [
                aclient.chat.completions.create(
                    model="auto", messages=ASK_WEATHER if i % 2 else SAY_HELLO
                )
                for i in range(24)
            ]
            return [r.choices[0].message.content for r in await asyncio.gather(*asks)]

    texts = asyncio.run(ask_all())
    assert texts.count("Hello from weather-model.") == 12
    assert texts.count("Hello from frontier.") == 12
    assert len(log_lines(tmp_path)) == 24


def test_streaming_sends_openai_chunks_ending_with_done(gateway: Served, tmp_path: Path) -> None:
    stream = client(gateway).chat.completions.create(model="auto", messages=SAY_HELLO, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from frontier."
    body = {"model": "auto", "messages": SAY_HELLO, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-semroute-model"] == "frontier"
        assert raw.headers["x-semroute-route"] == "greeting"
        events = [line for line in raw.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    # Without stream_options.include_usage the client gets no usage chunk (no empty choices),
    # and, as from OpenAI, the chunk with the finish reason is the last one.
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert [c["choices"][0].get("finish_reason") for c in chunks][-2:] == [None, "stop"]
    assert all(c["choices"][0]["delta"] or c["choices"][0].get("finish_reason") for c in chunks)
    assert len(log_lines(tmp_path)) == 2


def test_a_stream_reports_usage_when_the_client_asks(gateway: Served, tmp_path: Path) -> None:
    stream = client(gateway).chat.completions.create(
        model="auto", messages=SAY_HELLO, stream=True, stream_options={"include_usage": True}
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert usage and usage[-1].completion_tokens == 3
    body = {
        "model": "auto",
        "messages": SAY_HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as raw:
        events = [line for line in raw.iter_lines() if line]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    # OpenAI's shape: the finish reason, then one usage chunk with no choices at all.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-2]
    assert all(c["choices"] for c in chunks[:-1])
    line = log_lines(tmp_path)[0]
    assert line["completion_tokens"] == 3 and line["cost_usd"] > 0


def test_async_streaming(gateway: Served) -> None:
    async def read() -> str:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="unused", max_retries=0
        ) as aclient:
            stream = await aclient.chat.completions.create(
                model="auto", messages=ASK_WEATHER, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(read()) == "Hello from weather-model."


def test_tools_and_response_format_reach_the_model_and_the_rules(
    tmp_path: Path, provider: FakeProvider
) -> None:
    rules = [{"name": "tools", "when": {"has_tools": True}, "model": "backup"}]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    with Served(build(tmp_path, provider, rules=rules)) as served:
        raw = client(served).chat.completions.with_raw_response.create(
            model="auto",
            messages=ASK_WEATHER,
            tools=tools,  # type: ignore[arg-type]
            tool_choice="auto",
            response_format={"type": "json_object"},
            temperature=0.2,
            seed=7,
        )
    assert raw.headers["x-semroute-rule"] == "tools"
    assert raw.headers["x-semroute-model"] == "backup"
    sent = provider.requests[-1].body
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["temperature"] == 0.2 and sent["seed"] == 7


def test_hint_headers_reach_the_rules(tmp_path: Path, provider: FakeProvider) -> None:
    rules = [
        {"name": "summaries", "when": {"task": "summarization"}, "model": "last-resort"},
        {"name": "premium", "when": {"user_tier": "premium"}, "model": "backup"},
    ]
    with Served(build(tmp_path, provider, rules=rules)) as served:
        summary = post(
            served, {"model": "auto", "messages": SAY_HELLO}, {"X-Task-Type": "summarization"}
        )
        premium = post(served, {"model": "auto", "messages": SAY_HELLO}, {"X-User-Tier": "premium"})
        plain = post(served, {"model": "auto", "messages": SAY_HELLO})
    assert (summary.headers["x-semroute-rule"], summary.headers["x-semroute-model"]) == (
        "summaries",
        "last-resort",
    )
    assert premium.headers["x-semroute-model"] == "backup"
    assert plain.headers["x-semroute-model"] == "frontier"
    assert [line["rule"] for line in log_lines(tmp_path)] == ["summaries", "premium", None]


def test_a_cost_ceiling_header_under_every_price_is_402(gateway: Served) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(
            model="auto",
            messages=SAY_HELLO,
            max_tokens=1000,
            extra_headers={"X-Max-Cost-USD": "0.0000001"},
        )
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "over_cost_limit"  # type: ignore[index]
    assert caught.value.response.headers["x-semroute-reason"] == "over_budget"


def test_a_pinned_model_keeps_its_fallbacks(
    gateway: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    provider.error("weather-model", status=500)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="weather-model", messages=SAY_HELLO
    )
    assert raw.parse().choices[0].message.content == "Hello from backup."
    assert raw.headers["x-semroute-reason"] == "pinned"
    assert raw.headers["x-semroute-model"] == "backup"
    assert raw.headers["x-semroute-fallbacks"] == "weather-model"
    assert [a["model"] for a in log_lines(tmp_path)[0]["attempts"]] == ["weather-model", "backup"]


def test_a_tier_name_pins_its_chain_and_models_lists_everything(
    tmp_path: Path, provider: FakeProvider
) -> None:
    router = {"tiers": {"cheap": ["last-resort", "backup"]}}
    provider.error("last-resort", status=503)
    with Served(build(tmp_path, provider, router=router)) as served:
        listed = httpx.get(served.url + "/v1/models").json()
        answer = client(served).chat.completions.create(model="cheap", messages=SAY_HELLO)
        models = client(served).models.list()
    ids = [m["id"] for m in listed["data"]]
    assert ids[0] == "auto"
    assert {"frontier", "weather-model", "backup", "last-resort", "cheap"} <= set(ids)
    assert [m.id for m in models] == ids
    assert answer.choices[0].message.content == "Hello from backup."


# --- refusals -----------------------------------------------------------------------------------


def test_a_blocking_rule_is_403(tmp_path: Path, provider: FakeProvider) -> None:
    rules = [{"name": "no-secrets", "when": {"text_matches": "(?i)password"}, "action": "block"}]
    with (
        Served(build(tmp_path, provider, rules=rules)) as served,
        pytest.raises(openai.PermissionDeniedError) as caught,
    ):
        client(served).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "my password is hunter2"}]
        )
    assert caught.value.body["code"] == "blocked_by_rule"  # type: ignore[index]
    assert caught.value.response.headers["x-semroute-rule"] == "no-secrets"
    assert provider.requests == []
    [line] = log_lines(tmp_path)
    assert line["rule"] == "no-secrets" and "blocked" in line["error"]


def test_no_model_answering_is_502_listing_attempts(
    gateway: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    for name in ("weather-model", "backup", "last-resort"):
        provider.error(name, status=500)
    response = post(gateway, {"model": "auto", "messages": ASK_WEATHER})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "no_model_answered"
    assert [a["model"] for a in error["attempts"]] == ["weather-model", "backup", "last-resort"]
    assert all(a["status"] == 500 for a in error["attempts"])
    assert response.headers["x-semroute-fallbacks"] == "weather-model,backup,last-resort"
    [line] = log_lines(tmp_path)
    assert line["request_id"] == response.headers["x-semroute-request-id"]


def test_every_attempt_timing_out_is_504(tmp_path: Path, provider: FakeProvider) -> None:
    provider.hang("frontier")
    provider.hang("backup")
    with Served(build(tmp_path, provider, dispatch={"timeout": 0.5})) as served:
        response = post(served, {"model": "auto", "messages": SAY_HELLO})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert len(response.json()["error"]["attempts"]) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": SAY_HELLO}, "model: Field required"),
        ({"model": "auto"}, "messages: Field required"),
        ({"model": "auto", "messages": []}, "messages: List should have at least 1 item"),
        ({"model": "auto", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "auto", "messages": SAY_HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "auto", "messages": SAY_HELLO, "stream": "yes"}, "stream"),
        ({"model": "auto", "messages": SAY_HELLO, "api_base": "http://x"}, "api_base: is not"),
        ({"model": "auto", "messages": SAY_HELLO, "max_tokens": -1}, "max_tokens"),
        ({"model": 5, "messages": SAY_HELLO}, "model"),
        ([1, 2], "body should be a JSON object"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(gateway: Served, body: Any, field: str) -> None:
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"", {}, 400, "not valid JSON"),
        (b"\xff\xfe", {}, 400, "not valid JSON"),
        (
            json.dumps({"model": "auto", "messages": SAY_HELLO}).encode(),
            {"X-Max-Cost-USD": "lots"},
            400,
            "X-Max-Cost-USD",
        ),
        (
            json.dumps({"model": "auto", "messages": SAY_HELLO}).encode(),
            {"X-Max-Cost-USD": "nan"},
            400,
            "X-Max-Cost-USD",
        ),
        (
            json.dumps({"model": "auto", "messages": SAY_HELLO}).encode(),
            {"X-Task-Type": "x" * 300},
            400,
            "X-Task-Type",
        ),
    ],
)
def test_bad_bytes_and_headers_are_400(
    gateway: Served, content: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions", content=content, headers=headers, timeout=30
    )
    assert response.status_code == status
    assert words.lower() in response.json()["error"]["message"].lower()


def test_a_body_over_the_limit_is_413_before_it_is_read(
    tmp_path: Path, provider: FakeProvider
) -> None:
    with Served(build(tmp_path, provider, server={"max_body_bytes": 4096})) as served:
        big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 10_000}]}
        declared = post(served, big)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds as it streams
            yield json.dumps(big).encode()

        streamed = httpx.post(served.url + "/v1/chat/completions", content=chunks(), timeout=30)
        fits = post(served, {"model": "auto", "messages": SAY_HELLO})
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
    assert fits.status_code == 200
    assert provider.hits("frontier") == 1


def test_unknown_paths_and_methods_answer_in_openai_shape(gateway: Served) -> None:
    missing = httpx.get(gateway.url + "/v1/nothing")
    wrong = httpx.get(gateway.url + "/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_header_values_never_carry_a_line_break(tmp_path: Path, provider: FakeProvider) -> None:
    unlisted = {"allow_unlisted_models": True}  # so the name reaches dispatch and its headers
    with Served(build(tmp_path, provider, server=unlisted)) as served:
        response = post(served, {"model": "no-such\r\nInjected: yes", "messages": SAY_HELLO})
    assert response.status_code == 502
    assert "injected" not in response.headers
    assert response.headers["x-semroute-model"] == "no-such Injected: yes"


# --- the decision alone ----------------------------------------------------------------------


def test_route_endpoint_answers_what_route_json_prints(gateway: Served, tmp_path: Path) -> None:
    body = {"messages": ASK_WEATHER, "max_tokens": 300}
    response = httpx.post(gateway.url + "/v1/route", json=body, headers={"X-Task-Type": "qa"})
    assert response.status_code == 200
    (tmp_path / "body.json").write_text(json.dumps(body))
    printed = CliRunner().invoke(
        main,
        [
            "route",
            "--index",
            str(tmp_path / "index"),
            "--request",
            str(tmp_path / "body.json"),
            "--task",
            "qa",
            "--json",
        ],
    )
    assert printed.exit_code == 0, printed.output
    ours, cli = response.json(), json.loads(printed.stdout)
    ours.pop("latency_ms"), cli.pop("latency_ms")
    assert ours == cli
    assert ours["route"] == "weather" and ours["signals"]["task"] == "qa"
    assert response.headers["x-semroute-route"] == "weather"
    assert log_lines(tmp_path) == []  # no model was called


# --- health and metrics ------------------------------------------------------------------------


def test_an_open_breaker_skips_its_model_and_shows_in_metrics(
    gateway: Served, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=500)
    for _ in range(3):  # failures_to_open: 3
        assert post(gateway, {"model": "auto", "messages": ASK_WEATHER}).status_code == 200
    hits = provider.hits("weather-model")
    skipped = post(gateway, {"model": "auto", "messages": ASK_WEATHER})
    assert skipped.status_code == 200
    assert provider.hits("weather-model") == hits  # not tried
    assert skipped.headers["x-semroute-skipped"] == "weather-model=unhealthy"
    assert skipped.headers["x-semroute-model"] == "backup"
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'semroute_breaker_state{model="weather-model"} 2.0' in metrics
    assert 'semroute_breaker_state{model="backup"} 0.0' in metrics
    assert 'semroute_skips_total{model="weather-model",reason="unhealthy"} 1.0' in metrics
    assert 'semroute_fallbacks_total{model="weather-model"} 3.0' in metrics
    assert (
        'semroute_requests_total{endpoint="chat",model="backup",reason="matched",'
        'route="weather",rule="",status="200"} 4.0'
    ) in metrics
    assert "semroute_routing_seconds_count 4.0" in metrics
    assert 'semroute_upstream_seconds_count{model="backup",outcome="ok"} 4.0' in metrics
    assert 'semroute_cost_usd_total{model="backup"}' in metrics


def test_pinned_model_names_the_index_does_not_know_are_one_label(
    tmp_path: Path, provider: FakeProvider
) -> None:
    with Served(build(tmp_path, provider, server={"allow_unlisted_models": True})) as served:
        for i in range(3):
            post(served, {"model": f"made-up-{i}", "messages": SAY_HELLO})
        metrics = httpx.get(served.url + "/metrics").text
    assert "made-up" not in metrics
    assert 'model="other",reason="pinned"' in metrics


def test_health_and_readiness(gateway: Served) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
