"""FakeProvider's answer delay: a model that takes its time, streamed or not, failing or not;
and a streamed answer whose words come one at a time."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from semroute.testing import FakeProvider

# Far apart, so that no scheduling hiccup can blur what is checked: a client whose timeout is
# much shorter than the delay never sees the answer; one whose timeout is much longer does.
DELAY = 2.0
SHORT = 0.3
LONG = 30.0


def _body(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def _post(provider: FakeProvider, model: str, timeout: float) -> httpx.Response:
    return httpx.post(f"{provider.url}/chat/completions", json=_body(model), timeout=timeout)


def test_an_answer_waits_for_its_delay() -> None:
    with FakeProvider() as provider:
        provider.answer("slow", text="late but here", delay=DELAY)
        with pytest.raises(httpx.ReadTimeout):
            _post(provider, "slow", SHORT)
        response = _post(provider, "slow", LONG)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "late but here"


def test_a_streamed_answer_sends_nothing_before_its_delay() -> None:
    with FakeProvider() as provider:
        provider.answer("slow", text="one two three", delay=DELAY)
        url = f"{provider.url}/chat/completions"
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream("POST", url, json=_body("slow", stream=True), timeout=SHORT) as r,
        ):
            r.read()
        with httpx.stream("POST", url, json=_body("slow", stream=True), timeout=LONG) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        words = [
            json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines[:-1]
        ]
        assert "".join(words) == "one two three"


def test_a_flaky_model_fails_after_its_delay_too() -> None:
    with FakeProvider() as provider:
        provider.flaky("flaky", rate=1.0, status=503, delay=DELAY)
        with pytest.raises(httpx.ReadTimeout):
            _post(provider, "flaky", SHORT)
        assert _post(provider, "flaky", LONG).status_code == 503


def test_no_delay_is_the_default() -> None:
    with FakeProvider() as provider:
        provider.answer("quick")
        assert _post(provider, "quick", LONG).status_code == 200
        assert provider.hits("quick", status=200) == 1


def test_concurrent_requests_wait_their_delays_side_by_side() -> None:
    # 32 requests of 1 s each: one after the other they would take 32 s, past every client's
    # timeout; waited side by side they all finish in about a second.
    n, delay, timeout = 32, 1.0, 12.0
    with FakeProvider() as provider:
        provider.answer("slow", delay=delay)
        with ThreadPoolExecutor(n) as pool:
            statuses = list(
                pool.map(lambda _: _post(provider, "slow", timeout).status_code, range(n))
            )
        assert statuses == [200] * n
        assert provider.hits("slow", status=200) == n


def test_a_chunk_delay_spaces_out_a_streamed_answers_events() -> None:
    # The role, then four words: the last leaves at least 4 x 0.5 s after the first. Only a
    # client held up for more than a second could see them closer than 1 s apart; a provider
    # that sent the events together (after a wait or not) shows them a few ms apart.
    words, pause = "one two three four", 0.5
    with FakeProvider() as provider:
        provider.answer("typing", text=words, chunk_delay=pause)
        url = f"{provider.url}/chat/completions"
        seen: list[tuple[float, str]] = []
        with httpx.stream("POST", url, json=_body("typing", stream=True), timeout=LONG) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    seen.append((time.monotonic(), line))
        deltas = [json.loads(line[6:])["choices"][0]["delta"] for _, line in seen]
        assert "".join(d.get("content") or "" for d in deltas) == words
        assert seen[4][0] - seen[0][0] >= 1.0
        # Not streamed: the whole answer at once, as without a chunk delay.
        assert _post(provider, "typing", LONG).json()["choices"][0]["message"]["content"] == words


@pytest.mark.parametrize("delay", [-0.1, float("nan"), float("inf")])
def test_a_delay_that_is_not_a_duration_is_refused(delay: float) -> None:
    provider = FakeProvider()
    with pytest.raises(ValueError, match="delay must be 0 or more seconds"):
        provider.answer("m", delay=delay)
    with pytest.raises(ValueError, match="delay must be 0 or more seconds"):
        provider.flaky("m", rate=0.5, delay=delay)
    with pytest.raises(ValueError, match="delay must be 0 or more seconds"):
        provider.answer("m", chunk_delay=delay)
