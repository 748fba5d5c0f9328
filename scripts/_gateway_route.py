"""`route()` alone, timed in a process of its own over the index `semroute serve` serves, for the
same queries the gateway benchmark sends one at a time.

    python scripts/_gateway_route.py INDEX QUERIES.json WARMUP [PACE_S]

prints {"ms": [...]} (one time per query, in order). Its own process, so that it never competes
with the load generator for an interpreter lock. With PACE_S, it sleeps that long before each
query: the pace at which a server routes one request at a time, each after waiting on the
upstream (back to back, the model's weights stay in the CPU's caches; after 50 ms of idle, on
this machine, the same call takes over half as long again). Used by scripts/bench_gateway.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _gateway_load import pct

HERE = Path(__file__).resolve()


def route_times(
    index: Path, queries: list[str], warmup: int, env: dict[str, str], pace_s: float = 0.0
) -> list[float]:
    """Load ``index`` in a fresh process, route ``warmup`` queries of its own, then time
    ``router.route(q)`` for each of ``queries`` in turn (after ``pace_s`` idle each); the times
    in ms."""
    file = index.parent / "route-queries.json"
    file.write_text(json.dumps(queries))
    proc = subprocess.run(
        [sys.executable, str(HERE), str(index), str(file), str(warmup), str(pace_s)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: timing route() failed: {proc.stderr.strip()[-500:]}")
    times: list[float] = json.loads(proc.stdout)["ms"]
    return times


def route_summary(passes: dict[str, list[float]]) -> dict[str, Any]:
    """Each pass's p50 and p99, and both's over all their times together (the figure the
    goals use)."""
    out: dict[str, Any] = {}
    for label, times in passes.items():
        ordered = sorted(times)
        out[label] = {
            "queries": len(times),
            "p50_ms": round(pct(ordered, 50), 3),
            "p99_ms": round(pct(ordered, 99), 3),
        }
    every = sorted(t for times in passes.values() for t in times)
    if every:
        out |= {"p50_ms": round(pct(every, 50), 3), "p99_ms": round(pct(every, 99), 3)}
    return out


def main() -> None:
    from semroute import Router

    index, file, warmup = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    queries: list[str] = json.loads(file.read_text())
    router = Router.load(index)
    for i in range(warmup):  # queries of its own: none of the timed ones is in the cache
        router.route(f"{queries[i % len(queries)]} (warm-up {i})")
    times = []
    for q in queries:
        if pace:
            time.sleep(pace)
        started = time.perf_counter()
        router.route(q)
        times.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"ms": times}))


if __name__ == "__main__":
    main()
