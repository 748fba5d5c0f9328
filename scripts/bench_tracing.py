"""What OpenTelemetry tracing costs: `route()` with tracing off against the same routing without
the tracing hook (absent) and with tracing on; the gateway's added latency with tracing off and
on; the off path's own calls. Writes docs/results/tracing.json and the `tracing` section of
docs/benchmarks.md.

    python scripts/bench_tracing.py            # about two minutes

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
                    "api_key": "sk-bench",
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
    """In a process of its own: route() p50s, hook absent and present, hits and misses."""
    from semroute import Router, tracing
    from semroute.routing.signals import Hints

    router = Router.load(index)
    hints = Hints(None, None, None, {})
    variants = {
        "absent": lambda q: router._route(q, None, hints, None, None),
        "present": lambda q: router.route(q),
    }
    times: dict[str, dict[str, list[float]]] = {v: {"hit": [], "miss": []} for v in variants}
    counter = 0
    for _ in range(ROUTE_CALLS // BLOCK):
        for name, call in variants.items():  # taking turns, block by block
            for kind in ("hit", "miss"):
                out = times[name][kind]
                for _ in range(BLOCK // 2):
                    counter += 1
                    query = "will it rain today" if kind == "hit" else f"will it rain {counter}"
                    started = time.perf_counter_ns()
                    call(query)
                    out.append((time.perf_counter_ns() - started) / 1e6)
    calls: dict[str, float] = {}
    if not tracing.enabled():  # the off path's own calls, each timed over many
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
    tracing.shutdown()
    return {
        "tracing": tracing.enabled(),
        "opentelemetry_imported": sys.modules.get("opentelemetry") is not None,
        "p50_ms": {
            v: {k: statistics.median(t) for k, t in kinds.items()} for v, kinds in times.items()
        },
        "off_call_ns": calls,
    }


def run_child(index: Path, env: dict[str, str]) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, __file__, "--child-route", str(index)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def gateway(index: Path, provider_url: str, sink: str) -> dict[str, Any]:
    """Sequential requests taking turns between a gateway with tracing off and one with it on,
    and the upstream called directly: each one's p50, and the gateways' added p50."""
    import httpx
    from tests.gateway_kit import serve_process

    body = {"model": "auto", "messages": [{"role": "user", "content": "will it rain today"}]}
    direct = {"model": "weather-model", "messages": body["messages"]}
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_SERVICE_NAME": "bench"}
    clean = {k: "" for k in os.environ if k.startswith("OTEL_")}
    times: dict[str, list[float]] = {"direct": [], "off": [], "on": []}
    with (
        serve_process(index, env=clean) as (_, off_url),
        serve_process(index, env={**clean, **on}) as (_, on_url),
        httpx.Client(timeout=30) as client,
    ):
        targets = {
            "direct": (provider_url + "/chat/completions", direct),
            "off": (off_url + "/v1/chat/completions", body),
            "on": (on_url + "/v1/chat/completions", body),
        }
        for url, payload in targets.values():  # warm each once
            client.post(url, json=payload).raise_for_status()
        for _ in range(REQUESTS // 10):
            for name, (url, payload) in targets.items():
                for _ in range(10):
                    started = time.perf_counter()
                    client.post(url, json=payload).raise_for_status()
                    times[name].append((time.perf_counter() - started) * 1000)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {
        "requests_each": len(times["off"]),
        "p50_ms": p50,
        "added_p50_ms": {k: p50[k] - p50["direct"] for k in ("off", "on")},
    }


def markdown(results: dict[str, Any]) -> str:
    off, on, gw = results["route_off"], results["route_on"], results["gateway"]

    def row(label: str, data: dict[str, Any], variant: str) -> str:
        p = data["p50_ms"][variant]
        return f"| {label} | {p['miss'] * 1000:.1f} µs | {p['hit'] * 1000:.2f} µs |"

    absent, present = off["p50_ms"]["absent"], off["p50_ms"]["present"]
    calls = "; ".join(f"`{k}` {v:.0f} ns" for k, v in off["off_call_ns"].items())
    return f"""## Tracing (OpenTelemetry): what it costs off and on

`python scripts/bench_tracing.py`. {_bench.machine_markdown(results["machine"])}
One run on a shared, loaded machine: medians, to be read as ratios. FakeEncoder index (its
encode is far cheaper than the real model's, so the hook's share is shown at its largest).

| `route()` p50 | new query | repeated query (cache hit) |
|---|---|---|
{row("no tracing hook (`Router._route`, absent)", off, "absent")}
{row("tracing off (`Router.route`, no `OTEL_*` set)", off, "present")}
{row("tracing on (OTLP/HTTP to a local sink)", on, "present")}

Off: OpenTelemetry imported: {off["opentelemetry_imported"]}; the hook adds
{(present["miss"] - absent["miss"]) * 1e6:.0f} ns to a new query and
{(present["hit"] - absent["hit"]) * 1e6:.0f} ns to a repeated one (within the noise of a loaded
machine). Each call of the off path, timed alone: {calls}. A gateway request with tracing off
makes about six such calls (the server span's check, routing's clock, one per model call).

| gateway, one request at a time ({gw["requests_each"]} each, taking turns) | p50 | added p50 over the upstream alone |
|---|---|---|
| upstream (FakeProvider) called directly | {gw["p50_ms"]["direct"]:.2f} ms | |
| `semroute serve`, tracing off | {gw["p50_ms"]["off"]:.2f} ms | {gw["added_p50_ms"]["off"]:.2f} ms |
| `semroute serve`, tracing on | {gw["p50_ms"]["on"]:.2f} ms | {gw["added_p50_ms"]["on"]:.2f} ms |
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child-route", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_route:
        print(json.dumps(child_route(args.child_route)))
        return
    sys.path.insert(0, str(_bench.ROOT))
    from semroute.testing import FakeProvider

    results: dict[str, Any] = {"machine": _bench.machine()}
    with tempfile.TemporaryDirectory() as tmp, FakeProvider() as provider:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        index = build_index(Path(tmp), provider.url)
        sink = Sink()
        results["route_off"] = run_child(index, {})
        results["route_on"] = run_child(index, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url})
        results["gateway"] = gateway(index, provider.url, sink.url)
        sink.server.shutdown()
    _bench.save("tracing", results, markdown(results))


if __name__ == "__main__":
    main()
