"""The shadow evaluation's daily cost cap in `semroute serve`: a reload of the index does not start
it afresh, and replicas on one Redis share it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from semroute.testing import FakeProvider
from tests.gateway_kit import build, log_lines, serve_process
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import running_redis

# Any shadow job costs more than the cap: the first job spends the day's cap.
SHADOW = {
    "sample": 1.0,
    "reference": "last-resort",
    "judge": "last-resort",
    "max_cost_usd_per_day": 1e-9,
}
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def shadowed(folder: Path, url: str, n: int) -> dict[str, Any]:
    """Ask once through ``url`` and wait for its shadow job's record, the ``n``-th."""
    assert httpx.post(url + "/v1/chat/completions", json=HELLO, timeout=30).status_code == 200

    def records() -> list[dict[str, Any]]:
        return [r for r in log_lines(folder) if r.get("kind") == "quality"]

    eventually(lambda: len(records()) >= n, f"shadow record {n}")
    return records()[n - 1]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    return {KEY_ENV: KEY}


def test_reloads_do_not_reset_the_shadow_cost_cap(
    tmp_path: Path, provider: FakeProvider, env: dict[str, str]
) -> None:
    index = build(tmp_path, provider, router={"shadow": SHADOW})
    with serve_process(index, env=env) as (proc, url):
        first = shadowed(tmp_path, url, 1)
        assert first["detail"] != "cost_cap" and first["cost_usd"] > 1e-9
        calls = provider.hits("last-resort")
        assert calls >= 1
        for n in range(1, 4):
            proc.send_signal(signal.SIGHUP)
            eventually(lambda n=n: httpx.get(url + "/readyz").json()["reloads"] == n, "a reload")
        second = shadowed(tmp_path, url, 2)
    assert (second["status"], second["detail"]) == ("dropped", "cost_cap")
    assert provider.hits("last-resort") == calls  # no shadow call past the cap


def test_replicas_on_one_redis_share_the_shadow_cost_cap(
    tmp_path: Path, provider: FakeProvider, env: dict[str, str]
) -> None:
    with ExitStack() as stack:
        server = stack.enter_context(running_redis())
        env = {**env, "SHADOW_REDIS_URL": server.url}
        index = build(
            tmp_path,
            provider,
            router={"shadow": SHADOW},
            server={"redis_url": "os.environ/SHADOW_REDIS_URL"},
        )
        _, a = stack.enter_context(serve_process(index, env=env))
        _, b = stack.enter_context(serve_process(index, env=env))
        first = shadowed(tmp_path, a, 1)
        assert first["detail"] != "cost_cap"
        calls = provider.hits("last-resort")
        second = shadowed(tmp_path, b, 2)  # B ran no shadow job: A spent the cap
    assert (second["status"], second["detail"]) == ("dropped", "cost_cap")
    assert provider.hits("last-resort") == calls
