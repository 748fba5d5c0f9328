"""The gateway benchmark's load generator: asyncio + aiohttp, every answer checked.

Each request is timed to the end of its body; a streamed one has its chunks counted and its
text and closing ``data: [DONE]`` checked. Used by scripts/bench_gateway.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

ANSWER = (
    "Here is a short answer of about two dozen words, enough for a streamed reply to arrive "
    "in many chunks like a real model's."
)
"""What the upstream answers, word for word: anything else is an error."""


def slow_answer(seconds: float, chunk_delay: float) -> str:
    """What the upstream answers in the slow-stream run: ANSWER's words over and over, as many
    as make a stream of events (the role, then a word each) ``chunk_delay`` apart last about
    ``seconds``."""
    words = ANSWER.split(" ")
    n = max(1, round(seconds / chunk_delay) - 1) if chunk_delay > 0 else len(words)
    return " ".join(words[i % len(words)] for i in range(n))


@dataclass
class Outcome:
    """One request as the client saw it."""

    status: int
    ms: float
    ok: bool = False
    """Answered in full: the expected text (streamed: every chunk, then ``[DONE]``)."""
    chunks: int = 0
    first_ms: float | None = None
    """Streamed: when the first event with content arrived."""
    chunk_ms: list[float] = field(default_factory=list)
    """Streamed: when each event with content arrived, ms after the request was sent."""
    request_id: str | None = None
    fallbacks: str | None = None
    skipped: str | None = None
    body: str = ""
    """The body of a failed request, for the report."""


@dataclass
class Load:
    """The outcomes of one batch of requests and the wall time it took."""

    outcomes: list[Outcome]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ok = sorted(o.ms for o in self.outcomes if o.ok)
        out: dict[str, Any] = {
            "requests": len(self.outcomes),
            "answered": len(ok),
            "errors": len(self.outcomes) - len(ok),
            "wall_s": round(self.wall_s, 3),
            "throughput_rps": round(len(self.outcomes) / self.wall_s, 1),
        }
        if ok:
            out |= {"p50_ms": round(pct(ok, 50), 2), "p99_ms": round(pct(ok, 99), 2)}
            out["mean_ms"] = round(statistics.fmean(ok), 2)
        first = sorted(o.first_ms for o in self.outcomes if o.ok and o.first_ms is not None)
        if first:
            out["first_chunk_p50_ms"] = round(pct(first, 50), 2)
            out["first_chunk_p99_ms"] = round(pct(first, 99), 2)
        gaps = sorted(chunk_gaps([o.chunk_ms for o in self.outcomes if o.ok]))
        if gaps:
            out["chunk_gap_p50_ms"] = round(pct(gaps, 50), 2)
            out["chunk_gap_p99_ms"] = round(pct(gaps, 99), 2)
            out["chunk_gap_max_ms"] = round(gaps[-1], 2)
        chunks = [o.chunks for o in self.outcomes if o.ok and o.chunks]
        if chunks:
            out["chunks_per_stream"] = sorted(set(chunks))
        statuses: dict[str, int] = {}
        for o in self.outcomes:
            if not o.ok:
                statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
        if statuses:
            out["error_statuses"] = statuses
            out["first_error"] = next(o.body for o in self.outcomes if not o.ok)[:300]
        return out | self.extra


def pct(sorted_values: list[float], p: float) -> float:
    """The p-th percentile by linear interpolation (numpy's default)."""
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def chunk_gaps(streams: list[list[float]]) -> list[float]:
    """The time between each content event and the one before it, in every stream (a
    stream's arrival times in order): what a gateway adds to each chunk shows here, not in the
    time to the first one."""
    return [b - a for times in streams for a, b in itertools.pairwise(times)]


def request_bodies(
    queries: list[tuple[str, str]], n: int, *, auto: bool, stream: bool, tag: str = "ref"
) -> list[bytes]:
    """Request i asks query i mod len(queries), unique by ``tag`` and its number (each run of
    a benchmark its own tag, so that no run's query is in semroute's query cache from an
    earlier one); ``auto``: model "auto"."""
    return [
        request_body(text, model, auto=auto, stream=stream)
        for text, model in tagged(queries, n, tag)
    ]


def tagged(queries: list[tuple[str, str]], n: int, tag: str) -> list[tuple[str, str]]:
    """(text, model) of the first ``n`` requests: query i mod len(queries), "(TAG i)" added."""
    picked = (queries[i % len(queries)] for i in range(n))
    return [(f"{q} ({tag} {i})", m) for i, (q, m) in enumerate(picked)]


def request_body(text: str, model: str, *, auto: bool, stream: bool) -> bytes:
    """A chat-completions body asking ``text``, of ``model`` or (``auto``) of "auto"."""
    body = {
        "model": "auto" if auto else model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    return json.dumps(body).encode()


async def one(session: Any, url: str, body: bytes, stream: bool, expected: str) -> Outcome:
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            h = r.headers
            o = Outcome(
                r.status,
                0.0,
                request_id=h.get("x-semroute-request-id"),
                fallbacks=h.get("x-semroute-fallbacks"),
                skipped=h.get("x-semroute-skipped"),
            )
            if r.status == 200 and stream:
                words, done = [], False
                async for raw in r.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    o.chunks += 1
                    content = "".join(
                        (choice.get("delta") or {}).get("content") or ""
                        for choice in json.loads(data).get("choices") or []
                    )
                    if content:
                        words.append(content)
                        o.chunk_ms.append((time.perf_counter() - started) * 1000)
                        if o.first_ms is None:
                            o.first_ms = o.chunk_ms[0]
                o.ok = done and "".join(words) == expected
                o.body = "" if o.ok else f"stream ended early or wrong text: {''.join(words)!r}"
            else:
                raw_body = await r.read()
                if r.status == 200:
                    answer = json.loads(raw_body)["choices"][0]["message"]["content"]
                    o.ok = answer == expected
                o.body = "" if o.ok else raw_body.decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as e:
        o = Outcome(0, 0.0, body=f"{type(e).__name__}: {e}")
    o.ms = (time.perf_counter() - started) * 1000
    return o


async def run_load(
    url: str, bodies: list[bytes], concurrency: int, stream: bool | list[bool], expected: str
) -> Load:
    import aiohttp

    streamed = [stream] * len(bodies) if isinstance(stream, bool) else stream
    outcomes: list[Outcome | None] = [None] * len(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        counter = iter(range(len(bodies)))

        async def worker() -> None:
            for i in counter:
                outcomes[i] = await one(session, url, bodies[i], streamed[i], expected)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return Load([o for o in outcomes if o is not None], wall)


def load(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    stream: bool | list[bool],
    expected: str = ANSWER,
) -> Load:
    """``bodies`` POSTed to ``url``, ``concurrency`` at a time, all streamed or not, or each as
    ``stream`` says; an answer other than ``expected`` is an error."""
    chat = url + "/v1/chat/completions"
    return asyncio.run(run_load(chat, bodies, concurrency, stream, expected))


def classify(outcomes: list[Outcome], logged: list[str]) -> dict[str, Any]:
    """Counts of a flaky run: answered, failed as promised (502 listing attempts), or lost;
    and how the decision log's lines (their request ids) match the requests."""
    failed_with_attempts, lost = 0, []
    for o in outcomes:
        if o.ok:
            continue
        try:
            attempts = json.loads(o.body)["error"].get("attempts")
        except (ValueError, KeyError, AttributeError, TypeError):
            attempts = None
        if o.status == 502 and attempts:
            failed_with_attempts += 1
        else:
            lost.append(f"{o.status}: {o.body[:200]}")
    ids = [o.request_id for o in outcomes]
    times_logged: dict[str, int] = {}
    for request_id in logged:
        times_logged[request_id] = times_logged.get(request_id, 0) + 1
    return {
        "requests": len(outcomes),
        "answered": sum(o.ok for o in outcomes),
        "answered_by_a_fallback": sum(1 for o in outcomes if o.ok and o.fallbacks),
        "answered_after_skipping_an_open_circuit": sum(1 for o in outcomes if o.ok and o.skipped),
        "failed_502_with_attempts": failed_with_attempts,
        "lost": len(lost),
        "lost_examples": lost[:5],
        "log_lines": len(logged),
        "requests_without_id": sum(1 for i in ids if not i),
        "ids_logged_once": sum(1 for i in ids if i and times_logged.get(i) == 1),
        "log_lines_of_no_request": len(set(times_logged) - set(ids)),
    }
