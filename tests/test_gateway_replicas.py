"""Two `semroute serve` processes sharing one real redis-server, as replicas behind a load
balancer: what one learns about a failing model, or spends on a key, the other knows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis as redis_py

from semroute.server.spend import key_id, utc_today
from semroute.testing import FakeProvider
from tests.gateway_kit import build, serve_process
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import RedisServer, running_redis

APP_KEY = "sk-semroute-replicas-app-5d1e7c"
SMALL_KEY = "sk-semroute-replicas-small-92ab4f"
SHARED_KEY = "sk-semroute-replicas-shared-7c3e1a"
RACE_KEY = "sk-semroute-replicas-race-0b6f13"
# "hello there" is answered by frontier with "Hello from frontier.": 2 prompt tokens at $1/M and
# 3 completion tokens at $2/M.
HELLO_COST = 2 * 1e-6 + 3 * 2e-6
SERVER = {
    "keys": [
        "os.environ/REPLICA_APP_KEY",
        # Every answer costs more than this: one request spends the whole day's budget.
        {"key": "os.environ/REPLICA_SMALL_KEY", "budget_usd_per_day": 1e-9},
        # One and a half answers: the second is let in (1 spent), the third is not (2 spent).
        {"key": "os.environ/REPLICA_SHARED_KEY", "budget_usd_per_day": 1.5 * HELLO_COST},
        {"key": "os.environ/REPLICA_RACE_KEY", "budget_usd_per_day": 2.5 * HELLO_COST},
    ],
    "redis_url": "os.environ/REPLICA_REDIS_URL",
}


def ask(url: str, key: str = APP_KEY, text: str = "will it rain today") -> Any:
    """A chat completion with ``model: auto`` through the official client; its raw response."""
    messages: Any = [{"role": "user", "content": text}]
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30) as client:
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
        "REPLICA_SHARED_KEY": SHARED_KEY,
        "REPLICA_RACE_KEY": RACE_KEY,
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
    for url in (replicas.a, replicas.b):  # 1 spent through A, then 2 in all through B
        assert ask(url, SHARED_KEY, "hello there").headers["x-semroute-model"] == "frontier"
    answered = len(provider.requests)
    with pytest.raises(openai.APIStatusError) as refused:
        ask(replicas.b, SHARED_KEY, "hello there")  # B alone has spent 1 of 1.5: A spent the rest
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert error["code"] == "over_daily_budget" and SHARED_KEY not in error["message"]
    assert f"${2 * HELLO_COST:.2g}" in error["message"]
    assert len(provider.requests) == answered  # refused before any model was called
    assert ask(replicas.b, APP_KEY, "hello there").headers["x-semroute-model"] == "frontier"


def test_replicas_racing_on_one_budget_overshoot_it_by_their_requests_in_flight(
    replicas: Replicas,
) -> None:
    provider = replicas.provider

    def hello(url: str) -> Any:
        try:
            return ask(url, RACE_KEY, "hello there")
        except openai.APIStatusError as exc:
            return exc.status_code

    # Two requests in turn, one through each replica: 2 costs spent, under 2.5.
    for url in (replicas.a, replicas.b):
        raw = hello(url)
        assert float(raw.headers["x-semroute-cost-usd"]) == pytest.approx(HELLO_COST)
    # Then two at once on each replica, held at the provider until all four are in flight:
    # each was let in under the budget, so each is answered and charged.
    gate = threading.Event()
    provider.answer("frontier", gate=gate)
    before = provider.hits("frontier")
    try:
        with ThreadPoolExecutor(4) as pool:
            racing = [pool.submit(hello, url) for url in (replicas.a, replicas.b) * 2]
            deadline = time.monotonic() + 30
            while provider.hits("frontier") < before + 4:
                assert time.monotonic() < deadline, "the four requests never were in flight"
                time.sleep(0.02)
            gate.set()
            outs = [f.result() for f in racing]
    finally:
        provider.answer("frontier")
    assert [o if isinstance(o, int) else 200 for o in outs] == [200] * 4
    client = redis_py.Redis.from_url(replicas.redis.url)
    spent = float(client.get(f"semroute:spend:{key_id(RACE_KEY)}:{utc_today()}") or 0)
    assert spent == pytest.approx(6 * HELLO_COST)  # every answer counted once
    # The documented bound: past the budget by at most what the requests in flight cost.
    assert spent - 2.5 * HELLO_COST <= 4 * HELLO_COST
    assert hello(replicas.a) == 402 and hello(replicas.b) == 402


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
        for key in (APP_KEY, SMALL_KEY):
            assert ask(a, key).headers["x-semroute-model"] == "weather-model"
        with pytest.raises(openai.APIStatusError) as refused:  # spend counted in the process
            ask(a, SMALL_KEY)
        assert refused.value.status_code == 402
        not_ready = httpx.get(a + "/readyz", timeout=10)
        assert not_ready.status_code == 503
        assert "cannot be reached" in not_ready.json()["problem"]
        redis.start()
        deadline = time.monotonic() + 30  # asked again once a second
        while httpx.get(a + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready again"
            time.sleep(0.1)
        assert ask(a).headers["x-semroute-model"] == "weather-model"
