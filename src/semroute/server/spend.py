"""What each API key has spent today (UTC), against its ``budget_usd_per_day``.

A key is known here by a short name that is not a secret, :func:`key_id` (a hash of the key) or
the name of the variable that holds it: the key itself is never stored, sent to Redis or
logged. :class:`LocalSpendStore` counts in this process; :class:`RedisSpendStore`
counts in Redis, shared by every replica, one ``INCRBYFLOAT`` on
``<prefix>:spend:<key_id>:<YYYY-MM-DD>``, a key that expires two days after its last count.
While Redis cannot be reached, each process counts what its requests spend and adds it to Redis
when it is back, so a key over its budget stays refused (see :class:`RedisSpendStore`); a value
in Redis that is not a count refuses the key rather than letting it spend without limit.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from semroute.dispatch.shared_health import DEFAULT_PREFIX, RedisLink

__all__ = [
    "BoundSpend",
    "LocalSpendStore",
    "RedisSpendStore",
    "SpendStore",
    "key_id",
    "utc_today",
]

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
    """Spend counted in Redis, shared by every gateway that names the same server and prefix.

    While Redis cannot be reached, what is spent is counted here and added to Redis when it
    answers again; meanwhile a key's spend reads as the last value Redis gave plus what was
    counted here, so a key over its budget stays refused. A value in Redis that is not a count
    (something else wrote the key) is logged, once a minute, and reads as infinite: the key is
    refused until the key is repaired or deleted, never let through unlimited.
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str = DEFAULT_PREFIX,
        name: str = "spend",
        today: Callable[[], str] = utc_today,
        ttl_s: int = SPEND_TTL_S,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.name = name
        self._today = today
        self._ttl_s = ttl_s
        self._known: dict[tuple[str, str], float] = {}
        """The last count Redis gave, per (key id, day)."""
        self._pending: dict[tuple[str, str], float] = {}
        """Spent while Redis could not be reached, not yet added to it."""
        self._lock = threading.Lock()

    def key(self, key_id: str, day: str | None = None) -> str:
        """The Redis key of ``key_id``'s spend on ``day`` (default: today)."""
        return f"{self.prefix}:{self.name}:{key_id}:{day or self._today()}"

    def spent_today(self, key_id: str) -> float:
        return self._count(key_id, 0.0)

    def add(self, key_id: str, usd: float) -> None:
        self._count(key_id, usd)

    def _count(self, key_id: str, usd: float) -> float:
        """Add ``usd`` (and whatever was counted here during an outage) to today's spend of
        ``key_id``, and read it: one round trip."""
        day = self._today()
        at = (key_id, day)
        with self._lock:
            if any(d != day for _, d in self._pending):  # a new day: yesterday's is moot
                self._pending = {k: v for k, v in self._pending.items() if k[1] == day}
                self._known = {k: v for k, v in self._known.items() if k[1] == day}
            more = usd + self._pending.pop(at, 0.0)
        redis_key = self.key(key_id, day)

        def count(client: Any) -> float:
            if not more:
                raw = client.get(redis_key)
            else:
                with client.pipeline(transaction=True) as pipe:  # one round trip
                    pipe.incrbyfloat(redis_key, more)
                    pipe.expire(redis_key, self._ttl_s)
                    raw, _ = pipe.execute()
            try:
                return 0.0 if raw is None else _count_of(raw)
            except NotACount as exc:
                return self._bad(redis_key, exc)

        total = self.link.call(count, math.nan, bad=lambda exc: self._bad(redis_key, exc))
        with self._lock:
            if math.isnan(total):  # Redis cannot be reached: count here
                pending = self._pending.get(at, 0.0) + more
                self._pending[at] = pending
                return self._known.get(at, 0.0) + pending
            if math.isinf(total) and more:  # kept until the key can be counted again
                self._pending[at] = self._pending.get(at, 0.0) + more
            self._known[at] = total
            return total

    def _bad(self, redis_key: str, exc: BaseException) -> float:
        self.link.complaints.warn(
            redis_key,
            "semroute: the spend in Redis at %s cannot be read as a count (%s); the key's "
            "requests are refused as over budget until it is deleted or repaired",
            redis_key,
            " ".join(str(exc).split())[:200],
        )
        return math.inf


class BoundSpend:
    """One name's spend in a :class:`SpendStore` (the shadow evaluation's daily cost, say): a
    :class:`~semroute.dispatch.shadow.DailySpend`."""

    def __init__(self, store: SpendStore, name: str) -> None:
        self.store = store
        self.name = name

    def spent_today(self) -> float:
        return self.store.spent_today(self.name)

    def add(self, usd: float) -> None:
        self.store.add(self.name, usd)


class NotACount(ValueError):
    """A spend value in Redis that is not a finite, non-negative number."""


def _count_of(raw: bytes | str | float) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise NotACount(f"{raw!r:.60} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise NotACount(f"{value!r} is not a count of US dollars")
    return value
