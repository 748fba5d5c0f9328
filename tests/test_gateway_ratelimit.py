"""Per-key rate limits through the gateway, with the official openai client: `rpm` and `tpm`
refuse with OpenAI's 429 and a sane Retry-After, the limit is shared by two gateways on one real
redis-server, and still holds (per process) while Redis is stopped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis as redis_py

from semroute.dispatch.redis_link import RedisLink
from semroute.server.ratelimit import LocalLimiter, RedisLimiter, _window
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, serve_process
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import RedisServer, running_redis

RPM_KEYS = ("sk-semroute-rate-rpm-3c81", "sk-semroute-rate-rpm-again-5f02")
TPM_KEYS = ("sk-semroute-rate-tpm-77ae", "sk-semroute-rate-tpm-again-92c4")
FREE_KEY = "sk-semroute-rate-free-1b0d"
SERVER: dict[str, Any] = {
    "keys": [
        {"key": "os.environ/RATE_RPM_KEY", "rpm": 3},
        {"key": "os.environ/RATE_RPM_KEY_AGAIN", "rpm": 3},
        {"key": "os.environ/RATE_TPM_KEY", "tpm": 1000},
        {"key": "os.environ/RATE_TPM_KEY_AGAIN", "tpm": 1000},
        "os.environ/RATE_FREE_KEY",
    ],
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("RATE_RPM_KEY", RPM_KEYS[0])
    monkeypatch.setenv("RATE_RPM_KEY_AGAIN", RPM_KEYS[1])
    monkeypatch.setenv("RATE_TPM_KEY", TPM_KEYS[0])
    monkeypatch.setenv("RATE_TPM_KEY_AGAIN", TPM_KEYS[1])
    monkeypatch.setenv("RATE_FREE_KEY", FREE_KEY)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)


def ask(url: str, key: str, **kw: Any) -> Any:
    messages: Any = [{"role": "user", "content": "will it rain today"}]
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30) as client:
        return client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, **kw
        )


def in_one_minute(
    attempt: Callable[[str], list[int | str]], keys: tuple[str, str] = RPM_KEYS
) -> list[int | str]:
    """``attempt(key)``'s outcomes, from a run that began and ended in the same UTC minute (a
    run that straddled two is made again, once, with a fresh key: limits count per minute)."""
    for key in keys:
        before = int(time.time() // 60)
        outcomes = attempt(key)
        if int(time.time() // 60) == before:
            return outcomes
    raise AssertionError("two runs straddled a minute's end")


def statuses(provider: FakeProvider, urls: list[str], n: int) -> Callable[[str], list[int | str]]:
    """Send ``n`` requests with a key, turn by turn to each of ``urls``; each one's status
    (and the Retry-After of a 429). Only the requests let in reach a model."""

    def run(key: str) -> list[int | str]:
        reached = len(provider.requests)
        out: list[int | str] = []
        for i in range(n):
            try:
                out.append(ask(urls[i % len(urls)], key).http_response.status_code)
            except openai.RateLimitError as exc:
                body: Any = exc.body
                assert body["code"] == "rate_limit_exceeded" and body["type"] == "requests"
                assert "3" in body["message"]
                retry = int(exc.response.headers["retry-after"])
                assert 1 <= retry <= 60
                out.append(f"429 after {retry}")
        assert len(provider.requests) - reached == out.count(200)
        return out

    return run


def test_the_fourth_request_in_a_minute_is_429_with_retry_after(tmp_path: Path, env: None) -> None:
    with FakeProvider() as provider, Served(build(tmp_path, provider, server=SERVER)) as served:
        outcomes = in_one_minute(statuses(provider, [served.url], 4))
        assert outcomes[:3] == [200, 200, 200]
        assert str(outcomes[3]).startswith("429 after")
        # Another key is not limited by it.
        assert ask(served.url, FREE_KEY).http_response.status_code == 200


def test_tokens_per_minute_count_prompt_and_max_tokens(tmp_path: Path, env: None) -> None:
    with FakeProvider() as provider, Served(build(tmp_path, provider, server=SERVER)) as served:

        def run(key: str) -> list[int | str]:
            out: list[int | str] = []
            for max_tokens in (600, 600):
                try:
                    out.append(ask(served.url, key, max_tokens=max_tokens).status_code)
                except openai.RateLimitError as exc:
                    body: Any = exc.body
                    assert body["type"] == "tokens"
                    out.append(429)
            return out

        assert in_one_minute(run, TPM_KEYS) == [200, 429]
        # A request larger than the whole limit is refused at once, whatever the window holds.
        with pytest.raises(openai.RateLimitError, match="more than"):
            ask(served.url, TPM_KEYS[0], max_tokens=5000)


@pytest.fixture
def shared(tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A redis-server, a FakeProvider and an index whose limits are shared through it."""
    with running_redis() as redis, FakeProvider() as provider:
        monkeypatch.setenv("RATE_REDIS_URL", redis.url)
        server = {**SERVER, "redis_url": "os.environ/RATE_REDIS_URL"}
        yield redis, provider, build(tmp_path, provider, server=server)


def test_two_gateways_on_one_redis_hold_the_limit_together(shared: Any) -> None:
    redis, provider, index = shared
    env = {k: os.environ[k] for k in os.environ if k.startswith(("RATE_", KEY_ENV))}
    with serve_process(index, env=env) as (_, a), serve_process(index, env=env) as (_, b):
        outcomes = in_one_minute(statuses(provider, [a, b], 5))
    assert outcomes[:3] == [200, 200, 200]
    assert all(str(o).startswith("429") for o in outcomes[3:])
    assert redis_py.Redis.from_url(redis.url).keys("semroute:rate:*")  # counted in Redis


def test_with_redis_stopped_the_limit_holds_in_each_process(shared: Any) -> None:
    redis, provider, index = shared
    with Served(index) as served:
        redis.stop()
        try:
            outcomes = in_one_minute(statuses(provider, [served.url], 4))
        finally:
            redis.start()
    assert outcomes[:3] == [200, 200, 200]
    assert str(outcomes[3]).startswith("429")


# --- the limiters themselves, on a clock of the test's ----------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_new_minute_lets_requests_in_again_and_retry_after_counts_down() -> None:
    clock = Clock(600.0 + 45.2)  # 14.8 s before the minute ends
    limiter = LocalLimiter(clock=clock)
    assert [limiter.take("k", 2, None, 0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.take("k", 2, None, 0).retry_after_s == 15
    clock.now = 660.0
    assert limiter.take("k", 2, None, 0).allowed
    assert _window(659.999)[1] == 1  # never 0


def test_a_refused_request_is_not_counted_against_the_tokens() -> None:
    limiter = LocalLimiter(clock=Clock(0.0))
    assert limiter.take("k", None, 100, 80).allowed
    assert not limiter.take("k", None, 100, 30).allowed  # 110 > 100: not counted
    assert limiter.take("k", None, 100, 20).allowed  # 100: fits


def test_a_count_in_redis_that_is_not_a_number_refuses_the_key(redis_server: RedisServer) -> None:
    link = RedisLink.from_url(redis_server.url)
    clock = Clock(1200.0)
    limiter = RedisLimiter(link, prefix="t", clock=clock)
    assert limiter.take("k", 5, None, 1).allowed
    redis_py.Redis.from_url(redis_server.url).set("t:rate:k:20:requests", "garbage")
    verdict = limiter.take("k", 5, None, 1)
    assert not verdict.allowed and verdict.limit == "unreadable"
    link.close()


def test_over_the_limit_on_the_messages_api_is_anthropics_rate_limit_error(
    tmp_path: Path, env: None
) -> None:
    rain: Any = [{"role": "user", "content": "will it rain today"}]
    with FakeProvider() as provider, Served(build(tmp_path, provider, server=SERVER)) as served:

        def run(key: str) -> list[int | str]:
            out: list[int | str] = []
            with anthropic.Anthropic(base_url=served.url, api_key=key, max_retries=0) as client:
                for _ in range(4):
                    try:
                        client.messages.create(model="auto", max_tokens=50, messages=rain)
                        out.append(200)
                    except anthropic.RateLimitError as exc:
                        body: Any = exc.body
                        assert body["type"] == "error"
                        assert body["error"]["type"] == "rate_limit_error"
                        assert "rate limit reached" in body["error"]["message"]
                        retry = int(exc.response.headers["retry-after"])
                        assert 1 <= retry <= 60
                        out.append(f"429 after {retry}")
            return out

        outcomes = in_one_minute(run)
        assert outcomes[:3] == [200, 200, 200]
        assert str(outcomes[3]).startswith("429 after")
        assert len(provider.requests) == 3
