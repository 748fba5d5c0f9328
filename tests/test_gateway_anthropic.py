"""Anthropic's Messages API through the gateway, with the official `anthropic` client: routed by
the same policy (`auto` or a pinned name), sent through the same dispatcher to a FakeProvider
(which records what it received), answered and streamed in Anthropic's shapes, refused in
Anthropic's error format; keys in `x-api-key` or `Authorization: Bearer`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semroute.server.anthropic import ERROR_TYPES
from semroute.testing import FakeProvider
from tests.fuzz_support import fuzz
from tests.gateway_kit import Served, build, log_lines
from tests.test_gateway_fuzz import values

pytestmark = pytest.mark.usefixtures("provider_key")

APP_KEY = "sk-app-7d1c5e9b20fa"
RULES = [{"name": "no-secrets", "when": {"text_matches": "(?i)password"}, "action": "block"}]
RAIN = [{"role": "user", "content": "will it rain today"}]


@pytest.fixture
def gateway(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    monkeypatch.setenv("APP_KEY", APP_KEY)
    server = {"keys": ["os.environ/APP_KEY"]}
    with Served(build(tmp_path, provider, rules=RULES, server=server)) as served:
        yield served


def client(served: Served, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("api_key", APP_KEY)
    return anthropic.Anthropic(base_url=served.url, max_retries=0, **kw)


def test_a_routed_message_in_anthropics_shape(
    gateway: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    provider.answer("weather-model", "Rain after noon.")
    with client(gateway) as c:
        raw = c.messages.with_raw_response.create(
            model="auto",
            max_tokens=300,
            system=[{"type": "text", "text": "Be brief."}],
            messages=RAIN,
            stop_sequences=["END"],
            metadata={"user_id": "u-42"},
            output_config={"effort": "low"},
            extra_body={"temperature": 0.2},  # the API takes it; this client has no argument
        )
        message = raw.parse()
    assert raw.headers["x-semroute-route"] == "weather"
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "weather-model"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Rain after noon."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    request_id = log_lines(tmp_path)[-1]["request_id"]
    assert message.id == f"msg_{request_id}"
    body = provider.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "will it rain today"},
    ]
    assert body["max_tokens"] == 300 and body["stop"] == ["END"]
    # (metadata.user_id becomes `user`, which LiteLLM passes on only to OpenAI's own models.)
    assert body["temperature"] == 0.2
    assert body["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": APP_KEY}, 200),
        ({"Authorization": f"Bearer {APP_KEY}"}, 200),
        ({"x-api-key": "sk-wrong"}, 401),
        ({}, 401),
    ],
)
def test_the_key_in_x_api_key_or_bearer(
    gateway: Served, headers: dict[str, str], status: int
) -> None:
    body = {"model": "auto", "max_tokens": 20, "messages": RAIN}
    response = httpx.post(gateway.url + "/v1/messages", json=body, headers=headers, timeout=60)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["type"] == "authentication_error"


def test_a_pinned_model_and_bearer_auth(gateway: Served, provider: FakeProvider) -> None:
    with client(gateway, api_key=None, auth_token=APP_KEY) as c:
        message = c.messages.create(model="backup", max_tokens=50, messages=RAIN)
    assert message.model == "backup"
    assert provider.requests[-1].model == "backup"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_finish_reasons_map_to_stop_reasons(finish: str, stop_reason: str) -> None:
    from litellm.types.utils import ModelResponse

    from semroute.server.anthropic import message_of

    response = ModelResponse(
        choices=[
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "x"}}
        ]
    )
    assert message_of(response, "msg_1", "m")["stop_reason"] == stop_reason


def test_a_stream_of_anthropics_events(gateway: Served, provider: FakeProvider) -> None:
    provider.answer("weather-model", "Rain after noon, then sun.")
    with (
        client(gateway) as c,
        c.messages.stream(model="auto", max_tokens=100, messages=RAIN) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Rain after noon, then sun."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    assert provider.requests[-1].stream
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={"model": "auto", "max_tokens": 100, "messages": RAIN, "stream": True},
        headers={"x-api-key": APP_KEY},
        timeout=60,
    ) as response:
        kinds = [
            line.removeprefix("event: ")
            for line in response.iter_lines()
            if line.startswith("event: ")
        ]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}


def test_tool_use_round_trip_maps_onto_chat_completions(
    gateway: Served, provider: FakeProvider
) -> None:
    tools: Any = [
        {
            "name": "forecast",
            "description": "The forecast for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    messages: Any = [
        {"role": "user", "content": "will it rain today in Oslo"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "forecast",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain, 12C"},
                {"type": "text", "text": "will it rain today"},
            ],
        },
    ]
    with client(gateway) as c:
        c.messages.create(
            model="auto",
            max_tokens=100,
            tools=tools,
            tool_choice={"type": "tool", "name": "forecast", "disable_parallel_tool_use": True},
            messages=messages,
        )
    body = provider.requests[-1].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "forecast",
                "parameters": tools[0]["input_schema"],
                "description": "The forecast for a city",
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "forecast"}}
    assert body["parallel_tool_calls"] is False
    sent = body["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] == "Checking."
    call = sent[1]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["function"]["name"] == "forecast"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "rain, 12C"}
    assert sent[3] == {"role": "user", "content": "will it rain today"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "auto", "messages": RAIN}, "max_tokens"),
        ({"model": "auto", "max_tokens": 5, "messages": RAIN, "top_k": 3}, "top_k"),
        ({"model": "auto", "max_tokens": 5, "messages": RAIN, "n": 2}, "n"),
        (
            {
                "model": "auto",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
            },
            "messages[0].content[0]",
        ),
        (
            {"model": "auto", "max_tokens": 5, "messages": RAIN, "tools": [{"type": "bash_1"}]},
            "tools[0]",
        ),
        ({"model": "no-such-model", "max_tokens": 5, "messages": RAIN}, "no-such-model"),
    ],
)
def test_bad_requests_are_anthropic_errors_naming_the_field(
    gateway: Served, provider: FakeProvider, body: dict[str, Any], field: str
) -> None:
    response = httpx.post(
        gateway.url + "/v1/messages", json=body, headers={"x-api-key": APP_KEY}, timeout=60
    )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    assert provider.requests == []


def test_refusals_in_anthropics_error_format(gateway: Served, provider: FakeProvider) -> None:
    with client(gateway, api_key="wrong") as c, pytest.raises(anthropic.AuthenticationError) as bad:
        c.messages.create(model="auto", max_tokens=5, messages=RAIN)
    assert bad.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    secret: Any = [{"role": "user", "content": "my password is hunter2"}]
    with client(gateway) as c, pytest.raises(anthropic.PermissionDeniedError) as blocked:
        c.messages.create(model="auto", max_tokens=5, messages=secret)
    assert blocked.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    for model in ("weather-model", "backup", "last-resort"):
        provider.error(model, 500)
    with client(gateway) as c, pytest.raises(anthropic.InternalServerError) as failed:
        c.messages.create(model="auto", max_tokens=5, messages=RAIN)
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    response = httpx.get(gateway.url + "/v1/messages")
    assert response.status_code == 405 and response.json()["type"] == "error"


def test_count_tokens_estimates_without_asking_a_model(
    gateway: Served, provider: FakeProvider
) -> None:
    long = [{"role": "user", "content": "will it rain today " * 50}]
    with client(gateway) as c:
        short = c.messages.count_tokens(model="auto", messages=RAIN)
        more = c.messages.count_tokens(model="auto", messages=long)  # type: ignore[arg-type]
        tools = c.messages.count_tokens(
            model="auto",
            messages=RAIN,
            tools=[{"name": "forecast", "input_schema": {"type": "object"}}],
        )
    assert short.input_tokens == 5  # "will it rain today": 18 bytes / 4, rounded up
    assert more.input_tokens == 238  # 950 bytes / 4
    assert tools.input_tokens > short.input_tokens
    assert provider.requests == []
    response = httpx.post(
        gateway.url + "/v1/messages/count_tokens", json={"model": "auto"}, timeout=60
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_stream_that_breaks_ends_with_an_error_event(
    gateway: Served, provider: FakeProvider
) -> None:
    provider.break_stream("weather-model", after=2)
    body = {"model": "auto", "max_tokens": 100, "messages": RAIN, "stream": True}
    with httpx.stream(
        "POST", gateway.url + "/v1/messages", json=body, headers={"x-api-key": APP_KEY}, timeout=60
    ) as response:
        lines = list(response.iter_lines())
    kinds = [x.removeprefix("event: ") for x in lines if x.startswith("event: ")]
    assert kinds[0] == "message_start" and kinds[-1] == "error"
    assert "message_stop" not in kinds
    error = json.loads(lines[lines.index("event: error") + 1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"


blocks = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["text", "image", "tool_use", "tool_result", "document"])
            | values
        },
        optional={
            "text": values,
            "source": values,
            "id": values,
            "name": values,
            "input": values,
            "tool_use_id": values,
            "content": values,
            "is_error": values,
        },
    ),
    max_size=3,
)
anthropic_bodies = (
    st.fixed_dictionaries(
        {"model": st.sampled_from(["auto", "backup", "unknown-model"]) | values},
        optional={
            "max_tokens": st.integers(-5, 10**6) | values,
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "assistant", "system"]) | values},
                    optional={"content": st.text(max_size=40) | blocks | values},
                ),
                max_size=3,
            )
            | values,
            "system": st.text(max_size=20) | blocks | values,
            "stream": st.booleans() | values,
            "tools": values,
            "tool_choice": values,
            "stop_sequences": values,
            "metadata": values,
            "output_config": values,
            "temperature": values,
        },
    )
    | values
)


def test_no_body_makes_the_messages_api_fail(gateway: Served) -> None:
    with httpx.Client(timeout=60, headers={"x-api-key": APP_KEY}) as http:

        @fuzz(60)
        @given(body=anthropic_bodies)
        def check(body: Any) -> None:
            for path in ("/v1/messages", "/v1/messages/count_tokens"):
                with http.stream("POST", gateway.url + path, json=body) as response:
                    text = response.read().decode("utf-8", "replace")
                assert response.status_code in {200, 400, 403, 413, 502}, (body, text[:300])
                if response.status_code != 200:
                    error = json.loads(text)
                    assert error["type"] == "error", text[:300]
                    assert (
                        error["error"]["type"] in ERROR_TYPES.values()
                        or error["error"]["type"] == "api_error"
                    )
                    assert "\n" not in error["error"]["message"]

        check()
