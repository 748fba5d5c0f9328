"""What the decision log holds stays bounded whatever a client sends, and a problem writing it, or
a request that fails after its caller went away, is reported every time it matters, not once."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

import semroute.dispatch.log as log_module
from semroute.dispatch.log import DecisionLog
from semroute.dispatch.log_metadata import (
    MAX_KEY_CHARS,
    MAX_KEYS,
    MAX_VALUE_CHARS,
    bounded_metadata,
    logged_signals,
)
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build

# --- metadata in the log ------------------------------------------------------------------------


@pytest.mark.usefixtures("provider_key")
def test_a_100_kb_metadata_makes_a_bounded_line_that_says_so(
    tmp_path: Path, provider: FakeProvider
) -> None:
    metadata = {f"key-{i}": "v" * 1000 for i in range(100)}  # 100 keys of 1,000 characters
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there"}],
        "metadata": {"first": "x" * 1000, **metadata},
    }
    with Served(build(tmp_path, provider)) as served:
        answer = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    [raw] = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(raw) < 8_000  # 16 keys of at most 64 + 256 characters, and the rest of the line
    signals = json.loads(raw)["signals"]
    assert signals["metadata_truncated"] is True
    kept = signals["metadata"]
    assert list(kept) == ["first", *list(metadata)[: MAX_KEYS - 1]]  # the first keys, in order
    assert kept["first"] == "x" * (MAX_VALUE_CHARS - 1) + "\u2026"


def test_metadata_within_the_limits_is_logged_whole() -> None:
    metadata: dict[str, Any] = {f"k{i}": i for i in range(MAX_KEYS - 3)}
    metadata |= {"k" * MAX_KEY_CHARS: "v" * MAX_VALUE_CHARS, "ok": True, "none": None}
    assert len(metadata) == MAX_KEYS
    assert bounded_metadata(metadata) == (metadata, False)
    signals = logged_signals({"task": "t", "metadata": metadata})
    assert signals == {"task": "t", "metadata": metadata}


@pytest.mark.parametrize(
    ("extra", "logged"),
    [
        ({"k" * (MAX_KEY_CHARS + 1): "v"}, {}),  # a key one character too long is dropped
        ({"v": "v" * (MAX_VALUE_CHARS + 1)}, {"v": "v" * (MAX_VALUE_CHARS - 1) + "\u2026"}),
        ({"nested": {"a": 1, "b": [1, 2]}}, {"nested": "<object of 2 keys>"}),
        ({"items": list(range(5000))}, {"items": "<list of 5000 items>"}),
        ({"big": 2**64}, {"big": "<int of 65 bits>"}),
        ({"nan": float("nan")}, {"nan": "<float>"}),
        ({7: "not a text key"}, {}),
    ],
)
def test_metadata_over_a_limit_is_cut_and_marked(extra: dict[Any, Any], logged: Any) -> None:
    kept, truncated = bounded_metadata({"a": "b", **extra})
    assert (kept, truncated) == ({"a": "b", **logged}, True)


def test_the_seventeenth_key_is_dropped() -> None:
    metadata = {f"k{i}": i for i in range(MAX_KEYS + 1)}
    kept, truncated = bounded_metadata(metadata)
    assert truncated and list(kept) == [f"k{i}" for i in range(MAX_KEYS)]
    signals = logged_signals({"metadata": metadata})
    assert signals is not None and signals["metadata_truncated"] is True


# --- a log that cannot be written -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_an_unwritable_log_is_reported_again_while_it_lasts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(log_module, "time", clock)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = DecisionLog(blocker / "log.jsonl")
    with pytest.warns(RuntimeWarning, match="cannot write the decision log") as first:
        log.write({"request_id": "a"})
    assert len(first) == 1
    for _ in range(3):  # within the minute: counted, not reported (the filter makes it an error)
        clock.now += 10
        log.write({"request_id": "b"})
    clock.now += 31  # a minute after the first report
    with pytest.warns(RuntimeWarning, match=r"\(3 more since the last report\)") as again:
        log.write({"request_id": "c"})
    assert len(again) == 1
    # Another problem is reported at once, on its own clock.
    with pytest.warns(RuntimeWarning, match="cannot write a line of the decision log"):
        log.write({"request_id": "d", "bad": {("tuple", "key"): 1}})


# --- a request cancelled while it is routed ----------------------------------------------------


def test_a_request_that_fails_after_its_caller_left_is_logged(
    tmp_path: Path, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.provider_kit import build as build_dispatch
    from tests.provider_kit import run

    router, dispatcher = build_dispatch(tmp_path, provider)

    async def cancel_while_routing() -> None:
        task = asyncio.ensure_future(
            # A number for a credential is refused once the request is routed.
            dispatcher.acomplete("will it rain", router=router, request_id="r-9", api_key=12345)
        )
        await asyncio.sleep(0)  # the task is now waiting for its routing thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="semroute.dispatch"):
        run(cancel_while_routing())
    [record] = [r for r in caplog.records if "r-9" in r.getMessage()]
    assert "api_key= must be a string" in record.getMessage()
    assert "12345" not in record.getMessage()
    assert provider.requests == []
