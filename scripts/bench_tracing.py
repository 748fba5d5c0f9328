"""What OpenTelemetry tracing costs: `route()` and the gateway's added latency with tracing off,
against the code from before tracing was added (absent) and with tracing on; the off path's own
calls. Writes docs/results/tracing.json and the `tracing` section of
docs/benchmarks.md.

    python scripts/bench_tracing.py            # a few minutes

Each measurement runs in a process of its own (whether tracing is on is decided once per
process). The index uses the deterministic FakeEncoder, whose encode is far cheaper than the real
model's, so the hook's share of `route()` is shown at its largest. The models live on a local
FakeProvider; "on" exports to a local OTLP/HTTP sink.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench

ROUTE_CALLS = 20_000
ROUNDS = 3
BLOCK = 1_000
REQUESTS = 300


def build_index(folder: Path, api_base: str) -> Path:
    import yaml

    from semroute.testing import FakeEncoder
    from semroute.tuning.build import build_index as build

    names = ("frontier", "weather-model", "backup")
    spec = {
        "router": {
            "default_model": "frontier",
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {"timeout": 30, "log": str(folder / "decisions.jsonl")},
        },
        "models": [
            {
                "model_name": n,
                "litellm_params": {
                    "model": f"openai/{n}",
                    "api_base": api_base,
                    "api_key": "os.environ/BENCH_TRACING_KEY",
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6,
                },
            }
            for n in names
        ],
        "routes": [
            {
                "name": "weather",
                "model": "weather-model",
                "fallbacks": ["backup"],
                "utterances": ["what is the weather forecast for tomorrow", "will it rain today"],
            },
            {"name": "greeting", "utterances": ["hello there", "good morning friend"]},
        ],
    }
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build(routes, folder / "index", encoder=FakeEncoder())
    return folder / "index"


class Sink:
    """An OTLP/HTTP endpoint that takes every POST and keeps nothing."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def child_route(index: str) -> dict[str, Any]:
    """In a process of its own: route() p50s for new and repeated queries (whatever semroute
    the process imports: the current one, or the baseline without tracing)."""
    from semroute import Router

    router = Router.load(index)
    times: dict[str, list[float]] = {"hit": [], "miss": []}
    counter = 0
    for _ in range(ROUTE_CALLS // BLOCK):
        for kind in ("hit", "miss"):
            for _ in range(BLOCK // 2):
                counter += 1
                query = "will it rain today" if kind == "hit" else f"will it rain {counter}"
                started = time.perf_counter_ns()
                router.route(query)
                times[kind].append((time.perf_counter_ns() - started) / 1e6)
    calls: dict[str, float] = {}
    try:
        from semroute import tracing
    except ImportError:  # the baseline has no tracing module
        tracing = None  # type: ignore[assignment]
    if tracing is not None and not tracing.enabled():  # the off path's calls, timed alone
        for what, fn in {
            "enabled()": tracing.enabled,
            "clock()": tracing.clock,
            "start_span() + end_span(None)": lambda: tracing.end_span(tracing.start_span("x")),
        }.items():
            n = 200_000
            started = time.perf_counter_ns()
            for _ in range(n):
                fn()
            calls[what] = (time.perf_counter_ns() - started) / n
    if tracing is not None:
        tracing.shutdown()
    return {
        "tracing": tracing is not None and tracing.enabled(),
        "opentelemetry_imported": sys.modules.get("opentelemetry") is not None,
        "p50_ms": {k: statistics.median(t) for k, t in times.items()},
        "off_call_ns": calls,
    }


def baseline_source(out: Path) -> tuple[Path, str]:
    """The source tree from before tracing was added (the parent of the commit that added
    src/semroute/tracing.py), extracted into ``out``; its src folder and commit."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "src/semroute/tracing.py"],
        cwd=_bench.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        sys.exit("error: no commit adds src/semroute/tracing.py; cannot find the baseline")
    rev = added[-1] + "^"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=_bench.ROOT, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=_bench.ROOT, capture_output=True, check=True
    ).stdout
    out.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src", commit


def run_child(index: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, __file__, *(args or ("--child-route", str(index)))],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    if args:
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def route_runs(indexes: dict[str, Path], variants: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Each variant's child ROUNDS times, taking turns; the median of its runs' p50s."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, env in variants.items():
            runs[name].append(run_child(indexes[name], env))
    out = {}
    for name, results in runs.items():
        out[name] = {
            **results[0],
            "p50_ms": {
                k: statistics.median(r["p50_ms"][k] for r in results) for k in ("hit", "miss")
            },
            "runs_p50_ms": [r["p50_ms"] for r in results],
        }
    return out


def gateway(
    indexes: dict[str, Path], provider_url: str, sink: str, baseline: Path
) -> dict[str, Any]:
    """Sequential requests taking turns between the baseline gateway (no tracing code), one
    with tracing off and one with it on, and the upstream called directly: each one's p50, and
    each gateway's added p50."""
    import httpx
    from tests.gateway_kit import serve_process

    body = {"model": "auto", "messages": [{"role": "user", "content": "will it rain today"}]}
    direct = {"model": "weather-model", "messages": body["messages"]}
    clean = {k: "" for k in os.environ if k.startswith("OTEL_")}
    on = {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_SERVICE_NAME": "bench"}
    absent = {**clean, "PYTHONPATH": str(baseline)}
    times: dict[str, list[float]] = {"direct": [], "absent": [], "off": [], "on": []}
    with (
        serve_process(indexes["absent"], env=absent) as (_, absent_url),
        serve_process(indexes["off"], env=clean) as (_, off_url),
        serve_process(indexes["on"], env=on) as (_, on_url),
        httpx.Client(timeout=30) as client,
    ):
        targets = {
            "direct": (provider_url + "/chat/completions", direct),
            "absent": (absent_url + "/v1/chat/completions", body),
            "off": (off_url + "/v1/chat/completions", body),
            "on": (on_url + "/v1/chat/completions", body),
        }
        for url, payload in targets.values():  # warm each once
            client.post(url, json=payload).raise_for_status()
        names = list(targets)
        for block in range(REQUESTS // 10):
            shift = block % len(names)  # each takes each place in the turn as often
            for name in names[shift:] + names[:shift]:
                url, payload = targets[name]
                for _ in range(10):
                    started = time.perf_counter()
                    client.post(url, json=payload).raise_for_status()
                    times[name].append((time.perf_counter() - started) * 1000)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {
        "requests_each": len(times["off"]),
        "p50_ms": p50,
        "added_p50_ms": {k: p50[k] - p50["direct"] for k in ("absent", "off", "on")},
    }


def markdown(results: dict[str, Any]) -> str:
    route, gw = results["route"], results["gateway"]
    absent, off, on = route["absent"], route["off"], route["on"]

    def row(label: str, data: dict[str, Any]) -> str:
        p = data["p50_ms"]
        return f"| {label} | {p['miss'] * 1000:.1f} µs | {p['hit'] * 1000:.2f} µs |"

    def added(kind: str) -> str:
        return f"{(off['p50_ms'][kind] - absent['p50_ms'][kind]) * 1e6:+.0f} ns"

    calls = "; ".join(f"`{k}` {v:.0f} ns" for k, v in off["off_call_ns"].items())
    ns = off["off_call_ns"]
    per_request = ns["enabled()"] + ns["clock()"] + 2 * ns["start_span() + end_span(None)"]
    g = gw["p50_ms"]
    a = gw["added_p50_ms"]
    return f"""## Tracing (OpenTelemetry): what it costs off and on

`python scripts/bench_tracing.py`. {_bench.machine_markdown(results["machine"])}
One run on a shared, loaded machine: medians, to be read as ratios. "Absent" is the code from
before tracing was added (commit {results["baseline_commit"]}), run from a copy of its source;
"off" is the current code with no `OTEL_*` variable set; "on" exports to a local OTLP/HTTP
sink. The index uses the FakeEncoder, whose encode is far cheaper than the real model's, so the
hook's share of `route()` is shown at its largest. Each `route()` figure is the median of
{ROUNDS} processes' p50s (the three variants taking turns), over {ROUTE_CALLS // 2:,} calls each.

| `route()` p50 | new query | repeated query (cache hit) |
|---|---|---|
{row("absent (no tracing code)", absent)}
{row("tracing off", off)}
{row("tracing on", on)}

Off, OpenTelemetry is not imported ({not off["opentelemetry_imported"]}); off against absent:
{added("miss")} for a new query, {added("hit")} for a repeated one. Each call of the off path,
timed alone: {calls}; a gateway request with tracing off makes about six (the server span's
check, routing's clock, a start and an end per model call).

| gateway, one request at a time ({gw["requests_each"]} each, in turns of 10, the order rotating) | p50 | added p50 over the upstream alone |
|---|---|---|
| upstream (FakeProvider) called directly | {g["direct"]:.2f} ms | |
| `semroute serve`, absent (no tracing code) | {g["absent"]:.2f} ms | {a["absent"]:.2f} ms |
| `semroute serve`, tracing off | {g["off"]:.2f} ms | {a["off"]:.2f} ms |
| `semroute serve`, tracing on | {g["on"]:.2f} ms | {a["on"]:.2f} ms |

The gateway's p50s on this shared machine move by a few milliseconds from one run to the next
(run the script twice), in either direction between absent and off: what tracing off costs a
request, about {per_request / 1000:.1f} µs from the calls timed above (two model calls), is far
below what this machine can resolve end to end.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child-route", help=argparse.SUPPRESS)
    parser.add_argument("--child-build", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_route:
        print(json.dumps(child_route(args.child_route)))
        return
    if args.child_build:
        build_index(Path(args.child_build[0]), args.child_build[1])
        return
    sys.path.insert(0, str(_bench.ROOT))
    from semroute.testing import FakeProvider

    results: dict[str, Any] = {"machine": _bench.machine()}
    with tempfile.TemporaryDirectory() as tmp, FakeProvider() as provider:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("BENCH_TRACING_KEY", "sk-bench-tracing")
        baseline, results["baseline_commit"] = baseline_source(Path(tmp) / "baseline")
        index = build_index(Path(tmp) / "current", provider.url)
        # The baseline reads an index it built itself (each version writes its own manifest).
        old = Path(tmp) / "old"
        run_child(old, {"PYTHONPATH": str(baseline)}, "--child-build", str(old), provider.url)
        indexes = {"absent": old / "index", "off": index, "on": index}
        sink = Sink()
        variants = {
            "absent": {"PYTHONPATH": str(baseline)},
            "off": {},
            "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url},
        }
        results["route"] = route_runs(indexes, variants)
        results["gateway"] = gateway(indexes, provider.url, sink.url, baseline)
        sink.server.shutdown()
    _bench.save("tracing", results, markdown(results))


if __name__ == "__main__":
    main()
