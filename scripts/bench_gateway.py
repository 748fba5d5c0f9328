"""Gateway: `semroute serve` beside LiteLLM's proxy and a direct call, under the same load.

    .venv/bin/python scripts/bench_gateway.py [--requests 5000] [--streamed 1000]
        [--sequential 300] [--concurrency 64] [--delay 0.05] [--workers 1] [--rounds 5]
        [--flaky-requests 1000] [--targets direct,semroute,litellm] [--smoke]

Everything runs on 127.0.0.1 and stops by itself. The upstream is semroute.testing.FakeProvider
in its own process, every model answering after a fixed --delay (a model's time to first token).
Three targets get the same requests:

1. direct: OpenAI chat-completions POSTs straight to the upstream, naming the model;
2. semroute: `semroute serve` (--workers), `model: "auto"`, over an index built with
   `semroute build-index` from the bundled example routes (routes/) and the real default encoder,
   every model they name replaced by one on the upstream;
3. litellm: LiteLLM's own proxy (`litellm --config ... --num_workers N`, litellm[proxy] at the
   version semroute pins, in its own virtualenv under .bench/), the same models, no routing, no
   database, no master key; requests name the model semroute's route would pick.

Each target gets --requests non-streamed requests and --streamed streamed ones (every chunk
counted, the answer and `data: [DONE]` checked), --concurrency at a time, then --sequential
non-streamed ones one at a time (no queue: what a gateway adds to a request), after a warm-up.
The requests are split into --rounds interleaved rounds: each round sends its slice to every
target in turn, the order rotating, so that a shared machine's drifting load weighs on all alike.
The queries are the bundled routes' held-out queries (tests/data/bundled_queries.yaml), each made
unique by a reference number so that no routing decision comes from semroute's query cache. The
load comes from asyncio + aiohttp in this process; a run against the upstream with no delay shows
how fast it and the upstream can go, far beyond any gateway's figures. semroute's decision log
gives, per request (by x-semroute-request-id), its routing and model-call times.

Then a flaky run through `semroute serve`: every routed model fails 30% of its requests (500),
each chain ends in a healthy backup. Every request must be answered, or fail with a 502 whose
body lists its attempts, and the decision log must hold exactly one line per request (matched by
x-semroute-request-id). It runs twice: with the circuit breakers at their defaults, and with
`health: {enabled: false}` so every request tries its flaky model first.

Peak memory is the sum of VmHWM over the server's processes (read from /proc before it stops);
the largest sum of VmRSS seen while it ran is given beside it.

Results go to docs/results/gateway.json and the "gateway" section of docs/benchmarks.md;
--smoke (a few requests, no LiteLLM unless --targets names it) writes nowhere.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from _bench import ROOT, machine, machine_markdown, save
from _gateway_load import Load, classify, load, pct, request_bodies
from _gateway_servers import (
    BACKUP,
    DEFAULT_MODEL,
    FLAKY_RATE,
    LITELLM,
    RssWatch,
    Server,
    litellm_server,
    model_names,
    semroute_server,
    upstream,
    upstream_main,
)

TARGETS = ("direct", "semroute", "litellm")
QUERIES = ROOT / "tests" / "data" / "bundled_queries.yaml"

# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def bundled_queries() -> list[tuple[str, str]]:
    """(query, the model its expected route names) for the bundled routes' held-out queries."""
    held = yaml.safe_load(QUERIES.read_text())
    names = model_names([r for r in held if r is not None])  # None: the default model
    out = []
    for route, queries in held.items():
        for q in queries:
            out.append((q, names.get(route, DEFAULT_MODEL)))
    # Interleaved, so that every stretch of requests reaches every model.
    out.sort(key=lambda qm: hashlib.sha256(qm[0].encode()).hexdigest())
    return out


@dataclass
class Target:
    """A target under load: its base URL and, for a gateway, its server."""

    name: str
    url: str
    server: Server | None = None

    @property
    def auto(self) -> bool:
        return self.name == "semroute"


def measure(
    targets: list[Target], args: argparse.Namespace, ids: dict[str, list[str | None]]
) -> dict[str, Any]:
    """Warm each target up, then load them in interleaved rounds: round r sends the r-th
    slice of the requests to every target in turn, the order rotating each round, so that
    the machine's load, which drifts, weighs on every target alike. The request ids semroute
    answered with go into ``ids``, by kind of request."""
    queries = bundled_queries()
    for t in targets:
        warm = request_bodies(queries, args.warmup, auto=t.auto, stream=False)
        load(t.url, warm, args.concurrency, False)
    result: dict[str, Any] = {t.name: {} for t in targets}
    servers = [t.server for t in targets if t.server is not None and t.server.proc is not None]
    watches = {s.name: RssWatch(s.proc.pid) for s in servers if s.proc is not None}
    with contextlib.ExitStack() as stack:
        for watch in watches.values():
            stack.enter_context(watch)
        for kind, n, stream, concurrency in (
            ("plain", args.requests, False, args.concurrency),
            ("streamed", args.streamed, True, args.concurrency),
            # One at a time: no queue, so the time a gateway adds is its own work alone.
            ("one_at_a_time", args.sequential, False, 1),
        ):
            if not n:
                continue
            parts: dict[str, list[Load]] = {t.name: [] for t in targets}
            rounds = max(1, min(args.rounds, n))
            for r in range(rounds):
                lo, hi = n * r // rounds, n * (r + 1) // rounds
                for t in targets[r % len(targets) :] + targets[: r % len(targets)]:
                    bodies = request_bodies(queries, hi, auto=t.auto, stream=stream)[lo:]
                    parts[t.name].append(load(t.url, bodies, concurrency, stream))
            for t in targets:
                merged = Load(
                    [o for part in parts[t.name] for o in part.outcomes],
                    sum(part.wall_s for part in parts[t.name]),
                )
                result[t.name][kind] = merged.summary() | {"rounds": rounds}
                if t.auto:
                    ids[kind] = [o.request_id for o in merged.outcomes]
                print(f"  {t.name} {kind}: {brief(result[t.name][kind])}", file=sys.stderr)
    for t in targets:
        if t.server is not None:
            memory = t.server.memory()
            memory["sampled_peak_rss_mib"] = round(watches[t.name].peak_kib / 1024, 1)
            result[t.name]["memory"] = memory
            result[t.name]["start_s"] = round(t.server.started_s, 2)
    return result


def brief(s: dict[str, Any]) -> str:
    return (
        f"{s['throughput_rps']} req/s, p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms, "
        f"{s['errors']} errors"
    )


def breakdown(log: Path, ids: dict[str, list[str | None]]) -> dict[str, Any]:
    """Per kind of request, from semroute's decision log: its lines per request (one each),
    and the time routing and the model call (LiteLLM and the upstream) took, by request id."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        record = json.loads(line)
        lines.setdefault(record["request_id"], []).append(record)
    out: dict[str, Any] = {}
    for kind, request_ids in ids.items():
        records = [lines[i][0] for i in request_ids if i in lines]
        routing = sorted(float(r["routing_ms"]) for r in records if r.get("routing_ms") is not None)
        model = sorted(float(r["model_ms"]) for r in records if r.get("model_ms") is not None)
        out[kind] = {
            "requests": len(request_ids),
            "logged_once": sum(1 for i in request_ids if i and len(lines.get(i, ())) == 1),
            "routing_p50_ms": round(pct(routing, 50), 2) if routing else None,
            "routing_p99_ms": round(pct(routing, 99), 2) if routing else None,
            "model_p50_ms": round(pct(model, 50), 2) if model else None,
        }
    return out


def flaky_run(server: Server, log: Path, n: int, concurrency: int) -> dict[str, Any]:
    """Every request answered or a 502 listing its attempts; one log line per request."""
    bodies = request_bodies(bundled_queries(), n, auto=True, stream=False)
    log.unlink(missing_ok=True)
    outcomes = load(server.url, bodies, concurrency, False).outcomes
    server.stop()  # the log is complete once the server has drained and stopped
    lines = log.read_text().splitlines() if log.exists() else []
    return classify(outcomes, [json.loads(line)["request_id"] for line in lines])


KINDS = {
    "plain": "non-streamed, {c} at a time",
    "streamed": "streamed, {c} at a time",
    "one_at_a_time": "non-streamed, one at a time",
}


def table(results: dict[str, Any]) -> str:
    targets = results["targets"]
    direct = targets["direct"]
    rows = [
        "| requests | target | throughput | p50 | p99 | added p50 | added p99 | errors | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, label in KINDS.items():
        if kind not in direct:
            continue
        label = label.format(c=results["settings"]["concurrency"])
        for name, r in targets.items():
            s, d = r[kind], direct[kind]
            added = (
                (f"{s['p50_ms'] - d['p50_ms']:+.1f} ms", f"{s['p99_ms'] - d['p99_ms']:+.1f} ms")
                if name != "direct" and "p50_ms" in s
                else ("", "")
            )
            mem = f"{r['memory']['peak_rss_mib']:.0f} MiB" if "memory" in r else ""
            rows.append(
                f"| {s['requests']:,} {label} | {name} | {s['throughput_rps']:.1f} req/s "
                f"| {s.get('p50_ms', 0):.1f} ms | {s.get('p99_ms', 0):.1f} ms | {added[0]} "
                f"| {added[1]} | {s['errors']} | {mem} |"
            )
    return "\n".join(rows)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    queries = bundled_queries()
    routes = sorted(r for r in yaml.safe_load(QUERIES.read_text()) if r is not None)
    results: dict[str, Any] = {"machine": machine(), "settings": settings(args)}
    with upstream(0.0, routes, work / "upstream-nodelay.log") as base:
        # How fast this generator and the upstream go together: the ceiling of every figure.
        print("generator ceiling (upstream with no delay) ...", file=sys.stderr)
        ceiling = measure([Target("direct", base.removesuffix("/v1"))], args, {})
        results["generator_ceiling"] = ceiling["direct"]
    with upstream(args.delay, routes, work / "upstream.log") as base:
        models = sorted({m for _, m in queries} | {DEFAULT_MODEL, BACKUP})
        targets = [Target("direct", base.removesuffix("/v1"))]
        try:
            for name in args.targets[1:]:
                if name == "semroute":
                    server = semroute_server(work, base, args.workers, flaky=False, health=True)
                else:
                    server = litellm_server(work, base, models, args.workers)
                targets.append(Target(name, server.url, server))
                print(f"starting {name} ...", file=sys.stderr)
                server.start()
            print(f"loading {', '.join(args.targets)} in turn ...", file=sys.stderr)
            ids: dict[str, list[str | None]] = {}
            results["targets"] = measure(targets, args, ids)
        finally:
            for t in targets:
                if t.server is not None:
                    t.server.stop()
        if "semroute" in results["targets"]:
            log = work / "semroute" / "decisions.jsonl"  # complete: the server has stopped
            results["targets"]["semroute"]["decision_log"] = breakdown(log, ids)
        if "semroute" in args.targets and args.flaky_requests:
            results["flaky"] = {}
            for health in (True, False):
                label = "health_on" if health else "health_off"
                print(f"flaky upstream, semroute ({label}) ...", file=sys.stderr)
                server = semroute_server(work, base, args.workers, flaky=True, health=health)
                server.start()
                try:
                    log = server.log.parent / "decisions.jsonl"
                    results["flaky"][label] = flaky_run(
                        server, log, args.flaky_requests, args.concurrency
                    )
                finally:
                    server.stop()
    results["checks"] = checks(results)
    return results


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "requests": args.requests,
        "streamed": args.streamed,
        "sequential": args.sequential,
        "concurrency": args.concurrency,
        "upstream_delay_s": args.delay,
        "workers": args.workers,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "flaky_requests": args.flaky_requests,
        "flaky_rate": FLAKY_RATE,
        "targets": list(args.targets),
        "litellm_proxy": LITELLM,
        "load_generator": "asyncio + aiohttp, in the benchmark process",
        "semroute_uvicorn": uvicorn_flavour(),
    }


def uvicorn_flavour() -> str:
    """What uvicorn's defaults (loop and http "auto") pick in semroute's environment."""
    from importlib.util import find_spec

    loop = "uvloop" if find_spec("uvloop") else "asyncio loop"
    http = "httptools" if find_spec("httptools") else "h11"
    return f"{loop} and {http} (its defaults, in semroute's environment)"


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's must-hold conditions, as measured (never asserted: reported)."""
    t = results["targets"]
    out: dict[str, Any] = {}
    errors = sum(r[k]["errors"] for r in t.values() for k in KINDS if k in r)
    out["zero_failed_requests"] = errors == 0
    log = t.get("semroute", {}).get("decision_log")
    if log:
        out["one_log_line_per_request"] = all(
            b["logged_once"] == b["requests"] for b in log.values()
        )
    flaky = results.get("flaky", {})
    out["flaky_zero_lost"] = (
        all(
            f["lost"] == 0 and f["log_lines"] == f["requests"] == f["ids_logged_once"]
            for f in flaky.values()
        )
        if flaky
        else None
    )
    if "semroute" in t and "litellm" in t:
        for kind in KINDS:
            if kind not in t["direct"]:
                continue
            s, lt, d = t["semroute"][kind], t["litellm"][kind], t["direct"][kind]
            if "p50_ms" in s and "p50_ms" in lt:
                out[f"{kind}_added_p50_semroute_le_litellm"] = (
                    s["p50_ms"] - d["p50_ms"] <= lt["p50_ms"] - d["p50_ms"]
                )
            out[f"{kind}_throughput_semroute_ge_litellm"] = (
                s["throughput_rps"] >= lt["throughput_rps"]
            )
    return out


def check_lines(c: dict[str, Any], s: dict[str, Any]) -> list[str]:
    def said(v: bool | None) -> str:
        return "n/a" if v is None else "yes" if v else "**no**"

    out = [
        f"no request failed: {said(c['zero_failed_requests'])}",
        f"flaky runs lost no request and logged each once: {said(c['flaky_zero_lost'])}",
    ]
    if "one_log_line_per_request" in c:
        out.insert(1, f"one decision-log line per request: {said(c['one_log_line_per_request'])}")
    for kind, label in KINDS.items():
        label = label.format(c=s["concurrency"])
        if f"{kind}_added_p50_semroute_le_litellm" in c:
            out.append(
                f"{label}: semroute's added p50 ≤ LiteLLM proxy's "
                f"{said(c[f'{kind}_added_p50_semroute_le_litellm'])}, its throughput ≥ LiteLLM "
                f"proxy's {said(c[f'{kind}_throughput_semroute_ge_litellm'])}"
            )
    return out


def markdown(results: dict[str, Any], command: str) -> str:
    s = results["settings"]
    ceiling = results["generator_ceiling"]
    lines = [
        "## Gateway: `semroute serve` beside LiteLLM's proxy",
        "",
        f"`{command}`: all on 127.0.0.1. The upstream is `semroute.testing.FakeProvider` in its "
        f"own process, every model answering {s['upstream_delay_s'] * 1000:.0f} ms after the "
        "request. Three targets get the same requests: *direct* to the upstream; *semroute*, "
        '`semroute serve` with `model: "auto"` over an index built by `semroute build-index` '
        "from the bundled example routes with the real default encoder (every model replaced by "
        f"one on the upstream, health and decision log on); *litellm*, `{s['litellm_proxy']}`'s "
        "own proxy (`litellm --config`, no database, no master key, no routing: requests name the "
        "model semroute's route picks). Both servers run "
        f"{s['workers']} worker process{'es' if s['workers'] > 1 else ''}. Per target: {s['requests']:,} non-streamed requests, then "
        f"{s['streamed']:,} streamed (every chunk counted, the answer and `data: [DONE]` "
        f"checked), {s['concurrency']} at a time, then {s['sequential']:,} non-streamed one at a "
        "time (no queue: what a gateway adds to one request), after a warm-up, in "
        f"{s['rounds']} interleaved "
        "rounds (each round sends the next slice of the requests to every target in turn, the "
        "order rotating, so that the shared machine's drifting load weighs on all alike). "
        "Every query is unique (the "
        "bundled routes' held-out queries with a reference number), so semroute routes each one: "
        "no decision comes from its query cache. Added latency is the target's percentile minus "
        "direct's; at this concurrency a saturated server's latency is mostly queueing (64 ÷ "
        "its throughput). Peak RSS is the server's VmHWM summed over its processes. LiteLLM's "
        "proxy runs as it ships: on uvloop, with uvicorn's access log; `semroute serve` as it "
        f"ships: uvicorn's {s['semroute_uvicorn']}, access log off, a decision-log line per "
        "request.",
        "",
        table(results),
        "",
        f"The load generator (asyncio + aiohttp, in the benchmark process) against the upstream "
        f"with no delay: {ceiling['plain']['throughput_rps']:.0f} req/s non-streamed, "
        f"{ceiling['streamed']['throughput_rps']:.0f} req/s streamed; with the delay, direct "
        "is bounded by concurrency ÷ delay, not by the generator.",
    ]
    log = results["targets"].get("semroute", {}).get("decision_log")
    if log:
        parts = []
        for kind, b in log.items():
            label = KINDS[kind].format(c=s["concurrency"])
            parts.append(
                f"{label}: {b['logged_once']:,} of {b['requests']:,} requests logged exactly "
                f"once, routing p50 {b['routing_p50_ms']} ms (p99 {b['routing_p99_ms']} ms), "
                f"model call p50 {b['model_p50_ms']} ms"
            )
        lines += [
            "",
            "Where semroute's time goes, from its decision log (`routing_ms`: the encoder and "
            "the policy, in a worker thread; `model_ms`: LiteLLM's call to the upstream, its "
            "50 ms included), matched to the requests by `x-semroute-request-id`: "
            + "; ".join(parts)
            + ".",
        ]
    flaky = results.get("flaky")
    if flaky:
        lines += [
            "",
            f"Flaky upstream: through `semroute serve`, every routed model fails "
            f"{FLAKY_RATE:.0%} of its requests (500); each chain ends in a healthy backup. "
            f"{s['flaky_requests']:,} requests, {s['concurrency']} at a time, once with the "
            "circuit breakers at their defaults and once with `health: {enabled: false}` (every "
            "request tries its flaky model first):",
            "",
            "| run | answered | by a fallback | after skipping an open circuit | 502 listing attempts | lost | decision-log lines | request ids logged exactly once |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, f in flaky.items():
            lines.append(
                f"| {label.replace('_', ' ')} | {f['answered']} | {f['answered_by_a_fallback']} "
                f"| {f['answered_after_skipping_an_open_circuit']} "
                f"| {f['failed_502_with_attempts']} | {f['lost']} | {f['log_lines']} "
                f"| {f['ids_logged_once']} of {f['requests']} |"
            )
    c = results["checks"]
    lines += [
        "",
        "Checks (measured, not assumed): " + "; ".join(check_lines(c, s)) + ".",
    ]
    lines += ["", machine_markdown(results["machine"])]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        p = argparse.ArgumentParser()
        p.add_argument("_upstream")
        p.add_argument("--delay", type=float, required=True)
        p.add_argument("--routes", required=True)
        a = p.parse_args()
        upstream_main(a.delay, a.routes.split(","))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Sizes default to None so that --smoke can tell its own defaults from sizes given.
    parser.add_argument("--requests", type=int, help="non-streamed, per target (5000)")
    parser.add_argument("--streamed", type=int, help="streamed, per target (1000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.05, help="upstream's answer delay, s")
    parser.add_argument("--workers", type=int, default=1, help="for both servers")
    parser.add_argument("--flaky-requests", type=int, help="per flaky run (1000)")
    parser.add_argument(
        "--sequential", type=int, help="non-streamed, one at a time, per target (300)"
    )
    parser.add_argument("--warmup", type=int, help="requests per target first (4 x concurrency)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds the requests are split into"
    )
    parser.add_argument(
        "--targets",
        default=None,
        help=f"comma-separated, of {','.join(TARGETS)} (default: all; --smoke: direct,semroute)",
    )
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few requests unless sizes are given, to check it runs; writes nowhere",
    )
    args = parser.parse_args()
    sizes = (120, 40, 20, 60, 16) if args.smoke else (5000, 1000, 300, 1000, 4 * args.concurrency)
    names = ("requests", "streamed", "sequential", "flaky_requests", "warmup")
    for name, size in zip(names, sizes, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, size)
    wanted = args.targets or ("direct,semroute" if args.smoke else ",".join(TARGETS))
    args.targets = [t for t in TARGETS if t in wanted.split(",") or t == "direct"]
    unknown = set(wanted.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"--targets: unknown {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    work = (
        Path(tempfile.mkdtemp(prefix="semroute-bench-gateway-")) if args.work is None else args.work
    )
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        results = run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    command = ".venv/bin/python scripts/bench_gateway.py" + "".join(
        f" --{k} {v}"
        for k, v in (
            ("requests", args.requests),
            ("streamed", args.streamed),
            ("sequential", args.sequential),
            ("concurrency", args.concurrency),
            ("delay", args.delay),
            ("workers", args.workers),
            ("rounds", args.rounds),
        )
    )
    md = markdown(results, command)
    if args.smoke:  # the results on stdout, for a look or a test; nothing is written
        print(md, file=sys.stderr)
        print(json.dumps(results, indent=2))
    else:
        save("gateway", results, md)
        print(md)


if __name__ == "__main__":
    main()
