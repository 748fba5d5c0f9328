"""One Redis client for semroute's shared state: what an outage is, and how requests go on
without Redis.

Only a connection error or a timeout (``redis.ConnectionError``, ``redis.TimeoutError``,
``OSError``) is an outage. The first one logs one warning and marks Redis down; from then on no
request waits for Redis: every call answers its fallback at once, and a background thread PINGs
Redis every ``retry_s`` seconds until it answers (one more line is logged then). So while Redis
hangs, the caller's thread (the gateway's event loop) is held at most one ``timeout_s``, by the
call that finds the outage.

Any other error (``WRONGTYPE`` on a key something else wrote, a value that is not a number) is
about one key, not an outage: the store that made the call says what it means for that key (see
:meth:`RedisLink.call`'s ``bad``), and it is logged at most once a minute per key.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from semroute.config.secrets import Masker

__all__ = ["Complaints", "RedisLink"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Complaints:
    """Warnings about one thing (a Redis key) at most once per ``interval_s`` seconds each, so a
    bad key read by every request fills no log."""

    def __init__(
        self,
        interval_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_things: int = 4096,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._max = max_things
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def warn(self, about: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``about`` was complained of within the interval;
        whether it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(about)
            if last is not None and now - last < self.interval_s:
                return False
            if len(self._last) >= self._max:  # names come from callers: keep the map bounded
                self._last.clear()
            self._last[about] = now
        log.warning(message, *args)
        return True


class RedisLink:
    """One Redis client for semroute's shared state, failing open (see the module's notes).

    Thread-safe, like the redis-py client it wraps.
    """

    def __init__(self, client: Any, *, where: str, retry_s: float = 1.0) -> None:
        import redis

        self.client = client
        self.where = where
        """The server's address, for messages (no password)."""
        self.complaints = Complaints()
        """Warnings about bad keys, once a minute per key."""
        self.outages: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            OSError,
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._retry_s = retry_s
        self._down = False
        self._retry_at = 0.0
        self._answered_at = -math.inf
        self._probing = False
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25, retry_s: float = 1.0) -> RedisLink:
        """A link to the server at ``url`` (``redis://[:password@]host:port/db``, or
        ``rediss://`` for TLS). No I/O: the connection is made on the first command.
        ``timeout_s`` bounds how long one command may block when Redis hangs."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # redis-py retries with back-off by default (seconds of blocking when Redis is
            # down); failing open right away is what keeps requests flowing.
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, where=Masker([]).mask(url), retry_s=retry_s)

    @property
    def down(self) -> bool:
        """Whether Redis is taken to be unreachable (until the background PING answers)."""
        return self._down

    def call(
        self,
        command: Callable[[Any], T],
        fallback: T,
        *,
        bad: Callable[[BaseException], T] | None = None,
    ) -> T:
        """``command(client)``; ``fallback`` while Redis cannot be reached (at once, without
        asking it, once an outage is known); ``bad(error)`` when Redis answers with an error
        (a key of the wrong type, a value that is not a number): ``bad`` logs it and says what
        it means for the key. Without ``bad``, such an error is raised."""
        if self._down:
            self._probe_soon()
            return fallback
        try:
            out = command(self.client)
        except self.outages as exc:
            self._lost(exc)
            return fallback
        except self._errors as exc:
            self._answered_at = time.monotonic()
            if bad is None:
                raise
            return bad(exc)
        self._answered_at = time.monotonic()
        return out

    def reachable(self) -> bool:
        """Whether Redis answers a PING now (blocks up to the timeout; for tests and tools)."""
        try:
            self.client.ping()
        except self.outages as exc:
            self._lost(exc)
            return False
        except self._errors:  # it answered, with an error: it is there
            pass
        self._back()
        return True

    def ready(self) -> bool:
        """For a readiness check: whether Redis answered when last asked. It is asked again
        (a PING, up to the timeout, in the caller's thread) only when nothing was heard from it
        for ``retry_s`` seconds and the back-off allows; concurrent checks meanwhile get the
        last answer. Call it off the event loop."""
        now = time.monotonic()
        fresh = now - self._answered_at < self._retry_s
        if (self._down and now < self._retry_at) or (not self._down and fresh):
            return not self._down
        with self._lock:
            if self._probing:
                return not self._down
            self._probing = True
        try:
            return self.reachable()
        finally:
            self._probing = False

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def _probe_soon(self) -> None:
        """Start a background PING, unless one runs or the back-off is not over."""
        with self._lock:
            if self._probing or time.monotonic() < self._retry_at:
                return
            self._probing = True

        def probe() -> None:
            try:
                self.reachable()
            finally:
                self._probing = False

        threading.Thread(target=probe, name="semroute-redis-probe", daemon=True).start()

    def _back(self) -> None:
        self._answered_at = time.monotonic()
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down = False
        log.warning("semroute: Redis at %s is reachable again", self.where)

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self._retry_s
            if self._down:
                return
            self._down = True
        reason = Masker([]).mask(" ".join(str(exc).split()))[:200] or type(exc).__name__
        log.warning(
            "semroute: Redis at %s is failing (%s); until it answers again, every model is "
            "admitted, health outcomes are dropped and spend is counted in this process",
            self.where,
            reason,
        )
