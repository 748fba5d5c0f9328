"""The gateway benchmark's soak: one `semroute serve` at a steady request rate for minutes, its
memory sampled every 10 s, latency per 5-minute window. Used by scripts/bench_gateway.py
(--soak-minutes).

The rate is held open-loop: request i leaves at i / rate seconds whatever the answers before it
did, so a server that slows down gets a queue, as it would from real clients; past --soak-cap
requests in flight a request is not sent (counted as skipped) rather than queued in the client.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import machine_markdown
from _gateway_load import ANSWER, Outcome, load, one, pct, request_bodies, request_body
from _gateway_servers import memory_kib, semroute_server, tree, upstream

SAMPLE_S = 10.0
WINDOW_S = 300.0
STREAM_EVERY = 4
"""Every 4th request is streamed."""
GROWTH_LIMIT_MIB_PER_10MIN = 1.0
""""No growth": the RSS slope over the soak's second half, at most this."""


@dataclass
class SoakLog:
    """What a soak saw: each request's send time (s from the start) and outcome, RSS samples
    (s, MiB), requests not sent because --soak-cap were in flight."""

    sent: list[tuple[float, Outcome]]
    rss: list[tuple[float, float]]
    skipped: int
    duration_s: float


def slope_per_10min(samples: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, MiB) samples, in MiB per 10 minutes."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mt) * (v - mv) for t, v in samples)
    return cov / var * 600


def second_half(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples taken in the second half of the time the samples span."""
    if not samples:
        return []
    middle = (samples[0][0] + samples[-1][0]) / 2
    return [s for s in samples if s[0] >= middle]


def windows(sent: list[tuple[float, Outcome]], window_s: float = WINDOW_S) -> list[dict[str, Any]]:
    """Per window of ``window_s`` (by when a request was sent): requests, errors, p50, p99."""
    out = []
    last = max((t for t, _ in sent), default=0.0)
    for w in range(int(last // window_s) + 1):
        these = [o for t, o in sent if w * window_s <= t < (w + 1) * window_s]
        ok = sorted(o.ms for o in these if o.ok)
        out.append(
            {
                "from_min": round(w * window_s / 60, 2),
                "to_min": round(min((w + 1) * window_s, last) / 60, 2),
                "requests": len(these),
                "errors": len(these) - len(ok),
                "p50_ms": round(pct(ok, 50), 2) if ok else None,
                "p99_ms": round(pct(ok, 99), 2) if ok else None,
            }
        )
    return out


def soak_summary(log: SoakLog) -> dict[str, Any]:
    outcomes = [o for _, o in log.sent]
    rss = [v for _, v in log.rss]
    slope = slope_per_10min(second_half(log.rss))
    errors = [o for o in outcomes if not o.ok]
    return {
        "duration_s": round(log.duration_s, 1),
        "sent": len(outcomes),
        "answered": len(outcomes) - len(errors),
        "errors": len(errors),
        "first_error": errors[0].body[:300] if errors else None,
        "skipped_at_cap": log.skipped,
        "achieved_rps": round(len(outcomes) / log.duration_s, 1) if log.duration_s else None,
        "streamed": sum(1 for o in outcomes if o.chunks),
        "rss_start_mib": rss[0] if rss else None,
        "rss_end_mib": rss[-1] if rss else None,
        "rss_max_mib": max(rss) if rss else None,
        "rss_slope_second_half_mib_per_10min": None if slope is None else round(slope, 3),
        "no_growth": None if slope is None else slope <= GROWTH_LIMIT_MIB_PER_10MIN,
        "rss_samples": [[round(t, 1), v] for t, v in log.rss],
        "windows": windows(log.sent),
    }


def rss_mib(pid: int) -> float:
    return round(memory_kib(tree(pid), "VmRSS") / 1024, 2)


async def soak(
    url: str, pid: int, queries: list[tuple[str, str]], seconds: float, rps: float, cap: int
) -> SoakLog:
    """Requests at ``rps`` for ``seconds`` (every STREAM_EVERY-th streamed, each query unique),
    the server's RSS (``pid`` and its children) sampled every SAMPLE_S; then waits for the
    requests in flight (each gives up after 120 s)."""
    import aiohttp

    chat = url + "/v1/chat/completions"
    log = SoakLog([], [], 0, 0.0)
    connector = aiohttp.TCPConnector(limit=cap, limit_per_host=cap)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        in_flight: set[asyncio.Task[None]] = set()

        async def send(i: int, at: float) -> None:
            stream = i % STREAM_EVERY == STREAM_EVERY - 1
            text, model = queries[i % len(queries)]
            body = request_body(f"{text} (soak {i})", model, auto=True, stream=stream)
            log.sent.append((at, await one(session, chat, body, stream, ANSWER)))

        next_sample, i = 0.0, 0
        while (now := time.perf_counter() - start) < seconds:
            if now >= next_sample:
                log.rss.append((now, await asyncio.to_thread(rss_mib, pid)))
                next_sample += SAMPLE_S
            if len(in_flight) >= cap:
                log.skipped += 1
            else:
                task = asyncio.create_task(send(i, now))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            i += 1
            await asyncio.sleep(max(0.0, start + i / rps - time.perf_counter()))
        log.duration_s = time.perf_counter() - start
        if in_flight:
            await asyncio.gather(*in_flight)
        log.rss.append((time.perf_counter() - start, await asyncio.to_thread(rss_mib, pid)))
    log.sent.sort(key=lambda s: s[0])
    return log


def soak_run(
    args: Any, work: Path, queries: list[tuple[str, str]], routes: list[str]
) -> dict[str, Any]:
    """One `semroute serve` (1 worker) against the upstream for --soak-minutes at --soak-rps;
    stops by itself."""
    with upstream(args.delay, routes, work / "upstream.log") as base:
        server = semroute_server(
            work, base, 1, flaky=False, health=True, max_sessions=args.soak_max_sessions
        )
        print("starting semroute for the soak ...", file=sys.stderr)
        server.start()
        try:
            assert server.proc is not None
            warm = request_bodies(queries, args.warmup, auto=True, stream=False, tag="warm-up")
            load(server.url, warm, args.concurrency, False)
            seconds = args.soak_minutes * 60
            print(f"soak: {args.soak_rps} req/s for {seconds:.0f} s ...", file=sys.stderr)
            log = asyncio.run(
                soak(server.url, server.proc.pid, queries, seconds, args.soak_rps, args.soak_cap)
            )
            memory = server.memory()
        finally:
            server.stop()
    return {
        "settings": {
            "minutes": args.soak_minutes,
            "rps": args.soak_rps,
            "streamed_share": 1 / STREAM_EVERY,
            "cap_in_flight": args.soak_cap,
            "upstream_delay_s": args.delay,
            "warmup": args.warmup,
            "sample_s": SAMPLE_S,
            "window_s": WINDOW_S,
            "growth_limit_mib_per_10min": GROWTH_LIMIT_MIB_PER_10MIN,
            "workers": 1,
            "max_sessions": args.soak_max_sessions,
        },
        "memory": memory,
    } | soak_summary(log)


def soak_markdown(results: dict[str, Any], command: str) -> str:
    s, slope = results["settings"], results["rss_slope_second_half_mib_per_10min"]
    verdict = {None: "n/a", True: "yes", False: "**no**"}[results["no_growth"]]
    lines = [
        "## Gateway soak: `semroute serve` at a steady rate",
        "",
        f"`{command}`: all on 127.0.0.1. One `semroute serve` (1 worker, the bundled routes "
        "as in the gateway section, health and decision log on) against the upstream "
        f"(`FakeProvider`, {s['upstream_delay_s'] * 1000:.0f} ms an answer), after "
        f"{s['warmup']} warm-up requests, for {s['minutes']:g} minutes at {s['rps']:g} "
        f"requests a second, sent open-loop (request i leaves at i ÷ rate s), every "
        f"{round(1 / s['streamed_share'])}th streamed, every query unique. The server's RSS "
        f"(VmRSS) is read every {s['sample_s']:.0f} s. The bundled routes keep agent sessions "
        "(`conversation: {sticky: true}`), one per conversation, up to `max_sessions` "
        "(100,000 by default, about half a kilobyte each) for an hour: every query of the soak "
        "starts a conversation, so at the default the store would still be filling when the "
        "soak ends (a bounded rise, not a leak); the soak sets `max_sessions: "
        f"{s.get('max_sessions')}`, full within minutes, so that its second half shows whether "
        "anything else grows.",
        "",
        f"Requests: {results['sent']:,} sent ({results['achieved_rps']} a second), "
        f"{results['answered']:,} answered, {results['errors']} errors, "
        f"{results['skipped_at_cap']} not sent (over {s['cap_in_flight']} in flight).",
        "",
        f"RSS: {results['rss_start_mib']} MiB at the start (after the warm-up), "
        f"{results['rss_end_mib']} MiB at the end, {results['rss_max_mib']} MiB at most (peak "
        f"VmHWM {results['memory']['peak_rss_mib']} MiB); least-squares slope over the second "
        f"half {slope} MiB per 10 minutes. No growth (slope ≤ "
        f"{s['growth_limit_mib_per_10min']} MiB per 10 minutes): {verdict}.",
        "",
        "| minutes | requests | errors | p50 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for w in results["windows"]:
        lines.append(
            f"| {w['from_min']:g}-{w['to_min']:g} | {w['requests']:,} | {w['errors']} "
            f"| {w['p50_ms']} ms | {w['p99_ms']} ms |"
        )
    lines += ["", machine_markdown(results["machine"])]
    return "\n".join(lines)
