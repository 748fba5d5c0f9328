"""A `semroute serve` process whose Redis goes away, hangs or holds keys something else wrote:
budgets still hold (counted in the process meanwhile, and a value that is not a count refuses
the key), one bad key spoils only itself, and a frozen Redis holds no request for long."""

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
import redis

from semroute.server.spend import key_id, utc_today
from semroute.testing import FakeProvider
from tests.gateway_kit import build, serve_process
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import RedisServer, running_redis

APP_KEY = "sk-semroute-outage-app-3c81d0"
SMALL_KEY = "sk-semroute-outage-small-77e2a9"
HELLO = "hello there"
# "hello there" is answered by frontier with "Hello from frontier.": 2 prompt tokens at $1/M and
# 3 completion tokens at $2/M.
COST = 2 * 1e-6 + 3 * 2e-6
BUDGET = 2.5 * COST  # the 3rd request takes the key over it; the 4th is refused
SERVER = {
    "keys": [
        "os.environ/OUTAGE_APP_KEY",
        {"key": "os.environ/OUTAGE_SMALL_KEY", "budget_usd_per_day": BUDGET},
    ],
    "redis_url": "os.environ/OUTAGE_REDIS_URL",
}


@dataclass
class Gateway:
    url: str
    redis: RedisServer
    provider: FakeProvider

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, socket_timeout=5)


def start(stack: ExitStack, index: Path, server: RedisServer) -> str:
    env = {
        KEY_ENV: KEY,
        "OUTAGE_APP_KEY": APP_KEY,
        "OUTAGE_SMALL_KEY": SMALL_KEY,
        "OUTAGE_REDIS_URL": server.url,
    }
    _, url = stack.enter_context(serve_process(index, env=env))
    return str(url)


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """One `semroute serve` on a redis-server of its own and a FakeProvider."""
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    with ExitStack() as stack:
        server = stack.enter_context(running_redis())
        provider = stack.enter_context(FakeProvider(hang_seconds=5))
        yield Gateway(
            start(stack, build(tmp_path, provider, server=SERVER), server), server, provider
        )


def ask(url: str, key: str = SMALL_KEY, text: str = HELLO, timeout: float = 30) -> Any:
    """A chat completion through the official client: its raw response, or the status of the
    error it got."""
    messages: Any = [{"role": "user", "content": text}]
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=timeout) as client:
        try:
            return client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        except openai.APIStatusError as exc:
            return exc.status_code


def answered_until_refused(url: str, most: int = 8) -> int:
    """How many requests of the small key are answered before the first 402."""
    for n in range(most):
        out = ask(url)
        if out == 402:
            return n
        assert not isinstance(out, int), out
        assert float(out.headers["x-semroute-cost-usd"]) == pytest.approx(COST)
    raise AssertionError(f"{most} requests answered on a budget of {BUDGET}")


def spend_key() -> str:
    return f"semroute:spend:{key_id(SMALL_KEY)}:{utc_today()}"


def test_the_budget_holds_while_redis_is_down(gateway: Gateway) -> None:
    assert ask(gateway.url, APP_KEY).headers["x-semroute-model"] == "frontier"  # Redis known
    gateway.redis.stop()
    assert answered_until_refused(gateway.url) == 3  # counted in the process meanwhile
    gateway.redis.start()  # empty: nothing was persisted
    client = gateway.client()
    deadline = time.monotonic() + 30
    while client.get(spend_key()) is None:  # the next request adds what was counted meanwhile
        assert time.monotonic() < deadline, "the spend counted during the outage never came back"
        assert ask(gateway.url) == 402
        time.sleep(0.2)
    assert float(client.get(spend_key()) or 0) == pytest.approx(3 * COST)


def test_a_spend_that_is_not_a_count_refuses_the_key(gateway: Gateway) -> None:
    client = gateway.client()
    for garbage in (b"garbage", b"nan", b"-5"):
        client.set(spend_key(), garbage)
        out = ask(gateway.url)
        assert out == 402, garbage
    client.delete(spend_key())
    assert answered_until_refused(gateway.url) == 3


def test_a_wrong_typed_key_spoils_only_itself(gateway: Gateway) -> None:
    client = gateway.client()
    client.set("semroute:health:frontier", "garbage")  # a string where a hash belongs
    client.set("semroute:health-window:frontier", "garbage")
    # frontier answers (no data on its health); spend is still counted and shared.
    assert answered_until_refused(gateway.url) == 3
    assert float(client.get(spend_key()) or 0) == pytest.approx(3 * COST)
    gateway.provider.error("weather-model", status=500)
    for _ in range(3):  # other models' breakers still work through Redis
        assert ask(gateway.url, APP_KEY, "will it rain today").headers["x-semroute-model"] == (
            "backup"
        )
    skipped = ask(gateway.url, APP_KEY, "will it rain today").headers["x-semroute-skipped"]
    assert skipped == "weather-model=unhealthy"


def timed_get(url: str) -> float:
    started = time.monotonic()
    assert httpx.get(url, timeout=30).status_code in (200, 503)
    return time.monotonic() - started


def test_a_frozen_redis_holds_no_request_for_long(gateway: Gateway) -> None:
    url = gateway.url
    assert not isinstance(ask(url), int)  # one request's cost spent, in Redis
    gateway.redis.pause()  # SIGSTOP: connections stay open, nothing is answered
    healthz: list[float] = []
    chats: list[tuple[float, Any]] = []
    try:
        stop = threading.Event()

        def keep_probing() -> None:
            while not stop.is_set():
                healthz.append(timed_get(url + "/healthz"))

        def keep_checking_ready() -> None:  # a load balancer's probes: they must not pile up
            while not stop.is_set():
                timed_get(url + "/readyz")

        def timed_chat() -> tuple[float, Any]:
            started = time.monotonic()
            out = ask(url)
            return time.monotonic() - started, out

        with ThreadPoolExecutor(6) as pool:
            probing = pool.submit(keep_probing)
            balancers = [pool.submit(keep_checking_ready) for _ in range(3)]
            try:
                for _ in range(3):
                    chats.append(pool.submit(timed_chat).result())
                ready = timed_get(url + "/readyz")
                readyz = httpx.get(url + "/readyz", timeout=30)
            finally:
                stop.set()
                probing.result()
                for balancer in balancers:
                    balancer.result()
    finally:
        gateway.redis.resume()
    # Generous on a loaded machine: unbounded, it took 1 s (each probe blocking the loop).
    assert max(healthz) < 0.75, healthz
    assert [t for t, _ in chats if t >= 3] == [], chats
    # One request was answered before the freeze; the 2nd and 3rd take the key over, counted in
    # the process while Redis is frozen: the 4th is refused.
    assert [out if isinstance(out, int) else 200 for _, out in chats] == [200, 200, 402]
    assert ready < 3 and readyz.status_code == 503
    # Back: what was counted meanwhile reaches Redis, and readiness returns.
    client = gateway.client()
    deadline = time.monotonic() + 30
    while httpx.get(url + "/readyz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "never ready again"
        time.sleep(0.1)
    assert ask(url) == 402
    assert float(client.get(spend_key()) or 0) == pytest.approx(3 * COST)
