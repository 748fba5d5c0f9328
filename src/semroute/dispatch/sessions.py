"""Sessions: a multi-step agent run stays on one model.

With ``router.conversation.sticky``, a request that belongs to a session (the gateway names one
for every conversation, see :func:`session_key`) is sent to the model its session is on: the
session's chain is routing's answer unless a rule matches (see :mod:`semroute.routing.policy`),
and health, capability and cost still pass a model over. The model that answers becomes the
session's; when it differs from the one before, the decision log line says so and why::

    "session": {"id": "9f2c…", "model": "strong", "switched_from": "cheap",
                "why": "unhealthy: circuit open ..."}

The session → model map is bounded: :class:`LocalSessions` keeps the most recently used
``max_sessions`` in this process, each for ``session_ttl_s`` after its last answer;
:class:`RedisSessions` keeps them in Redis (``<prefix>:session:<id>``, expiring after the same
TTL) for every replica, and falls back to its own process's map while Redis is away.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from semroute.decision import Reason
from semroute.routing.policy import Held

if TYPE_CHECKING:
    from semroute.config.conversation import ConversationSettings
    from semroute.decision import Decision, Skip
    from semroute.dispatch.redis_link import RedisLink
    from semroute.records import Attempt

__all__ = [
    "SESSION_HEADER",
    "LocalSessions",
    "RedisSessions",
    "SessionRun",
    "SessionStore",
    "session_key",
]

SESSION_HEADER = "x-session-id"
"""The header a client names its session with (else one is derived from the conversation)."""
MAX_GIVEN = 200
"""The longest session name a client may give (longer ones are hashed all the same)."""


def session_key(scope: str | None, messages: Sequence[Mapping[str, Any]], given: str | None) -> str:
    """A session's id: a hash of ``scope`` (who is asking: an API key's id) and the name the
    client gave, else the conversation's first turns (its system prompt and first user
    message), which an agent run resends with every step."""
    if given is not None and given.strip():
        basis: Any = ["given", given.strip()[:MAX_GIVEN]]
    else:
        basis = ["derived", _first_turns(messages)]
    text = json.dumps([scope or "", basis], ensure_ascii=False, default=str, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _first_turns(messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The system (or developer) messages before the first user message, and that message."""
    turns: list[Any] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            turns.append([role, message.get("content")])
        elif role == "user":
            turns.append([role, message.get("content")])
            break
    return turns


class SessionStore(Protocol):
    """Where each session's model is kept."""

    def get(self, session: str) -> Held | None:
        """The chain ``session`` is on (None: no such session, or it expired)."""
        ...

    def put(self, session: str, held: Held) -> None:
        """Keep ``session`` on ``held`` (for the TTL from now)."""
        ...


class LocalSessions:
    """Sessions in this process: the ``max_sessions`` most recently used, each for ``ttl_s``
    seconds after it was last kept."""

    def __init__(
        self, max_sessions: int, ttl_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        self._held: OrderedDict[str, tuple[float, Held]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: ConversationSettings) -> LocalSessions:
        return cls(settings.max_sessions, settings.session_ttl_s)

    def get(self, session: str) -> Held | None:
        with self._lock:
            found = self._held.get(session)
            if found is None:
                return None
            if found[0] <= self._clock():
                del self._held[session]
                return None
            self._held.move_to_end(session)
            return found[1]

    def put(self, session: str, held: Held) -> None:
        with self._lock:
            self._held[session] = (self._clock() + self.ttl_s, held)
            self._held.move_to_end(session)
            while len(self._held) > self.max_sessions:
                self._held.popitem(last=False)

    def __len__(self) -> int:
        return len(self._held)


class RedisSessions:
    """Sessions in Redis, shared by replicas: one JSON value per session, expiring ``ttl_s``
    after its last answer. While Redis cannot be reached (see
    :class:`~semroute.dispatch.redis_link.RedisLink`), ``local`` keeps them in this process; a
    value that is not a session is no session (logged at most once a minute)."""

    def __init__(self, link: RedisLink, local: LocalSessions, *, prefix: str = "semroute") -> None:
        self.link = link
        self.local = local
        self.prefix = prefix

    def _key(self, session: str) -> str:
        return f"{self.prefix}:session:{session}"

    def get(self, session: str) -> Held | None:
        key = self._key(session)
        missing = object()
        raw = self.link.call(lambda r: r.get(key), missing, bad=lambda exc: self._bad(key, exc))
        if raw is missing:
            return self.local.get(session)
        if raw is None:
            return None
        held = _parse(raw)
        if held is None:
            self._bad(key, ValueError("not a session"))
        return held

    def put(self, session: str, held: Held) -> None:
        self.local.put(session, held)
        value = json.dumps({"chain": list(held.chain), "route": held.route})
        ttl = max(1, round(self.local.ttl_s))
        key = self._key(session)
        self.link.call(lambda r: r.set(key, value, ex=ttl), None, bad=lambda e: self._bad(key, e))

    def _bad(self, key: str, exc: BaseException) -> None:
        self.link.complaints.warn(
            key, "semroute: Redis key %s is not a session (%s); it is ignored", key, exc
        )


def _parse(raw: Any) -> Held | None:
    try:
        data = json.loads(raw)
        chain = tuple(data["chain"])
        route = data.get("route")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not chain or not all(isinstance(m, str) and m for m in chain):
        return None
    return Held(chain, route if isinstance(route, str) else None)


@dataclass
class SessionRun:
    """One request of a session: the chain the session was on when it came (None: a new
    session), and where the answer's model is kept."""

    key: str
    held: Held | None
    store: SessionStore

    @classmethod
    def open(
        cls, store: SessionStore | None, key: object, known: Collection[str]
    ) -> SessionRun | None:
        """The run for session ``key`` (None: no store, or no key). A held chain naming a model
        the index no longer declares (it was rebuilt) starts the session afresh."""
        if store is None or key is None:
            return None
        if not isinstance(key, str) or not key:
            raise TypeError("session= must be a non-empty string")
        held = store.get(key)
        if held is not None and not all(m in known for m in held.chain):
            held = None
        return cls(key, held, store)

    def settle(
        self,
        decision: Decision,
        answered: str | None,
        chain: Sequence[str],
        attempts: Sequence[Attempt],
        skipped: Sequence[Skip],
    ) -> dict[str, Any]:
        """Keep the session on ``answered`` (the model that answered, None: none did) and the
        log line's ``session`` field: its id, its model, and when that changed, from what and
        why."""
        field: dict[str, Any] = {"id": self.key, "model": answered}
        if answered is None:
            return field
        before = self.held.chain[0] if self.held is not None else None
        rest = (m for m in (*chain, *(self.held.chain if self.held else ())) if m != answered)
        # A decision kept on the session carries the session's route (see routing.policy).
        self.store.put(self.key, Held((answered, *dict.fromkeys(rest)), decision.route))
        if before is not None and before != answered:
            field["switched_from"] = before
            field["why"] = _why(before, decision, attempts, skipped)
        return field


def _why(
    before: str, decision: Decision, attempts: Sequence[Attempt], skipped: Sequence[Skip]
) -> str:
    """Why a session left ``before``: a rule, a check or health passing it over, its failure."""
    if decision.reason == Reason.RULE:
        return f"rule {decision.rule!r} chose {decision.model!r}"
    for skip in skipped:
        if skip.model == before:
            return f"{skip.reason}: {skip.detail}"
    for attempt in attempts:
        if attempt.model == before and attempt.error is not None:
            return f"failed: {attempt.error}"[:300]
    return f"routing chose {decision.model!r} ({decision.reason.value})"
