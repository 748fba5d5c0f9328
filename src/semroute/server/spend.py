"""What each API key has spent today (UTC), against its ``budget_usd_per_day``.

A key is known here by a short name that is not a secret, :func:`key_id` (a hash of the key) or
the name of the variable that holds it: the key itself is never stored, sent to Redis or
logged. :class:`LocalSpendStore` counts in this process; :class:`RedisSpendStore`
counts in Redis, shared by every replica, one ``INCRBYFLOAT`` on
``<prefix>:spend:<key_id>:<YYYY-MM-DD>``, a key that expires two days after its last count.
When Redis cannot be reached, spend fails open: nothing is counted and every key reads as having
spent nothing, so no request is refused for want of Redis (see
:class:`~semroute.dispatch.shared_health.RedisLink`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from semroute.dispatch.shared_health import DEFAULT_PREFIX, RedisLink

__all__ = ["LocalSpendStore", "RedisSpendStore", "SpendStore", "key_id", "utc_today"]

SPEND_TTL_S = 2 * 86_400
"""How long a day's count is kept: past the end of its day wherever the replicas' clocks are."""


def key_id(key: str) -> str:
    """A short, stable name for an API key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def utc_today() -> str:
    """Today's date in UTC, as YYYY-MM-DD."""
    return datetime.now(UTC).date().isoformat()


class SpendStore(Protocol):
    """Where keys' spend is counted: in this process, or shared (Redis) between gateways."""

    def spent_today(self, key_id: str) -> float:
        """USD spent today (UTC) by the key named ``key_id`` (0.0 when nothing is known)."""
        ...

    def add(self, key_id: str, usd: float) -> None:
        """Add ``usd`` to today's spend of ``key_id``."""
        ...


class LocalSpendStore:
    """Spend counted in this process (every worker process counts its own).

    ``today`` gives the UTC date (tests pass a fake one); only today's counts are kept.
    """

    def __init__(self, *, today: Callable[[], str] = utc_today) -> None:
        self._today = today
        self._day = ""
        self._spent: dict[str, float] = {}
        self._lock = threading.Lock()

    def spent_today(self, key_id: str) -> float:
        with self._lock:
            return self._counts().get(key_id, 0.0)

    def add(self, key_id: str, usd: float) -> None:
        with self._lock:
            counts = self._counts()
            counts[key_id] = counts.get(key_id, 0.0) + usd

    def _counts(self) -> dict[str, float]:
        day = self._today()
        if day != self._day:  # a new day: yesterday's counts go
            self._day, self._spent = day, {}
        return self._spent


class RedisSpendStore:
    """Spend counted in Redis, shared by every gateway that names the same server and prefix."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str = DEFAULT_PREFIX,
        today: Callable[[], str] = utc_today,
        ttl_s: int = SPEND_TTL_S,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self._today = today
        self._ttl_s = ttl_s

    def key(self, key_id: str, day: str | None = None) -> str:
        """The Redis key of ``key_id``'s spend on ``day`` (default: today)."""
        return f"{self.prefix}:spend:{key_id}:{day or self._today()}"

    def spent_today(self, key_id: str) -> float:
        raw = self.link.call(lambda c: c.get(self.key(key_id)), None)
        try:
            return float(raw) if raw is not None else 0.0
        except ValueError:  # not a count (something else wrote the key): nothing known
            return 0.0

    def add(self, key_id: str, usd: float) -> None:
        redis_key = self.key(key_id)

        def count(client: Any) -> None:
            with client.pipeline(transaction=True) as pipe:  # one round trip
                pipe.incrbyfloat(redis_key, usd)
                pipe.expire(redis_key, self._ttl_s)
                pipe.execute()

        self.link.call(count, None)
