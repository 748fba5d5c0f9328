"""The fast routing path: lazy per-route scores, the query cache, approximate (HNSW) search and
the pure scoring of an approximate search's neighbours. FakeEncoder only."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import semroute.index.vectors
from semroute import Decision, Router, SemrouteError
from semroute.config.routes import SCORERS
from semroute.decision import Reason, RouteScore
from semroute.encoders.base import Embeddings
from semroute.index.store import RouteIndex
from semroute.index.vectors import HNSW_EF_SEARCH, NEIGHBOURS
from semroute.routing.scoring import best_per_route, from_neighbours, top_k_mean
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index


class CountingEncoder(FakeEncoder):
    """A FakeEncoder that records every batch it is asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> Embeddings:
        self.batches.append(list(texts))
        return super().encode(texts)


def _same(a: Decision, b: Decision) -> bool:
    """Equal decisions, latency aside."""
    return dataclasses.replace(a, latency_ms=0) == dataclasses.replace(b, latency_ms=0)


# --- Decision.scores: a tuple built on first access ----------------------------------------

ITEMS = (
    RouteScore("billing", 0.9, 0.5, "download my invoice", "billing-model"),
    RouteScore("weather", 0.4, 0.5, "will it rain today", "weather-model"),
    RouteScore("greeting", 0.1, 0.5, None, "frontier-model"),
)


def _decision(build: Any) -> Decision:
    return Decision(
        route="billing",
        model="billing-model",
        confidence=0.9,
        margin=0.5,
        reason=Reason.MATCHED,
        latency_ms=1.0,
        scores=build,
    )


def _counting(items: tuple[RouteScore, ...] = ITEMS) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def build() -> tuple[RouteScore, ...]:
        calls.append(1)
        return items

    return build, calls


def test_scores_are_a_tuple_built_once_on_first_access() -> None:
    build, calls = _counting()
    d = _decision(build)
    assert calls == []  # nothing is built until someone looks
    assert d.scores == ITEMS and isinstance(d.scores, tuple)
    assert d.scores is d.scores
    assert len(calls) == 1


def test_decisions_with_built_and_unbuilt_scores_compare_and_hash_alike() -> None:
    build, calls = _counting()
    lazy, eager = _decision(build), _decision(ITEMS)
    assert lazy == eager and hash(lazy) == hash(eager)
    assert lazy != _decision(ITEMS[::-1])
    assert "download my invoice" in repr(lazy)
    assert len(calls) == 1


def test_routed_decisions_list_every_route(fake_index: Path) -> None:
    router = Router.load(fake_index)
    d = router.route("cancel my subscription")
    assert isinstance(d.scores, tuple)
    data = json.loads(json.dumps(d.to_dict()))
    assert {s["route"] for s in data["scores"]} == {"weather", "billing", "greeting"}
    assert data["scores"][0]["utterance"] == "cancel my subscription plan"


def test_route_and_route_batch_give_equal_decisions(fake_index: Path) -> None:
    router = Router.load(fake_index)
    queries = ["will it rain", "", "download my invoice please", "quantum physics", "hello"]
    for single, batched in zip(
        [router.route(q) for q in queries], router.route_batch(queries, batch_size=2), strict=True
    ):
        assert _same(single, batched)
        assert single.scores == batched.scores
        assert hash(dataclasses.replace(single, latency_ms=0)) == hash(
            dataclasses.replace(batched, latency_ms=0)
        )


def test_route_batch_leaves_the_per_route_scores_unbuilt(fake_index: Path) -> None:
    decisions = Router.load(fake_index).route_batch(["will it rain", "", "hello"])
    # Unbuilt, the field holds its builder: batches pay for no per-route Python work.
    assert all(callable(d.__dict__["_scores"]) for d in decisions)
    assert all(d.latency_ms > 0 for d in decisions)
    assert decisions[0].scores[0].route == "weather"


def test_a_fresh_decision_pickles(fake_index: Path) -> None:
    d = Router.load(fake_index).route("will it rain today")
    assert pickle.loads(pickle.dumps(d)) == d


def test_dataclasses_asdict_of_a_decision_is_plain_data(fake_index: Path) -> None:
    d = Router.load(fake_index).route("will it rain today")
    data = json.loads(json.dumps(dataclasses.asdict(d)))
    assert data["scores"][0]["route"] == "weather"


def test_scores_read_from_two_threads_at_once_are_built_once() -> None:
    calls: list[int] = []

    def slow_build() -> tuple[RouteScore, ...]:
        calls.append(1)
        time.sleep(0.2)  # lets the other reader arrive while this one builds
        return ITEMS

    d = _decision(slow_build)
    seen: list[object] = []
    readers = [threading.Thread(target=lambda: seen.append(d.scores[0])) for _ in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert seen == [ITEMS[0], ITEMS[0]]
    assert len(calls) == 1


# --- the query cache --------------------------------------------------------------------------


def test_load_caches_queries_by_default(fake_index: Path) -> None:
    encoder = CountingEncoder()
    router = Router.load(fake_index, encoder=encoder)
    first = router.route("will it rain today")
    info = router.cache_info()
    assert info is not None and info.maxsize and (info.hits, info.misses) == (0, 1)
    second = router.route("will it rain today")
    assert router.cache_info().hits == 1  # type: ignore[union-attr]
    assert encoder.batches == [["will it rain today"]]  # not encoded again
    assert _same(first, second) and second.route == "weather"


def test_cache_size_zero_turns_the_cache_off(fake_index: Path) -> None:
    encoder = CountingEncoder()
    router = Router.load(fake_index, encoder=encoder, cache_size=0)
    assert router.cache_info() is None
    a, b = router.route("hello there"), router.route("hello there")
    assert len(encoder.batches) == 2
    assert _same(a, b)


def test_cache_is_bounded(fake_index: Path) -> None:
    encoder = CountingEncoder()
    router = Router.load(fake_index, encoder=encoder, cache_size=2)
    for q in ["will it rain", "download my invoice", "hello there"]:
        router.route(q)
    router.route("will it rain")  # evicted by the third query: a miss again
    info = router.cache_info()
    assert info is not None and (info.hits, info.misses, info.currsize) == (0, 4, 2)
    router.route("hello there")  # still cached
    assert router.cache_info().hits == 1  # type: ignore[union-attr]
    assert len(encoder.batches) == 4


def test_empty_queries_do_not_touch_the_cache(fake_index: Path) -> None:
    encoder = CountingEncoder()
    router = Router.load(fake_index, encoder=encoder)
    router.route("  ")
    assert router.cache_info().currsize == 0  # type: ignore[union-attr]
    assert encoder.batches == []


def test_cached_decisions_equal_uncached_ones_and_leave_the_index_alone(fake_index: Path) -> None:
    cached = Router.load(fake_index)
    plain = Router.load(fake_index, cache_size=0)
    vectors_before = cached.index.vectors.copy()
    queries = ["will it rain", "cancel my plan", "hello friend", "quantum physics", ""] * 2
    for q in queries:
        a, b = cached.route(q), plain.route(q)
        assert _same(a, b), q
        list(a.scores)  # building one decision's explanation must not change the next
    again = [cached.route(q) for q in queries]
    assert all(_same(a, plain.route(q)) for q, a in zip(queries, again, strict=True))
    info = cached.cache_info()
    assert info is not None and (info.hits, info.misses) == (12, 4)
    np.testing.assert_array_equal(cached.index.vectors, vectors_before)
    assert cached.route("download my invoice").route == "billing"


def test_cached_router_is_consistent_across_threads(fake_index: Path) -> None:
    queries = [
        "will it rain today",
        "why was my card charged twice",
        "good morning",
        "explain quantum entanglement",
        "hot weekend weather",
        "cancel subscription",
    ]
    expected = {q: Router.load(fake_index, cache_size=0).route(q) for q in queries}
    router = Router.load(fake_index, cache_size=4)  # small: evictions race with lookups too
    start = threading.Barrier(8)
    results: list[tuple[str, Decision]] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        mix = queries * 20
        random.Random(seed).shuffle(mix)
        start.wait()
        try:
            results.extend((q, router.route(q)) for q in mix)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 8 * 20 * len(queries)
    assert all(_same(d, expected[q]) for q, d in results)


# --- HNSW: the approximate index --------------------------------------------------------------

CORPUS_ROUTES = 25
CORPUS_UTTERANCES = 120


def _words(rng: random.Random, n: int) -> list[str]:
    """Made-up three-syllable words: FakeEncoder only cares that they differ."""
    syllables = [a + b for a in "bdfgklmnprstvz" for b in "aeiou"]
    return ["".join(rng.choice(syllables) for _ in range(3)) for _ in range(n)]


FILLER = ["please", "can", "you", "help", "me", "with", "the", "my", "now", "today", "quickly"]


class Corpus:
    """Routes whose utterances draw on a vocabulary of their own (plus shared filler words),
    out-of-scope examples with another vocabulary, and held-out queries of each kind."""

    def __init__(self, routes: int, utterances: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self._taken: set[str] = set()
        self.vocab = {f"topic{i:02d}": _words(rng, 12) for i in range(routes)}
        self.oos_vocab = _words(rng, 40)
        self.utterances = {
            name: [self._text(rng, words) for _ in range(utterances)]
            for name, words in self.vocab.items()
        }
        self.out_of_scope = [self._text(rng, self.oos_vocab) for _ in range(60)]
        self._examples = frozenset(self._taken)

    def _text(self, rng: random.Random, words: list[str], fillers: bool = True) -> str:
        while True:
            picked = rng.sample(words, rng.randint(3, 5))
            if fillers:
                picked += rng.sample(FILLER, rng.randint(0, 2))
            rng.shuffle(picked)
            text = " ".join(picked)
            if text not in self._taken:
                self._taken.add(text)
                return text

    def queries(self, per_route: int, seed: int, *, fillers: bool = True) -> list[tuple[str, str]]:
        """Held-out (route, query) pairs: never an example, the same for the same seed."""
        rng, self._taken = random.Random(seed), set(self._examples)
        return [
            (name, self._text(rng, words, fillers))
            for name, words in self.vocab.items()
            for _ in range(per_route)
        ]

    def oos_queries(self, n: int, seed: int) -> list[str]:
        rng, self._taken = random.Random(seed), set(self._examples)
        return [self._text(rng, self.oos_vocab) for _ in range(n)]

    def write(self, folder: Path, scorer: str = "hybrid") -> Path:
        lines = [
            f"router: {{default_model: big, encoder: fake, threshold: 0.3, scorer: {scorer}}}",
            "routes:",
        ]
        for name, texts in self.utterances.items():
            lines += [f"  - name: {name}", "    utterances:", *(f"      - {t}" for t in texts)]
        lines += ["out_of_scope:", *(f"  - {t}" for t in self.out_of_scope)]
        folder.mkdir(parents=True)
        (folder / "routes.yaml").write_text("\n".join(lines) + "\n")
        return folder


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(CORPUS_ROUTES, CORPUS_UTTERANCES)


@pytest.fixture(scope="module")
def corpus_dir(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.write(tmp_path_factory.mktemp("corpus") / "routes")


@pytest.fixture(scope="module")
def built(corpus_dir: Path) -> dict[str, Path]:
    """The corpus built flat and hnsw, with the default (hybrid) and the nearest scorer."""
    out = {}
    for scorer in ("hybrid", "nearest"):
        for kind in ("flat", "hnsw"):
            path = corpus_dir.parent / f"{kind}-{scorer}"
            build_index(corpus_dir, path, encoder=FakeEncoder(), scorer=scorer, index_type=kind)
            out[f"{kind}-{scorer}"] = path
    return out


def _manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return manifest


def _retrieved_routes(router: Router, query: str) -> set[str]:
    """The routes owning at least one of the query's NEIGHBOURS nearest vectors in the graph."""
    vector = FakeEncoder().encode([query]).vectors
    _, ids = router.index.store.search(vector, NEIGHBOURS)
    return {r.name for r in router.routes for i in ids[0] if r.start <= i < r.stop}


def test_hnsw_manifest_records_the_search_and_its_measured_quality(
    built: dict[str, Path],
) -> None:
    flat = _manifest(built["flat-hybrid"])["index"]
    hnsw = _manifest(built["hnsw-hybrid"])["index"]
    total = CORPUS_ROUTES * CORPUS_UTTERANCES + 60
    assert (flat["type"], flat["count"]) == ("flat", total)
    assert "recall_at_10" not in flat
    assert (hnsw["type"], hnsw["metric"], hnsw["count"]) == ("hnsw", "inner_product", total)
    assert (hnsw["neighbours"], hnsw["ef_search"]) == (NEIGHBOURS, HNSW_EF_SEARCH)
    assert 0.0 <= hnsw["recall_at_10"] <= 1.0
    assert 0.9 <= hnsw["nearest_route_agreement"] <= 1.0
    assert RouteIndex.load(built["hnsw-hybrid"]).approximate
    assert not RouteIndex.load(built["flat-hybrid"]).approximate


def test_hnsw_decisions_agree_with_flat(built: dict[str, Path], corpus: Corpus) -> None:
    queries = corpus.queries(12, seed=1)  # 300 held-out queries
    texts = [q for _, q in queries]
    flat = Router.load(built["flat-hybrid"]).route_batch(texts)
    hnsw_router = Router.load(built["hnsw-hybrid"])
    hnsw = hnsw_router.route_batch(texts)
    agree = sum(a.route == b.route for a, b in zip(flat, hnsw, strict=True))
    assert agree >= 0.98 * len(texts)
    assert sum(d.route == name for d, (name, _) in zip(hnsw, queries, strict=True)) >= 0.9 * 300
    # One query at a time takes the same path through the graph as a batch (the head's
    # matrix products may differ in the last bit between one query and many, as on flat).
    for q, batched in zip(texts[::10], hnsw[::10], strict=True):
        single = hnsw_router.route(q)
        assert (single.route, single.reason) == (batched.route, batched.reason)
        assert single.confidence == pytest.approx(batched.confidence, abs=1e-6)
        assert {s.route: s.utterance for s in single.scores} == {
            s.route: s.utterance for s in batched.scores
        }
    for d in hnsw:
        assert len(d.scores) == CORPUS_ROUTES
        assert {s.route for s in d.scores} == set(corpus.vocab)
        assert len(d.to_dict()["scores"]) == CORPUS_ROUTES


def test_exact_routing_of_an_hnsw_index_matches_flat(
    built: dict[str, Path], corpus: Corpus
) -> None:
    texts = [q for _, q in corpus.queries(2, seed=2)]
    flat = Router.load(built["flat-nearest"])
    exact = Router.load(built["hnsw-nearest"], exact=True)
    assert all(_same(flat.route(q), exact.route(q)) for q in texts)


def test_routes_missing_from_the_neighbours_have_no_example_and_score_no_higher(
    built: dict[str, Path], corpus: Corpus
) -> None:
    router = Router.load(built["hnsw-nearest"])
    unretrieved = 0
    for _, q in corpus.queries(2, seed=3):
        d = router.route(q)
        retrieved = [s for s in d.scores if s.utterance is not None]
        missing = [s for s in d.scores if s.utterance is None]
        assert {s.route for s in retrieved} == _retrieved_routes(router, q)
        assert retrieved and len(retrieved) + len(missing) == CORPUS_ROUTES
        if missing:
            assert max(s.confidence for s in missing) <= min(s.confidence for s in retrieved)
        unretrieved += len(missing)
    assert unretrieved  # the corpus is big enough that some routes go unretrieved
    # With the default scorer too, a route's example is known exactly when it was retrieved.
    hybrid = Router.load(built["hnsw-hybrid"])
    for _, q in corpus.queries(1, seed=4)[:10]:
        known = {s.route for s in hybrid.route(q).scores if s.utterance is not None}
        assert known == _retrieved_routes(hybrid, q)


def test_out_of_scope_examples_are_never_a_routes_closest_utterance(
    built: dict[str, Path], corpus: Corpus
) -> None:
    router = Router.load(built["hnsw-nearest"])
    index = router.index
    first_oos = index.routes[-1].stop
    queries = corpus.oos_queries(20, seed=5) + [q for _, q in corpus.queries(1, seed=6)]
    oos_retrieved = 0
    for q in queries:
        _, ids = index.store.search(FakeEncoder().encode([q]).vectors, NEIGHBOURS)
        oos_retrieved += int((ids[0] >= first_oos).any())
        for s in router.route(q).scores:
            if s.utterance is not None:
                r = next(r for r in index.routes if r.name == s.route)
                assert s.utterance in index.utterances[r.start : r.stop], (q, s)
                assert s.utterance not in corpus.out_of_scope
    assert oos_retrieved >= 20  # out-of-scope vectors were among the neighbours


def test_auto_index_type_switches_to_hnsw_above_the_flat_limit(
    routes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_index(routes_dir, tmp_path / "small", encoder=FakeEncoder())
    assert _manifest(tmp_path / "small")["index"]["type"] == "flat"
    monkeypatch.setattr(semroute.index.vectors, "FLAT_LIMIT", 8)  # the fixture has 8 utterances
    build_index(routes_dir, tmp_path / "at", encoder=FakeEncoder(), index_type="auto")
    assert _manifest(tmp_path / "at")["index"]["type"] == "flat"
    monkeypatch.setattr(semroute.index.vectors, "FLAT_LIMIT", 7)
    build_index(routes_dir, tmp_path / "above", encoder=FakeEncoder(), index_type="auto")
    assert _manifest(tmp_path / "above")["index"]["type"] == "hnsw"
    # Fewer vectors than NEIGHBOURS: FAISS pads the neighbours with -1, which must not matter.
    flat, hnsw = Router.load(tmp_path / "small"), Router.load(tmp_path / "above")
    for q in ["will it rain tomorrow", "cancel my subscription", "hello friend", "quantum"]:
        a, b = flat.route(q), hnsw.route(q)
        assert (a.route, a.reason) == (b.route, b.reason)
        assert b.confidence == pytest.approx(a.confidence, abs=1e-6)
        assert all(s.utterance is not None for s in b.scores)  # every vector was retrieved


def test_recall_of_a_tiny_hnsw_index_is_perfect(routes_dir: Path, tmp_path: Path) -> None:
    build_index(routes_dir, tmp_path / "idx", encoder=FakeEncoder(), index_type="hnsw")
    meta = _manifest(tmp_path / "idx")["index"]
    assert meta["nearest_route_agreement"] == 1.0
    assert meta["recall_at_10"] == 1.0


def test_unknown_index_type_is_refused(routes_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SemrouteError, match=r"unknown index type 'ivf'.*auto, flat, hnsw"):
        build_index(routes_dir, tmp_path / "idx", encoder=FakeEncoder(), index_type="ivf")
    assert not (tmp_path / "idx").exists()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Corpus, Path]:
    corpus = Corpus(10, 40, seed=11)
    return corpus, corpus.write(tmp_path_factory.mktemp("small") / "routes")


@pytest.mark.parametrize("scorer", SCORERS)
def test_every_scorer_works_on_hnsw_and_agrees_with_flat_on_clear_queries(
    scorer: str, small_corpus: tuple[Corpus, Path], tmp_path: Path
) -> None:
    corpus, folder = small_corpus
    routers = {}
    for kind in ("flat", "hnsw"):
        build_index(folder, tmp_path / kind, encoder=FakeEncoder(), scorer=scorer, index_type=kind)
        routers[kind] = Router.load(tmp_path / kind)
    assert routers["hnsw"].index.approximate and routers["hnsw"].scorer == scorer
    for name, q in corpus.queries(2, seed=7, fillers=False):
        a, b = routers["flat"].route(q), routers["hnsw"].route(q)
        assert a.scores[0].route == b.scores[0].route == name, (scorer, q)
        assert b.confidence == pytest.approx(a.confidence, abs=1e-5)


def test_top5_scores_a_short_route_alike_on_flat_and_hnsw(routes_dir: Path, tmp_path: Path) -> None:
    for kind in ("flat", "hnsw"):
        build_index(
            routes_dir, tmp_path / kind, encoder=FakeEncoder(), scorer="top5", index_type=kind
        )
    # weather has 3 examples, all of them retrieved from an 8-vector graph.
    flat = Router.load(tmp_path / "flat").route("will it rain today")
    hnsw = Router.load(tmp_path / "hnsw").route("will it rain today")
    assert flat.route == "weather"  # confidence 0.52: the mean of its 3 similarities
    assert hnsw.confidence == pytest.approx(flat.confidence, abs=1e-5)
    assert hnsw.route == "weather"


def test_rebuilding_hnsw_after_editing_one_route_reuses_vectors(
    corpus_dir: Path, corpus: Corpus, tmp_path: Path
) -> None:
    folder = tmp_path / "routes"
    shutil.copytree(corpus_dir, folder)
    out = tmp_path / "idx"
    build_index(folder, out, encoder=FakeEncoder(), scorer="nearest", index_type="hnsw")
    old = corpus.utterances["topic03"][0]
    new = "brand new wording for topic three " + " ".join(corpus.vocab["topic03"][:3])
    text = (folder / "routes.yaml").read_text()
    (folder / "routes.yaml").write_text(text.replace(f"- {old}\n", f"- {new}\n"))
    encoder = CountingEncoder()
    report = build_index(folder, out, encoder=encoder, scorer="nearest", index_type="hnsw")
    total = CORPUS_ROUTES * CORPUS_UTTERANCES + 60
    assert (report.embedded, report.reused) == (1, total - 1)
    assert encoder.batches == [[new]]
    router = Router.load(out)
    assert router.index.approximate
    d = router.route(new)
    assert d.route == "topic03" and d.scores[0].utterance == new


# --- from_neighbours: scoring an approximate search's neighbours ------------------------------

PAD = np.finfo(np.float32).min  # what FAISS reports for a missing neighbour (id -1)
# Vectors 0-2 belong to route 0, 3-4 to route 1, 5 to route 2, 6 is out of scope; route 3 has
# vectors too, but they are never retrieved below.
OWNER = np.array([0, 0, 0, 1, 1, 2, -1, 3], dtype=np.int64)


def _neighbours(*rows: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    sims = np.full((len(rows), width), PAD, dtype=np.float32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = [n for n, _ in row]
        sims[i, : len(row)] = [s for _, s in row]
    return sims, ids


def test_from_neighbours_k1_takes_each_routes_closest_and_fills_the_rest() -> None:
    # Best first, as FAISS returns them; the out-of-scope vector 6 is retrieved second.
    sims, ids = _neighbours([(0, 0.9), (6, 0.8), (3, 0.7), (1, 0.6)])
    conf, best = from_neighbours(sims, ids, OWNER, 4, k=1)
    assert conf[0].tolist() == pytest.approx([0.9, 0.7, 0.6, 0.6])
    # Routes 2 and 3 were never retrieved: the last similarity bounds them, no example is known.
    assert best[0].tolist() == [0, 3, -1, -1]


def test_from_neighbours_k5_fills_short_routes_with_the_last_similarity() -> None:
    sims, ids = _neighbours([(0, 0.9), (6, 0.8), (3, 0.7), (1, 0.6), (-1, PAD)])
    conf, best = from_neighbours(sims, ids, OWNER, 4, k=5)
    # Route 0: 0.9 and 0.6 retrieved, three more at most 0.6 (the last real neighbour, not PAD).
    assert conf[0].tolist() == pytest.approx(
        [(0.9 + 0.6 + 3 * 0.6) / 5, (0.7 + 4 * 0.6) / 5, 0.6, 0.6]
    )
    assert best[0].tolist() == [0, 3, -1, -1]


def test_from_neighbours_averages_the_k_best_when_a_route_has_more() -> None:
    sims, ids = _neighbours([(2, 0.95), (0, 0.9), (5, 0.85), (1, 0.8), (4, 0.5)])
    conf, best = from_neighbours(sims, ids, OWNER, 4, k=2)
    # Routes 1 and 2 have one neighbour each; the second is at most the last similarity, 0.5.
    assert conf[0].tolist() == pytest.approx([(0.95 + 0.9) / 2, 0.5, (0.85 + 0.5) / 2, 0.5])
    assert best[0].tolist() == [2, 4, 5, -1]


def test_from_neighbours_skips_out_of_scope_and_missing_neighbours_row_by_row() -> None:
    sims, ids = _neighbours(
        [(6, 0.9), (-1, PAD), (-1, PAD)],  # only out of scope: it still bounds every route
        [(-1, PAD), (-1, PAD), (-1, PAD)],  # nothing at all
        [(7, 0.4), (5, 0.3), (-1, PAD)],
    )
    conf, best = from_neighbours(sims, ids, OWNER, 4, k=1)
    assert conf[0].tolist() == pytest.approx([0.9] * 4)
    assert conf[1].tolist() == [0.0] * 4
    assert conf[2].tolist() == pytest.approx([0.3, 0.3, 0.3, 0.4])
    assert best.tolist() == [[-1] * 4, [-1] * 4, [-1, -1, 5, 7]]


@st.composite
def full_searches(draw: st.DrawFn, min_examples: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Similarity rows over route vectors (then some out-of-scope ones), the route starts and
    how many vectors belong to routes."""
    counts = draw(st.lists(st.integers(min_examples, min_examples + 5), min_size=1, max_size=6))
    n_oos = draw(st.integers(0, 3))
    # Few distinct values make ties common: both must break them towards the lowest position.
    values = st.one_of(st.sampled_from([-0.5, 0.0, 0.5, 1.0]), st.floats(-1, 1, width=32))
    shape = (draw(st.integers(1, 3)), sum(counts) + n_oos)
    sims = draw(hnp.arrays(np.float32, shape, elements=values))
    starts = np.cumsum([0, *counts[:-1]]).astype(np.int64)
    return sims, starts, sum(counts)


@settings(deadline=None)
@given(full_searches())
def test_from_neighbours_with_every_vector_retrieved_equals_best_per_route(
    case: tuple[np.ndarray, np.ndarray, int],
) -> None:
    sims, starts, n_routed = case
    owner = np.full(sims.shape[1], -1, dtype=np.int64)
    for r, (a, b) in enumerate(zip(starts, [*starts[1:], n_routed], strict=True)):
        owner[a:b] = r
    # What an exact search for every vector returns: best first, ties by position.
    ids = np.argsort(-sims, axis=1, kind="stable").astype(np.int64)
    ranked = np.take_along_axis(sims, ids, axis=1)
    conf, best = from_neighbours(ranked, ids, owner, len(starts), k=1)
    want_conf, want_best = best_per_route(sims[:, :n_routed], starts)
    np.testing.assert_array_equal(conf, want_conf)
    np.testing.assert_array_equal(best, want_best)


@settings(deadline=None)
@given(full_searches(min_examples=5), st.integers(1, 5))
def test_from_neighbours_with_every_vector_retrieved_equals_top_k_mean(
    case: tuple[np.ndarray, np.ndarray, int], k: int
) -> None:
    # Routes with at least k examples: nothing needs filling in.
    sims, starts, n_routed = case
    owner = np.full(sims.shape[1], -1, dtype=np.int64)
    for r, (a, b) in enumerate(zip(starts, [*starts[1:], n_routed], strict=True)):
        owner[a:b] = r
    ids = np.argsort(-sims, axis=1, kind="stable").astype(np.int64)
    ranked = np.take_along_axis(sims, ids, axis=1)
    conf, _ = from_neighbours(ranked, ids, owner, len(starts), k=k)
    np.testing.assert_allclose(conf, top_k_mean(sims[:, :n_routed], starts, k), atol=1e-6)
