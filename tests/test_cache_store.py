"""The semantic cache's stores: in this process (bounded, least recently used out, time-to-live)
and in a real redis-server (shared by two stores as by two replicas; an outage misses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_py

from semroute.config.cache import CacheConfig, CacheOverrideSpec, CacheSpec
from semroute.decision import Reason
from semroute.dispatch.cache import CachedAnswer, LocalCacheStore, bucket_of
from semroute.dispatch.cache_redis import RedisCacheStore
from semroute.dispatch.redis_link import RedisLink
from semroute.routing.policy import Held
from semroute.testing import FakeProvider
from tests.provider_kit import build
from tests.redis_kit import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def answer(text: str, cost: float = 0.01) -> CachedAnswer:
    return CachedAnswer(text, "m", cost_usd=cost, created=1000.0)


def test_the_most_similar_answer_at_or_above_the_threshold_is_found() -> None:
    store = LocalCacheStore(10)
    store.add("b", unit(1, 0, 0), answer("x"), 60)
    store.add("b", unit(0, 1, 0), answer("y"), 60)
    near_x = unit(1, 0.2, 0)  # cosine 0.98 to x
    hit = store.find("b", near_x, 0.97)
    assert hit is not None and hit.answer.text == "x"
    assert hit.similarity == pytest.approx(0.9806, abs=1e-3)
    assert store.find("b", near_x, 0.99) is None  # just under
    assert store.find("other bucket", near_x, 0.5) is None


def test_entries_expire_and_the_least_recently_used_go_first() -> None:
    clock = Clock()
    store = LocalCacheStore(2, clock=clock)
    store.add("b", unit(1, 0, 0), answer("x"), 60)
    store.add("c", unit(0, 1, 0), answer("y"), 60)
    assert store.find("b", unit(1, 0, 0), 0.99) is not None  # x is now the most recent
    store.add("b", unit(0, 0, 1), answer("z"), 60)  # over max_entries: y goes
    assert len(store) == 2
    assert store.find("c", unit(0, 1, 0), 0.5) is None
    assert store.find("b", unit(1, 0, 0), 0.99) is not None
    clock.now += 61
    assert store.find("b", unit(1, 0, 0), 0.5) is None  # past its time


def test_a_bucket_keeps_at_most_max_per_bucket_its_least_recently_used_out() -> None:
    store = LocalCacheStore(100, max_per_bucket=2)
    store.add("b", unit(1, 0, 0), answer("x"), 60)
    store.add("b", unit(0, 1, 0), answer("y"), 60)
    store.add("other", unit(0, 0, 1), answer("o"), 60)
    assert store.find("b", unit(1, 0, 0), 0.99) is not None  # x used: y is now the oldest
    store.add("b", unit(0, 0, 1), answer("z"), 60)
    assert store.find("b", unit(0, 1, 0), 0.5) is None
    assert store.find("b", unit(1, 0, 0), 0.99) is not None
    assert store.find("other", unit(0, 0, 1), 0.99) is not None
    assert len(store) == 3


def test_the_bucket_holds_what_must_be_equal() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    base = bucket_of("key:a", "enc", "r", ("m",), messages, {"temperature": 0})
    reworded = [messages[0], {"role": "user", "content": "hello"}]
    assert bucket_of("key:a", "enc", "r", ("m",), reworded, {"temperature": 0}) == base
    # The stream flag and metadata do not change the answer.
    same = {"temperature": 0, "stream": True, "metadata": {"x": 1}}
    assert bucket_of("key:a", "enc", "r", ("m",), messages, same) == base
    others = [
        bucket_of("key:b", "enc", "r", ("m",), messages, {"temperature": 0}),
        bucket_of("key:a", "enc2", "r", ("m",), messages, {"temperature": 0}),
        bucket_of("key:a", "enc", "s", ("m",), messages, {"temperature": 0}),
        bucket_of("key:a", "enc", "r", ("m", "n"), messages, {"temperature": 0}),
        bucket_of("key:a", "enc", "r", ("m",), messages, {"temperature": 0.5}),
        bucket_of("key:a", "enc", "r", ("m",), [{"role": "user", "content": "hi"}], {}),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_a_rule_overrides_its_route_which_overrides_the_router() -> None:
    config = CacheConfig.of(
        CacheSpec(similarity=0.9),
        {"off": False, "loose": CacheOverrideSpec(similarity=0.8)},
        {"tools-ok": CacheOverrideSpec(any_request=True)},
    )
    assert config.settings_for("off", None) is None
    assert config.settings_for("loose", None).similarity == 0.8  # type: ignore[union-attr]
    by_rule = config.settings_for("off", "tools-ok")
    assert by_rule is not None and by_rule.any_request and by_rule.similarity == 0.9
    assert config.settings_for(None, None).similarity == 0.9  # type: ignore[union-attr]
    assert CacheConfig.from_dict(config.to_dict()) == config
    # Without router.cache only the routes that ask for one are cached.
    alone = CacheConfig.of(None, {"faq": True}, {})
    assert alone.settings_for("faq", None) is not None
    assert alone.settings_for("other", None) is None


def test_two_redis_stores_share_answers(redis_server: RedisServer) -> None:
    one = RedisCacheStore(RedisLink.from_url(redis_server.url), prefix="t", max_per_bucket=2)
    two = RedisCacheStore(RedisLink.from_url(redis_server.url), prefix="t", max_per_bucket=2)
    one.add("b", unit(1, 0, 0), answer("x", 0.5), 60)
    hit = two.find("b", unit(1, 0.1, 0), 0.97)
    assert hit is not None and hit.answer.text == "x" and hit.answer.cost_usd == 0.5
    assert two.find("b", unit(0, 1, 0), 0.5) is None
    # Bounded per bucket: the oldest goes.
    two.add("b", unit(0, 1, 0), answer("y"), 60)
    two.add("b", unit(0, 0, 1), answer("z"), 60)
    assert one.find("b", unit(1, 0, 0), 0.9) is None
    raw = redis_py.Redis.from_url(redis_server.url)
    assert raw.llen("t:cache:b") == 2
    assert 0 < raw.ttl("t:cache:b") <= 60


def test_redis_items_past_their_time_or_unreadable_are_skipped(
    redis_server: RedisServer,
) -> None:
    clock = Clock()
    link = RedisLink.from_url(redis_server.url)
    store = RedisCacheStore(link, prefix="t", clock=clock)
    store.add("b", unit(1, 0, 0), answer("x"), 60)
    redis_py.Redis.from_url(redis_server.url).lpush("t:cache:b", b"not an item")
    assert store.find("b", unit(1, 0, 0), 0.9) is not None
    clock.now += 61
    assert store.find("b", unit(1, 0, 0), 0.5) is None


def test_while_redis_is_away_the_cache_misses(redis_server: RedisServer) -> None:
    store = RedisCacheStore(RedisLink.from_url(redis_server.url, timeout_s=0.25), prefix="t")
    store.add("b", unit(1, 0, 0), answer("x"), 60)
    redis_server.stop()
    try:
        assert store.find("b", unit(1, 0, 0), 0.5) is None
        store.add("b", unit(1, 0, 0), answer("y"), 60)  # dropped, no error
    finally:
        redis_server.start()


def test_routing_keeps_the_embedding_it_made_so_the_cache_embeds_nothing(
    tmp_path: Path,
) -> None:
    with FakeProvider() as provider:
        router, _ = build(tmp_path, provider)
    inner = router.encoder
    calls: list[list[str]] = []

    class Counting:
        info = inner.info

        def encode(self, texts: list[str]) -> Any:
            calls.append(list(texts))
            return inner.encode(texts)

    router.encoder = Counting()  # type: ignore[assignment]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "will it rain today"},
    ]
    decision = router.route(messages, request={"messages": messages})
    assert calls == [["will it rain today"]]  # one encode, of the last user turn
    expected = inner.encode(["will it rain today"]).vectors[0]
    assert np.allclose(decision.vector, expected)
    single = router.route("hello there")  # a plain string keeps its vector too
    assert np.allclose(single.vector, inner.encode(["hello there"]).vectors[0])
    assert "vector" not in decision.to_dict()


def test_the_embedding_survives_a_challenger_and_a_held_session(tmp_path: Path) -> None:
    with FakeProvider() as provider:
        router, _ = build(tmp_path, provider)
    expected = router.encoder.encode(["will it rain today"]).vectors[0]
    both = router.with_challenger(router)
    decision = both.route("will it rain today")
    assert decision.challenger is not None
    assert np.allclose(decision.vector, expected)
    held = router.route("will it rain today", held=Held(("frontier",)))
    assert held.reason == Reason.SESSION and held.chain == ("frontier",)
    assert np.allclose(held.vector, expected)
