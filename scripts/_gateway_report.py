"""The gateway benchmark's report: the must-hold checks as measured, and the markdown section
of docs/benchmarks.md. Used by scripts/bench_gateway.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _bench import machine_markdown
from _gateway_goals import goals, goals_markdown
from _gateway_load import pct
from _gateway_profile import profile_lines
from _gateway_servers import FLAKY_RATE, LITELLM


def brief(s: dict[str, Any]) -> str:
    return (
        f"{s['throughput_rps']} req/s, p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms, "
        f"{s['errors']} errors"
    )


KINDS = {
    "plain": "non-streamed, {c} at a time",
    "streamed": "streamed, {c} at a time",
    "one_at_a_time": "non-streamed, one at a time",
    "streamed_one_at_a_time": "streamed, one at a time",
    "mixed_plain": "non-streamed, {c} at a time, mixed with as many streamed",
    "mixed_streamed": "streamed, {c} at a time, mixed with as many non-streamed",
    "mixed_one_at_a_time_plain": "non-streamed, one at a time, alternating with streamed",
    "mixed_one_at_a_time_streamed": "streamed, one at a time, alternating with non-streamed",
    "slow_streamed": "slow streams, {c} at a time",
}


def table(results: dict[str, Any], targets: dict[str, Any] | None = None) -> str:
    """The rows of ``targets`` (default: the main run's), one per kind of request and target,
    latencies added measured against direct's."""
    targets = targets or results["targets"]
    direct = targets["direct"]
    rows = [
        "| requests | target | throughput | p50 | p99 | added p50 | added p99 | errors | peak RSS "
        "| server CPU | machine busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, label in KINDS.items():
        if kind not in direct:
            continue
        label = label.format(c=results["settings"]["concurrency"])
        for name, r in targets.items():
            if kind not in r:
                continue
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
                f"| {added[1]} | {s['errors']} | {mem} | {cpu_cells(s.get('cpu') or {})} |"
            )
    return "\n".join(rows)


def cpu_cells(cpu: dict[str, Any]) -> str:
    """The server's CPU (cores kept busy, CPU time per request) and the machine's busy share."""
    server = (
        f"{cpu['server_cores']:.2f} cores, {cpu['server_cpu_ms_per_request']:.2f} ms/request"
        if "server_cores" in cpu
        else ""
    )
    busy = cpu.get("machine_busy_pct")
    return f"{server} | {busy:.0f}%" if busy is not None else f"{server} |"


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's must-hold conditions, as measured (never asserted: reported)."""
    t = results["targets"]
    out: dict[str, Any] = {}
    runs = [t, results.get("redis", {}), results.get("slow_stream", {})]
    errors = sum(
        r[k]["errors"]
        for run in runs
        for r in run.values()
        if isinstance(r, dict)
        for k in KINDS
        if k in r
    )
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
        "The goals of issue 24, each worked out from this one run (ratios of figures measured "
        "side by side, interleaved; how each is measured is told below the table):",
        "",
        *goals_markdown(goals(results)),
        "",
        *goal_notes(results),
        "",
        f"`{command}`: all on 127.0.0.1. The upstream is `semroute.testing.FakeProvider` in its "
        f"own process, every model answering {s['upstream_delay_s'] * 1000:.0f} ms after the "
        "request. Three targets get the same requests: *direct* to the upstream; *semroute*, "
        '`semroute serve` with `model: "auto"` over an index built by `semroute build-index` '
        "from the bundled example routes with the real default encoder (every model replaced by "
        f"one on the upstream, health and decision log on); *litellm*, `{s['litellm_proxy']}`'s "
        "own proxy (`litellm --config`, no database, no master key, no routing: requests name the "
        "model semroute's route picks). Both servers run "
        f"{s['workers']} worker process{'es' if s['workers'] > 1 else ''}"
        + (
            "; a fourth, *semroute-w2* (`semroute serve --workers 2`, otherwise the same), "
            "gets the non-streamed requests 64 at a time only"
            if "semroute-w2" in results["targets"]
            else ""
        )
        + f". Per target: {s['requests']:,} non-streamed requests, then "
        f"{s['streamed']:,} streamed (every chunk counted, the answer and `data: [DONE]` "
        f"checked), {s['concurrency']} at a time, then {s['sequential']:,} non-streamed and "
        f"{s['sequential']:,} streamed one at a time (no queue: what a gateway adds to one "
        f"request), then {s['mixed']:,} alternately non-streamed and streamed, "
        f"{s['concurrency']} at a time, and {s['sequential']:,} alternately one at a time (both "
        "kinds under the same load; each half is a row of its own, its throughput its share "
        "of the run's, its server CPU the whole run's per request), after a warm-up, in "
        f"{s['rounds']} interleaved "
        "rounds (each round sends the next slice of the requests to every target in turn, the "
        "order rotating, so that the shared machine's drifting load weighs on all alike). "
        "Every query is unique (the "
        "bundled routes' held-out queries, each with its run's tag and a number), so semroute "
        "routes each one: no decision comes from its query cache. Added latency is the target's percentile minus "
        "direct's; at this concurrency a saturated server's latency is mostly queueing (64 ÷ "
        "its throughput). Peak RSS is the server's VmHWM summed over its processes. LiteLLM's "
        "proxy runs on uvloop, `semroute serve` on uvicorn's "
        f"{s['semroute_uvicorn']}; both with uvicorn's access log off (LiteLLM's proxy through "
        "`--log_config`), semroute writing a decision-log line per request.",
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
            "the policy, in a worker thread, or on the event loop for a request alone in "
            "flight; `model_ms`: the call to the upstream, its 50 ms included), matched to the "
            "requests by `x-semroute-request-id`: " + "; ".join(parts) + ".",
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
    lines += slow_stream_lines(results) + redis_lines(results)
    if "profile" in results:
        lines += profile_lines(results["profile"])
    c = results["checks"]
    lines += [
        "",
        "Checks (measured, not assumed): " + "; ".join(check_lines(c, s)) + ".",
    ]
    lines += ["", machine_markdown(results["machine"])]
    return "\n".join(lines)


def slow_stream_lines(results: dict[str, Any]) -> list[str]:
    slow = results.get("slow_stream")
    if not slow:
        return []
    s = results["settings"]
    targets = {k: v for k, v in slow.items() if isinstance(v, dict)}
    return [
        "",
        f"Slow streams: the upstream sends each answer's {slow['events']} events (the role, "
        f"then a word each) {slow['chunk_delay_s'] * 1000:.0f} ms apart, about "
        f"{slow['events'] * slow['chunk_delay_s']:.1f} s a stream, {s['slow_streams']:,} streams "
        f"per target, {s['concurrency']} at a time (a fresh upstream and fresh servers). A "
        "gateway that buffered would show its first chunk late; the first chunk's arrival is "
        "given beside the whole stream's:",
        "",
        table(results, targets),
        "",
        "First content chunk p50 / p99: "
        + "; ".join(
            f"{name} {r['slow_streamed'].get('first_chunk_p50_ms')} / "
            f"{r['slow_streamed'].get('first_chunk_p99_ms')} ms"
            for name, r in targets.items()
        )
        + ". Time between one content chunk and the next (every chunk's arrival timed, every "
        "stream's gaps pooled) p50 / p99 / max: "
        + "; ".join(
            f"{name} {r['slow_streamed'].get('chunk_gap_p50_ms')} / "
            f"{r['slow_streamed'].get('chunk_gap_p99_ms')} / "
            f"{r['slow_streamed'].get('chunk_gap_max_ms')} ms"
            for name, r in targets.items()
        )
        + ".",
    ]


def goal_notes(results: dict[str, Any]) -> list[str]:
    """How the goals' figures were measured."""
    s, route = results["settings"], results.get("route_timing", {})
    paced = route.get("paced", {})

    def passes(timing: dict[str, Any]) -> str:
        return "; ".join(
            f"{label} {r['p50_ms']} ms (p99 {r['p99_ms']} ms)"
            for label, r in timing.items()
            if label in ("before", "after")
        )

    pace = (
        f"Each query also after {paced['pace_s'] * 1000:.0f} ms idle (the upstream's delay: "
        "the pace at which the server routes one request at a time), in another fresh process: "
        f"p50 {paced['p50_ms']} ms (p99 {paced['p99_ms']} ms; {passes(paced)}), the figure "
        "goal (a) uses, since back to back the model's weights stay in the CPU's caches and "
        "a request through the server never finds them there. "
        if paced
        else ""
    )
    return [
        "`route()` p50: `semroute.Router.load(index)` over the index `semroute serve` serves, in "
        "a process of its own (not the load generator's), warmed up, then `router.route(q)` "
        f"timed for each of the {s['sequential']:,} queries the one-at-a-time run sends, in "
        "order, once before the interleaved rounds and once after them (no server running); "
        f"back to back, the p50 of both passes' times together: {route.get('p50_ms')} ms (p99 "
        f"{route.get('p99_ms')} ms; {passes(route) or 'not measured'}). "
        f"{pace}Every query is unique across "
        "the whole run (each run its own tag and number: no decision of a measured request "
        "comes from semroute's query cache). (e): *semroute-w2*, a second `semroute serve` "
        "with `--workers 2`, takes part in the non-streamed 64-at-a-time run only, interleaved "
        "with the others in the same rounds. (f) compares, in one run of requests alternately "
        "non-streamed and streamed, 64 at a time, the streamed ones' first content chunk with "
        "the non-streamed ones' whole answer, each minus direct's in the same run: the two "
        "kinds under the same load; (f1) the same one at a time, where no request waits for "
        "another. (f-sep) and (f1-sep) compare the separate streamed and non-streamed runs "
        "instead, where the streamed run also loads the shared machine more: its load "
        "generator reads every event of every answer (against direct alone, the generator and "
        "the upstream serve fewer streams a second than answers; see the table). (g): the "
        f"slow-stream run below (events every {s['chunk_delay_s'] * 1000:.0f} "
        f"ms for about {s.get('long_stream_s', 5):g} s), the p99 of the time between "
        "consecutive content chunks through the gateway minus direct's. (h): VmHWM of each "
        "process (not summed), read just before the server stops; for `--workers 2` the "
        "supervisor (uvicorn's parent process) is given apart. The soak (no growth over 30 "
        "minutes) has its own section below (`--soak-minutes`).",
    ]


def redis_lines(results: dict[str, Any]) -> list[str]:
    redis = results.get("redis")
    if not redis:
        return []
    return [
        "",
        "With Redis: `semroute serve` with `server.redis_url` set (circuit-breaker state and "
        "per-key spend in a redis-server the benchmark starts on a loopback port, nothing "
        "saved to disk) beside the same server without it, interleaved as above "
        f"({redis['keys_in_redis_after']} keys in Redis after the run):",
        "",
        table(results, {k: v for k, v in redis.items() if isinstance(v, dict)}),
    ]


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


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "requests": args.requests,
        "streamed": args.streamed,
        "sequential": args.sequential,
        "mixed": args.mixed,
        "concurrency": args.concurrency,
        "upstream_delay_s": args.delay,
        "workers": args.workers,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "flaky_requests": args.flaky_requests,
        "flaky_rate": FLAKY_RATE,
        "slow_streams": args.slow_streams,
        "chunk_delay_s": args.chunk_delay,
        "long_stream_s": args.long_stream_s,
        "redis_requests": args.redis_requests,
        "access_logs": "off in both servers (uvicorn's access logger without a handler)",
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
