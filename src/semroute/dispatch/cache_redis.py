"""The semantic cache in Redis, shared by every replica that names the same server and prefix.

Plain Redis has no vector search (RediSearch is a module Debian's redis-server does not ship),
and none is needed: a request is only ever compared with the answers of its own bucket (same
scope, route, chain, context and parameters; see :func:`semroute.dispatch.cache.bucket_of`),
which are few. So each bucket is one Redis list, ``<prefix>:cache:<bucket>``, newest answer
first, each item the answer's JSON (with its expiry time), a newline, and its float32 vector. Adding is one
transaction (``LPUSH``, ``LTRIM`` to ``per_bucket`` items, ``EXPIRE`` to the answer's
``ttl_s``); looking up is one ``LRANGE`` and a matrix product in numpy. An item past its time is
skipped (its list expires with the newest answer's time). The number of buckets is bounded by
the time-to-live; give the server a ``maxmemory`` with ``allkeys-lru`` to bound its memory too.

While Redis cannot be reached the cache misses and keeps nothing (the request goes to its model:
an outage costs money, never a wrong answer); an item that cannot be read is skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from semroute.dispatch.cache import MIN_PER_BUCKET, CachedAnswer, Hit, per_bucket
from semroute.dispatch.redis_link import RedisLink

__all__ = ["RedisCacheStore", "per_bucket"]

SEPARATOR = b"\n"
"""Between an item's JSON (which holds no raw newline) and its vector's bytes."""


class RedisCacheStore:
    """Cached answers in Redis (see the module's notes)."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        max_per_bucket: int = MIN_PER_BUCKET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.max_per_bucket = max_per_bucket
        self._clock = clock

    def key(self, bucket: str) -> str:
        return f"{self.prefix}:cache:{bucket}"

    def find(self, bucket: str, vector: Any, similarity: float) -> Hit | None:
        items: list[bytes] = self.link.call(
            lambda client: client.lrange(self.key(bucket), 0, self.max_per_bucket - 1),
            [],
            bad=lambda exc: [],
        )
        query = np.asarray(vector, dtype=np.float32)
        now = self._clock()
        answers, rows = [], []
        for item in items:
            read = _item(item, query.shape[0])
            if read is not None and read[2] > now:
                answers.append(read[0])
                rows.append(read[1])
        if not rows:
            return None
        sims = np.stack(rows) @ query
        best = int(np.argmax(sims))
        sim = float(sims[best])
        return Hit(answers[best], min(sim, 1.0)) if sim >= similarity else None

    def add(self, bucket: str, vector: Any, answer: CachedAnswer, ttl_s: float) -> None:
        expires = self._clock() + ttl_s
        head = json.dumps({**answer.to_dict(), "expires": expires}, ensure_ascii=False).encode()
        item = head + SEPARATOR + np.asarray(vector, dtype=np.float32).tobytes()
        key = self.key(bucket)

        def push(client: Any) -> None:
            with client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, item)
                pipe.ltrim(key, 0, self.max_per_bucket - 1)
                pipe.expire(key, max(1, int(ttl_s + 0.999)))
                pipe.execute()

        self.link.call(push, None, bad=lambda exc: None)


def _item(raw: bytes, dim: int) -> tuple[CachedAnswer, Any, float] | None:
    """An item's answer, vector and expiry time (None: not one, or of another size)."""
    head, sep, body = raw.partition(SEPARATOR)
    if not sep or len(body) != dim * 4:
        return None
    try:
        data = json.loads(head)
        expires = float(data.pop("expires"))
        answer = CachedAnswer.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return answer, np.frombuffer(body, dtype=np.float32), expires
