"""`semroute fake-provider`: the test kit's FakeProvider as a command that runs until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from openai import OpenAI

from tests.gateway_kit import free_port

COMMAND = [sys.executable, "-c", "from semroute.cli.main import main; main()", "fake-provider"]


@contextmanager
def fake_provider(
    *args: str, last: str = "Ctrl-C to stop"
) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """The command in its own process; yields it, its URL and the lines it printed up to `last`."""
    port = free_port()
    proc = subprocess.Popen(
        [*COMMAND, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline().rstrip("\n")]
        while not banner[-1].startswith(last):
            line = proc.stdout.readline()
            assert line, f"the command ended early: {banner}"
            banner.append(line.rstrip("\n"))
        yield proc, f"http://127.0.0.1:{port}/v1", banner
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _ask(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(url + "/chat/completions", json=body, timeout=30)


def test_it_answers_every_model_on_loopback_and_says_how_to_point_litellm_at_it() -> None:
    with fake_provider() as (_, url, banner):
        assert banner[0] == f"fake provider listening on {url}"
        assert f"        api_base: {url}" in banner
        answer = _ask(url, "anything").json()
        assert answer["choices"][0]["message"]["content"] == "Hello from anything."
        with OpenAI(base_url=url, api_key="any") as client:
            streamed = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert "".join(c.choices[0].delta.content or "" for c in streamed) == "Hello from m."


def test_fail_delay_and_flaky() -> None:
    with fake_provider("--fail", "broken", "--fail", "down", "--delay", "0.3") as (_, url, said):
        assert "failing with 500: broken, down" in said
        assert "answering 0.3 s after each request" in said
        assert _ask(url, "broken").status_code == 500
        assert _ask(url, "down").status_code == 500
        started = time.monotonic()
        assert _ask(url, "fine").status_code == 200
        assert time.monotonic() - started >= 0.3
    with fake_provider("--flaky", "0.5") as (_, url, said):
        assert "failing with 500 at random: 50% of the other models' requests" in said
        statuses = [_ask(url, "m").status_code for _ in range(40)]
    assert set(statuses) == {200, 500}
    assert 8 <= statuses.count(500) <= 32


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("when", ["fake provider listening", "Ctrl-C to stop"])
def test_sigterm_and_ctrl_c_stop_it_cleanly(sig: signal.Signals, when: str) -> None:
    # Also while it is still printing its banner: a Ctrl-C between two statements once escaped
    # as click's "Aborted!" and exit 1.
    for _ in range(3):
        with fake_provider(last=when) as (proc, url, _):
            proc.send_signal(sig)
            assert proc.wait(timeout=20) == 0
            with pytest.raises(httpx.ConnectError):
                _ask(url, "m")


def test_a_busy_port_is_one_line_and_exit_1() -> None:
    with fake_provider() as (_, url, _b):
        port = url.rsplit(":", 1)[1].split("/")[0]
        done = subprocess.run(
            [*COMMAND, "--port", port], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_another_address_than_loopback_is_a_warning() -> None:
    with fake_provider("--host", "0.0.0.0") as (proc, url, _):
        assert _ask(url, "m").status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "warning: listening on 0.0.0.0" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--flaky", "1.5"],
        ["--delay", "-1"],
        ["--delay", "nan"],
        ["--flaky", "nan"],
        ["--port", "70000"],
    ],
)
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
