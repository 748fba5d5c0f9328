"""The gateway's life: a reload applies the `server:` settings it can (keys, body limit) and
refuses the rest; a stream outlives reloads; SIGTERM past the drain timeout cuts a stream with
an error event and the process exits in time; a busy port is one line before anything loads."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.server.sse import CUT
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines, serve_process
from tests.test_gateway_ops import eventually, in_flight

pytestmark = pytest.mark.usefixtures("provider_key")

APP_KEY = "sk-app-51f0c2d9e7a4"
FREE_KEY = "sk-free-0a6d3e9c8b17"
BOTH_KEYS = {"keys": ["os.environ/APP_KEY", "os.environ/FREE_KEY"]}
SAY_HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
ASK_WEATHER = {"model": "auto", "messages": [{"role": "user", "content": "will it rain today"}]}
TO_BACKUP = [{"name": "weather-to-backup", "when": {"route": "weather"}, "model": "backup"}]
WORDS = " ".join(f"word{i}" for i in range(20))


def chat(url: str, key: str, body: dict[str, Any] = SAY_HELLO) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def reloads(url: str) -> int:
    return int(httpx.get(url + "/readyz").json()["reloads"])


@pytest.fixture
def two_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_KEY", APP_KEY)
    monkeypatch.setenv("FREE_KEY", FREE_KEY)


# --- reload and the `server:` settings ----------------------------------------------------------


@pytest.mark.usefixtures("two_keys")
def test_a_key_removed_by_a_rebuild_gets_401_after_the_reload(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider, server=BOTH_KEYS)
    big = {**SAY_HELLO, "messages": [{"role": "user", "content": "x" * 3000}]}
    with Served(index) as served:
        assert chat(served.url, FREE_KEY).status_code == 200
        assert chat(served.url, APP_KEY, big).status_code == 200
        # FREE_KEY revoked, and a smaller body limit: both apply from the reload on.
        server = {"keys": ["os.environ/APP_KEY"], "max_body_bytes": 2048}
        build(tmp_path, provider, server=server)
        eventually(lambda: reloads(served.url) == 1)
        revoked = chat(served.url, FREE_KEY)
        kept = chat(served.url, APP_KEY)
        too_big = chat(served.url, APP_KEY, big)
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "invalid_api_key"
    assert kept.status_code == 200
    assert too_big.status_code == 413
    assert "2048 bytes (server.max_body_bytes)" in too_big.json()["error"]["message"]


@pytest.mark.usefixtures("two_keys")
def test_a_key_added_by_a_rebuild_is_let_in_after_the_reload(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider, server={"keys": ["os.environ/APP_KEY"]})
    with Served(index) as served:
        before = chat(served.url, FREE_KEY)
        build(tmp_path, provider, server=BOTH_KEYS)
        eventually(lambda: reloads(served.url) == 1)
        after = chat(served.url, FREE_KEY)
    assert (before.status_code, after.status_code) == (401, 200)


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"port": 8123}, "server.port"),
        ({"host": "127.0.0.2"}, "server.host"),
        ({"workers": 2}, "server.workers"),
        ({"drain_timeout_s": 5.0}, "server.drain_timeout_s"),
    ],
)
@pytest.mark.usefixtures("two_keys")
def test_a_rebuild_changing_a_start_only_setting_is_refused_and_says_which(
    tmp_path: Path,
    provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, Any],
    setting: str,
) -> None:
    index = build(tmp_path, provider, server=BOTH_KEYS)
    with Served(index) as served, caplog.at_level(logging.WARNING, "semroute.server"):
        # The rebuild also routes weather elsewhere and drops a key: none of it is applied.
        server = {"keys": ["os.environ/APP_KEY"], **change}
        build(tmp_path, provider, server=server, rules=TO_BACKUP)
        eventually(lambda: "cannot be used" in caplog.text)
        old = chat(served.url, APP_KEY, ASK_WEATHER)
        still = chat(served.url, FREE_KEY)
        count = reloads(served.url)
    [line] = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert f"{setting} changed, and only a restart applies it" in line
    assert count == 0
    assert old.status_code == 200 and old.headers["x-semroute-model"] == "weather-model"
    assert still.status_code == 200  # the old index, with its keys, keeps serving


def test_a_rebuild_naming_an_unset_key_variable_is_refused(
    tmp_path: Path, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    index = build(tmp_path, provider)
    with Served(index) as served, caplog.at_level(logging.WARNING, "semroute.server"):
        build(tmp_path, provider, server={"keys": ["os.environ/SEMROUTE_TEST_UNSET_KEY"]})
        eventually(lambda: "cannot be used" in caplog.text)
        answer = httpx.post(served.url + "/v1/chat/completions", json=SAY_HELLO, timeout=30)
        count = reloads(served.url)
    assert "SEMROUTE_TEST_UNSET_KEY is not set" in caplog.text
    assert count == 0 and answer.status_code == 200


def test_a_long_stream_outlives_two_reloads(tmp_path: Path, provider: FakeProvider) -> None:
    # 20 words 0.4 s apart: the stream runs for about 8 s while the index is rebuilt twice.
    provider.answer("frontier", text=WORDS, chunk_delay=0.4)
    index = build(tmp_path, provider)
    first = threading.Event()

    def read_stream(url: str) -> list[str]:
        body = {**SAY_HELLO, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as raw:
            lines = []
            for line in raw.iter_lines():
                lines.append(line)
                first.set()
            return [x for x in lines if x]

    with Served(index) as served, ThreadPoolExecutor(1) as pool:
        streamed = pool.submit(read_stream, served.url)
        assert first.wait(30)
        for n in (1, 2):
            build(tmp_path, provider, rules=TO_BACKUP if n == 1 else None)
            eventually(lambda n=n: reloads(served.url) == n)  # type: ignore[misc]
        reloaded_while_streaming = not streamed.done()
        events = streamed.result()
        after = httpx.post(served.url + "/v1/chat/completions", json=SAY_HELLO, timeout=30)
    assert reloaded_while_streaming
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == WORDS
    assert after.status_code == 200
    first_line = log_lines(tmp_path)[0]
    assert first_line["error"] is None and first_line["completion_tokens"] == 20


# --- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_mid_stream_lets_it_finish_within_the_drain_timeout(
    tmp_path: Path, provider: FakeProvider
) -> None:
    # Six events 0.5 s apart: SIGTERM comes after the first, with most of the answer to come.
    provider.answer("weather-model", text="it will rain today", chunk_delay=0.5)
    provider.answer("frontier", delay=2)
    index = build(tmp_path, provider)
    first = threading.Event()
    with serve_process(index) as (proc, url), ThreadPoolExecutor(2) as pool:

        def read_stream() -> list[str]:
            body = {**ASK_WEATHER, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as raw:
                lines = []
                for line in raw.iter_lines():
                    lines.append(line)
                    first.set()
                return [x for x in lines if x]

        streamed = pool.submit(read_stream)
        plain: Future[httpx.Response] = pool.submit(
            httpx.post, url + "/v1/chat/completions", json=SAY_HELLO, timeout=30
        )
        assert first.wait(30)
        eventually(lambda: in_flight(url) == 2)
        proc.send_signal(signal.SIGTERM)
        events, answer = streamed.result(), plain.result()
        assert proc.wait(timeout=60) == 0
    assert answer.status_code == 200
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == (
        "it will rain today"
    )
    assert all(line["error"] is None for line in log_lines(tmp_path))


def test_a_stream_outliving_the_drain_timeout_is_cut_with_an_error_event(
    tmp_path: Path, provider: FakeProvider
) -> None:
    drain = 1.5
    provider.answer("frontier", text="one two three", chunk_delay=60)  # never ends in time
    index = build(tmp_path, provider, server={"drain_timeout_s": drain})
    with serve_process(index) as (proc, url):
        body = {**SAY_HELLO, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as raw:
            lines = raw.iter_lines()
            events = [next(lines)]
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            events += list(lines)
        code = proc.wait(timeout=60)
        took = time.monotonic() - signalled
        assert proc.stdout is not None
        output = proc.stdout.read()
    events = [e for e in events if e]
    assert code == 0
    # In time: the drain timeout, then a little for the cut and the exit (1.5 s of slack for a
    # busy machine; the interpreter's last garbage collection alone took 2.6 s).
    assert took < drain + 1.5, took
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    assert error["message"] == CUT
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["role"]
    assert "Traceback" not in output and "Exception in ASGI application" not in output
    [line] = log_lines(tmp_path)
    assert line["error"] == CUT


def test_a_request_outliving_the_drain_timeout_gets_a_503_not_a_500(
    tmp_path: Path, provider: FakeProvider
) -> None:
    drain = 1.5
    provider.answer("frontier", text="too late", delay=60)  # never answers in time
    index = build(tmp_path, provider, server={"drain_timeout_s": drain})
    with serve_process(index) as (proc, url), ThreadPoolExecutor(1) as pool:
        answer = pool.submit(chat_open, url, SAY_HELLO)
        eventually(lambda: in_flight(url) == 1)
        proc.send_signal(signal.SIGTERM)
        response = answer.result()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout is not None
        output = proc.stdout.read()
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    assert "drain_timeout_s" in error["message"]
    assert "Traceback" not in output and "Exception in ASGI application" not in output
    [line] = log_lines(tmp_path)
    assert line["error"] and "cancelled" in line["error"]


def chat_open(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


# --- starting --------------------------------------------------------------------------------


def test_a_busy_port_is_one_error_line_before_the_index_loads(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider)
    # Loading this index would fail on its vectors' checksum: the port is checked first.
    (index / "index.faiss").write_bytes(b"not the vectors")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--index", str(index), "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"error: server.port: port {port} on 127.0.0.1 is in use")
    assert "Errno" not in result.output


def test_a_free_port_passes_the_check_and_the_index_then_loads(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider)
    (index / "index.faiss").write_bytes(b"not the vectors")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(main, ["serve", "--index", str(index), "--port", str(port)])
    assert result.exit_code == 1
    assert "index.faiss" in result.output and "in use" not in result.output


# --- shutdown's cleanup --------------------------------------------------------------------------


def test_giving_up_on_closing_litellms_clients_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from litellm.llms.custom_httpx import async_client_cleanup

    from semroute.server.app import _close_litellm_clients

    tries: list[int] = []

    async def always_racing() -> None:
        tries.append(1)
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(async_client_cleanup, "close_litellm_async_clients", always_racing)
    with caplog.at_level(logging.WARNING, "semroute.server"):
        asyncio.run(_close_litellm_clients())
    assert len(tries) == 3
    assert "LiteLLM's HTTP clients were not all closed (3 tries)" in caplog.text
    assert "dictionary changed size during iteration" in caplog.text


def test_semroute_serves_with_what_it_loaded_left_out_of_later_garbage_collections(
    tmp_path: Path, provider: FakeProvider
) -> None:
    # A full collection walks every object: with LiteLLM loaded, a pause of the event loop of
    # up to a fifth of a second. `semroute serve` freezes what is loaded once it has started;
    # an app made for a test, in a process with other work, does not.
    import gc

    from starlette.testclient import TestClient

    from semroute.server.app import create_app
    from semroute.server.state import load

    index = build(tmp_path, provider)
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(create_app(load(index))):
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(load(index), freeze_loaded=True)) as client:
            frozen = gc.get_freeze_count()
            assert frozen > 100_000  # LiteLLM's modules, the index, the encoder
            assert client.post("/v1/chat/completions", json=SAY_HELLO).status_code == 200
            assert gc.get_freeze_count() <= frozen  # nothing of a request's is kept frozen
    finally:
        gc.unfreeze()
