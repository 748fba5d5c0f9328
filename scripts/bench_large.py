"""Large route sets: HNSW against exact search on queries the index never saw, and latency.

    .venv/bin/python scripts/bench_large.py [--sizes 100000,1000000] [--queries 1000]

The corpus is built from the train and validation splits of CLINC150 and BANKING77 only
(28,003 in-scope texts over 227 intents, one route per intent); no test row is in it, and
neither is any text equal, after case and spacing, to one of the queries. Past the originals,
each text comes again with spoken-style prefixes and suffixes ("please ...", "... thanks"),
so the 1,000,000-utterance corpus is about 36 variants of each of those 28,003 texts. The head
is trained on that corpus, as `semroute build-index` does.

The queries are the ones `bench_latency.py` times (the bundled routes' held-out queries, then
CLINC150 test texts of at most 20 words). For each size it reports the build, the build-time
recall check `build-index` records, how often the HNSW index gives the same top route and the
same decision as exact search (`Router.load(exact=True)`) on those queries, and route()
latency. The section is written after every size, so a long run that is stopped keeps what
it finished. Results go to docs/results/large.json and the "large" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from _bench import RESULTS, ROOT, machine, machine_markdown, require_data, save
from bench_latency import percentiles, short_queries, time_routes

PREFIXES = ["", "please ", "hey, ", "quick question: ", "can you help: ", "so ", "ok "]
SUFFIXES = ["", " please", " thanks", " right now", " asap", " today", " for me"]
SOURCES = (("clinc150", ("train", "val")), ("banking77", ("train",)))


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def base_texts() -> dict[str, list[str]]:
    """In-scope texts of the train and validation splits, by intent."""
    base: dict[str, list[str]] = defaultdict(list)
    for folder, splits in SOURCES:
        for split in splits:
            for line in require_data(folder, f"{split}.jsonl").read_text().splitlines():
                row = json.loads(line)
                if row["label"] != "oos":
                    base[f"{folder}:{row['label']}"].append(row["text"].strip())
    return base


def corpus(n: int, queries: list[str]) -> tuple[dict[str, list[str]], int]:
    """``n`` distinct texts by intent, none of them a query; also how many were skipped as
    equal to a query."""
    base = base_texts()
    banned = {_key(q) for q in queries}
    seen: set[str] = set()
    out: dict[str, list[str]] = defaultdict(list)
    count = skipped = 0
    for prefix in PREFIXES:
        for suffix in SUFFIXES:
            for label, texts in base.items():
                for text in texts:
                    variant = f"{prefix}{text}{suffix}"
                    key = _key(variant)
                    if key in banned:
                        skipped += 1
                        continue
                    if key in seen:
                        continue
                    seen.add(key)
                    out[label].append(variant)
                    count += 1
                    if count >= n:
                        return out, skipped
    raise SystemExit(f"error: only {count} distinct texts available, {n} asked for")


def _queries_in(texts: dict[str, list[str]], queries: list[str]) -> int:
    """How many queries are utterances of the corpus (0 by construction; checked)."""
    keys = {_key(t) for ts in texts.values() for t in ts}
    return sum(_key(q) in keys for q in queries)


def interleaved(a: Any, b: Any, queries: list[str]) -> tuple[list[float], list[float]]:
    """route() times of two routers, query by query in alternating order, so a busy spell of
    a shared machine falls on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for i, q in enumerate(queries):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            router = (a, b)[which]
            started = time.perf_counter()
            router.route(q)
            times[which].append(time.perf_counter() - started)
    return times


def build(work: Path, n: int, texts: dict[str, list[str]], reuse: dict[str, Any] | None) -> Any:
    """Build the index, or with ``reuse`` (the earlier run's case) keep the one on disk."""
    from semroute.config.routes import parse_routes
    from semroute.tuning.build import build_index

    out = work / f"large-{n}"
    if reuse is not None and (out / "manifest.json").exists():
        return out, {"build_s": reuse["build_s"], "embedded": reuse["embedded"], "reused": True}
    routes = parse_routes(
        {
            "router": {"default_model": "frontier", "threshold": 0.42},
            "routes": [{"name": k, "utterances": v} for k, v in texts.items()],
        }
    )
    started = time.perf_counter()
    report = build_index(routes, out)
    return out, {"build_s": round(time.perf_counter() - started, 1), "embedded": report.embedded}


def large_case(
    work: Path, n: int, queries: list[str], bundled: Any, reuse: dict[str, Any] | None
) -> dict[str, Any]:
    from semroute.routing.router import Router

    texts, skipped = corpus(n, queries)
    out, built = build(work, n, texts, reuse)
    router = Router.load(out, cache_size=0)
    if router.index.manifest.index.count != n:
        raise SystemExit(f"error: {out} does not hold the {n:,}-utterance corpus; drop --reuse")
    exact = Router.load(out, cache_size=0, exact=True)
    approx_decisions = [router.route(q) for q in queries]
    exact_decisions = [exact.route(q) for q in queries]
    same_top = [
        a.scores[0].route == e.scores[0].route
        for a, e in zip(approx_decisions, exact_decisions, strict=True)
    ]
    same_decision = [
        a.route == e.route for a, e in zip(approx_decisions, exact_decisions, strict=True)
    ]
    result = {
        "utterances": n,
        "routes": len(texts),
        "skipped_equal_to_a_query": skipped,
        **built,
        "index": router.index.manifest.index.model_dump(exclude_unset=True),
        "queries_in_index": _queries_in(texts, queries),
        "top1_agreement_with_exact": round(float(np.mean(same_top)), 4),
        "decision_agreement_with_exact": round(float(np.mean(same_decision)), 4),
    }
    for q in queries[:20]:
        router.route(q)  # warm up
    large_t, bundled_t = interleaved(router, bundled, queries)
    result.update(percentiles(large_t))
    result["bundled_p50_ms"] = percentiles(bundled_t)["p50_ms"]
    result["p50_ratio_to_bundled"] = round(result["p50_ms"] / result["bundled_p50_ms"], 2)
    result["exact_p50_ms"] = percentiles(time_routes(exact, queries[:200]))["p50_ms"]
    print(json.dumps({k: v for k, v in result.items() if k != "index"}), file=sys.stderr)
    return result


def ratio(case: dict[str, Any]) -> str:
    x = case.get("p50_ratio_to_bundled")
    return "\u2013" if x is None else f"{x:.2f}x"


def markdown(r: dict[str, Any]) -> str:
    rows = [
        "## Large route sets: HNSW against exact search, on unseen queries",
        "",
        f"`.venv/bin/python {r.get('command', 'scripts/bench_large.py')}`: one route per intent "
        "of CLINC150 and BANKING77 (227 routes), utterances from their train and validation "
        f"splits only ({r['base_texts']:,} texts), repeated with spoken-style prefixes and "
        "suffixes (`please ...`, `... thanks`, 49 combinations) until the corpus has the size "
        "asked for; the head is trained on that corpus. No test row is in the index, and no "
        f"utterance equals a query. The {r['queries']} queries are `bench_latency.py`'s "
        "(the bundled routes' held-out queries, then CLINC150 test texts of at most 20 words), "
        "routed one at a time, query cache off. Agreement compares the HNSW index with "
        "`Router.load(path, exact=True)` (every example scanned) on the same index.",
        "",
        "| utterances | build | recall@10 / nearest-route agreement (build-time sample of "
        "the index's own vectors) | same top route as exact search | same decision | "
        "`route()` p50 / p95 / p99 | ÷ bundled routes' p50 | exact search p50 | target |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in r["cases"]:
        idx = c["index"]
        rows.append(
            f"| {c['utterances']:,} | {c['build_s']:.0f} s | {idx.get('recall_at_10')} / "
            f"{idx.get('nearest_route_agreement')} | "
            f"{100 * c['top1_agreement_with_exact']:.1f}% | "
            f"{100 * c['decision_agreement_with_exact']:.1f}% | "
            f"{c['p50_ms']:.2f} / {c['p95_ms']:.2f} / {c['p99_ms']:.2f} ms | "
            f"{ratio(c)} | "
            f"{c['exact_p50_ms']:.1f} ms | same top route ≥ 99% |"
        )
    done = {c["utterances"] for c in r["cases"]}
    missing = [int(s) for s in r["sizes"].split(",") if int(s) not in done]
    if 1_000_000 not in done and 1_000_000 not in missing:
        rows += [
            "",
            "The 1,000,000-utterance case (`--sizes 1000000`) was not run for this section: "
            "its build embeds a million texts, which took 36 minutes on an idle 2-core "
            "machine in an earlier run.",
        ]
    if missing:
        sizes = " and ".join(f"{n:,}" for n in missing)
        rows += [
            "",
            f"This run was stopped before the {sizes}-utterance case finished: "
            "no figure for it here.",
        ]
    if any(c.get("reused") for c in r["cases"]):
        rows += [
            "",
            "Build times are those of the earlier run that built the indexes "
            "(`--reuse`); everything else was measured in this run.",
        ]
    if any("p50_ratio_to_bundled" in c for c in r["cases"]):
        rows += [
            "",
            "The bundled routes (141 utterances, exact search) are timed in the same loop, "
            "query by query, so that ratio holds up on a busy machine better than the "
            "milliseconds do.",
        ]
    rows += [
        "",
        "Build times and latencies come from one run on the machine below, which was shared "
        f"with other work (load average at the end: {r.get('load_average_at_end')}): read "
        "them as rough. Agreement does not depend on timing.",
        "",
        machine_markdown(r["machine"]),
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/semroute-bench-large"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep indexes an earlier run left in --work (and its build times); measure again",
    )
    parser.add_argument(
        "--from-json", action="store_true", help="measure nothing: write the section again"
    )
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads((RESULTS / "large.json").read_text())
        save("large", saved, markdown(saved))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    queries = short_queries(args.queries)
    earlier = {}
    if args.reuse and (RESULTS / "large.json").exists():
        earlier = {
            c["utterances"]: c for c in json.loads((RESULTS / "large.json").read_text())["cases"]
        }
    from semroute.routing.router import Router
    from semroute.tuning.build import build_index

    build_index(ROOT / "routes", args.work / "bundled")
    bundled = Router.load(args.work / "bundled", cache_size=0)
    results: dict[str, Any] = {
        "machine": machine(),
        "command": "scripts/bench_large.py"
        + (f" --sizes {args.sizes}" if args.sizes != "100000,1000000" else "")
        + (" --reuse" if args.reuse else ""),
        "sizes": args.sizes,
        "queries": len(queries),
        "base_texts": sum(len(t) for t in base_texts().values()),
        "cases": [],
    }
    for n in sizes:
        reuse = earlier.get(n) if args.reuse else None
        results["cases"].append(large_case(args.work, n, queries, bundled, reuse))
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        save("large", results, markdown(results))


if __name__ == "__main__":
    main()
