"""The gateway benchmark's goals (issue 24), each worked out from one run's results: the value
measured, the limit it is held to, and whether it passed. Never asserted: reported, at the top
of the gateway section of docs/benchmarks.md. Used by scripts/bench_gateway.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GAP_LIMIT_MS = 1.0
"""Long streams: what a gateway may add to the p99 of the time between two chunks."""


@dataclass(frozen=True)
class Goal:
    id: str
    goal: str
    measured: str
    target: str
    value: float | None = None
    limit: float | None = None
    at_most: bool = True
    """True: passes when value ≤ limit; False: when value ≥ limit."""

    @property
    def passed(self) -> bool | None:
        if self.value is None or self.limit is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def added(targets: dict[str, Any], name: str, kind: str, key: str = "p50_ms") -> float | None:
    """``name``'s ``key`` in the ``kind`` run minus direct's: what the gateway added."""
    mine, direct = _get(targets, name, kind, key), _get(targets, "direct", kind, key)
    return None if mine is None or direct is None else round(mine - direct, 3)


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else round(value * factor, 3)


def _x(v: float | None, of: float | None) -> str:
    return "n/a" if v is None or not of else f"{v / of:.2f} x"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _rps(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} req/s"


def _cores(t: dict[str, Any], name: str) -> str:
    """How much of the machine a server used in the 64-at-a-time run, when measured."""
    cpu = _get(t, name, "plain", "cpu") or {}
    if "server_cores" not in cpu:
        return ""
    return (
        f" (the server kept {cpu['server_cores']:.2f} cores busy, the machine was "
        f"{cpu['machine_busy_pct']:.0f}% busy)"
    )


def goals(results: dict[str, Any]) -> list[Goal]:
    """Every goal of issue 24 that one run of scripts/bench_gateway.py measures."""
    t = results.get("targets", {})
    hot = _get(results, "route_timing", "p50_ms")
    # route() at the pace the one-at-a-time run routes (see scripts/_gateway_route.py); runs
    # from before it was measured have the back-to-back figure only.
    route = _get(results, "route_timing", "paced", "p50_ms") or hot
    pace = _get(results, "route_timing", "paced", "pace_s")
    in_server = _get(t, "semroute", "decision_log", "one_at_a_time", "routing_p50_ms")
    seq, seq_lt = added(t, "semroute", "one_at_a_time"), added(t, "litellm", "one_at_a_time")
    p99, p99_lt = (added(t, "semroute", "plain", "p99_ms"), added(t, "litellm", "plain", "p99_ms"))
    rps = _get(t, "semroute", "plain", "throughput_rps")
    rps_lt = _get(t, "litellm", "plain", "throughput_rps")
    rps_w2 = _get(t, "semroute-w2", "plain", "throughput_rps")
    slow = {k: v for k, v in results.get("slow_stream", {}).items() if isinstance(v, dict)}
    gap, gap_lt = (
        added(slow, n, "slow_streamed", "chunk_gap_p99_ms") for n in ("semroute", "litellm")
    )
    return [
        Goal(
            "a",
            "one at a time: semroute's added p50 ≤ 2 x its route() p50",
            f"{_ms(seq)} added; route() p50 {_ms(route)}"
            + (
                f" one query every {pace * 1000:.0f} ms (back to back {_ms(hot)}, "
                f"{_x(seq, hot)}; inside the server {_ms(in_server)})"
                if pace
                else ""
            ),
            f"≤ {_ms(_times(route, 2))}",
            seq,
            _times(route, 2),
        ),
        Goal(
            "b",
            "one at a time: semroute's added p50 ≤ 0.5 x LiteLLM proxy's",
            f"{_ms(seq)}; LiteLLM proxy {_ms(seq_lt)}",
            f"≤ {_ms(_times(seq_lt, 0.5))}",
            seq,
            _times(seq_lt, 0.5),
        ),
        Goal(
            "c",
            "64 at a time, 1 worker: throughput ≥ 2 x LiteLLM proxy's",
            f"{_rps(rps)}; LiteLLM proxy {_rps(rps_lt)}",
            f"≥ {_rps(_times(rps_lt, 2))}",
            rps,
            _times(rps_lt, 2),
            at_most=False,
        ),
        Goal(
            "d",
            "64 at a time, 1 worker: p99 added ≤ 0.5 x LiteLLM proxy's",
            f"{_ms(p99)}; LiteLLM proxy {_ms(p99_lt)}",
            f"≤ {_ms(_times(p99_lt, 0.5))}",
            p99,
            _times(p99_lt, 0.5),
        ),
        Goal(
            "e",
            "64 at a time: `--workers 2` throughput ≥ 1.6 x one worker's",
            f"{_rps(rps_w2)}{_cores(t, 'semroute-w2')}; 1 worker {_rps(rps)}"
            f"{_cores(t, 'semroute')}",
            f"≥ {_rps(_times(rps, 1.6))}",
            rps_w2,
            _times(rps, 1.6),
            at_most=False,
        ),
        streaming_goal(
            t,
            "f",
            "streaming, 64 at a time, in one run alternately non-streamed and streamed: first "
            "content chunk's added p50 ≤ non-streamed added p50",
            "mixed_streamed",
            "mixed_plain",
        ),
        streaming_goal(
            t,
            "f1",
            "streaming, one at a time, in one run alternately non-streamed and streamed: first "
            "content chunk's added p50 ≤ non-streamed added p50",
            "mixed_one_at_a_time_streamed",
            "mixed_one_at_a_time_plain",
        ),
        streaming_goal(
            t,
            "f-sep",
            "the same, 64 at a time, from separate streamed and non-streamed runs",
            "streamed",
            "plain",
        ),
        streaming_goal(
            t,
            "f1-sep",
            "the same, one at a time, from separate runs",
            "streamed_one_at_a_time",
            "one_at_a_time",
        ),
        Goal(
            "g",
            "long streams: p99 of the time between chunks, added over direct's",
            f"{_ms(gap)}; LiteLLM proxy {_ms(gap_lt)}",
            f"≤ {_ms(GAP_LIMIT_MS)}",
            gap,
            GAP_LIMIT_MS,
        ),
        memory_goal(t),
    ]


def streaming_goal(t: dict[str, Any], key: str, goal: str, streamed: str, plain: str) -> Goal:
    """(f): the first content chunk of the ``streamed`` requests, added, against the whole
    answer of the ``plain`` ones, added (p50s)."""
    first, first_lt = (added(t, n, streamed, "first_chunk_p50_ms") for n in ("semroute", "litellm"))
    answer, answer_lt = (added(t, n, plain) for n in ("semroute", "litellm"))
    return Goal(
        key,
        goal,
        f"{_ms(first)} (LiteLLM proxy {_ms(first_lt)}); non-streamed added p50 "
        f"{_ms(answer)} (LiteLLM proxy {_ms(answer_lt)})",
        f"≤ {_ms(answer)}",
        first,
        answer,
    )


def memory_goal(t: dict[str, Any]) -> Goal:
    """(h): each server's peak RSS per worker (VmHWM of each process, not summed)."""
    parts = []
    for name in ("semroute", "semroute-w2", "litellm"):
        memory = _get(t, name, "memory")
        if not memory:
            continue
        each = ", ".join(
            f"{p['peak_rss_mib']:.0f}"
            for p in memory.get("per_process", [])
            if p["role"] == "worker"
        )
        others = [p for p in memory.get("per_process", []) if p["role"] != "worker"]
        extra = "".join(f"; {p['role']} {p['peak_rss_mib']:.0f}" for p in others)
        parts.append(f"{name}: worker{'s' if ',' in each else ''} {each} MiB{extra}")
    worker = _get(t, "semroute", "memory", "worker_peak_rss_mib")
    return Goal(
        "h",
        "memory: peak RSS per worker, documented",
        "; ".join(parts) or "n/a",
        "documented",
        None if worker is None else 1.0,
        1.0,
        at_most=False,
    )


def goals_markdown(rows: list[Goal]) -> list[str]:
    def verdict(v: bool | None) -> str:
        return "n/a" if v is None else "pass" if v else "**fail**"

    out = ["| goal | measured | target | verdict |", "|---|---|---|---|"]
    out += [
        f"| ({g.id}) {g.goal} | {g.measured} | {g.target} | {verdict(g.passed)} |" for g in rows
    ]
    return out
