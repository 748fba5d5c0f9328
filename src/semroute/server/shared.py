"""The state replicas of the gateway share: in Redis when ``server.redis_url`` is set, in this
process otherwise.

    state = shared_state(settings.redis_url, dispatch_config)
    Dispatcher.for_index(index, health=state.health, redis_url=state.redis_url)
    ...
    state.ready()    # for /readyz
    state.close()    # at shutdown

What is shared with Redis: each model's circuit breaker (window, failures in a row, cool-off,
the one half-open probe), each API key's spend of the day and rate counts of the minute, the
semantic cache's answers, the shadow evaluation's spend of the day, each session's model (with
sticky conversations), and LiteLLM's deployment cooldowns. What stays in each process: metrics,
the decision log, the index and its router. Every key semroute writes starts with ``semroute:`` (the prefix);
LiteLLM's cooldowns are its own ``deployment:*`` keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from semroute.config.cache import DEFAULT_MAX_ENTRIES
from semroute.config.deployments import DispatchConfig
from semroute.config.secrets import Masker
from semroute.config.server import env_value
from semroute.dispatch.cache import CacheStore, LocalCacheStore
from semroute.dispatch.cache_redis import RedisCacheStore, per_bucket
from semroute.dispatch.health import HealthStore, LocalHealthStore, probe_lease
from semroute.dispatch.sessions import LocalSessions, RedisSessions, SessionStore
from semroute.dispatch.shadow import DailySpend
from semroute.dispatch.shared_health import DEFAULT_PREFIX, RedisHealthStore, RedisLink
from semroute.errors import ServeError
from semroute.server.ratelimit import LocalLimiter, RateLimiter, RedisLimiter
from semroute.server.spend import BoundSpend, LocalSpendStore, RedisSpendStore, SpendStore

__all__ = ["SharedState", "shared_state"]

SHADOW = "all"
"""The shadow spend's name in its store (``<prefix>:shadow-spend:all:<date>`` in Redis)."""


def _always() -> bool:
    return True


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class SharedState:
    """The stores one gateway process uses, and how to check and close them."""

    health: HealthStore | None
    """Models' health, for every dispatcher of the process (None: `health.enabled: false`)."""
    spend: SpendStore
    """Each key's spend of the day (UTC)."""
    shadow_spend: DailySpend
    """The shadow evaluation's spend of the day, against its cap (kept across reloads)."""
    cache: CacheStore = field(default_factory=lambda: LocalCacheStore(DEFAULT_MAX_ENTRIES))
    """The semantic cache's answers (kept across reloads)."""
    limiter: RateLimiter = field(default_factory=LocalLimiter)
    """Each key's rate counts (see :mod:`semroute.server.ratelimit`)."""
    sessions: SessionStore | None = None
    """Each session's model (None: the router is not sticky; kept across reloads)."""
    redis_url: str | None = None
    """The resolved URL, for LiteLLM's cooldowns (``Dispatcher(..., redis_url=)``); None: local."""
    where: str | None = None
    """The Redis address with any password masked, for messages (None: local)."""
    ready: Callable[[], bool] = field(default=_always)
    """For /readyz: True when the shared state can be reached (always, when it is local), from
    the last answer of Redis, asked again at most once per back-off (a PING that may take the
    Redis timeout: call it off the event loop). A gateway whose Redis is down still answers
    requests (health and spend per process), so this is for the load balancer to prefer the
    replicas that share state."""
    close: Callable[[], None] = field(default=_nothing)
    """Close the connections (at shutdown)."""


def shared_state(
    redis_url: str | None,
    dispatch: DispatchConfig,
    *,
    prefix: str = DEFAULT_PREFIX,
    timeout_s: float = 0.25,
) -> SharedState:
    """The shared state for ``redis_url`` (``server.redis_url`` as written: a URL, an
    ``os.environ/VAR`` reference, or None for local state) and the index's dispatch settings
    (``dispatch.health`` for the breakers, its timeout and retries for the probe lease).

    No I/O: Redis is first reached by the first request (or :attr:`SharedState.ready`). Raises
    :class:`ServeError` when ``redis_url`` names a variable that is not set. ``prefix`` starts
    every Redis key (``<prefix>:health:<model>``, ``<prefix>:spend:<key_id>:<date>``): replicas
    share state when they use the same server and prefix. ``timeout_s`` bounds how long one
    Redis command may block a request when Redis hangs: the one that finds the outage; then
    requests go on without Redis at once (health and spend counted in this process, one warning
    per outage) while a background PING asks it again every second.
    """
    lease = probe_lease(dispatch.settings)
    if redis_url is None:
        local = LocalHealthStore(dispatch.health, probe_lease_s=lease)
        shadow = BoundSpend(LocalSpendStore(), SHADOW)
        return SharedState(
            local if dispatch.health.enabled else None,
            LocalSpendStore(),
            shadow,
            LocalCacheStore(dispatch.cache.max_entries),
            sessions=LocalSessions.of(dispatch.conversation),
        )
    url = env_value(redis_url)
    if url is None:
        raise ServeError(
            f"{redis_url} is not set (or is empty); export the Redis URL as it, or remove "
            "redis_url to keep state in each process",
            setting="redis_url",
        )
    try:
        link = RedisLink.from_url(url, timeout_s=timeout_s)
    except ValueError as exc:  # redis-py's word on a URL it cannot read
        raise ServeError(
            f"{Masker([]).mask(url)!r} is not a Redis URL ({exc}); write "
            "redis://host:port/db, rediss://... or unix://path",
            setting="redis_url",
        ) from exc
    health = RedisHealthStore(link, dispatch.health, prefix=prefix, probe_lease_s=lease)
    return SharedState(
        health if dispatch.health.enabled else None,
        RedisSpendStore(link, prefix=prefix),
        BoundSpend(RedisSpendStore(link, prefix=prefix, name="shadow-spend"), SHADOW),
        RedisCacheStore(link, prefix=prefix, max_per_bucket=per_bucket(dispatch.cache.max_entries)),
        RedisLimiter(link, prefix=prefix),
        sessions=RedisSessions(link, LocalSessions.of(dispatch.conversation), prefix=prefix),
        redis_url=url,
        where=Masker([]).mask(url),
        ready=link.ready,
        close=link.close,
    )
