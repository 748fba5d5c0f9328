"""The route-aware semantic cache: an answer reused for a request alike enough to one answered.

A cached answer is returned for a request when everything but the wording of its last user turn
is the same (the scope, which is the API key unless ``server.cache_scope: global``; the route;
the model chain; every other message, the system prompt included; every parameter) and the
embedding routing made of that turn is within ``similarity`` (cosine) of the cached request's.
So the cache needs no embedding of its own, and two routes, keys or models never share an
answer. The exact parts make a *bucket* (a digest); only the vectors of one bucket are compared.

A request with tools, images, ``n`` above 1 or a temperature above ``max_temperature`` is not
cached unless its settings say ``any_request: true`` (see :mod:`semroute.config.cache`). Only
whole answers with text are kept: a stream cut or broken midway, an error, a tool call are not.

Entries live in a :class:`CacheStore`: :class:`LocalCacheStore` in this process (at most
``max_entries``, least recently used out first, each kept ``ttl_s``), or
:class:`~semroute.dispatch.cache_redis.RedisCacheStore` shared by replicas.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semroute.config.cache import CacheConfig, CacheSettings

if TYPE_CHECKING:
    from semroute.dispatch.call import Call

__all__ = [
    "CacheStore",
    "CachedAnswer",
    "LocalCacheStore",
    "SemanticCache",
    "Ticket",
    "bucket_of",
    "per_bucket",
]

UNSCOPED = "local"
"""The scope of requests that name none (a library's calls)."""
IGNORED_PARAMS = frozenset({"metadata", "stream", "stream_options"})
"""Parameters that do not change the answer: not part of the bucket."""


@dataclass(frozen=True)
class CachedAnswer:
    """A whole answer as the cache keeps it."""

    text: str
    model: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    """What the answer cost when it was made: what each hit saves."""
    created: float = 0.0
    """When it was cached (Unix seconds)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> CachedAnswer:
        """Raises ValueError (or TypeError) for data that is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise ValueError("not a cached answer")
        return cls(**data)


@dataclass(frozen=True)
class Hit:
    """A cached answer found for a request, and how similar the request was."""

    answer: CachedAnswer
    similarity: float


class CacheStore(Protocol):
    """Where cached answers are kept: in this process, or shared (Redis) between gateways."""

    def find(self, bucket: str, vector: Any, similarity: float) -> Hit | None:
        """The most similar live answer of ``bucket`` at or above ``similarity`` (None: none)."""
        ...

    def add(self, bucket: str, vector: Any, answer: CachedAnswer, ttl_s: float) -> None:
        """Keep ``answer`` for ``ttl_s`` seconds."""
        ...


class _Bucket:
    """The answers of one bucket: a matrix of their vectors (rows past ``size`` unused)."""

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((4, dim), dtype=np.float32)
        self.ids: list[int] = []
        self.answers: list[CachedAnswer] = []
        self.expires: list[float] = []
        self.order: OrderedDict[int, None] = OrderedDict()
        """Its entries, least recently used first."""

    def add(self, entry: int, vector: Any, answer: CachedAnswer, expires: float) -> None:
        n = len(self.ids)
        if n == len(self.vectors):
            self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
        self.vectors[n] = vector
        self.ids.append(entry)
        self.answers.append(answer)
        self.expires.append(expires)
        self.order[entry] = None

    def remove(self, entry: int) -> None:
        """Drop ``entry``: the last row takes its place."""
        del self.order[entry]
        i = self.ids.index(entry)
        last = len(self.ids) - 1
        self.vectors[i] = self.vectors[last]
        self.ids[i], self.answers[i], self.expires[i] = (
            self.ids[last],
            self.answers[last],
            self.expires[last],
        )
        del self.ids[last], self.answers[last], self.expires[last]

    def best(self, vector: Any, now: float) -> tuple[int, float] | None:
        """The live row most similar to ``vector``, and its similarity."""
        n = len(self.ids)
        if not n:
            return None
        sims = self.vectors[:n] @ np.asarray(vector, dtype=np.float32)
        sims[np.asarray(self.expires) <= now] = -np.inf
        i = int(np.argmax(sims))
        return (i, float(sims[i])) if np.isfinite(sims[i]) else None


MIN_PER_BUCKET = 64


def per_bucket(max_entries: int) -> int:
    """How many answers one bucket keeps for ``router.cache.max_entries``: a bound on the
    vectors one lookup compares."""
    return max(MIN_PER_BUCKET, max_entries // 100)


class LocalCacheStore:
    """Answers kept in this process: at most ``max_entries`` in all and ``max_per_bucket`` in
    a bucket (default :func:`per_bucket`), the least recently used (added or returned) dropped
    first, and each dropped once its time is up. Thread-safe."""

    def __init__(
        self,
        max_entries: int,
        *,
        max_per_bucket: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_per_bucket = max_per_bucket or per_bucket(max_entries)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._order: OrderedDict[int, str] = OrderedDict()
        """Every entry's bucket, least recently used first."""
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def find(self, bucket: str, vector: Any, similarity: float) -> Hit | None:
        now = self._clock()
        with self._lock:
            found = self._buckets.get(bucket)
            best = found.best(vector, now) if found is not None else None
            if found is None or best is None or best[1] < similarity:
                return None
            i, sim = best
            self._order.move_to_end(found.ids[i])
            found.order.move_to_end(found.ids[i])
            return Hit(found.answers[i], min(sim, 1.0))

    def add(self, bucket: str, vector: Any, answer: CachedAnswer, ttl_s: float) -> None:
        with self._lock:
            found = self._buckets.get(bucket)
            if found is None:
                found = self._buckets[bucket] = _Bucket(len(vector))
            entry, self._next = self._next, self._next + 1
            found.add(entry, vector, answer, self._clock() + ttl_s)
            self._order[entry] = bucket
            if len(found.ids) > self.max_per_bucket:  # its least recently used goes
                self._drop(next(iter(found.order)))
            while len(self._order) > self.max_entries:
                self._drop(next(iter(self._order)))

    def _drop(self, entry: int) -> None:
        where = self._order.pop(entry)
        holder = self._buckets[where]
        holder.remove(entry)
        if not holder.ids:
            del self._buckets[where]


@dataclass(frozen=True)
class Ticket:
    """What the cache needs of one request: where to look and keep, and how."""

    scope: str
    bucket: str
    vector: Any
    settings: CacheSettings


class SemanticCache:
    """The cache of one index's dispatcher: its settings, over a store that may outlive it.

    ``space`` names the embedding space (the index's encoder): vectors of two encoders are
    never compared. ``counts`` (hits, misses, bypassed, saved USD) are this process's."""

    def __init__(self, config: CacheConfig, store: CacheStore, *, space: str = "") -> None:
        self.config = config
        self.store = store
        self.space = space
        self.hits = self.misses = self.bypassed = 0
        self.saved_usd = 0.0

    def ticket(self, call: Call, scope: str | None) -> Ticket | str | None:
        """The request's ticket, or why it is not cached (a word for the log: ``tools``,
        ``images``, ``n``, ``temperature``, ``no_embedding``); None when its route or rule
        has no cache."""
        decision = call.decision
        settings = self.config.settings_for(decision.route, decision.rule)
        if settings is None:
            return None
        why = None if settings.any_request else _uncacheable(call, settings)
        if why is None and decision.vector is None:
            why = "no_embedding"
        if why is not None:
            self.bypassed += 1
            return why
        scope = scope or UNSCOPED
        bucket = bucket_of(
            scope, self.space, decision.route, call.chain, call.messages, call.kwargs
        )
        return Ticket(scope, bucket, decision.vector, settings)

    def find(self, ticket: Ticket) -> Hit | None:
        hit = self.store.find(ticket.bucket, ticket.vector, ticket.settings.similarity)
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
            self.saved_usd += hit.answer.cost_usd or 0.0
        return hit

    def keep(self, ticket: Ticket, answer: CachedAnswer) -> None:
        self.store.add(ticket.bucket, ticket.vector, answer, ticket.settings.ttl_s)


def _uncacheable(call: Call, settings: CacheSettings) -> str | None:
    """Why a request is not cached by default (None: it may be)."""
    kwargs = call.kwargs
    if kwargs.get("tools") or kwargs.get("functions"):
        return "tools"
    if any(_has_media(m.get("content")) for m in call.messages):
        return "images"
    n = kwargs.get("n")
    if isinstance(n, int | float) and n > 1:
        return "n"
    temperature = kwargs.get("temperature")
    if isinstance(temperature, int | float) and temperature > settings.max_temperature:
        return "temperature"
    return None


def _has_media(content: object) -> bool:
    if isinstance(content, str) or not isinstance(content, Sequence):
        return False
    return any(not (isinstance(p, Mapping) and p.get("type") == "text") for p in content)


def bucket_of(
    scope: str,
    space: str,
    route: str | None,
    chain: Sequence[str],
    messages: Sequence[Mapping[str, Any]],
    kwargs: Mapping[str, Any],
) -> str:
    """The digest of what must be equal for two requests to share an answer: the scope, the
    embedding space, the route, the chain, every message but the last user turn's text, and
    every parameter but those in :data:`IGNORED_PARAMS`."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    context = [{**m, "content": None} if i == last else dict(m) for i, m in enumerate(messages)]
    params = {k: v for k, v in kwargs.items() if k not in IGNORED_PARAMS}
    payload = [scope, space, route, list(chain), context, params]
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
