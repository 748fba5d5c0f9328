"""Per-key rate limits: ``rpm`` (requests) and ``tpm`` (estimated tokens) per minute.

    server:
      keys:
        - {key: os.environ/APP_KEY, rpm: 60, tpm: 100000}

A key's requests are counted in fixed one-minute windows (UTC minutes, the same on every
replica). A request is let in only if, counted, it keeps the key within both limits; one that
would not is refused with 429 in OpenAI's shape (``rate_limit_exceeded``) and a ``Retry-After``
header (the seconds until the window ends), and is not counted. Tokens are estimated before the
request is routed: its messages' tokens (see :func:`semroute.routing.signals.estimate_tokens`)
plus ``max_tokens`` (else the router's ``expected_output_tokens``) times ``n``. A request whose
estimate alone is over ``tpm`` is refused at once (waiting would not help).

With ``server.redis_url``, the counts are shared by every replica: one Lua script checks and
counts both limits atomically on ``<prefix>:rate:<key_id>:<minute>`` keys that expire after two
minutes. Without Redis, and while Redis cannot be reached, each process counts for itself: a
key's limit then holds per process (never unlimited). A count in Redis that is not a number
refuses the key's requests (logged once a minute) until the key is repaired or expires; the
429's ``type`` names the count that cannot be read (``requests`` or ``tokens``).

A fixed window lets a client send up to twice a limit across a window's end (at the end of one
minute and the start of the next); a sliding window would not, at the price of a sorted set
per key. The limits count requests let in, whatever became of them (a cache hit included).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semroute.dispatch.redis_link import RedisLink
from semroute.dispatch.shared_health import DEFAULT_PREFIX
from semroute.routing.signals import Hints, extract
from semroute.server.auth import Client
from semroute.server.errors import ApiError

__all__ = ["LocalLimiter", "RateLimiter", "RedisLimiter", "Verdict", "check_rate", "estimate"]

WINDOW_S = 60
MAX_KEYS = 100_000
"""The local limiter forgets past windows; this bounds the keys of the current one."""


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go in; when not, which limit it hit and the seconds to wait."""

    allowed: bool
    limit: str = ""
    """``rpm``, ``tpm``, or ``unreadable`` (a count in Redis is not a number)."""
    retry_after_s: int = 0
    used: int = 0
    count: str = ""
    """With ``unreadable``: the count that cannot be read, ``requests`` or ``tokens``."""


class RateLimiter:
    """Where rate counts are kept (see :class:`LocalLimiter`, :class:`RedisLimiter`)."""

    def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        """Count one request of ``tokens`` for ``key_id`` if it fits both limits."""
        raise NotImplementedError


def _window(now: float) -> tuple[int, int]:
    """The minute ``now`` falls in, and the whole seconds until it ends (at least 1)."""
    minute = int(now // WINDOW_S)
    return minute, max(1, math.ceil((minute + 1) * WINDOW_S - now))


def _verdict(
    used: tuple[int, int], rpm: int | None, tpm: int | None, tokens: int, wait: int
) -> Verdict:
    requests, spent = used
    if rpm is not None and requests + 1 > rpm:
        return Verdict(False, "rpm", wait, requests)
    if tpm is not None and spent + tokens > tpm:
        return Verdict(False, "tpm", wait, spent)
    return Verdict(True)


class LocalLimiter(RateLimiter):
    """Counts in this process. ``clock`` gives Unix seconds (tests pass a fake one)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minute = -1
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        minute, wait = _window(self._clock())
        with self._lock:
            if minute != self._minute:
                self._minute, self._counts = minute, {}
            used = self._counts.get(key_id, (0, 0))
            verdict = _verdict(used, rpm, tpm, tokens, wait)
            if verdict.allowed:
                if key_id not in self._counts and len(self._counts) >= MAX_KEYS:
                    self._counts.clear()
                self._counts[key_id] = (used[0] + 1, used[1] + tokens)
            return verdict


# KEYS: requests, tokens. ARGV: rpm (0: none), tpm (0: none), tokens, ttl. Returns
# {1} when counted, {0, "rpm"|"tpm", used} when not; a count that is not an integer INCR can
# add to (or a key of another type) errors, naming its key.
_TAKE = """
local function count(key)
  local v = redis.pcall('GET', key)
  if not v then return 0 end
  if type(v) ~= 'string' or not string.match(v, '^%-?%d+$') or #v > 18 then
    error('not a count: ' .. key)
  end
  return tonumber(v)
end
local r = count(KEYS[1])
local t = count(KEYS[2])
local rpm, tpm, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm > 0 and r + 1 > rpm then return {0, 'rpm', r} end
if tpm > 0 and t + n > tpm then return {0, 'tpm', t} end
redis.call('INCR', KEYS[1])
redis.call('INCRBY', KEYS[2], n)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {1}
"""


class RedisLimiter(RateLimiter):
    """Counts in Redis, shared by replicas; in this process while Redis cannot be reached."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self._clock = clock
        self.local = LocalLimiter(clock=clock)
        """What counts while Redis is away."""
        self._script: Any = None

    def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        minute, wait = _window(self._clock())
        keys = [f"{self.prefix}:rate:{key_id}:{minute}:{kind}" for kind in ("requests", "tokens")]
        args = [rpm or 0, tpm or 0, tokens, 2 * WINDOW_S]

        def run(client: Any) -> Verdict:
            if self._script is None:
                self._script = client.register_script(_TAKE)
            out = self._script(keys=keys, args=args, client=client)
            if int(out[0]) == 1:
                return Verdict(True)
            limit = out[1].decode() if isinstance(out[1], bytes) else str(out[1])
            return Verdict(False, limit, wait, int(out[2]))

        def bad(exc: BaseException) -> Verdict:
            # The script's error names the key it could not read.
            which = 1 if keys[1] in str(exc) else 0
            self.link.complaints.warn(
                keys[which],
                "semroute: a rate count in Redis at %s cannot be read (%s); the key's requests "
                "are refused until it expires or is deleted",
                keys[which],
                " ".join(str(exc).split())[:200],
            )
            return Verdict(False, "unreadable", wait, count=("requests", "tokens")[which])

        verdict = self.link.call(run, None, bad=bad)
        return verdict if verdict is not None else self.local.take(key_id, rpm, tpm, tokens)


def estimate(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], expected_output: int
) -> int:
    """The tokens a request is counted for: its messages' estimate plus its output's."""
    signals = extract(messages, dict(params), Hints())
    return signals.input_tokens + (signals.max_tokens or expected_output) * max(1, signals.n)


def check_rate(
    limiter: RateLimiter,
    client: Client,
    tokens: Callable[[], int],
) -> None:
    """Count a request of ``client``'s key; 429 (with ``retry_after_s``) when it is over a
    limit. ``tokens`` is asked only when the key has a ``tpm``."""
    rpm, tpm = client.rpm, client.tpm
    if client.spend_id is None or (rpm is None and tpm is None):
        return
    n = tokens() if tpm is not None else 0
    if tpm is not None and n > tpm:
        raise ApiError(
            429,
            f"this request is estimated at {n} tokens (prompt and max_tokens), more than the "
            f"API key {client.key}'s limit of {tpm} tokens per minute; send a shorter request "
            "or a lower max_tokens",
            type="tokens",
            code="rate_limit_exceeded",
        )
    verdict = limiter.take(client.spend_id, rpm, tpm, n)
    if verdict.allowed:
        return
    if verdict.limit == "unreadable":
        unit = verdict.count or "requests"
        message = (
            f"the count of {unit} per minute of the API key {client.key} cannot be read (the "
            "server log says why); its requests are refused until it can"
        )
    else:
        limit, unit = (rpm, "requests") if verdict.limit == "rpm" else (tpm, "tokens")
        message = (
            f"rate limit reached for the API key {client.key}: {verdict.used} {unit} of "
            f"{limit} per minute used; retry in {verdict.retry_after_s} s"
        )
    raise ApiError(
        429,
        message,
        type=unit,
        code="rate_limit_exceeded",
        headers={"retry-after": str(verdict.retry_after_s)},
    )
