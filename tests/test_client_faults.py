"""A client's bad request is the client's fault: it is a 400 in OpenAI's shape, it never counts
against a model's health (nor LiteLLM's cooldowns), so no tenant can open a breaker for the
others, and it is not sent down the chain to the next model."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from semroute import InvalidQueryError, RequestRejectedError
from semroute.testing import FakeProvider
from tests import provider_kit
from tests.gateway_kit import Served, build

pytestmark = pytest.mark.usefixtures("provider_key")

ASK_WEATHER = [{"role": "user", "content": "will it rain today"}]
MODELS = ("frontier", "weather-model", "backup", "last-resort")
TIMES = 5
"""Requests per test: over the breaker's failures_to_open (3) and LiteLLM's allowed_fails."""


@pytest.fixture
def gateway(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    with Served(build(tmp_path, provider)) as served:
        yield served


def post_raw(served: Served, raw: str, path: str = "/v1/chat/completions") -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(served.url + path, content=raw.encode(), headers=headers, timeout=30)


def breakers(served: Served) -> dict[str, float]:
    prefix = "semroute_breaker_state{model="
    lines = httpx.get(served.url + "/metrics").text.splitlines()
    return {
        line[len(prefix) + 1 : line.index('"}')]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix)
    }


def assert_all_closed(served: Served) -> None:
    assert breakers(served) == dict.fromkeys(MODELS, 0.0)


# --- numbers JSON has no form for ---------------------------------------------------------------

MESSAGES = json.dumps(ASK_WEATHER)
NON_FINITE = [
    (f'{{"model": "auto", "messages": {MESSAGES}, "temperature": NaN}}', "temperature", "NaN"),
    (f'{{"model": "auto", "messages": {MESSAGES}, "temperature": 1e400}}', "temperature", "inf"),
    (f'{{"model": "auto", "messages": {MESSAGES}, "top_p": -Infinity}}', "top_p", "inf"),
    (
        f'{{"model": "weather-model", "messages": {MESSAGES}, '
        '"tools": [{"type": "function", "function": {"x": [1, -1e999]}}]}',
        "tools[0].function.x[1]",
        "inf",
    ),
    (
        '{"model": "auto", "messages": [{"role": "user", "content": "rain", "weight": NaN}]}',
        "messages[0].weight",
        "NaN",
    ),
]


@pytest.mark.parametrize(("raw", "field", "kind"), NON_FINITE)
def test_a_number_that_is_not_finite_is_a_400_naming_its_place(
    gateway: Served, provider: FakeProvider, raw: str, field: str, kind: str
) -> None:
    for path in ("/v1/chat/completions", "/v1/route"):
        response = post_raw(gateway, raw, path)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["message"].startswith(f"{field}: should be a finite number"), error
        assert kind.lower() in error["message"].lower()
        assert error["type"] == "invalid_request_error"
    assert provider.requests == []


def test_non_finite_numbers_never_open_a_breaker(gateway: Served, provider: FakeProvider) -> None:
    for _ in range(TIMES):
        for raw, _field, _kind in NON_FINITE:
            assert post_raw(gateway, raw).status_code == 400
    assert provider.requests == []
    assert_all_closed(gateway)
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "auto", "messages": ASK_WEATHER},
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["x-semroute-model"] == "weather-model"
    assert "x-semroute-skipped" not in answer.headers or not answer.headers["x-semroute-skipped"]


# --- a request the provider rejects ---------------------------------------------------------------


def test_a_request_the_model_rejects_is_a_400_and_never_opens_its_breaker(
    gateway: Served, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=400)
    body = {"model": "auto", "messages": ASK_WEATHER}
    for _ in range(TIMES):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "rejected_by_model"
        assert error["type"] == "invalid_request_error"
        assert "'weather-model' rejected the request" in error["message"]
        assert [a["model"] for a in error["attempts"]] == ["weather-model"]
        assert error["attempts"][0]["status"] == 400
        assert response.headers["x-semroute-fallbacks"] == "weather-model"
    # Not sent on down the chain: the next model would get the same request.
    assert provider.hits("weather-model") == TIMES
    assert provider.hits("backup") == provider.hits("last-resort") == 0
    assert_all_closed(gateway)
    provider.answer("weather-model")
    answer = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["x-semroute-model"] == "weather-model"
    assert answer.headers["x-semroute-fallbacks"] == ""
    assert provider.hits("weather-model") == TIMES + 1  # LiteLLM did not cool it down either


def test_a_request_too_large_for_one_model_goes_on_to_the_next(
    gateway: Served, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=413)
    body = {"model": "auto", "messages": ASK_WEATHER}
    for _ in range(TIMES):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["x-semroute-model"] == "backup"
        assert response.headers["x-semroute-fallbacks"] == "weather-model"
    assert_all_closed(gateway)


def test_provider_failures_still_open_the_breaker(gateway: Served, provider: FakeProvider) -> None:
    """The other side of the line: a 500 from the provider counts."""
    provider.error("weather-model", status=500)
    for _ in range(3):  # failures_to_open: 3
        httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "auto", "messages": ASK_WEATHER},
            timeout=30,
        )
    assert breakers(gateway)["weather-model"] == 2.0


# --- the library: what the gateway's body check does not see ---------------------------------------


def test_the_library_refuses_non_finite_numbers_before_any_model_is_tried(
    tmp_path: Path, provider: FakeProvider
) -> None:
    router, dispatcher = provider_kit.build(tmp_path, provider)
    with dispatcher:
        for kwargs in ({"temperature": math.nan}, {"logit_bias": {"50256": -math.inf}}):
            with pytest.raises(InvalidQueryError, match="should be a finite number"):
                dispatcher.complete("will it rain today", router=router, **kwargs)
        with pytest.raises(InvalidQueryError, match=r'messages\[0\]\["weight"\]'):
            dispatcher.complete(
                [{"role": "user", "content": "hi", "weight": math.inf}], router=router
            )
    assert provider.requests == []


def test_a_request_that_cannot_be_sent_never_counts_against_the_model(
    tmp_path: Path, provider: FakeProvider
) -> None:
    """LiteLLM fails to serialise the body before a byte leaves, and reports it as a 500."""
    router, dispatcher = provider_kit.build(tmp_path, provider)
    with dispatcher:
        for _ in range(TIMES):
            with pytest.raises(RequestRejectedError) as caught:
                dispatcher.complete("will it rain today", router=router, user_data=object())
            assert [a.model for a in caught.value.attempts] == ["weather-model"]
            assert "not JSON serializable" in (caught.value.attempts[0].error or "")
        assert provider.requests == []
        assert dispatcher.health is not None
        for model in MODELS:
            assert dispatcher.health.health(model).state == "closed"
            assert dispatcher.health.health(model).failures_in_a_row == 0
        result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "weather-model"
    assert [a.model for a in result.attempts] == ["weather-model"]


# --- bodies that are not Unicode ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (
            '{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages[0].content",
        ),
        (
            '{"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", '
            '"text": "rain \\udfff today"}]}]}',
            "messages[0].content[0].text",
        ),
        (
            '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], '
            '"tools": [{"\\ud83d": 1}]}',
            "tools[0]",
        ),
    ],
)
def test_a_lone_surrogate_is_a_400_that_says_what_is_wrong(
    gateway: Served, provider: FakeProvider, raw: str, where: str
) -> None:
    for path in ("/v1/chat/completions", "/v1/route"):
        response = post_raw(gateway, raw, path)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert message.startswith(f"{where}: "), message
        assert "lone UTF-16 surrogate" in message and "valid Unicode" in message
    assert provider.requests == []


def test_a_surrogate_pair_is_one_character(gateway: Served) -> None:
    raw = '{"model": "auto", "messages": [{"role": "user", "content": "rain \\ud83d\\ude00"}]}'
    assert post_raw(gateway, raw).status_code == 200


def test_bytes_that_are_not_utf8_are_named(gateway: Served) -> None:
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'
    response = httpx.post(gateway.url + "/v1/chat/completions", content=raw, timeout=30)
    assert response.status_code == 400
    at = raw.index(b"\xed")
    assert f"byte {at} is not UTF-8" in response.json()["error"]["message"]
