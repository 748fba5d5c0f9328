"""Provider health: an unhealthy model is passed over before it is tried, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from semroute import Dispatcher, DispatchError, RequestRejectedError, Router
from semroute.cli.main import main
from semroute.config.deployments import DispatchConfig, HealthSettings
from semroute.config.routes import parse_routes
from semroute.decision import Skip
from semroute.dispatch.health import LocalHealthStore, Outcome
from semroute.dispatch.log import summarise
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.provider_kit import build, log_lines, run

OPEN_AFTER_3 = "circuit open: 3 failures in a row"


# Every test here reaches FakeProvider with its key, and writes no log $SEMROUTE_LOG names.
pytestmark = pytest.mark.usefixtures("provider_key")


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def clocked(
    tmp_path: Path, provider: FakeProvider, **dispatch: Any
) -> tuple[Router, Dispatcher, Clock]:
    """The provider_kit index, with a dispatcher whose health store runs on a fake clock."""
    router, _ = build(tmp_path, provider, dispatch=dispatch or None)
    clock = Clock()
    settings = DispatchConfig.from_dict(router.index.manifest.dispatch).health
    store = LocalHealthStore(settings, clock=clock)
    return router, Dispatcher.for_index(router.index, health=store), clock


def with_health(tmp_path: Path, provider: FakeProvider, health: dict[str, Any]) -> Router:
    """The provider_kit index, rebuilt with a `health:` block in its route file."""
    build(tmp_path / "plain", provider)
    spec = yaml.safe_load((tmp_path / "plain" / "routes" / "routes.yaml").read_text())
    spec["router"]["health"] = health
    spec["router"]["dispatch"]["log"] = str(tmp_path / "decisions.jsonl")
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build_index(routes, tmp_path / "index", encoder=FakeEncoder())
    return Router.load(tmp_path / "index")


def trip(dispatcher: Dispatcher, router: Router, times: int = 3) -> None:
    for _ in range(times):
        assert dispatcher.complete("will it rain today", router=router).model == "backup"


# --- skipped before it is tried ----------------------------------------------------------------


def test_a_model_failing_3_times_is_not_attempted_on_the_next_request(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher = build(tmp_path, provider)
    trip(dispatcher, router)
    assert provider.hits("weather-model") == 3

    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "backup"
    assert [a.model for a in result.attempts] == ["backup"]  # no attempt on weather-model
    (skip,) = result.skipped
    assert skip.model == "weather-model" and skip.reason == "unhealthy"
    assert skip.detail.startswith(OPEN_AFTER_3 + ", retry in ")
    assert provider.hits("weather-model") == 3
    assert result.to_dict()["skipped"] == [skip.to_dict()]
    line = log_lines(tmp_path)[-1]
    assert line["skipped"] == [
        {"model": "weather-model", "reason": "unhealthy", "detail": skip.detail}
    ]
    assert line["attempts"][0]["model"] == "backup" and line["fallbacks"] == []


def test_two_failures_in_a_row_are_not_enough(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("weather-model", status=503)
    router, dispatcher = build(tmp_path, provider)
    trip(dispatcher, router, times=2)
    result = dispatcher.complete("will it rain today", router=router)
    assert [a.model for a in result.attempts] == ["weather-model", "backup"]
    assert result.skipped == ()


def test_rejected_requests_do_not_count_against_the_provider(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=400)  # the request's fault, not the provider's
    router, dispatcher = build(tmp_path, provider)
    for _ in range(4):  # over failures_to_open; the next model would get the same request
        with pytest.raises(RequestRejectedError) as caught:
            dispatcher.complete("will it rain today", router=router)
        assert [a.model for a in caught.value.attempts] == ["weather-model"]
    assert provider.hits("weather-model") == 4 and provider.hits("backup") == 0
    assert dispatcher.health is not None
    assert dispatcher.health.health("weather-model").state == "closed"


def test_the_skip_message_counts_down_and_a_probe_closes_the_circuit(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher, clock = clocked(tmp_path, provider)
    trip(dispatcher, router)

    clock.now += 29
    result = dispatcher.complete("will it rain today", router=router)
    assert result.skipped == (Skip("weather-model", "unhealthy", OPEN_AFTER_3 + ", retry in 1 s"),)

    provider.answer("weather-model")
    clock.now += 1  # the 30 s cool-off is over: one probe goes through
    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "weather-model" and result.skipped == ()
    assert provider.hits("weather-model") == 4
    assert dispatcher.health is not None
    assert dispatcher.health.health("weather-model").state == "closed"
    again = dispatcher.complete("will it rain today", router=router)
    assert again.model == "weather-model"


def test_a_failed_probe_opens_the_circuit_again(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher, clock = clocked(tmp_path, provider)
    trip(dispatcher, router)
    clock.now += 30
    probe = dispatcher.complete("will it rain today", router=router)
    assert [a.model for a in probe.attempts] == ["weather-model", "backup"]  # the probe failed

    result = dispatcher.complete("will it rain today", router=router)
    assert [a.model for a in result.attempts] == ["backup"]
    (skip,) = result.skipped
    assert skip.detail == "circuit open: the probe request failed, retry in 30 s"
    assert provider.hits("weather-model") == 4


def test_concurrent_requests_during_half_open_send_one_probe(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher, clock = clocked(tmp_path, provider, timeout=1.5)
    trip(dispatcher, router)
    provider.hang("weather-model")  # the probe stays in flight while the others arrive
    clock.now += 30

    async def main() -> list[Any]:
        calls = [
            dispatcher.acomplete(f"will it rain today, question {i}", router=router)
            for i in range(12)
        ]
        return await asyncio.gather(*calls)

    results = run(main())
    assert provider.hits("weather-model") == 4  # three that tripped it, one probe
    probes = [r for r in results if r.attempts[0].model == "weather-model"]
    assert len(probes) == 1
    assert all(r.model == "backup" for r in results)
    # Skipped while the probe was in flight (or, on a slow machine, after it timed out).
    details = {s.detail for r in results for s in r.skipped}
    in_flight = OPEN_AFTER_3 + "; a probe request is in flight"
    assert in_flight in details
    assert details <= {in_flight, "circuit open: the probe request failed, retry in 30 s"}


def test_an_error_rate_over_the_bound_opens_the_circuit() -> None:
    store = LocalHealthStore(
        HealthSettings(window=4, min_requests=4, max_error_rate=0.5, failures_to_open=3)
    )
    for ok in (False, True, False, True):  # 50%: not over the bound
        store.record("m", Outcome(ok, 10.0))
    assert store.admit("m").allowed
    store.record("m", Outcome(False, 10.0))  # the oldest falls out: T F T F, still 50%
    assert store.admit("m").allowed
    store.record("m", Outcome(False, 10.0))  # F T F F: 75%, with only 2 failures in a row
    refused = store.admit("m")
    assert not refused.allowed
    assert refused.detail == "circuit open: 3 of the last 4 requests failed, retry in 30 s"


def test_a_slow_model_is_degraded_and_skipped(tmp_path: Path, provider: FakeProvider) -> None:
    router = with_health(tmp_path, provider, {"window": 2, "min_requests": 2, "max_p95_ms": 0.001})
    dispatcher = Dispatcher.for_index(router.index)
    for _ in range(2):  # every real answer takes longer than a microsecond
        assert dispatcher.complete("will it rain today", router=router).model == "weather-model"
    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "backup"
    (skip,) = result.skipped
    assert skip.detail.startswith("degraded: p95 latency ")
    assert " over 0 ms, retry in " in skip.detail


# --- every model unhealthy ---------------------------------------------------------------------


def test_when_every_model_is_unhealthy_the_least_bad_one_is_tried(
    tmp_path: Path, provider: FakeProvider
) -> None:
    for name in ("weather-model", "backup", "last-resort"):
        provider.error(name, status=500)
    router, dispatcher, clock = clocked(tmp_path, provider)
    for _ in range(3):
        with pytest.raises(DispatchError):
            dispatcher.complete("will it rain today", router=router)
        clock.now += 1  # weather-model's cool-off ends first

    with pytest.raises(DispatchError) as caught:
        dispatcher.complete("will it rain today", router=router)
    err = caught.value
    (attempt,) = err.attempts
    assert attempt.model == "weather-model" and attempt.status == 500
    assert attempt.note and attempt.note.startswith("tried though unhealthy")
    assert [s.model for s in err.skipped] == ["backup", "last-resort"]
    assert "1 tried, 2 skipped as unhealthy" in str(err) and "backup skipped: circuit" in str(err)
    assert provider.hits("weather-model") == 4 and provider.hits("backup") == 3
    line = log_lines(tmp_path)[-1]
    assert [s["model"] for s in line["skipped"]] == ["backup", "last-resort"]
    assert line["attempts"][0]["note"] == attempt.note


def test_a_single_model_chain_keeps_trying_its_model(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("frontier", status=500)
    provider.error("backup", status=500)
    _, dispatcher = build(tmp_path, provider)
    for _ in range(4):
        with pytest.raises(DispatchError):
            dispatcher.complete("anything", model="frontier")
    assert provider.hits("frontier") == 4  # never failed without trying
    provider.answer("frontier")
    result = dispatcher.complete("anything", model="frontier")
    assert result.model == "frontier" and result.skipped == ()
    assert dispatcher.health is not None
    assert dispatcher.health.health("frontier").state == "closed"


# --- streams -------------------------------------------------------------------------------------


def test_a_stream_broken_midway_counts_as_a_failure(tmp_path: Path, provider: FakeProvider) -> None:
    provider.break_stream("weather-model", after=2, text="rain is likely tomorrow")
    router, dispatcher = build(tmp_path, provider, dispatch={"timeout": 30})
    for _ in range(3):
        stream = dispatcher.complete("will it rain today", router=router, stream=True)
        assert stream.model == "weather-model"
        with pytest.raises(DispatchError, match="broke"):
            list(stream)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    assert stream.model == "backup"
    assert [a.model for a in stream.attempts] == ["backup"]
    assert [s.model for s in stream.skipped] == ["weather-model"]
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert provider.hits("weather-model") == 3


def test_a_finished_stream_counts_as_an_answer(tmp_path: Path, provider: FakeProvider) -> None:
    router, dispatcher = build(tmp_path, provider)
    assert dispatcher.health is not None
    dispatcher.health.record("weather-model", Outcome(False, 5.0))
    dispatcher.health.record("weather-model", Outcome(False, 5.0))
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    list(stream)
    after = dispatcher.health.health("weather-model")
    assert after.failures_in_a_row == 0 and after.requests == 3


# --- off, settings, store ----------------------------------------------------------------------


def test_health_disabled_tries_every_model_every_time(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=500)
    router = with_health(tmp_path, provider, {"enabled": False})
    dispatcher = Dispatcher.for_index(router.index)
    assert dispatcher.health is None
    for _ in range(5):
        result = dispatcher.complete("will it rain today", router=router)
        assert [a.model for a in result.attempts] == ["weather-model", "backup"]
        assert result.skipped == ()
    assert provider.hits("weather-model") == 5
    assert all(line["skipped"] == [] for line in log_lines(tmp_path))


def test_the_health_block_reaches_the_dispatcher(tmp_path: Path, provider: FakeProvider) -> None:
    router = with_health(tmp_path, provider, {"failures_to_open": 1, "cooldown_s": 5})
    dispatcher = Dispatcher.for_index(router.index)
    assert isinstance(dispatcher.health, LocalHealthStore)
    assert dispatcher.health.settings == HealthSettings(failures_to_open=1, cooldown_s=5.0)


def test_the_store_is_thread_safe_and_bounded() -> None:
    # The window holds every outcome, so the counts below hold however the threads interleave.
    store = LocalHealthStore(
        HealthSettings(failures_to_open=10**6, window=1000, max_error_rate=1.0), max_models=8
    )

    def hammer(i: int) -> None:
        for j in range(500):
            store.record(f"m{i % 4}", Outcome(j % 2 == 0, 1.0))
            store.admit(f"m{i % 4}")

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        h = store.health(f"m{i}")
        assert h.requests == 1000 and h.error_rate == pytest.approx(0.5)  # none lost
    for i in range(100):
        store.record(f"pinned-{i}", Outcome(False, 1.0))
    assert store.health("m0").requests == 0  # forgotten: only the last 8 models are kept
    assert store.health("pinned-99").requests == 1


def test_an_answer_let_in_before_the_circuit_opened_does_not_close_it() -> None:
    store = LocalHealthStore(HealthSettings())
    for _ in range(3):
        store.record("m", Outcome(False, 10.0))
    store.record("m", Outcome(True, 10.0))  # admitted while closed, answered after the trip
    assert store.health("m").state == "open"


# --- stats ---------------------------------------------------------------------------------------


def test_stats_count_each_skip_reason(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher = build(tmp_path, provider)
    trip(dispatcher, router)
    for _ in range(2):
        dispatcher.complete("will it rain today", router=router)
    dispatcher.complete("hello there", router=router)
    log = tmp_path / "decisions.jsonl"
    stats = summarise(log.read_text().splitlines()).to_dict()
    assert stats["requests"] == 6
    assert stats["skip_reasons"] == {"unhealthy": {"skips": 2, "requests": 2, "share": 0.3333}}

    out = CliRunner().invoke(main, ["stats", str(log), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["skip_reasons"]["unhealthy"]["skips"] == 2
    table = CliRunner().invoke(main, ["stats", str(log)])
    assert table.exit_code == 0 and "skip reason" in table.output and "unhealthy" in table.output


def test_stats_ignore_malformed_skips_and_old_lines() -> None:
    lines = [
        # malformed: a skip without a reason, a skip that is not an object
        json.dumps({"request_id": "a", "model": "m", "skipped": [{"model": "x"}, 3]}),
        json.dumps({"request_id": "b", "model": "m"}),  # written before skips were logged
        json.dumps({"request_id": "c", "model": "m", "skipped": "unhealthy"}),  # malformed
    ]
    stats = summarise(lines)
    assert stats.requests == 1 and stats.malformed_lines == 2
    assert stats.to_dict()["skip_reasons"] == {}


def test_an_index_without_a_health_block_keeps_its_digest() -> None:
    base = {"router": {"default_model": "m"}, "routes": [{"name": "a", "utterances": ["hi"]}]}
    with_defaults = {**base, "router": {"default_model": "m", "health": {"window": 20}}}
    changed = {**base, "router": {"default_model": "m", "health": {"cooldown_s": 5}}}
    digest = parse_routes(base).digest()
    assert parse_routes(with_defaults).digest() == digest  # older indexes stay fresh
    assert parse_routes(changed).digest() != digest
    assert parse_routes(changed).dispatch_config().health.cooldown_s == 5.0
