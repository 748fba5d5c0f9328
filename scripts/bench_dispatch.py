"""Dispatch: the latency a failover adds, and 200 concurrent requests while models fail.

    .venv/bin/python scripts/bench_dispatch.py [--runs 50] [--rounds 5] [--work DIR]

Every model is served by semroute.testing.FakeProvider, an OpenAI-compatible HTTP server on
127.0.0.1 running in this process, and routing uses an index built with FakeEncoder: the figures
measure semroute, LiteLLM and a local HTTP round trip, not a model or a network.

1. Failover (sequential `acomplete()` calls, medians of --runs requests each, after a warm-up): a routed request
   whose model answers; one whose model returns 500 so that the next model of its chain answers;
   one whose model's endpoint refuses connections (nothing listens on its port). The difference
   from the first is the latency the failover adds.
2. Concurrency (--rounds rounds): 200 `acomplete()` calls at once. The routed model and its first
   fallback fail 30% of requests at random; the last fallback is healthy. Every request must be
   answered and the decision log must hold exactly 200 well-formed lines.

Results go to docs/results/dispatch.json and the "dispatch" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from _bench import machine, machine_markdown, save
from semroute import Dispatcher, Router, build_index
from semroute.testing import FakeEncoder, FakeProvider

KEY_ENV = "BENCH_PROVIDER_KEY"
ROUTES = {  # route → (its model, its fallbacks, an utterance that FakeEncoder routes to it)
    "healthy": ("answers", ["backup"], "alpha bravo charlie"),
    "failing": ("fails-500", ["backup"], "delta echo foxtrot"),
    "dead": ("refuses-connections", ["backup"], "golf hotel india"),
    "flaky": ("flaky-a", ["flaky-b", "steady"], "juliet kilo lima"),
}


def free_port_with_nothing_listening() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(work: Path, provider: FakeProvider, *, health: bool = True) -> Router:
    dead_base = f"http://127.0.0.1:{free_port_with_nothing_listening()}/v1"
    names = {"backup", "flaky-b", "steady", *(model for model, _, _ in ROUTES.values())}
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": dead_base if name == "refuses-connections" else provider.url,
                "api_key": f"os.environ/{KEY_ENV}",
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
            },
        }
        for name in sorted(names)
    ]
    spec = {
        "router": {
            "default_model": "backup",
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {"timeout": 10, "log": str(work / "decisions.jsonl")},
            "health": {"enabled": health},
        },
        "models": models,
        "routes": [
            {"name": name, "model": model, "fallbacks": fallbacks, "utterances": [utterance]}
            for name, (model, fallbacks, utterance) in ROUTES.items()
        ],
    }
    name = "health-on" if health else "health-off"
    (work / name / "routes").mkdir(parents=True)
    (work / name / "routes" / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build_index(work / name / "routes", work / name / "index", encoder=FakeEncoder())
    return Router.load(work / name / "index")


async def failover(router: Router, runs: int) -> dict[str, Any]:
    dispatcher = Dispatcher.for_index(router.index)
    times: dict[str, list[float]] = {"healthy": [], "failing": [], "dead": []}
    expected = {"healthy": "answers", "failing": "backup", "dead": "backup"}
    for i in range(runs + 5):  # the first 5 of each warm up connections and clients
        for route in times:  # interleaved, so that drift affects each case alike
            started = time.perf_counter()
            result = await dispatcher.acomplete(ROUTES[route][2], router=router)
            elapsed = (time.perf_counter() - started) * 1000
            assert result.decision.route == route, result.decision
            assert result.model == expected[route], result.attempts
            if i >= 5:
                times[route].append(elapsed)
    med = {route: statistics.median(values) for route, values in times.items()}
    return {
        "runs": runs,
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "added_by_500_ms": round(med["failing"] - med["healthy"], 2),
        "added_by_refused_connection_ms": round(med["dead"] - med["healthy"], 2),
        "all_ms": {k: [round(v, 2) for v in values] for k, values in times.items()},
    }


async def concurrent_round(router: Router, log: Path, n: int = 200) -> dict[str, Any]:
    log.unlink(missing_ok=True)
    dispatcher = Dispatcher.for_index(router.index)

    async def one(i: int) -> tuple[float, Any]:
        started = time.perf_counter()
        result = await dispatcher.acomplete(f"{ROUTES['flaky'][2]} question {i}", router=router)
        return (time.perf_counter() - started) * 1000, result

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    dispatcher.close()
    latencies = sorted(ms for ms, _ in done)
    answered = sum(1 for _, r in done if r.text)
    records = []
    for line in log.read_text().splitlines():
        record = json.loads(line)  # a torn or interleaved line would not parse
        assert record["request_id"] and record["error"] is None, record
        records.append(record)
    assert answered == n and len(records) == n, (answered, len(records))
    return {
        "wall_s": round(wall, 3),
        "answered": answered,
        "log_lines": len(records),
        "fell_back": sum(1 for r in records if r["fallbacks"]),
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/semroute-bench-dispatch"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.environ[KEY_ENV] = "sk-bench-not-a-real-key"
    info = machine()
    with FakeProvider() as provider:
        provider.error("fails-500", status=500)
        provider.flaky("flaky-a", rate=0.3)
        provider.flaky("flaky-b", rate=0.3)
        router = build(args.work, provider)
        # Failover is timed with health tracking off: with it on, the failing models' circuits
        # open after 3 failures and later requests skip them (timed separately, "skip" below).
        plain = build(args.work, provider, health=False)

        async def run_all() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
            log = args.work / "decisions.jsonl"
            fo = await failover(plain, args.runs)
            skip = await failover(router, args.runs)
            return fo, skip, [await concurrent_round(router, log) for _ in range(args.rounds)]

        fo, skip, rounds = asyncio.run(run_all())

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    def span(key: str) -> str:
        low, high = min(r[key] for r in rounds), max(r[key] for r in rounds)
        return str(low) if low == high else f"{low} to {high}"

    results = {"machine": info, "failover": fo, "skip": skip, "concurrent_200": rounds}
    m = fo["median_ms"]
    md = f"""
## Dispatch: failover latency and 200 concurrent requests

`.venv/bin/python scripts/bench_dispatch.py --runs {args.runs} --rounds {args.rounds}`: models
served by `semroute.testing.FakeProvider` (an OpenAI-compatible HTTP server on 127.0.0.1, in
the same process), routing with `FakeEncoder`, default dispatch settings (no retries; LiteLLM's
cooldown policy), a decision log written for every request.

Sequential `Dispatcher.acomplete()`, medians of {args.runs} requests each after a warm-up:

| request | median | added by the failover | target |
|---|---:|---:|---:|
| the routed model answers | {m["healthy"]:.1f} ms | | |
| the routed model returns 500, the next model of its chain answers | {m["failing"]:.1f} ms | {fo["added_by_500_ms"]:.1f} ms | < 1 s |
| the routed model's endpoint refuses connections, the next model answers | {m["dead"]:.1f} ms | {fo["added_by_refused_connection_ms"]:.1f} ms | < 1 s |

These three are timed with `health: {{enabled: false}}`. With health on (the default), the failing
models' circuits open after 3 failures and later requests skip them without an attempt: the 500
case then takes {skip["median_ms"]["failing"]:.1f} ms ({skip["added_by_500_ms"]:+.1f} ms) and the
refused connection {skip["median_ms"]["dead"]:.1f} ms ({skip["added_by_refused_connection_ms"]:+.1f} ms).

200 concurrent `Dispatcher.acomplete()` calls; the routed model and its first fallback fail 30% of
requests at random (500), the last fallback is healthy; health tracking on (the default). {args.rounds} rounds:

| measurement | every round | median |
|---|---:|---:|
| requests answered | {span("answered")} of 200 | |
| well-formed decision-log lines | {span("log_lines")} | |
| requests answered by a fallback | {span("fell_back")} | {med("fell_back"):.0f} |
| wall time for all 200 | | {med("wall_s"):.2f} s |
| per-request latency p50 / p95 | | {med("p50_ms"):.0f} / {med("p95_ms"):.0f} ms |

{machine_markdown(info)}
"""
    save("dispatch", results, md)
    print(md)


if __name__ == "__main__":
    main()
