"""Queries a careless user or an attacker might send: lone surrogates, invisible text, huge
texts, wrong types. Each must give a Decision or an InvalidQueryError, fast and in bounded memory.

Also holds the promises the README makes about sticky conversations (8 user turns of history)
and the hybrid confidence (the mean of the head's probability and the nearest similarity)."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from semroute import Decision, InvalidQueryError, Reason, Router
from semroute.encoders.base import Embeddings, Encoder, EncoderInfo
from semroute.routing.query import CHARS_PER_TOKEN, READ_WINDOWS
from semroute.routing.scoring import hybrid
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import ROUTES_YAML, write_routes

FAKE_WINDOW = FakeEncoder().info.max_tokens * CHARS_PER_TOKEN


class Recording:
    """An encoder that hands every text to another one and keeps what it was given."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def info(self) -> EncoderInfo:
        return self.inner.info

    def encode(self, texts: Sequence[str]) -> Embeddings:
        self.texts.extend(texts)
        return self.inner.encode(texts)


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _same(a: Decision, b: Decision) -> bool:
    return dataclasses.replace(a, latency_ms=0) == dataclasses.replace(b, latency_ms=0)


def _router(tmp_path: Path, **router: Any) -> Router:
    settings = {"default_model": "frontier-model", "encoder": "fake", "threshold": 0.5, **router}
    routes = write_routes(tmp_path / "routes", ROUTES_YAML, yaml.safe_dump({"router": settings}))
    build_index(routes, tmp_path / "index", encoder=FakeEncoder())
    return Router.load(tmp_path / "index")


@pytest.fixture
def recording(fake_index: Path) -> tuple[Router, Recording]:
    encoder = Recording(FakeEncoder())
    return Router.load(fake_index, encoder=encoder), encoder


# --- lone surrogates ----------------------------------------------------------------------------


def test_lone_surrogates_reach_the_encoder_as_replacement_characters(
    recording: tuple[Router, Recording],
) -> None:
    router, encoder = recording
    query = "will it rain \ud800 today"
    d = router.route(query)
    router.route_batch([query, "download my \udfff invoice"])
    router.route([user("hello \udbff there")])
    router.score(["cancel \ud800 my plan"])
    assert d.route == "weather"
    assert len(encoder.texts) == 5
    for text in encoder.texts:
        text.encode("utf-8")  # a lone surrogate cannot be encoded: the tokenizer fails on it
        assert "\ufffd" in text


@pytest.mark.model
def test_lone_surrogates_route_with_the_real_model(bundled_index: Path) -> None:
    router = Router.load(bundled_index)
    query = "fix \ud800 this bug in my python script"
    clean = "fix \ufffd this bug in my python script"
    assert _same(router.route(query), router.route(clean))
    assert router.route(query).route == "code"
    batch = router.route_batch([query, "translate \udc00 'good night' into Italian"])
    assert [d.route for d in batch] == ["code", "translation"]
    assert router.route([user(query)]).route == "code"
    scores = router.score([query])
    assert scores.confidence.shape == (1, len(router.routes)) and not scores.empty[0]


# --- invisible-only text ------------------------------------------------------------------------

INVISIBLE = ["\u200b\u200b\ufeff", "\x00", "\u2060\u200d", "\x00 \x1b\u200e\t", "\ufeff\n"]


@pytest.mark.parametrize("query", INVISIBLE)
def test_invisible_only_text_is_an_empty_query(
    recording: tuple[Router, Recording], query: str
) -> None:
    router, encoder = recording
    d = router.route(query)
    assert (d.route, d.model, d.reason) == (None, "frontier-model", Reason.EMPTY_QUERY)
    [b] = router.route_batch([query])
    assert b.reason == Reason.EMPTY_QUERY
    assert router.score([query]).empty.tolist() == [True]
    assert encoder.texts == []  # nothing to encode


def test_a_conversation_whose_user_turns_are_all_invisible_is_empty(tmp_path: Path) -> None:
    for settings in ({}, {"conversation": {"sticky": True, "turns": 3}}):
        router = _router(tmp_path / str(len(settings)), **settings)
        messages = [
            user("\u200b"),
            {"role": "assistant", "content": "will it rain today"},
            user("\x00\ufeff"),
            user([{"type": "text", "text": "\u2060"}]),
        ]
        assert router.route(messages).reason == Reason.EMPTY_QUERY


def test_visible_text_among_invisible_characters_still_routes(
    recording: tuple[Router, Recording],
) -> None:
    router, _ = recording
    assert router.route("\u200bwill it rain today\ufeff").route == "weather"


# --- huge queries -------------------------------------------------------------------------------


def test_a_huge_query_is_cut_before_the_encoder_and_says_it_was_truncated(
    recording: tuple[Router, Recording],
) -> None:
    router, encoder = recording
    huge = "will it rain today " * 550_000  # 10 MB
    d = router.route(huge)
    assert max(len(t) for t in encoder.texts) <= FAKE_WINDOW
    assert d.truncated
    # The encoder's window holds 64 words: cut or not, it sees the same ones.
    assert _same(d, router.route("will it rain today " * 100))
    [b] = router.route_batch([huge])
    assert _same(b, d)
    assert router.score([huge]).truncated.tolist() == [True]
    assert max(len(t) for t in encoder.texts) <= FAKE_WINDOW


def test_cutting_never_changes_a_query_the_encoder_would_read_whole(
    recording: tuple[Router, Recording],
) -> None:
    router, encoder = recording
    just_fits = "will it rain today " * (FAKE_WINDOW // 19)
    assert len(just_fits) <= FAKE_WINDOW
    router.route(just_fits)
    assert encoder.texts == [just_fits]  # passed as it is
    # Padding a few words with whitespace and invisible characters past the window reads the
    # same words, whole and untruncated.
    padded = "will it rain" + " \u200b\n" * FAKE_WINDOW + "today \x00 please" + "\t" * 9000
    d = router.route(padded)
    assert not d.truncated
    assert _same(d, router.route("will it rain today please"))


def test_huge_padding_is_read_a_bounded_distance(recording: tuple[Router, Recording]) -> None:
    router, encoder = recording
    far = "will it rain" + " " * (READ_WINDOWS * FAKE_WINDOW) + "download my invoice"
    d = router.route(far)
    assert d.truncated and d.route == "weather"  # routed on what the read part holds
    only_padding = " \u200b" * 5_000_000
    assert router.route(only_padding).reason == Reason.EMPTY_QUERY
    assert not router.route("hello there" + " " * 5_000_000).truncated
    assert all(len(t) <= FAKE_WINDOW for t in encoder.texts)


def test_the_cache_keeps_no_query_text(fake_index: Path) -> None:
    router = Router.load(fake_index)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20):
            router.route(f"query number {i} " + "x" * 1_000_000)  # 1 MB, dropped once routed
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    info = router.cache_info()
    assert info is not None and info.currsize == 20
    assert kept < 1_000_000, f"the cache holds {kept} bytes for 20 queries"


def test_the_cache_finds_a_repeated_huge_query(recording: tuple[Router, Recording]) -> None:
    router, encoder = recording
    huge = "download my invoice " * 500_000
    first, again = router.route(huge), router.route(huge)
    assert _same(first, again) and first.route == "billing"
    info = router.cache_info()
    assert info is not None and (info.hits, info.misses) == (1, 1)
    assert len(encoder.texts) == 1
    # A cached short query and its padded copy read the same words: one entry serves both.
    router.route("will it rain today")
    d = router.route("will it rain today" + "  " * FAKE_WINDOW)
    assert d.route == "weather" and not d.truncated
    assert router.cache_info().hits == 2  # type: ignore[union-attr]


@pytest.mark.model
def test_a_10_mb_query_routes_like_its_first_page_with_the_real_model(bundled_index: Path) -> None:
    from semroute.routing.encoder_load import encoder_for as _encoder_for

    router = Router.load(bundled_index)
    encoder = Recording(_encoder_for(router.index))
    router = Router.load(bundled_index, encoder=encoder)
    huge = "why was I charged twice this month " * 300_000
    d = router.route(huge)
    assert max(len(t) for t in encoder.texts) <= encoder.info.max_tokens * CHARS_PER_TOKEN
    assert d.truncated and d.route == "billing_support"
    # 2,000 words fill the 256-token window: the encoder sees the very same tokens.
    page = " ".join(huge.split()[:2000])
    assert len(page) < encoder.info.max_tokens * CHARS_PER_TOKEN
    assert _same(d, router.route(page))
    assert router.route("\u200b\u200b\ufeff").reason == Reason.EMPTY_QUERY


# --- wrong types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        ("hello", "not a single string"),
        (None, "not None"),
        (42, "not int"),
        (b"hello", "not bytes"),
        ({"text": "hello"}, "not dict"),
        (["fine", 3], "query 1 of the batch must be a string, not int"),
        (["fine", "also", b"raw"], "query 2 of the batch must be a string, not bytes; decode"),
        (["fine", None], "query 1 of the batch must be a string, not None"),
        (np.array([["a", "b"]]), "query 0 of the batch must be a string, not ndarray"),
    ],
)
def test_route_batch_refuses_what_is_not_a_list_of_strings(
    recording: tuple[Router, Recording], queries: Any, message: str
) -> None:
    router, encoder = recording
    for call in (router.route_batch, router.score):
        with pytest.raises(InvalidQueryError, match=message) as caught:
            call(queries)
        assert "\n" not in str(caught.value)
        assert isinstance(caught.value, TypeError)
    assert encoder.texts == []


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_route_batch_refuses_a_bad_batch_size(router_plain: Router, batch_size: Any) -> None:
    with pytest.raises(InvalidQueryError, match="batch_size must be a positive integer"):
        router_plain.route_batch(["hello"], batch_size=batch_size)


@pytest.fixture
def router_plain(fake_index: Path) -> Router:
    return Router.load(fake_index)


def test_other_sequences_and_iterables_of_strings_are_batches(router_plain: Router) -> None:
    want = [d.route for d in router_plain.route_batch(["will it rain", "download my invoice"])]
    assert want == ["weather", "billing"]
    for batch in (
        ("will it rain", "download my invoice"),
        (q for q in ["will it rain", "download my invoice"]),
        np.array(["will it rain", "download my invoice"]),
        [np.str_("will it rain"), np.str_("download my invoice")],
    ):
        assert [d.route for d in router_plain.route_batch(batch)] == want  # type: ignore[arg-type]
    assert router_plain.route(np.str_("will it rain")).route == "weather"
    assert router_plain.route_batch([]) == []


class Hostile(str):
    """A str whose own methods all fail: semroute must read it as the text it holds."""

    def _fail(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("called a method of a str subclass")

    __hash__ = __eq__ = __str__ = __len__ = __getitem__ = __iter__ = _fail  # type: ignore[assignment]
    strip = encode = lower = split = isspace = isascii = _fail  # type: ignore[assignment]


def test_a_str_subclass_is_read_as_the_text_it_holds(router_plain: Router) -> None:
    assert router_plain.route(Hostile("will it rain today")).route == "weather"
    [d] = router_plain.route_batch([Hostile("download my invoice")])
    assert d.route == "billing"
    assert router_plain.route([user(Hostile("hello there"))]).route == "greeting"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"will it rain", "not bytes"),
        (bytearray(b"will it rain"), "not bytearray"),
        ([user(b"will it rain")], "message 0 has content of type bytes"),
        ([user([{"type": "text", "text": 42}])], "message 0 content part 0 has text of type int"),
        (["x" * 1_000_000], "message 0 is 'xxx"),
        (12, "not int"),
    ],
)
def test_bad_queries_raise_one_short_line(router_plain: Router, query: Any, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message) as caught:
        router_plain.route(query)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_text_part_without_text_says_nothing(router_plain: Router) -> None:
    d = router_plain.route([user([{"type": "text", "text": None}, {"type": "text"}])])
    assert d.reason == Reason.EMPTY_QUERY  # not the four letters "None"


def test_a_hundred_thousand_tiny_queries(router_plain: Router) -> None:
    queries = ["hello there", "", "rain", "\u200b"] * 25_000
    decisions = router_plain.route_batch(queries)
    assert len(decisions) == 100_000
    assert [d.reason for d in decisions[:4]] == [
        Reason.MATCHED,
        Reason.EMPTY_QUERY,
        router_plain.route("rain").reason,
        Reason.EMPTY_QUERY,
    ]
    assert _same(decisions[-4], decisions[0])


def test_very_many_routes(tmp_path: Path) -> None:
    routes = {
        "routes": [
            {"name": f"route_{i}", "utterances": [f"topic{i} question number {i}"]}
            for i in range(2000)
        ]
    }
    folder = write_routes(
        tmp_path / "routes",
        yaml.safe_dump(routes),
        "router: {default_model: big, encoder: fake, scorer: nearest, threshold: 0.5}\n",
    )
    build_index(folder, tmp_path / "index", encoder=FakeEncoder())
    router = Router.load(tmp_path / "index")
    d = router.route("topic1234 question number 1234")
    assert d.route == "route_1234" and len(d.scores) == 2000
    assert [x.route for x in router.route_batch(["topic7 question number 7", ""])] == [
        "route_7",
        None,
    ]


# --- promises the README makes ------------------------------------------------------------------


def _sticky(tmp_path: Path) -> Router:
    return _router(tmp_path, conversation={"sticky": True})


@pytest.mark.parametrize(("follow_ups", "route"), [(7, "weather"), (8, None)])
def test_a_sticky_conversation_looks_back_over_eight_user_turns(
    tmp_path: Path, follow_ups: int, route: str | None
) -> None:
    router = _sticky(tmp_path)
    filler = "and then?"
    assert router.route(filler).reason == Reason.BELOW_THRESHOLD
    messages = [user("will it rain today")]
    for _ in range(follow_ups):
        messages += [{"role": "assistant", "content": "Yes."}, user(filler)]
    d = router.route(messages)
    # With 8 user turns the matching one is the oldest the router reads; with 9 it is gone.
    assert d.route == route
    assert d.reason == (Reason.STICKY if route else Reason.BELOW_THRESHOLD)


def test_hybrid_confidence_is_the_mean_of_head_probability_and_nearest_similarity(
    tmp_path: Path, routes_dir: Path
) -> None:
    # By hand: (0.8 + 0.4) / 2 and (0.2 + 0.6) / 2.
    np.testing.assert_allclose(
        hybrid(np.array([[0.8, 0.2]], np.float32), np.array([[0.4, 0.6]], np.float32)),
        [[0.6, 0.4]],
        rtol=1e-6,
    )
    routers = {}
    for scorer in ("head", "nearest", "hybrid"):
        build_index(routes_dir, tmp_path / scorer, encoder=FakeEncoder(), scorer=scorer)
        routers[scorer] = Router.load(tmp_path / scorer, check_routes=False)
    for query in ["will it rain today", "cancel my plan", "good morning weather"]:
        conf = {
            name: {s.route: s.confidence for s in r.route(query).scores}
            for name, r in routers.items()
        }
        for name, value in conf["hybrid"].items():
            mean = (conf["head"][name] + conf["nearest"][name]) / 2
            assert value == pytest.approx(mean, abs=1e-6), (query, name)
