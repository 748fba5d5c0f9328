"""Running the gateway: reloading the index under load, clients that hang up, draining on
SIGTERM, SIGHUP, and worker processes (real `semroute serve` processes where signals matter)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from semroute.dispatch.dispatcher import Dispatcher
from semroute.dispatch.routing_threads import NICE
from semroute.index.store import RouteIndex
from semroute.routing.router import Router
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines, serve_process

pytestmark = pytest.mark.usefixtures("provider_key")

PRIO = os.PRIO_PROCESS
ASK_WEATHER = {"model": "auto", "messages": [{"role": "user", "content": "will it rain today"}]}
SAY_HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
TO_BACKUP = [{"name": "weather-to-backup", "when": {"route": "weather"}, "model": "backup"}]


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.05)


def in_flight(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("semroute_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def test_a_rebuilt_index_is_served_without_failing_a_request(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider)
    statuses: list[int] = []
    models: list[str] = []
    stop = threading.Event()

    def keep_asking(url: str) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                response = http.post(url + "/v1/chat/completions", json=ASK_WEATHER)
                statuses.append(response.status_code)
                models.append(response.headers.get("x-semroute-model", ""))

    with Served(index) as served, ThreadPoolExecutor(4) as pool:
        askers = [pool.submit(keep_asking, served.url) for _ in range(4)]
        eventually(lambda: len(statuses) >= 8)
        build(tmp_path, provider, rules=TO_BACKUP)  # the same folder, rebuilt in place
        eventually(lambda: models[-8:] == ["backup"] * 8)
        stop.set()
        for asker in askers:
            asker.result()
        ready = httpx.get(served.url + "/readyz").json()
    assert ready["reloads"] == 1
    assert set(statuses) == {200}
    assert set(models) == {"weather-model", "backup"}
    assert len(log_lines(tmp_path)) == len(statuses)


def test_a_broken_new_index_keeps_the_old_one(
    tmp_path: Path, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    index = build(tmp_path, provider)
    with Served(index) as served, caplog.at_level(logging.WARNING, "semroute.server"):
        (index / "manifest.json").write_text("{ half a manifest")
        eventually(lambda: "cannot be used" in caplog.text)
        kept = httpx.post(served.url + "/v1/chat/completions", json=ASK_WEATHER, timeout=30)
        assert httpx.get(served.url + "/readyz").json()["reloads"] == 0
        build(tmp_path, provider, rules=TO_BACKUP)
        eventually(lambda: httpx.get(served.url + "/readyz").json()["reloads"] == 1)
        fresh = httpx.post(served.url + "/v1/chat/completions", json=ASK_WEATHER, timeout=30)
    assert "manifest.json is not valid JSON" in caplog.text
    assert kept.status_code == 200 and kept.headers["x-semroute-model"] == "weather-model"
    assert fresh.headers["x-semroute-model"] == "backup"


def test_a_client_that_leaves_before_the_answer_cancels_the_call(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.answer("frontier", delay=5)
    with Served(build(tmp_path, provider)) as served:
        for stream in (False, True):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    served.url + "/v1/chat/completions",
                    json={**SAY_HELLO, "stream": stream},
                    timeout=httpx.Timeout(30, read=0.5),
                )
        eventually(lambda: len(log_lines(tmp_path)) == 2)
        metrics = httpx.get(served.url + "/metrics").text
    for line in log_lines(tmp_path):
        assert line["error"] == "cancelled while waiting for 'frontier'"
        assert line["route"] == "greeting"
    assert 'status="499"} 2.0' in metrics


def test_a_client_that_leaves_before_the_answer_is_counted_under_real_labels(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.answer("frontier", delay=5)
    with Served(build(tmp_path, provider)) as served:
        for model in ("auto", "frontier"):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    served.url + "/v1/chat/completions",
                    json={**SAY_HELLO, "model": model},
                    timeout=httpx.Timeout(30, read=0.5),
                )
        eventually(lambda: len(log_lines(tmp_path)) == 2)
        metrics = httpx.get(served.url + "/metrics").text
    gone = [line for line in metrics.splitlines() if 'status="499"' in line]
    assert sorted(gone) == [
        'semroute_requests_total{endpoint="chat",model="frontier",reason="pinned",route="",'
        'rule="",status="499"} 1.0',
        'semroute_requests_total{endpoint="chat",model="none",reason="none",route="",'
        'rule="",status="499"} 1.0',
    ]


def test_a_client_that_leaves_mid_stream_gets_one_log_line(
    tmp_path: Path, provider: FakeProvider
) -> None:
    with Served(build(tmp_path, provider)) as served:
        body = {**SAY_HELLO, "stream": True}
        for _ in range(3):
            with httpx.stream("POST", served.url + "/v1/chat/completions", json=body) as raw:
                first = next(raw.iter_lines())
                assert first.startswith("data: {")
        eventually(lambda: len(log_lines(tmp_path)) == 3)
        eventually(lambda: in_flight(served.url) == 0)
        after = httpx.post(served.url + "/v1/chat/completions", json=SAY_HELLO, timeout=30)
    assert after.status_code == 200
    assert len(log_lines(tmp_path)) == 4


def test_a_stream_the_client_leaves_says_so_in_its_log_line(
    tmp_path: Path, provider: FakeProvider
) -> None:
    # A word every 0.2 s: the client reads the first words, then leaves long before the end.
    provider.answer("frontier", " ".join(["word"] * 40), chunk_delay=0.2)
    with Served(build(tmp_path, provider)) as served:
        body = {**SAY_HELLO, "model": "frontier", "stream": True}
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=body) as raw:
            lines = raw.iter_lines()
            assert next(lines).startswith("data: {")
            assert next(x for x in lines if x).startswith("data: {")
        eventually(lambda: len(log_lines(tmp_path)) == 1)
        metrics = httpx.get(served.url + "/metrics").text
    (line,) = log_lines(tmp_path)
    assert line["error"] == "the client disconnected before the stream ended"
    assert 0 < line["completion_tokens"] < 40
    assert 'model="frontier",reason="pinned",route="",rule="",status="499"} 1.0' in metrics


def test_sigterm_lets_requests_and_streams_finish_then_exits_0(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.answer("frontier", delay=2)
    index = build(tmp_path, provider)
    with serve_process(index) as (proc, url), ThreadPoolExecutor(2) as pool:

        def read_stream() -> str:
            body = {**SAY_HELLO, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as raw:
                return "\n".join(raw.iter_lines())

        plain: Future[httpx.Response] = pool.submit(
            httpx.post, url + "/v1/chat/completions", json=SAY_HELLO, timeout=30
        )
        streamed = pool.submit(read_stream)
        eventually(lambda: in_flight(url) == 2)
        proc.send_signal(signal.SIGTERM)
        answer, events = plain.result(), streamed.result()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        output = proc.stdout.read()
    assert "no API keys configured (server.keys); listening on 127.0.0.1 only" in output
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from frontier."
    assert events.strip().endswith("data: [DONE]") and "frontier." in events
    assert len(log_lines(tmp_path)) == 2


def test_sighup_reloads_the_index(tmp_path: Path, provider: FakeProvider) -> None:
    index = build(tmp_path, provider)
    with serve_process(index) as (proc, url):
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: httpx.get(url + "/readyz").json()["reloads"] == 1)
        answer = httpx.post(url + "/v1/chat/completions", json=SAY_HELLO, timeout=30)
        assert proc.poll() is None
    assert answer.status_code == 200


def test_worker_processes_share_the_port(tmp_path: Path, provider: FakeProvider) -> None:
    index = build(tmp_path, provider)
    with serve_process(index, "--workers", "2") as (proc, url), ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(url + "/v1/chat/completions", json=ASK_WEATHER, timeout=30),
                range(16),
            )
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert {a.status_code for a in answers} == {200}
    assert len(log_lines(tmp_path)) == 16


def test_a_request_cancelled_while_it_is_routed_still_gets_its_log_line(
    tmp_path: Path, provider: FakeProvider
) -> None:
    from tests.provider_kit import build as build_dispatch
    from tests.provider_kit import run

    router, dispatcher = build_dispatch(tmp_path, provider)

    async def cancel_while_routing() -> None:
        task = asyncio.ensure_future(
            dispatcher.acomplete("will it rain today", router=router, request_id="r-1")
        )
        await asyncio.sleep(0)  # the task is now waiting for its routing thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_while_routing())
    [line] = log_lines(tmp_path)
    assert line["request_id"] == "r-1"
    assert line["route"] == "weather"
    assert line["error"] == "cancelled before a model was called"
    assert provider.requests == []


def test_a_gateway_stopping_leaves_other_dispatchers_in_the_process_working(
    tmp_path: Path, provider: FakeProvider
) -> None:
    # A gateway's shutdown closes LiteLLM's cached HTTP clients, every loop's: a dispatcher of
    # the same process (its background loop) must then get new ones, not a closed one.
    index = build(tmp_path, provider)
    router = Router.load(index)
    dispatcher = Dispatcher.for_index(RouteIndex.load(index))
    assert dispatcher.complete("will it rain today", router=router).model == "weather-model"
    with Served(index) as served:
        assert httpx.get(served.url + "/healthz").status_code == 200
    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "weather-model" and not result.attempts[0].error
    dispatcher.close()


def test_a_request_alone_is_routed_on_the_event_loop_and_one_beside_a_stream_in_a_thread(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop: list[bool] = []
    threads: list[tuple[str, int]] = []
    real_route = Router.route

    def route(self: Router, *args: object, **kwargs: object) -> object:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread runs no loop
            on_loop.append(False)
            me = threading.get_native_id()
            threads.append((threading.current_thread().name, os.getpriority(PRIO, me)))
        return real_route(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Router, "route", route)
    provider.answer("frontier", text=" ".join(f"w{i}" for i in range(10)), chunk_delay=0.2)
    with Served(build(tmp_path, provider)) as served, ThreadPoolExecutor(1) as pool:
        url = served.url + "/v1/chat/completions"
        assert httpx.post(url, json=SAY_HELLO, timeout=30).status_code == 200
        first = threading.Event()

        def read_stream() -> int:
            body = {**SAY_HELLO, "stream": True}
            with httpx.stream("POST", url, json=body, timeout=60) as raw:
                for _ in raw.iter_lines():
                    first.set()
                return raw.status_code

        streamed = pool.submit(read_stream)
        assert first.wait(30)
        beside = httpx.post(url, json=SAY_HELLO, timeout=30)
        assert not streamed.done()  # the second request was served while the stream was open
        assert streamed.result() == 200 and beside.status_code == 200
        after = httpx.post(url, json=SAY_HELLO, timeout=30)  # the stream has ended: alone again
        assert after.status_code == 200
    # Alone: on the loop. The stream: alone when it was routed. Beside the stream: in a thread.
    assert on_loop == [True, True, False, True]
    # One of semroute's routing threads, at a lower priority than the process's.
    [(name, nice)] = threads
    assert name.startswith("semroute-route") and nice == os.getpriority(PRIO, 0) + NICE > 0
