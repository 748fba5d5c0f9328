"""Gateway: `semroute serve` beside LiteLLM's proxy and a direct call, under the same load.

    .venv/bin/python scripts/bench_gateway.py [--requests 5000] [--streamed 1000]
        [--sequential 300] [--mixed 1000] [--concurrency 64] [--delay 0.05] [--workers 1]
        [--rounds 5]
        [--flaky-requests 1000] [--slow-streams 256] [--chunk-delay 0.02] [--long-stream-s 5]
        [--redis-requests 2000] [--targets direct,semroute,semroute-w2,litellm]
        [--profile [--profile-sequential 300] [--profile-requests 3000]] [--smoke]
    .venv/bin/python scripts/bench_gateway.py --soak-minutes 30 [--soak-rps 50] [--smoke]

Everything runs on 127.0.0.1 and stops by itself. The upstream is semroute.testing.FakeProvider
in its own process, every model answering after a fixed --delay (a model's time to first token).
The targets get the same requests:

1. direct: OpenAI chat-completions POSTs straight to the upstream, naming the model;
2. semroute: `semroute serve` (--workers), `model: "auto"`, over an index built with
   `semroute build-index` from the bundled example routes (routes/) and the real default encoder,
   every model they name replaced by one on the upstream;
3. semroute-w2: the same with `--workers 2`, in the non-streamed --concurrency run only (with
   --workers 1, the default): what a second worker buys;
4. litellm: LiteLLM's own proxy (`litellm --config ... --num_workers N`, litellm[proxy] at the
   version semroute pins, in its own virtualenv under .bench/), the same models, no routing, no
   database, no master key; requests name the model semroute's route would pick.

Each target gets --requests non-streamed requests and --streamed streamed ones (every chunk
counted, the answer and `data: [DONE]` checked), --concurrency at a time, then --sequential
non-streamed ones and --sequential streamed ones one at a time (no queue: what a gateway adds
to a request), after a warm-up. Then --mixed requests --concurrency at a time and --sequential
one at a time, alternately non-streamed and streamed: the two kinds under the same load, each
half reported as a kind of its own (in a run of one kind, streams also load the shared machine
more than answers do, the load generator reading each answer's events).
The requests are split into --rounds interleaved rounds: each round sends its slice to every
target in turn, the order rotating, so that a shared machine's drifting load weighs on all alike.
The queries are the bundled routes' held-out queries (tests/data/bundled_queries.yaml), each made
unique by its run's tag and a number so that no routing decision comes from semroute's query
cache (not even one filled by an earlier run of the same server). The load comes from asyncio +
aiohttp in this process; a run against the upstream with no delay shows how fast it and the
upstream can go, far beyond any gateway's figures. semroute's decision log gives, per request (by
x-semroute-request-id), its routing and model-call times.

`route()` alone is timed in a process of its own (scripts/_gateway_route.py) over the index
semroute serves, for the one-at-a-time run's queries, before the rounds and after them: back to
back, and at the pace the server routes them one at a time (each after --delay idle). Goal (a)
holds the gateway to the paced figure, the conditions its own routing runs in; the back-to-back
one is reported beside it.

Then a flaky run through `semroute serve`: every routed model fails 30% of its requests (500),
each chain ends in a healthy backup. Every request must be answered, or fail with a 502 whose
body lists its attempts, and the decision log must hold exactly one line per request (matched by
x-semroute-request-id). It runs twice: with the circuit breakers at their defaults, and with
`health: {enabled: false}` so every request tries its flaky model first.

Then long streams: a fresh upstream sends each streamed answer's events (the role, then a word
each) --chunk-delay apart for about --long-stream-s, through fresh servers of each gateway and
direct; the time to the first content chunk is reported beside the whole stream's, and every
chunk's arrival is timed, so the time between chunks (p50, p99, max) shows what a gateway adds
to each. And a run with Redis: `semroute serve` with `server.redis_url` pointing at a
redis-server the script starts on a free loopback port (nothing saved), beside the same server
without it, and direct (needs redis-server on PATH; --redis-requests 0 skips it).

With --profile, last: py-spy (in .bench/pyspy-venv, installed once) records a fresh `semroute
serve` through --profile-sequential requests one at a time and --profile-requests --concurrency
at a time; its samples are folded into where the CPU goes (scripts/_gateway_profile.py).

Both servers run with uvicorn's access log off (`semroute serve`'s default; LiteLLM's proxy
through `--log_config`, uvicorn's own configuration without the access logger's handler).

Peak memory is the sum of VmHWM over the server's processes (read from /proc before it stops),
and each process's own (a worker's peak); the largest sum of VmRSS seen while it ran is given
beside it. The section opens with issue 24's goals, each with its measured value, its target
and whether it passed (scripts/_gateway_goals.py).

Results go to docs/results/gateway.json and the "gateway" section of docs/benchmarks.md;
--smoke (a few requests, no LiteLLM unless --targets names it) writes nowhere.

--soak-minutes N runs the soak instead (scripts/_gateway_soak.py): one `semroute serve` (1
worker) at --soak-rps, open-loop, every 4th request streamed, every query unique, its RSS read
every 10 s: RSS at the start, the end, the most, the least-squares slope over the second half,
requests sent/answered/errors, and p50/p99 per 5-minute window, into
docs/results/gateway_soak.json and the "gateway_soak" section (with --smoke: nowhere).
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

from _bench import ROOT, machine, save
from _gateway_args import command_line, parse_args
from _gateway_goals import goals
from _gateway_load import (
    ANSWER,
    Load,
    Outcome,
    classify,
    load,
    request_bodies,
    request_body,
    slow_answer,
    tagged,
)
from _gateway_profile import profile_run
from _gateway_report import breakdown, brief, checks, markdown, settings
from _gateway_route import route_summary, route_times
from _gateway_servers import (
    BACKUP,
    DEFAULT_MODEL,
    CpuUse,
    RssWatch,
    Server,
    litellm_server,
    model_names,
    redis_keys,
    redis_server,
    semroute_server,
    server_env,
    upstream,
    upstream_main,
)
from _gateway_soak import soak_markdown, soak_run

TARGETS = ("direct", "semroute", "semroute-w2", "litellm")
W2_KINDS = ("plain",)
"""The runs semroute-w2 (`semroute serve --workers 2`) takes part in: 64 at a time, not streamed."""
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
    kinds: tuple[str, ...] | None = None
    """The kinds of request it gets (None: every kind)."""

    @property
    def auto(self) -> bool:
        return self.name.startswith("semroute")


Kind = tuple[str, int, bool | None, int]
"""A kind of request in a run: its name, how many, streamed or not (None: mixed, alternately
non-streamed and streamed), how many at a time."""


def main_kinds(args: argparse.Namespace) -> list[Kind]:
    return [
        ("plain", args.requests, False, args.concurrency),
        ("streamed", args.streamed, True, args.concurrency),
        # One at a time: no queue, so the time a gateway adds is its own work alone.
        ("one_at_a_time", args.sequential, False, 1),
        ("streamed_one_at_a_time", args.sequential, True, 1),
        # Both kinds in one run: streamed and non-streamed requests under the same load.
        ("mixed", args.mixed, None, args.concurrency),
        ("mixed_one_at_a_time", args.sequential, None, 1),
    ]


def bodies_of(
    queries: list[tuple[str, str]], lo: int, hi: int, auto: bool, stream: bool | None, kind: str
) -> tuple[list[bytes], bool | list[bool]]:
    """Requests ``lo`` to ``hi`` of a run (:func:`request_bodies`'), and whether each is
    streamed (mixed: the odd ones)."""
    flags = [i % 2 == 1 if stream is None else stream for i in range(lo, hi)]
    picked = tagged(queries, hi, kind)[lo:]
    bodies = [
        request_body(text, model, auto=auto, stream=f)
        for (text, model), f in zip(picked, flags, strict=True)
    ]
    return bodies, flags if stream is None else stream


def results_of(kind: str, stream: bool | None, merged: Load) -> dict[str, Load]:
    """A run's outcomes by the kind they are reported as: a mixed run's as its non-streamed
    half (``KIND_plain``) and its streamed half (``KIND_streamed``), each with the whole run's
    wall time (its throughput is its share of the run's)."""
    if stream is not None:
        return {kind: merged}
    halves: dict[str, list[Outcome]] = {f"{kind}_plain": [], f"{kind}_streamed": []}
    for i, o in enumerate(merged.outcomes):
        halves[f"{kind}_streamed" if i % 2 else f"{kind}_plain"].append(o)
    return {k: Load(v, merged.wall_s) for k, v in halves.items()}


def measure(
    targets: list[Target],
    args: argparse.Namespace,
    ids: dict[str, list[str | None]],
    kinds: list[Kind] | None = None,
    expected: str = ANSWER,
) -> dict[str, Any]:
    """Warm each target up, then load them in interleaved rounds: round r sends the r-th
    slice of the requests to every target in turn, the order rotating each round, so that
    the machine's load, which drifts, weighs on every target alike. The request ids the
    target named "semroute" answered with go into ``ids``, by kind of request."""
    queries = bundled_queries()
    for t in targets:
        warm = request_bodies(queries, args.warmup, auto=t.auto, stream=False, tag="warm-up")
        load(t.url, warm, args.concurrency, False, expected)
    result: dict[str, Any] = {t.name: {} for t in targets}
    servers = [t.server for t in targets if t.server is not None and t.server.proc is not None]
    watches = {s.name: RssWatch(s.proc.pid) for s in servers if s.proc is not None}
    with contextlib.ExitStack() as stack:
        for watch in watches.values():
            stack.enter_context(watch)
        for kind, n, stream, concurrency in kinds or main_kinds(args):
            if not n:
                continue
            these = [t for t in targets if t.kinds is None or kind in t.kinds]
            parts: dict[str, list[Load]] = {t.name: [] for t in these}
            cpu = {t.name: CpuUse(t.server) for t in these}
            rounds = max(1, min(args.rounds, n))
            for r in range(rounds):
                lo, hi = n * r // rounds, n * (r + 1) // rounds
                for t in these[r % len(these) :] + these[: r % len(these)]:
                    bodies, streamed = bodies_of(queries, lo, hi, t.auto, stream, kind)
                    with cpu[t.name].over():
                        parts[t.name].append(load(t.url, bodies, concurrency, streamed, expected))
            for t in these:
                merged = Load(
                    [o for part in parts[t.name] for o in part.outcomes],
                    sum(part.wall_s for part in parts[t.name]),
                )
                for key, got in results_of(kind, stream, merged).items():
                    result[t.name][key] = got.summary() | {"rounds": rounds}
                    # A mixed run's CPU is the whole run's, per request of either kind.
                    result[t.name][key]["cpu"] = cpu[t.name].summary(n)
                    if t.name == "semroute":
                        ids[key] = [o.request_id for o in got.outcomes]
                    print(f"  {t.name} {key}: {brief(result[t.name][key])}", file=sys.stderr)
    for t in targets:
        if t.server is not None:
            memory = t.server.memory()
            memory["sampled_peak_rss_mib"] = round(watches[t.name].peak_kib / 1024, 1)
            result[t.name]["memory"] = memory
            result[t.name]["start_s"] = round(t.server.started_s, 2)
    return result


def flaky_run(server: Server, log: Path, n: int, concurrency: int) -> dict[str, Any]:
    """Every request answered or a 502 listing its attempts; one log line per request."""
    bodies = request_bodies(bundled_queries(), n, auto=True, stream=False)
    log.unlink(missing_ok=True)
    outcomes = load(server.url, bodies, concurrency, False).outcomes
    server.stop()  # the log is complete once the server has drained and stopped
    lines = log.read_text().splitlines() if log.exists() else []
    return classify(outcomes, [json.loads(line)["request_id"] for line in lines])


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    routes = sorted(r for r in yaml.safe_load(QUERIES.read_text()) if r is not None)
    results: dict[str, Any] = {"machine": machine(), "settings": settings(args)}
    with upstream(0.0, routes, work / "upstream-nodelay.log") as base:
        # How fast this generator and the upstream go together: the ceiling of every figure.
        print("generator ceiling (upstream with no delay) ...", file=sys.stderr)
        ceiling = measure([Target("direct", base.removesuffix("/v1"))], args, {})
        results["generator_ceiling"] = ceiling["direct"]
    with upstream(args.delay, routes, work / "upstream.log") as base:
        ids: dict[str, list[str | None]] = {}
        targets = gateway_targets(args, work, base)
        index = next((t.server.index for t in targets if t.name == "semroute" and t.server), None)
        hot: dict[str, list[float]] = {}
        paced: dict[str, list[float]] = {}
        if index:
            hot["before"], paced["before"] = timed_routes(index, args)
        results["targets"] = run_targets(targets, args, ids)
        if index:
            hot["after"], paced["after"] = timed_routes(index, args)
            results["route_timing"] = route_summary(hot) | {
                "paced": route_summary(paced) | {"pace_s": args.delay}
            }
        if "semroute" in results["targets"]:
            log = work / "semroute" / "decisions.jsonl"  # complete: the server has stopped
            results["targets"]["semroute"]["decision_log"] = breakdown(log, ids)
        if "semroute" in args.targets and args.redis_requests:
            results["redis"] = redis_run(args, work, base)
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
    if args.slow_streams and len(args.targets) > 1:
        results["slow_stream"] = slow_stream_run(args, work, routes)
    if args.profile:
        results["profile"] = profile_run(args, work, bundled_queries(), routes)
    results["checks"] = checks(results)
    results["goals"] = [g.as_dict() for g in goals(results)]
    return results


def sequential_queries(n: int) -> list[str]:
    """The texts the one-at-a-time run sends, in its order."""
    return [text for text, _ in tagged(bundled_queries(), n, "one_at_a_time")]


def timed_routes(index: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """`route()` over ``index`` in a process of its own, for the one-at-a-time run's queries:
    back to back, then each after the upstream's delay idle (as the server routes them)."""
    print("timing route() alone ...", file=sys.stderr)
    queries = sequential_queries(args.sequential)
    # Each in a fresh process: no decision comes from the router's query cache.
    hot = route_times(index, queries, args.warmup, server_env())
    return hot, route_times(index, queries, args.warmup, server_env(), pace_s=args.delay)


def gateway_targets(
    args: argparse.Namespace, work: Path, base: str, names: list[str] | None = None
) -> list[Target]:
    """Direct to the upstream at ``base``, and a server (not started) for each gateway of
    ``names`` (default: --targets), its files under ``work``."""
    models = sorted({m for _, m in bundled_queries()} | {DEFAULT_MODEL, BACKUP})
    targets = [Target("direct", base.removesuffix("/v1"))]
    for name in (args.targets if names is None else names)[1:]:
        kinds = None
        if name == "semroute":
            server = semroute_server(work, base, args.workers, flaky=False, health=True)
        elif name == "semroute-w2":
            server = semroute_server(work, base, 2, name=name, flaky=False, health=True)
            kinds = W2_KINDS
        else:
            server = litellm_server(work, base, models, args.workers)
        targets.append(Target(name, server.url, server, kinds))
    return targets


def run_targets(
    targets: list[Target],
    args: argparse.Namespace,
    ids: dict[str, list[str | None]] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Start the targets' servers, load them all (see :func:`measure`), stop the servers."""
    try:
        for t in targets:
            if t.server is not None:
                print(f"starting {t.name} ...", file=sys.stderr)
                t.server.start()
        print(f"loading {', '.join(t.name for t in targets)} in turn ...", file=sys.stderr)
        return measure(targets, args, {} if ids is None else ids, **kw)
    finally:
        for t in targets:
            if t.server is not None:
                t.server.stop()


def slow_stream_run(args: argparse.Namespace, work: Path, routes: list[str]) -> dict[str, Any]:
    """Long streams whose words come one at a time: an upstream sending an event every
    --chunk-delay seconds for about --long-stream-s, through each gateway and direct; every
    chunk's arrival is timed, so what a gateway adds between chunks shows."""
    log = work / "upstream-slow.log"
    text = slow_answer(args.long_stream_s, args.chunk_delay)
    with upstream(args.delay, routes, log, args.chunk_delay, args.long_stream_s) as base:
        folder = work / "slow"
        folder.mkdir()
        print("slow streams ...", file=sys.stderr)
        kinds = [("slow_streamed", args.slow_streams, True, args.concurrency)]
        names = [n for n in args.targets if n != "semroute-w2"]
        targets = gateway_targets(args, folder, base, names)
        out = run_targets(targets, args, kinds=kinds, expected=text)
    return {"chunk_delay_s": args.chunk_delay, "events": len(text.split(" ")) + 1} | out


def redis_run(args: argparse.Namespace, work: Path, base: str) -> dict[str, Any]:
    """`semroute serve` with `server.redis_url` (health state and spend in a redis-server of
    its own on loopback) beside the same server without it, and direct, interleaved."""
    folder = work / "redis-run"
    folder.mkdir()
    with redis_server(folder) as url:
        targets = [Target("direct", base.removesuffix("/v1"))]
        for name, redis in (("semroute", None), ("semroute-redis", url)):
            server = semroute_server(
                folder, base, args.workers, flaky=False, health=True, redis=redis
            )
            targets.append(Target(name, server.url, server))
        print("with and without Redis ...", file=sys.stderr)
        n = args.redis_requests
        kinds = [
            ("plain", n, False, args.concurrency),
            ("streamed", max(1, n // 4), True, args.concurrency),
        ]
        out = run_targets(targets, args, kinds=kinds)
        # Proof that the server used it: its health state and counters are there.
        return out | {"keys_in_redis_after": redis_keys(url)}


def soak_main(args: argparse.Namespace) -> None:
    """--soak-minutes: the soak alone; its own section (gateway_soak) and results file."""
    work = Path(tempfile.mkdtemp(prefix="semroute-bench-soak-")) if args.work is None else args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    routes = sorted(r for r in yaml.safe_load(QUERIES.read_text()) if r is not None)
    try:
        results = {"machine": machine()} | soak_run(args, work, bundled_queries(), routes)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    command = (
        f".venv/bin/python scripts/bench_gateway.py --soak-minutes {args.soak_minutes:g} "
        f"--soak-rps {args.soak_rps:g} --delay {args.delay}"
    )
    md = soak_markdown(results, command)
    if args.smoke:
        print(md, file=sys.stderr)
        print(json.dumps(results, indent=2))
    else:
        save("gateway_soak", results, md)
        print(md)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        p = argparse.ArgumentParser()
        p.add_argument("_upstream")
        p.add_argument("--delay", type=float, required=True)
        p.add_argument("--chunk-delay", type=float, default=0.0)
        p.add_argument("--long-stream-s", type=float, default=5.0)
        p.add_argument("--routes", required=True)
        a = p.parse_args()
        upstream_main(a.delay, a.routes.split(","), a.chunk_delay, a.long_stream_s)
        return
    args = parse_args(TARGETS, __doc__.split("\n")[0])
    if args.soak_minutes:
        soak_main(args)
        return
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
    command = command_line(args)
    md = markdown(results, command)
    if args.smoke:  # the results on stdout, for a look or a test; nothing is written
        print(md, file=sys.stderr)
        print(json.dumps(results, indent=2))
    else:
        save("gateway", results, md)
        print(md)


if __name__ == "__main__":
    main()
