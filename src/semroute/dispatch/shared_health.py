"""Provider health shared between processes through Redis: every replica of a gateway sees the
same circuits, and exactly one of them sends a half-open circuit's probe.

Each model's :class:`~semroute.dispatch.health.Breaker` lives in two keys,
``<prefix>:health:<model>`` (the circuit, a hash) and ``<prefix>:health-window:<model>`` (its
recent outcomes, a list), and is moved by the same pure methods :class:`LocalHealthStore` uses,
so both stores make the same decisions. Two Lua scripts make the writes atomic: one adds an
outcome to a closed circuit where it is (replicas adding at once never retry); the other makes
every other change (open, claim the probe, close) only if the circuit is still in the generation
the change was computed from, so two replicas claiming the same probe cannot both win. Every
write renews the keys' expiry, so models no longer used disappear.

Times are wall-clock seconds (``time.time``), as replicas share them: keep their clocks in step
(NTP); a skew of a second moves a cool-off by a second.

When Redis cannot be reached the store fails open (see :class:`RedisLink`): every model is
admitted and outcomes are dropped, and one warning is logged per outage; no request fails. A
model's key that Redis refuses to read or write (``WRONGTYPE``: something else wrote it) is
logged (once a minute) and taken as no data for that model alone: admitted, outcomes dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from semroute.config.deployments import HealthSettings
from semroute.dispatch.health import (
    ALLOWED,
    CLOSED,
    Admission,
    Breaker,
    ModelHealth,
    Outcome,
    State,
)
from semroute.dispatch.redis_link import RedisLink

__all__ = ["DEFAULT_PREFIX", "RedisHealthStore", "RedisLink"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PREFIX = "semroute"
DAY_S = 86_400.0

# The two keys of a model: its circuit (a hash: s state, c cause, d degraded, t opened at, p probe
# at, r failures in a row, g generation) and its window (a list of "1:<ms>" / "0:<ms>").

# An outcome of a closed circuit, added where it is, so that replicas adding outcomes at once
# never have to retry: ARGV = item, answered (1/0), window size, expiry (ms). Returns {1,
# generation, failures in a row, the window's items joined by commas (one string: far cheaper
# for the client to read than a list)} for the caller to judge, or {0} when the circuit is not
# closed (then the caller reads it and changes it with _TRANSITION).
_ADD = """
local s = redis.call('HGET', KEYS[1], 's')
if s and s ~= 'closed' then
  return {0}
end
redis.call('HSETNX', KEYS[1], 's', 'closed')
redis.call('HSETNX', KEYS[1], 'g', '0')
local r = 0
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'r', '0')
else
  r = redis.call('HINCRBY', KEYS[1], 'r', 1)
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local window = table.concat(redis.call('LRANGE', KEYS[2], 0, -1), ',')
return {1, redis.call('HGET', KEYS[1], 'g'), r, window}
"""
# Every other change (open, claim the probe, close), made only if the circuit is still in the
# generation it was computed from, which it moves on: ARGV = generation, s, c, d, t, p, r,
# expiry (ms), then "window" and the new window's items when the window starts afresh.
_TRANSITION = """
if (redis.call('HGET', KEYS[1], 'g') or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'c', ARGV[3], 'd', ARGV[4], 't', ARGV[5], 'p', ARGV[6],
           'r', ARGV[7], 'g', tostring(tonumber(ARGV[1]) + 1))
if ARGV[9] == 'window' then
  redis.call('DEL', KEYS[2])
  for i = 10, #ARGV do
    redis.call('RPUSH', KEYS[2], ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return 1
"""
# Past this many lost races in one call, the change is given up (a probe not claimed, a probe's
# outcome dropped): only many replicas changing one circuit at the same moment could get here.
MAX_TRIES = 32
_PROBE_TAKEN = Admission(
    False, detail="another gateway is claiming the probe request", retry_in_s=1
)


class RedisHealthStore:
    """Health kept in Redis: a :class:`~semroute.dispatch.health.HealthStore` for every process
    that names the same server and ``prefix``.

    Build it with :meth:`from_url` or around a :class:`RedisLink` shared with other stores.
    ``clock`` gives wall-clock seconds, the same on every replica (tests pass a fake one).
    ``ttl_s`` is how long a model's state outlives its last change (at least a cool-off and a
    probe lease). Asking about a closed circuit and recording its outcome are one Redis round
    trip each; opening it is one more.

    Outcomes of a closed circuit are added in Redis, never retried; whether they open it is
    judged here (:meth:`Breaker.judged`) on the window they were added to, and the circuit is
    opened if no other change came first. An outcome another replica adds in between stays in
    the window of the now open circuit (the one place this differs from one process, where it
    would be ignored: the window starts afresh when the circuit closes).
    """

    def __init__(
        self,
        link: RedisLink,
        settings: HealthSettings,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        probe_lease_s: float = 60.0,
        ttl_s: float = DAY_S,
    ) -> None:
        self.settings = settings
        self.link = link
        self.prefix = prefix
        self._clock = clock
        self._lease = probe_lease_s
        self._ttl_ms = math.ceil(1000 * max(ttl_s, settings.cooldown_s + probe_lease_s + 60))
        self._add = link.client.register_script(_ADD)
        self._transition = link.client.register_script(_TRANSITION)

    @classmethod
    def from_url(cls, url: str, settings: HealthSettings, **options: Any) -> RedisHealthStore:
        """A store on the Redis server at ``url`` (no I/O until the first call)."""
        return cls(RedisLink.from_url(url), settings, **options)

    def keys(self, model: str) -> tuple[str, str]:
        """The Redis keys of ``model``'s circuit and window."""
        return f"{self.prefix}:health:{model}", f"{self.prefix}:health-window:{model}"

    def admit(self, model: str) -> Admission:
        now, cooldown = self._clock(), self.settings.cooldown_s

        def claim(client: Any) -> Admission:
            for _ in range(MAX_TRIES):
                gen, b = self._read(client, model, window=False)
                answer, after = b.admit(now, cooldown, self._lease)
                if after is b or self._write(model, gen, after, window=False):
                    return answer
            return self._busy(model, _PROBE_TAKEN)

        return self.link.call(claim, ALLOWED, bad=self._unreadable(model, ALLOWED))

    def record(self, model: str, outcome: Outcome) -> None:
        now = self._clock()
        item = f"{int(outcome.ok)}:{outcome.latency_ms!r}"
        args = [item, int(outcome.ok), self.settings.window, self._ttl_ms]

        def add(client: Any) -> None:
            for _ in range(MAX_TRIES):
                added, *state = self._add(keys=self.keys(model), args=args)
                if added:  # a closed circuit: does its window open it?
                    gen, in_a_row, items = state
                    b = Breaker(outcomes=_outcomes(items.split(b",")), in_a_row=int(in_a_row))
                    after = b.judged(now, self.settings)
                    if after is not b:  # lost to another change: the circuit moved on already
                        self._write(model, gen, after, window=False)
                    return
                gen, b = self._read(client, model, window=False)
                after = b.record(outcome, now, self.settings)
                if after is b or self._write(model, gen, after, window=after.state == "closed"):
                    return
            self._busy(model, None)

        self.link.call(add, None, bad=self._unreadable(model, None))

    def health(self, model: str) -> ModelHealth:
        def read(client: Any) -> Breaker:
            return self._read(client, model, window=True)[1]

        return self.link.call(read, CLOSED, bad=self._unreadable(model, CLOSED)).snapshot(model)

    def _read(self, client: Any, model: str, *, window: bool) -> tuple[bytes, Breaker]:
        """``model``'s generation and breaker (its window read only if ``window``)."""
        circuit, outcomes = self.keys(model)
        if not window:
            return _breaker(client.hgetall(circuit), [])
        with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(circuit)
            pipe.lrange(outcomes, 0, -1)
            fields, items = pipe.execute()
        return _breaker(fields, items)

    def _write(self, model: str, gen: bytes, b: Breaker, *, window: bool) -> bool:
        """Write ``b`` (and its window, if ``window``) if the circuit is still at ``gen``."""
        fields = [
            b.state,
            b.cause or "",
            int(b.degraded),
            repr(b.opened_at),
            "" if b.probe_at is None else repr(b.probe_at),
            b.in_a_row,
        ]
        items = ["window", *(f"{int(ok)}:{ms!r}" for ok, ms in b.outcomes)] if window else []
        args = [gen, *fields, self._ttl_ms, *items]
        return bool(self._transition(keys=self.keys(model), args=args))

    def _unreadable(self, model: str, answer: T) -> Callable[[BaseException], T]:
        """What a Redis error about ``model``'s keys gives (no data for it: ``answer``), after
        a warning (once a minute per model)."""

        def bad(exc: BaseException) -> T:
            circuit, window = self.keys(model)
            self.link.complaints.warn(
                circuit,
                "semroute: Redis refused the health keys of %r (%s, %s): %s; the model is "
                "taken as healthy with no data until they are deleted",
                model,
                circuit,
                window,
                " ".join(str(exc).split())[:200],
            )
            return answer

        return bad

    @staticmethod
    def _busy(model: str, answer: T) -> T:
        log.warning("semroute: gave up changing the health of %r in Redis (too busy)", model)
        return answer


_STATES: dict[bytes, State] = {b"open": "open", b"half_open": "half_open"}


def _outcomes(items: list[bytes]) -> tuple[tuple[bool, float], ...]:
    out = []
    for item in items:
        ok, _, ms = item.partition(b":")
        try:
            out.append((ok == b"1", float(ms)))
        except ValueError:  # not written by semroute: left out
            continue
    return tuple(out)


def _breaker(fields: dict[bytes, bytes], items: list[bytes]) -> tuple[bytes, Breaker]:
    """The generation and breaker stored as ``fields`` and ``items``; what cannot be read (not
    written by semroute) is taken as a closed circuit, which the next change replaces."""
    gen = fields.get(b"g", b"0")
    try:
        state = _STATES.get(fields.get(b"s", b""), "closed")
        probe_at = fields.get(b"p", b"")
        return gen, Breaker(
            outcomes=_outcomes(items),
            in_a_row=int(fields.get(b"r", b"0")),
            state=state,
            cause=fields.get(b"c", b"").decode() or None,
            degraded=fields.get(b"d") == b"1",
            opened_at=float(fields.get(b"t", b"0")),
            probe_at=float(probe_at) if probe_at else None,
        )
    except (ValueError, UnicodeDecodeError):
        return gen, CLOSED
