"""State shared between gateway processes through a real redis-server: health behaves exactly as
in one process, replicas see each other's circuits, spend is counted once, and Redis going away
never fails a request."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semroute import Dispatcher
from semroute.config.deployments import DispatchConfig, HealthSettings
from semroute.dispatch.health import HealthStore, LocalHealthStore, Outcome
from semroute.dispatch.shared_health import RedisHealthStore, RedisLink
from semroute.errors import ServeError
from semroute.server.shared import shared_state
from semroute.server.spend import LocalSpendStore, RedisSpendStore, key_id
from semroute.testing import FakeProvider
from tests.provider_kit import build
from tests.redis_kit import RedisServer

OPEN_AFTER_3 = "circuit open: 3 failures in a row"
FAIL = Outcome(False, 10.0)
OK = Outcome(True, 10.0)


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeStore = Callable[..., HealthStore]
Connect = Callable[..., RedisLink]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Opens links to Redis, each with a connection of its own (as another process has); all
    closed after the test."""
    links: list[RedisLink] = []

    def open_link(url: str, **options: Any) -> RedisLink:
        links.append(RedisLink.from_url(url, **options))
        return links[-1]

    yield open_link
    for link in links:
        link.close()


def redis_store(
    link: RedisLink, settings: HealthSettings, clock: Clock, **options: Any
) -> RedisHealthStore:
    return RedisHealthStore(
        link, settings, clock=clock, prefix=options.pop("prefix", "test"), **options
    )


@pytest.fixture(params=["local", "redis"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Builds a health store of the kind the test is run with."""
    if request.param == "local":
        return lambda s, clock, **o: LocalHealthStore(s, clock=clock, **o)
    url, connect = request.getfixturevalue("redis_url"), request.getfixturevalue("connect")
    return lambda s, clock, **o: redis_store(connect(url), s, clock, **o)


# --- the same behaviour in one process and in Redis ---------------------------------------------


def test_failures_in_a_row_open_the_circuit_with_a_countdown(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(HealthSettings(), clock)
    for _ in range(2):
        store.record("m", FAIL)
    assert store.admit("m").allowed
    store.record("m", FAIL)
    refused = store.admit("m")
    assert not refused.allowed and not refused.degraded
    assert refused.detail == OPEN_AFTER_3 + ", retry in 30 s"
    clock.now += 29
    assert store.admit("m").detail == OPEN_AFTER_3 + ", retry in 1 s"
    h = store.health("m")
    assert (h.state, h.requests, h.error_rate, h.failures_in_a_row) == ("open", 3, 1.0, 3)
    assert h.cause == OPEN_AFTER_3
    assert store.health("other").state == "closed" and store.health("other").requests == 0


def test_one_probe_after_the_cool_off_and_its_answer_closes(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(HealthSettings(), clock)
    for _ in range(3):
        store.record("m", FAIL)
    clock.now += 30
    probe = store.admit("m")
    assert probe.allowed and probe.probe
    second = store.admit("m")
    assert not second.allowed
    assert second.detail == OPEN_AFTER_3 + "; a probe request is in flight"
    assert store.health("m").state == "half_open"
    store.record("m", Outcome(True, 12.0, probe=True))
    h = store.health("m")
    assert (h.state, h.requests, h.error_rate, h.p95_ms, h.cause) == ("closed", 1, 0.0, 12.0, None)
    assert store.admit("m") == store.admit("m") and store.admit("m").allowed


def test_a_failed_probe_opens_the_circuit_again(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(HealthSettings(), clock)
    for _ in range(3):
        store.record("m", FAIL)
    clock.now += 30
    assert store.admit("m").probe
    store.record("m", Outcome(False, 10.0, probe=True))
    refused = store.admit("m")
    assert refused.detail == "circuit open: the probe request failed, retry in 30 s"


def test_a_probe_that_never_reports_is_given_up_after_its_lease(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(HealthSettings(), clock, probe_lease_s=10.0)
    for _ in range(3):
        store.record("m", FAIL)
    clock.now += 30
    assert store.admit("m").probe
    clock.now += 9
    assert not store.admit("m").allowed
    clock.now += 1
    assert store.admit("m").probe  # the first probe's request was cancelled: a new one


def test_an_error_rate_over_the_bound_opens_the_circuit(make_store: MakeStore) -> None:
    s = HealthSettings(window=4, min_requests=4, max_error_rate=0.5, failures_to_open=3)
    store = make_store(s, Clock())
    for ok in (False, True, False, True, False):  # the oldest falls out: T F T F, 50%
        store.record("m", Outcome(ok, 10.0))
    assert store.admit("m").allowed and store.health("m").requests == 4
    store.record("m", FAIL)  # F T F F: 75%, with only 2 failures in a row
    assert store.admit("m").detail == "circuit open: 3 of the last 4 requests failed, retry in 30 s"


def test_a_slow_model_is_degraded_and_a_slow_probe_keeps_it_so(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(HealthSettings(window=2, min_requests=2, max_p95_ms=40.0), clock)
    store.record("m", Outcome(True, 50.0))
    store.record("m", Outcome(True, 60.0))
    refused = store.admit("m")
    assert (
        refused.degraded
        and refused.detail == "degraded: p95 latency 60 ms over 40 ms, retry in 30 s"
    )
    clock.now += 30
    assert store.admit("m").probe
    store.record("m", Outcome(True, 55.0, probe=True))
    assert store.admit("m").detail == "degraded: the probe request took 55 ms, retry in 30 s"
    clock.now += 30
    assert store.admit("m").probe
    store.record("m", Outcome(True, 5.0, probe=True))
    assert store.health("m").state == "closed"


def test_an_answer_let_in_before_the_circuit_opened_does_not_close_it(
    make_store: MakeStore,
) -> None:
    store = make_store(HealthSettings(), Clock())
    for _ in range(3):
        store.record("m", FAIL)
    store.record("m", OK)
    assert store.health("m").state == "open"


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.sampled_from(["a", "b"])),
        st.tuples(
            st.just("record"),
            st.sampled_from(["a", "b"]),
            st.sampled_from([True, True, True, False]),  # mostly answers: windows fill up
            st.sampled_from([5.0, 5.0, 80.0]),
            st.booleans(),
        ),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 15.0, 31.0])),
    ),
    max_size=60,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS, p95=st.sampled_from([None, 50.0]))
def test_redis_and_local_stores_answer_alike(
    redis_url: str, ops: list[tuple[Any, ...]], p95: float | None, connect: Connect
) -> None:
    s = HealthSettings(window=5, min_requests=3, failures_to_open=3, max_p95_ms=p95)
    clock = Clock()
    local = LocalHealthStore(s, clock=clock, probe_lease_s=20.0)
    shared = redis_store(connect(redis_url), s, clock, probe_lease_s=20.0, prefix=uuid.uuid4().hex)
    for op in ops:
        if op[0] == "wait":
            clock.now += op[1]
        elif op[0] == "admit":
            assert shared.admit(op[1]) == local.admit(op[1])
        else:
            _, model, ok, ms, probe = op
            local.record(model, Outcome(ok, ms, probe=probe))
            shared.record(model, Outcome(ok, ms, probe=probe))
        for model in ("a", "b"):
            assert shared.health(model) == local.health(model)


# --- replicas share their circuits -----------------------------------------------------------


def test_two_stores_share_one_circuit_and_its_probe(redis_url: str, connect: Connect) -> None:
    clock = Clock()
    a = redis_store(connect(redis_url), HealthSettings(), clock)
    b = redis_store(connect(redis_url), HealthSettings(), clock)
    for _ in range(3):
        a.record("m", FAIL)
    assert b.admit("m").detail == OPEN_AFTER_3 + ", retry in 30 s"
    clock.now += 30
    assert b.admit("m").probe
    assert a.admit("m").detail == OPEN_AFTER_3 + "; a probe request is in flight"
    b.record("m", Outcome(True, 7.0, probe=True))
    assert a.health("m").state == "closed" and a.admit("m").allowed


def test_concurrent_replicas_claim_exactly_one_probe(redis_url: str, connect: Connect) -> None:
    clock = Clock()
    stores = [redis_store(connect(redis_url), HealthSettings(), clock) for _ in range(8)]
    for _ in range(3):
        stores[0].record("m", FAIL)
    for round_ in range(10):
        clock.now += 30
        barrier = threading.Barrier(len(stores))
        probes: list[bool] = []

        def claim(store: HealthStore, barrier: threading.Barrier, probes: list[bool]) -> None:
            barrier.wait()
            probes.append(store.admit("m").probe)

        threads = [threading.Thread(target=claim, args=(s, barrier, probes)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert probes.count(True) == 1, f"round {round_}: {probes}"
        stores[round_ % 8].record("m", Outcome(False, 10.0, probe=True))  # opens it again


def test_concurrent_outcomes_are_all_counted(redis_url: str, connect: Connect) -> None:
    s = HealthSettings(window=1000, failures_to_open=10**6, min_requests=10**6)
    stores = [redis_store(connect(redis_url), s, Clock()) for _ in range(6)]

    def hammer(store: HealthStore) -> None:
        for i in range(50):
            store.record("m", Outcome(i % 2 == 0, 1.0))

    threads = [threading.Thread(target=hammer, args=(st_,)) for st_ in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h = stores[0].health("m")
    assert h.requests == 300 and h.error_rate == pytest.approx(0.5)  # no outcome lost


def test_health_keys_are_namespaced_and_expire(redis_url: str, connect: Connect) -> None:
    store = RedisHealthStore(connect(redis_url), HealthSettings(), prefix="gw1")
    store.record("openai/gpt-4o", FAIL)
    client = connect(redis_url).client
    keys = [b"gw1:health:openai/gpt-4o", b"gw1:health-window:openai/gpt-4o"]
    assert sorted(client.keys("*")) == sorted(keys)
    assert all(0 < client.pttl(k) <= 86_400_000 for k in keys)
    other = RedisHealthStore(connect(redis_url), HealthSettings(), prefix="gw2")
    assert other.health("openai/gpt-4o").requests == 0  # another prefix: another gateway


def test_values_it_cannot_read_are_a_closed_circuit(redis_url: str, connect: Connect) -> None:
    client = connect(redis_url).client
    client.hset("test:health:m", mapping={"s": "open", "t": "soon", "g": "0"})
    client.rpush("test:health-window:m", "garbage")
    store = redis_store(connect(redis_url), HealthSettings(), Clock())
    assert store.admit("m").allowed and store.health("m").state == "closed"
    client.hset("test:health:m", "s", "sideways")
    client.delete("test:health-window:m")
    store.record("m", FAIL)
    assert store.health("m").requests == 1 and store.health("m").failures_in_a_row == 1


@pytest.mark.usefixtures("provider_key")
def test_a_circuit_opened_by_one_dispatcher_is_skipped_by_another(
    tmp_path: Path, provider: FakeProvider, redis_url: str, connect: Connect
) -> None:
    provider.error("weather-model", status=500)
    router, _ = build(tmp_path, provider)
    settings_ = DispatchConfig.from_dict(router.index.manifest.dispatch).health
    first = Dispatcher.for_index(
        router.index, health=RedisHealthStore(connect(redis_url), settings_)
    )
    second = Dispatcher.for_index(
        router.index, health=RedisHealthStore(connect(redis_url), settings_)
    )
    for _ in range(3):
        assert first.complete("will it rain today", router=router).model == "backup"
    assert provider.hits("weather-model") == 3
    result = second.complete("will it rain today", router=router)
    assert [a.model for a in result.attempts] == ["backup"]
    assert [(s.model, s.reason) for s in result.skipped] == [("weather-model", "unhealthy")]
    assert provider.hits("weather-model") == 3  # never tried by the second


@pytest.mark.usefixtures("provider_key")
def test_litellm_cooldowns_are_shared_through_redis(
    tmp_path: Path, provider: FakeProvider, redis_url: str, connect: Connect
) -> None:
    provider.error("weather-model", status=500)
    # One failure cools a deployment down in LiteLLM; semroute's breaker needs three.
    router, _ = build(
        tmp_path, provider, dispatch={"allowed_fails": 0, "cooldown": 60, "direct": False}
    )
    first = Dispatcher.for_index(router.index, redis_url=redis_url)
    second = Dispatcher.for_index(router.index, redis_url=redis_url)
    alone = Dispatcher.for_index(router.index)
    assert first.complete("will it rain today", router=router).model == "backup"
    assert provider.hits("weather-model") == 1
    client = connect(redis_url).client
    # LiteLLM writes the cooldown from a task of its own, which may end after the answer.
    deadline = time.monotonic() + 10
    while not any(k.endswith(b":cooldown") for k in client.keys("deployment:*")):
        assert time.monotonic() < deadline, "LiteLLM's cooldown never reached Redis"
        time.sleep(0.05)
    assert not client.keys("*response*") and not client.keys("litellm:cache*")  # no caching

    result = second.complete("will it rain today", router=router)
    assert result.model == "backup" and result.attempts[0].model == "weather-model"
    assert provider.hits("weather-model") == 1  # LiteLLM refused it: cooled down by `first`
    assert alone.complete("will it rain today", router=router).model == "backup"
    assert provider.hits("weather-model") == 2  # without Redis, a process of its own tries it


# --- spend ---------------------------------------------------------------------------------------


def test_spend_is_counted_per_key_and_day_and_shared(redis_url: str, connect: Connect) -> None:
    day = ["2026-03-01"]
    a = RedisSpendStore(connect(redis_url), today=lambda: day[0])
    b = RedisSpendStore(connect(redis_url), today=lambda: day[0])
    key = key_id("sk-live-0123456789abcdef")
    assert len(key) == 16 and "0123456789abcdef" not in key
    a.add(key, 0.25)
    b.add(key, 0.5)
    assert a.spent_today(key) == pytest.approx(0.75) == b.spent_today(key)
    assert a.spent_today(key_id("another")) == 0.0
    client = connect(redis_url).client
    name = f"semroute:spend:{key}:2026-03-01"
    assert client.keys("*") == [name.encode()]
    assert 0 < client.ttl(name) <= 2 * 86_400
    day[0] = "2026-03-02"
    assert a.spent_today(key) == 0.0  # a new day starts from nothing


def test_a_days_spend_expires(redis_url: str, connect: Connect) -> None:
    store = RedisSpendStore(connect(redis_url), ttl_s=1)
    store.add("k", 1.0)
    assert store.spent_today("k") == 1.0
    deadline = time.monotonic() + 10
    while store.spent_today("k") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.spent_today("k") == 0.0


def test_local_spend_is_counted_per_key_and_day() -> None:
    day = ["2026-03-01"]
    store = LocalSpendStore(today=lambda: day[0])
    store.add("k", 0.25)
    store.add("k", 0.5)
    assert store.spent_today("k") == pytest.approx(0.75) and store.spent_today("j") == 0.0
    day[0] = "2026-03-02"
    assert store.spent_today("k") == 0.0


# --- Redis going away --------------------------------------------------------------------------


def test_redis_going_away_fails_open_with_one_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, connect: Connect
) -> None:
    link = connect(redis_server.url, retry_s=0.0)  # ask Redis again on every call
    clock = Clock()
    health = RedisHealthStore(link, HealthSettings(), clock=clock)
    spend = RedisSpendStore(link)
    for _ in range(3):
        health.record("m", FAIL)
    spend.add("k", 2.0)
    assert not health.admit("m").allowed and link.reachable()

    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="semroute"):
        assert health.admit("m").allowed  # every model admitted
        health.record("m", FAIL)  # dropped, no error
        assert health.health("m").state == "closed"
        assert spend.spent_today("k") == 2.0  # the last count Redis gave
        spend.add("k", 1.0)
        assert spend.spent_today("k") == 3.0  # counted here meanwhile
        assert not link.reachable()
    failing = [r for r in caplog.records if "is failing" in r.getMessage()]
    assert len(failing) == 1, caplog.text
    assert redis_server.url in failing[0].getMessage()

    redis_server.start()  # the same port, nothing persisted
    with caplog.at_level(logging.WARNING, logger="semroute"):
        assert link.reachable()
        health.record("m", FAIL)
    assert "is reachable again" in caplog.text
    assert health.health("m").requests == 1
    assert spend.spent_today("k") == 1.0  # what was counted here went to the (empty) Redis


def test_a_redis_that_hangs_fails_open_too(redis_server: RedisServer, connect: Connect) -> None:
    link = connect(redis_server.url)  # each command may take 0.25 s at most
    health = RedisHealthStore(link, HealthSettings(), clock=Clock())
    for _ in range(3):
        health.record("m", FAIL)
    redis_server.pause()
    try:
        assert health.admit("m").allowed  # timed out: admitted, not failed nor stuck
        health.record("m", FAIL)
        assert not link.reachable()
    finally:
        redis_server.resume()
    assert link.reachable() and not health.admit("m").allowed


def test_a_password_in_the_url_is_never_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, connect: Connect
) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{redis_server.port}/0"
    link = connect(url)
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="semroute"):
        assert not link.reachable()
    assert "is failing" in caplog.text and "hunter2" not in caplog.text
    assert "hunter2" not in link.where


# --- building the shared state -----------------------------------------------------------------


def test_without_redis_the_state_is_local() -> None:
    state = shared_state(None, DispatchConfig())
    assert isinstance(state.health, LocalHealthStore)
    assert isinstance(state.spend, LocalSpendStore)
    assert state.redis_url is None and state.ready()
    off = shared_state(None, DispatchConfig(health=HealthSettings(enabled=False)))
    assert off.health is None


def test_with_redis_the_state_is_shared_and_ready_while_redis_answers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMROUTE_TEST_REDIS", redis_server.url)
    state = shared_state("os.environ/SEMROUTE_TEST_REDIS", DispatchConfig())
    assert isinstance(state.health, RedisHealthStore)
    assert isinstance(state.spend, RedisSpendStore)
    assert state.redis_url == redis_server.url and state.ready()
    state.spend.add("k", 1.5)
    other = shared_state(redis_server.url, DispatchConfig())
    assert other.spend.spent_today("k") == 1.5
    redis_server.stop()
    deadline = time.monotonic() + 10
    while state.ready():  # its last answer, for a second; then Redis is asked again
        assert time.monotonic() < deadline, "readiness never noticed Redis was gone"
        time.sleep(0.05)
    state.close()
    other.close()


def test_a_redis_url_that_cannot_be_used_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEMROUTE_TEST_REDIS", raising=False)
    with pytest.raises(ServeError, match=r"^server\.redis_url: os\.environ/SEMROUTE_TEST_REDIS is"):
        shared_state("os.environ/SEMROUTE_TEST_REDIS", DispatchConfig())
    with pytest.raises(ServeError, match=r"^server\.redis_url: .* is not a Redis URL"):
        shared_state("redis://127.0.0.1:notaport/0", DispatchConfig())


# --- keys something else wrote -----------------------------------------------------------------


def test_a_wrong_typed_health_key_is_no_data_for_that_model_alone(
    redis_url: str, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    link = connect(redis_url)
    link.client.set("test:health:bad", "garbage")  # a string where a hash belongs
    store = redis_store(link, HealthSettings(), Clock())
    with caplog.at_level(logging.WARNING, logger="semroute"):
        for _ in range(5):
            store.record("bad", FAIL)
            assert store.admit("bad").allowed and store.health("bad").requests == 0
        for _ in range(3):
            store.record("good", FAIL)
        assert not store.admit("good").allowed  # not an outage: other models still shared
    refused = [r for r in caplog.records if "refused the health keys of 'bad'" in r.getMessage()]
    assert len(refused) == 1, caplog.text  # once a minute, not once a request
    assert "is failing" not in caplog.text and not link.down


def test_a_spend_that_is_not_a_count_is_over_any_budget(
    redis_url: str, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    link = connect(redis_url)
    store = RedisSpendStore(link, today=lambda: "2026-03-01")
    with caplog.at_level(logging.WARNING, logger="semroute"):
        for garbage in ("garbage", "nan", "inf", "-1"):
            link.client.set(store.key("k"), garbage)
            assert store.spent_today("k") == math.inf, garbage
        link.client.hset(store.key("k2"), "x", "1")  # the wrong type
        store.add("k2", 1.0)
        assert store.spent_today("k2") == math.inf
        link.client.delete(store.key("k2"))
        assert store.spent_today("k2") == 1.0  # what could not be added is added once it can
    assert len([r for r in caplog.records if "cannot be read as a count" in r.getMessage()]) == 2
    assert not link.down


def test_readiness_asks_redis_at_most_once_per_back_off(
    redis_server: RedisServer, connect: Connect
) -> None:
    link = connect(redis_server.url, retry_s=60.0)
    pings = connect(redis_server.url).client

    def pinged() -> int:
        return int(pings.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    before = pinged()  # redis_kit's own, at the start
    assert all(link.ready() for _ in range(20)) and pinged() == before + 1
    redis_server.pause()
    try:
        started = time.monotonic()
        assert link.reachable() is False  # found down (one timeout)
        assert not any(link.ready() for _ in range(20))  # the back-off: Redis not asked
        assert time.monotonic() - started < 2.0  # not 21 timeouts of 0.25 s
    finally:
        redis_server.resume()
