"""What the language warning costs on the `route()` path, in one run.

    .venv/bin/python scripts/bench_language.py [--rounds 5]

On the bundled example routes with the default encoder (all-MiniLM-L6-v2, query cache off), it
times `Router.route()` for each query of tests/data/bundled_queries.yaml and the French and
Spanish queries of tests/test_language.py, with the warning computed and without it (the two
take turns on each query, in alternating order), and `language_warning()` alone. Results go to
docs/results/language_warning.json and the "language_warning" section of docs/benchmarks.md.
Medians of one run on a shared 2-core machine: read the difference more than the milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from _bench import ROOT, machine, machine_markdown, save

sys.path.insert(0, str(ROOT))


def queries() -> list[str]:
    from tests.test_language import FRENCH, SPANISH

    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(yaml.safe_load((ROOT / "tests" / "data" / "bundled_queries.yaml").read_text()))
    return found + FRENCH + SPANISH


def measure(rounds: int, work: Path) -> dict[str, Any]:
    from semroute import Router
    from semroute.routing.language import language_warning
    from semroute.tuning.build import build_index

    build_index(ROOT / "routes", work / "index")
    router = Router.load(work / "index", cache_size=0)
    texts = queries()
    for text in texts[:20]:  # warm-up
        router.route(text)
    on: list[float] = []
    off: list[float] = []
    paired: list[float] = []
    for r in range(rounds):
        for i, text in enumerate(texts):
            timed: dict[bool, float] = {}
            for warn in (True, False) if (i + r) % 2 == 0 else (False, True):
                router._english_only = warn  # the switch route() reads
                started = time.perf_counter()
                router.route(text)
                timed[warn] = (time.perf_counter() - started) * 1000
            on.append(timed[True])
            off.append(timed[False])
            paired.append(timed[True] - timed[False])
    alone: list[float] = []
    for _ in range(rounds * 20):
        for text in texts:
            started = time.perf_counter()
            language_warning(text)
            alone.append((time.perf_counter() - started) * 1e6)
    return {
        "queries": len(texts),
        "rounds": rounds,
        "route_p50_ms_with_warning": statistics.median(on),
        "route_p50_ms_without_warning": statistics.median(off),
        "route_median_paired_difference_ms": statistics.median(paired),
        "language_warning_median_us": statistics.median(alone),
        "language_warning_p99_us": sorted(alone)[int(len(alone) * 0.99)],
    }


def markdown(results: dict[str, Any], m: dict[str, Any]) -> str:
    return (
        "## Language warning: its cost on `route()`\n\n"
        f"`Router.route()` on the bundled routes (default encoder, query cache off), "
        f"{results['queries']} queries (the bundled English test queries and 12 French and "
        f"Spanish ones) x {results['rounds']} rounds, with and without the language warning, "
        f"taking turns on each query: p50 {results['route_p50_ms_with_warning']:.3f} ms with "
        f"it, {results['route_p50_ms_without_warning']:.3f} ms without; median paired "
        f"difference {results['route_median_paired_difference_ms'] * 1000:.1f} µs (noise: "
        "the warning itself is the next figure). `language_warning()` alone: "
        f"{results['language_warning_median_us']:.1f} µs median, "
        f"{results['language_warning_p99_us']:.1f} µs p99. One run on a shared, loaded "
        "2-core machine.\n\n"
        f"{machine_markdown(m)}\n"
        f"Command: `python scripts/bench_language.py --rounds {results['rounds']}`."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/semroute-bench-language"))
    args = parser.parse_args()
    m = machine()
    results = measure(args.rounds, args.work)
    save("language_warning", {"machine": m, **results}, markdown(results, m))


if __name__ == "__main__":
    main()
