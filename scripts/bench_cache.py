"""Semantic cache: hit rate and false-hit rate on CLINC150's paraphrases.

CLINC150's in-scope validation and test queries (150 intents in 10 domains, 50 each) are sent
one at a time, in a seeded random order, through the cache's own store
(:class:`semroute.dispatch.cache.LocalCacheStore`). Each query is a request of the route of its
domain (the cache is route-aware: a request only meets cached answers of its own route); a
miss caches the query's "answer", its intent. A hit is *false* when the cached answer belongs
to another intent: a user would have got another question's answer. The route-blind line puts
every query in one bucket, as a cache that knows no routes would.

Vectors come from the default encoder (all-MiniLM-L6-v2, ONNX int8), the same that routes, so
the cache reuses routing's embedding (it embeds nothing itself).

    python scripts/bench_cache.py            # writes docs/results/cache.json and its section
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from _bench import ROOT, cached_vectors, machine, machine_markdown, require_data, save
from semroute.dispatch.cache import CachedAnswer, LocalCacheStore

THRESHOLDS = (0.90, 0.93, 0.95, 0.97, 0.98, 0.99)
DEFAULT = 0.97


def read() -> tuple[list[str], list[str], dict[str, str]]:
    texts, labels = [], []
    for split in ("val", "test"):
        for line in require_data("clinc150", f"{split}.jsonl").open():
            row = json.loads(line)
            if row["label"] != "oos":
                texts.append(row["text"])
                labels.append(row["label"])
    domains = json.loads(require_data("clinc150", "domains.json").read_text())
    domain_of = {intent: d for d, intents in domains.items() for intent in intents}
    return texts, labels, domain_of


def run(
    vectors: np.ndarray,
    labels: list[str],
    buckets: list[str],
    order: list[int],
    similarity: float,
) -> dict[str, Any]:
    n = len(order) + 1
    store = LocalCacheStore(n, max_per_bucket=n, clock=lambda: 0.0)  # nothing dropped
    hits = false_hits = 0
    for i in order:
        hit = store.find(buckets[i], vectors[i], similarity)
        if hit is None:
            store.add(buckets[i], vectors[i], CachedAnswer(labels[i], "m"), 3600)
            continue
        hits += 1
        false_hits += hit.answer.text != labels[i]
    n = len(order)
    return {
        "similarity": similarity,
        "queries": n,
        "hits": hits,
        "hit_rate": round(hits / n, 4),
        "false_hits": false_hits,
        "false_hit_rate": round(false_hits / hits, 4) if hits else None,
        "false_hits_per_query": round(false_hits / n, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench", help="embedding cache")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = machine()
    texts, labels, domain_of = read()

    def encode() -> np.ndarray:
        from semroute.config.routes import DEFAULT_ENCODER
        from semroute.encoders.export import load_encoder

        return load_encoder(DEFAULT_ENCODER, runtime="onnx-int8").encode(texts).vectors

    vectors = cached_vectors(
        args.work / "cache-clinc150-val+test-onnx-int8.npy", f"{len(texts)} queries", encode
    )
    order = list(range(len(texts)))
    random.Random(args.seed).shuffle(order)
    routes = [domain_of[label] for label in labels]
    aware = [run(vectors, labels, routes, order, s) for s in THRESHOLDS]
    blind = [run(vectors, labels, ["all"] * len(texts), order, s) for s in THRESHOLDS]
    results = {"machine": info, "seed": args.seed, "route_aware": aware, "route_blind": blind}
    save("cache", results, markdown(results))


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for a, b in zip(results["route_aware"], results["route_blind"], strict=True):
        mark = " (default)" if a["similarity"] == DEFAULT else ""

        def share(r: dict[str, Any]) -> str:
            rate = r["false_hit_rate"]
            return "-" if rate is None else f"{rate:.2%} ({r['false_hits']})"

        rows.append(
            f"| {a['similarity']:.2f}{mark} | {a['hit_rate']:.2%} ({a['hits']}) | {share(a)} "
            f"| {b['hit_rate']:.2%} ({b['hits']}) | {share(b)} |"
        )
    n = results["route_aware"][0]["queries"]
    default = next(r for r in results["route_aware"] if r["similarity"] == DEFAULT)
    low, low_blind = results["route_aware"][0], results["route_blind"][0]
    return f"""## Semantic cache: hit rate and false hits on CLINC150 paraphrases

`python scripts/bench_cache.py`. {n} in-scope CLINC150 validation and test queries (150
intents, 10 domains as routes), in a seeded random order, through the cache's store; a miss
caches the query's intent as its answer, and a hit is false when the answer was another
intent's. Route-aware: a query meets only its own route's answers (what semroute does);
route-blind: one bucket for all. A query's route here is its true domain (the gateway uses
routing's decision, which may err). Vectors: all-MiniLM-L6-v2, ONNX int8 (routing's own).

| similarity | hit rate (hits) | false hits among hits | route-blind hit rate | route-blind false hits |
|---|---|---|---|---|
{chr(10).join(rows)}

At the default similarity {DEFAULT}, {default["hit_rate"]:.2%} of the queries were answered from
the cache and {default["false_hits"]} of {default["hits"]} hits carried another intent's answer.
At {low["similarity"]:.2f}, {low["hit_rate"]:.2%} were, with {low["false_hits"]} false hits
route-aware against {low_blind["false_hits"]} route-blind: scoping by route removes most of the
false hits a cache blind to routes makes. CLINC150's queries of one intent are paraphrases, not
repeats, so these hit rates are a floor for real traffic, which repeats itself more; and a set
with closer intents would show more false hits: lower `similarity` only for routes whose
answers do not turn on a question's details. The run was made on a shared, loaded machine (it
measures no time).

{machine_markdown(results["machine"])}
"""


if __name__ == "__main__":
    main()
