"""Two `semroute serve` processes sharing one real redis-server, as replicas behind a load
balancer: what one learns about a failing model, or spends on a key, the other knows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from semroute.testing import FakeProvider
from tests.gateway_kit import build, serve_process
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import RedisServer, running_redis

APP_KEY = "sk-semroute-replicas-app-5d1e7c"
SMALL_KEY = "sk-semroute-replicas-small-92ab4f"
SERVER = {
    "keys": [
        "os.environ/REPLICA_APP_KEY",
        # Every answer costs more than this: one request spends the whole day's budget.
        {"key": "os.environ/REPLICA_SMALL_KEY", "budget_usd_per_day": 1e-9},
    ],
    "redis_url": "os.environ/REPLICA_REDIS_URL",
}


def ask(url: str, key: str = APP_KEY, text: str = "will it rain today") -> Any:
    """A chat completion with ``model: auto`` through the official client; its raw response."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": text}]
    return client.chat.completions.with_raw_response.create(model="auto", messages=messages)


@dataclass
class Replicas:
    provider: FakeProvider
    redis: RedisServer
    a: str
    b: str


def start(stack: ExitStack, index: Path, redis: RedisServer) -> str:
    env = {
        KEY_ENV: KEY,
        "REPLICA_APP_KEY": APP_KEY,
        "REPLICA_SMALL_KEY": SMALL_KEY,
        "REPLICA_REDIS_URL": redis.url,
    }
    _, url = stack.enter_context(serve_process(index, env=env))
    return str(url)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Replicas A and B of one index, on one redis-server and one FakeProvider (started once:
    a `semroute serve` takes seconds to start)."""
    folder = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        env.delenv("SEMROUTE_LOG", raising=False)  # each writes the log its index names
        redis = stack.enter_context(running_redis())
        provider = stack.enter_context(FakeProvider(hang_seconds=5))
        index = build(folder, provider, server=SERVER)
        yield Replicas(provider, redis, start(stack, index, redis), start(stack, index, redis))


def test_a_circuit_opened_through_one_replica_is_skipped_by_the_other(
    replicas: Replicas,
) -> None:
    provider = replicas.provider
    provider.error("weather-model", status=500)
    try:
        for _ in range(3):  # failures_to_open: 3
            raw = ask(replicas.a)
            assert raw.headers["x-semroute-model"] == "backup"
            assert raw.headers["x-semroute-fallbacks"] == "weather-model"
        assert provider.hits("weather-model") == 3

        raw = ask(replicas.b)
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-semroute-model"] == "backup"
        assert raw.headers["x-semroute-route"] == "weather"
        assert raw.headers["x-semroute-fallbacks"] == ""  # nothing was tried before backup
        assert raw.headers["x-semroute-skipped"] == "weather-model=unhealthy"
        assert provider.hits("weather-model") == 3  # replica B never sent it a request
    finally:
        provider.answer("weather-model")


def test_a_keys_daily_budget_is_shared_by_the_replicas(replicas: Replicas) -> None:
    provider = replicas.provider
    # The greeting route (frontier): untouched by the other tests' failing model.
    assert ask(replicas.a, SMALL_KEY, "hello there").headers["x-semroute-model"] == "frontier"
    answered = len(provider.requests)
    with pytest.raises(openai.APIStatusError) as refused:
        ask(replicas.b, SMALL_KEY, "hello there")  # B has served this key nothing: A spent it
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert error["code"] == "over_daily_budget" and SMALL_KEY not in error["message"]
    assert len(provider.requests) == answered  # refused before any model was called
    assert ask(replicas.b, APP_KEY, "hello there").headers["x-semroute-model"] == "frontier"


def test_a_replica_keeps_answering_when_redis_goes_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis())
        provider = stack.enter_context(FakeProvider(hang_seconds=5))
        a = start(stack, build(tmp_path, provider, server=SERVER), redis)
        assert ask(a).headers["x-semroute-model"] == "weather-model"
        redis.stop()
        for key in (APP_KEY, SMALL_KEY, SMALL_KEY):  # no budget can be checked without Redis
            assert ask(a, key).headers["x-semroute-model"] == "weather-model"
        not_ready = httpx.get(a + "/readyz", timeout=10)
        assert not_ready.status_code == 503
        assert "cannot be reached" in not_ready.json()["problem"]
        redis.start()
        assert httpx.get(a + "/readyz", timeout=10).status_code == 200
        assert ask(a).headers["x-semroute-model"] == "weather-model"
