"""What the console's pages read: the log paged from its end (a million lines, bounded reads),
and the traffic counters and log tail behind the traffic page."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semroute.decision import Decision, Reason
from semroute.records import Attempt
from semroute.server.console import logview
from semroute.server.console.logview import LogFilter, lines_backward, page
from semroute.server.console.traffic import SAMPLES, LogTail, Traffic


def line(i: int, **kw: Any) -> bytes:
    return (
        json.dumps({"request_id": f"r{i}", "route": "a" if i % 2 else "b", **kw}) + "\n"
    ).encode()


def ids(found: logview.Page) -> list[str]:
    return [e.record["request_id"] for e in found.entries]


def test_a_million_line_log_pages_from_its_end_reading_a_bounded_part(tmp_path: Path) -> None:
    log = tmp_path / "big.jsonl"
    n = 1_000_000
    with log.open("wb") as f:
        f.write(b"".join(line(i) for i in range(n)))
    size = log.stat().st_size
    first = page(log, LogFilter(), limit=50)
    assert ids(first) == [f"r{i}" for i in range(n - 1, n - 51, -1)]
    assert first.scanned_bytes < 200 << 10  # a few blocks, not the file
    second = page(log, LogFilter(), before=first.next_before, limit=50)
    assert ids(second) == [f"r{i}" for i in range(n - 51, n - 101, -1)]
    # a filter nothing matches stops at the scan bound and says where to go on
    none = page(log, LogFilter(route="zzz"), scan_bytes=1 << 20)
    assert none.entries == [] and none.scanned_bytes <= (1 << 20) + logview.BLOCK
    assert none.next_before is not None and size - none.next_before <= (1 << 20) + logview.BLOCK
    only_b = page(log, LogFilter(route="b"), limit=3)
    assert ids(only_b) == [f"r{n - 2}", f"r{n - 4}", f"r{n - 6}"]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), max_size=40),
    limit=st.integers(1, 5),
    block=st.integers(1, 64),
)
def test_pages_cover_every_line_once_newest_first(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], limit: int, block: int
) -> None:
    log = tmp_path_factory.mktemp("log") / "log.jsonl"
    log.write_bytes(b"".join(line(i, pad="x" * k) for i, k in enumerate(lengths)))
    old = logview.BLOCK
    logview.BLOCK = block
    try:
        seen: list[str] = []
        before = None
        for _ in range(len(lengths) + 2):
            found = page(log, LogFilter(), before=before, limit=limit, scan_bytes=4096)
            seen += ids(found)
            before = found.next_before
            if before is None:
                break
    finally:
        logview.BLOCK = old
    assert seen == [f"r{i}" for i in reversed(range(len(lengths)))]


def test_an_overlong_line_is_skipped_and_its_neighbours_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logview, "MAX_LINE", 100)
    monkeypatch.setattr(logview, "BLOCK", 16)
    log = tmp_path / "log.jsonl"
    log.write_bytes(line(0) + line(1, pad="y" * 500) + line(2))
    fd = os.open(log, os.O_RDONLY)
    try:
        got = [
            json.loads(x)["request_id"] for _, x in lines_backward(fd, log.stat().st_size, 10**6)
        ]
    finally:
        os.close(fd)
    assert got == ["r2", "r0"]


def test_traffic_counts_a_second_of_500_requests_into_one_small_snapshot() -> None:
    now = [1000.2]
    traffic = Traffic(clock=lambda: now[0])
    decision = Decision("weather", "weather-model", 0.9, 0.5, Reason.MATCHED, 1.0)
    blocked = Decision(None, "frontier", 0.1, 0.0, Reason.BLOCKED, 0.0)
    ok = (Attempt("weather-model", None, 20.0),)
    failed_over = (Attempt("weather-model", "boom", 5.0), Attempt("backup", None, 30.0))
    for i in range(500):
        if i % 10 == 0:
            traffic("chat", 403, blocked, (), (), None, None)
        elif i % 10 == 1:
            traffic("chat", 200, decision, failed_over, (), "backup", 0.002)
        else:
            traffic("chat", 200, decision, ok, (), "weather-model", 0.001)
    now[0] = 1001.0
    snap = traffic.snapshot()
    assert snap["requests"] == 500 and snap["series"]["rps"][-2:] == [500, 0]
    assert snap["routes"] == {"weather": 450, "(no route)": 50}
    assert snap["models"] == {"weather-model": 400, "backup": 50, "(none)": 50}
    assert snap["blocked"] == 50 and snap["fallback_rate"] == pytest.approx(0.1)
    assert snap["cost_per_request"] == pytest.approx((400 * 0.001 + 50 * 0.002) / 450)
    assert snap["latency_ms"]["p50"] == 21.0 and snap["latency_ms"]["p99"] == 36.0
    assert len(json.dumps(snap)) < 4000
    now[0] = 1200.0  # a minute and more later, the window is empty again
    traffic._cached = None
    assert traffic.snapshot()["requests"] == 0


def test_latencies_kept_per_second_are_bounded() -> None:
    traffic = Traffic(clock=lambda: 5.0)
    decision = Decision("weather", "weather-model", 0.9, 0.5, Reason.MATCHED, 1.0)
    for _ in range(SAMPLES * 3):
        traffic("route", 200, decision, (), (), None, None)
    assert max(len(s.latencies) for s in traffic._ring) == SAMPLES


def test_the_log_tail_counts_verdicts_and_feedback_per_route_and_tier(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    tail = LogTail()
    assert tail.update(log) == {"quality": {"routes": {}, "tiers": {}}, "feedback": {}}
    records = [
        {"request_id": "a", "route": "weather", "tier": "cheap"},
        {
            "kind": "quality",
            "request_id": "a",
            "route": "weather",
            "tier": "cheap",
            "status": "judged",
            "verdict": "win",
        },
        {
            "kind": "quality",
            "request_id": "b",
            "route": None,
            "status": "judged",
            "verdict": "loss",
        },
        {
            "kind": "quality",
            "request_id": "c",
            "route": "weather",
            "status": "judged",
            "verdict": "nonsense",
        },
        {"kind": "feedback", "request_id": "a", "score": "down"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"request_id": "partial')
    out = tail.update(log)
    assert out["quality"]["routes"] == {"weather": {"win": 1}, "(no route)": {"loss": 1}}
    assert out["quality"]["tiers"] == {"cheap": {"win": 1}}
    assert out["feedback"] == {"weather": {"count": 1, "mean_score": -1.0}}
    with log.open("a") as f:  # the partial line is finished: read once, not twice
        f.write('", "route": "weather"}\n')
        f.write(json.dumps({"kind": "feedback", "request_id": "a", "score": 0.5}) + "\n")
    assert tail.update(log)["feedback"] == {"weather": {"count": 2, "mean_score": -0.25}}
