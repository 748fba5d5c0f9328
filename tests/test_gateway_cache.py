"""The semantic cache through the gateway, with the official openai client: a hit answers
without a model, costs nothing and says so; keys never share answers (unless
`server.cache_scope: global`); a stream gets the hit as chunks; tools, images, n > 1 and a high
temperature are never cached; another route, system prompt or parameter is another bucket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from semroute.dispatch.log import summarise
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines, serve_process
from tests.provider_kit import KEY, KEY_ENV

KEY_A = "sk-semroute-cache-tenant-a-71c2"
KEY_B = "sk-semroute-cache-tenant-b-0e9d"
KEY_BUDGET = "sk-semroute-cache-budget-4a1f"
# The budget key's daily budget ($2e-5) is over the first answer's cost ($1.6e-5) and under
# that plus a second question's ($8e-6).
ANSWERS = [f"Answer number {i} about the weather." for i in range(1, 50)]


def _server(scope: str = "key") -> dict[str, Any]:
    return {
        "keys": [
            "os.environ/CACHE_KEY_A",
            "os.environ/CACHE_KEY_B",
            {"key": "os.environ/CACHE_KEY_BUDGET", "budget_usd_per_day": 2.0e-5},
        ],
        "cache_scope": scope,
    }


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("CACHE_KEY_A", KEY_A)
    monkeypatch.setenv("CACHE_KEY_B", KEY_B)
    monkeypatch.setenv("CACHE_KEY_BUDGET", KEY_BUDGET)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)


def _gateway(folder: Path, provider: FakeProvider, scope: str = "key", **kw: Any) -> Served:
    router = {"cache": {"similarity": 0.97, "ttl_s": 3600, "max_entries": 1000}}
    index = build(folder, provider, server=_server(scope), router=router, **kw)
    provider.script("weather-model", ANSWERS)
    provider.script("frontier", [f"Hello number {i}." for i in range(1, 50)])
    return Served(index)


@pytest.fixture
def gateway(tmp_path: Path, env: None) -> Iterator[tuple[Served, FakeProvider]]:
    with FakeProvider() as provider, _gateway(tmp_path, provider) as served:
        yield served, provider


def ask(url: str, key: str = KEY_A, text: str = "will it rain today", **kw: Any) -> Any:
    messages = kw.pop("messages", None) or [{"role": "user", "content": text}]
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, **kw
        )
        raw.parse()  # read while the client is open
        return raw


def _text(raw: Any) -> str:
    return str(raw.parse().choices[0].message.content)


def test_a_repeated_question_is_answered_from_the_cache_at_no_cost(
    gateway: tuple[Served, FakeProvider], tmp_path: Path
) -> None:
    served, provider = gateway
    first = ask(served.url)
    assert first.headers["x-semroute-cache"] == "miss"
    second = ask(served.url)
    assert second.headers["x-semroute-cache"] == "hit"
    assert float(second.headers["x-semroute-cache-similarity"]) >= 0.97
    assert second.headers["x-semroute-cost-usd"] == "0"
    assert _text(second) == _text(first) == ANSWERS[0]
    assert len(provider.requests) == 1  # no model was called for the hit
    lines = log_lines(tmp_path)
    assert [line["cache"] for line in lines] == ["miss", "hit"]
    assert lines[1]["cost_usd"] == 0.0 and lines[1]["attempts"] == []
    assert lines[1]["cache_saved_usd"] == pytest.approx(lines[0]["cost_usd"])
    assert lines[1]["reason"] == lines[0]["reason"] and lines[1]["route"] == "weather"
    stats = summarise((tmp_path / "decisions.jsonl").read_text().splitlines()).to_dict()
    assert stats["cache"] == {
        "lookups": 2,
        "hits": 1,
        "bypassed": 0,
        "hit_rate": 0.5,
        "saved_usd": pytest.approx(lines[0]["cost_usd"]),
    }
    metrics = httpx.get(served.url + "/metrics").text
    assert 'semroute_cache_requests_total{result="hit"} 1.0' in metrics
    assert 'semroute_cache_requests_total{result="miss"} 1.0' in metrics
    assert "semroute_cache_saved_usd_total" in metrics


def test_a_hit_is_not_charged_to_the_keys_budget(gateway: tuple[Served, FakeProvider]) -> None:
    served, provider = gateway
    # The budget holds one answer and a half: the first answer is paid for, the hits are
    # free, so a second question still gets in (and then the budget is spent).
    for _ in range(4):
        ask(served.url, KEY_BUDGET)
    assert len(provider.requests) == 1
    ask(served.url, KEY_BUDGET, "hello there")
    with pytest.raises(openai.APIStatusError) as refused:
        ask(served.url, KEY_BUDGET, "good morning friend")
    assert refused.value.status_code == 402


def test_one_key_never_reads_another_keys_answer(gateway: tuple[Served, FakeProvider]) -> None:
    served, provider = gateway
    a = ask(served.url, KEY_A)
    b = ask(served.url, KEY_B)
    assert b.headers["x-semroute-cache"] == "miss"
    assert _text(a) != _text(b)
    assert len(provider.requests) == 2
    assert ask(served.url, KEY_B).headers["x-semroute-cache"] == "hit"


def test_a_global_scope_shares_answers_between_keys(tmp_path: Path, env: None) -> None:
    with FakeProvider() as provider, _gateway(tmp_path, provider, "global") as served:
        a = ask(served.url, KEY_A)
        b = ask(served.url, KEY_B)
        assert b.headers["x-semroute-cache"] == "hit"
        assert _text(a) == _text(b)
        assert len(provider.requests) == 1


def test_a_streamed_hit_comes_as_chunks(gateway: tuple[Served, FakeProvider]) -> None:
    served, provider = gateway
    first = _text(ask(served.url))
    messages: Any = [{"role": "user", "content": "will it rain today"}]
    with (
        openai.OpenAI(base_url=served.url + "/v1", api_key=KEY_A, max_retries=0) as client,
        client.chat.completions.with_streaming_response.create(
            model="auto", messages=messages, stream=True, stream_options={"include_usage": True}
        ) as response,
    ):
        assert response.headers["x-semroute-cache"] == "hit"
        chunks = list(response.parse())
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) >= 2  # more than one chunk of text
    assert "".join(pieces) == first
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len(provider.requests) == 1


def test_a_streamed_answer_is_cached_for_the_next_request(
    gateway: tuple[Served, FakeProvider],
) -> None:
    served, _provider = gateway
    messages: Any = [{"role": "user", "content": "will it rain today"}]
    with openai.OpenAI(base_url=served.url + "/v1", api_key=KEY_A, max_retries=0) as client:
        streamed = client.chat.completions.create(model="auto", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    second = ask(served.url)
    assert second.headers["x-semroute-cache"] == "hit"
    assert _text(second) == text == ANSWERS[0]


TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "forecast", "parameters": {"type": "object", "properties": {}}},
    }
]
IMAGE: Any = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "will it rain today"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
]


@pytest.mark.parametrize(
    ("why", "params"),
    [
        ("tools", {"tools": TOOLS}),
        ("images", {"messages": IMAGE}),
        ("n", {"n": 2}),
        ("temperature", {"temperature": 1.5}),
    ],
)
def test_requests_whose_answer_should_vary_are_never_cached(
    gateway: tuple[Served, FakeProvider], tmp_path: Path, why: str, params: dict[str, Any]
) -> None:
    served, provider = gateway
    for _ in range(2):
        raw = ask(served.url, **params)
        assert raw.headers["x-semroute-cache"] == "bypass"
    assert len(provider.requests) == 2
    assert [line["cache_bypass"] for line in log_lines(tmp_path)] == [why, why]


def test_another_system_prompt_or_parameter_is_a_miss(
    gateway: tuple[Served, FakeProvider],
) -> None:
    served, provider = gateway
    ask(served.url)
    system: Any = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "will it rain today"},
    ]
    assert ask(served.url, messages=system).headers["x-semroute-cache"] == "miss"
    assert ask(served.url, max_tokens=50).headers["x-semroute-cache"] == "miss"
    assert ask(served.url, text="hello there").headers["x-semroute-cache"] == "miss"
    assert len(provider.requests) == 4
    assert ask(served.url, messages=system).headers["x-semroute-cache"] == "hit"


def test_a_route_with_cache_false_is_never_cached(tmp_path: Path, env: None) -> None:
    with FakeProvider() as provider:
        index = build(tmp_path, provider, server=_server(), router={"cache": {"similarity": 0.97}})
        # Rebuilt with `cache: false` on the weather route.
        import yaml

        from semroute.testing import FakeEncoder
        from semroute.tuning.build import build_index

        spec_file = tmp_path / "routes" / "routes.yaml"
        spec = yaml.safe_load(spec_file.read_text())
        spec["routes"][0]["cache"] = False
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        build_index(tmp_path / "routes", index, encoder=FakeEncoder())
        provider.script("weather-model", ANSWERS)
        with Served(index) as served:
            for _ in range(2):
                assert "x-semroute-cache" not in ask(served.url).headers
            assert ask(served.url, text="hello there").headers["x-semroute-cache"] == "miss"
            assert len(provider.requests) == 3


def test_with_redis_another_gateway_gets_the_hit(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.redis_kit import running_redis

    with running_redis() as redis, FakeProvider() as provider:
        monkeypatch.setenv("CACHE_REDIS_URL", redis.url)
        server = {**_server(), "redis_url": "os.environ/CACHE_REDIS_URL"}
        router = {"cache": {"similarity": 0.97}}
        index = build(tmp_path, provider, server=server, router=router)
        provider.script("weather-model", ANSWERS)
        env = {k: os.environ[k] for k in os.environ if k.startswith(("CACHE_", KEY_ENV))}
        with serve_process(index, env=env) as (_, first):
            assert ask(first).headers["x-semroute-cache"] == "miss"
        with serve_process(index, env=env) as (_, second):  # a replica that never saw it
            raw = ask(second)
            assert raw.headers["x-semroute-cache"] == "hit"
            assert ask(second, KEY_B).headers["x-semroute-cache"] == "miss"
        assert _text(raw) == ANSWERS[0]
        assert len(provider.requests) == 2


def test_a_hit_on_the_messages_api_is_answered_in_anthropics_shape(
    gateway: tuple[Served, FakeProvider], tmp_path: Path
) -> None:
    served, provider = gateway
    rain: Any = [{"role": "user", "content": "will it rain today"}]
    with anthropic.Anthropic(base_url=served.url, api_key=KEY_A, max_retries=0) as client:
        first = client.messages.with_raw_response.create(
            model="auto", max_tokens=200, messages=rain
        )
        second = client.messages.with_raw_response.create(
            model="auto", max_tokens=200, messages=rain
        )
        with client.messages.stream(model="auto", max_tokens=200, messages=rain) as stream:
            assert stream.response.headers["x-semroute-cache"] == "hit"
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert first.headers["x-semroute-cache"] == "miss"
    assert second.headers["x-semroute-cache"] == "hit"
    assert second.headers["x-semroute-cost-usd"] == "0"
    message = second.parse()
    assert message.type == "message" and message.model == "weather-model"
    assert message.content[0].text == ANSWERS[0]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    assert message.id == f"msg_{log_lines(tmp_path)[1]['request_id']}"
    assert streamed == ANSWERS[0] and final.stop_reason == "end_turn"
    assert len(provider.requests) == 1  # neither hit called a model
    assert [line["cache"] for line in log_lines(tmp_path)] == ["miss", "hit", "hit"]
