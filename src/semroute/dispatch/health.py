"""Provider health: each model's recent outcomes and a circuit breaker, asked before each attempt.

Per model (a ``model_name`` of the chain), the last ``window`` outcomes are kept. The circuit
opens after ``failures_to_open`` failures in a row, or when the window holds ``min_requests`` or
more and its error rate is over ``max_error_rate``; with ``max_p95_ms`` set, a p95 latency over
it marks the model degraded, which is skipped the same way. An open (or degraded) model is passed
over until ``cooldown_s`` seconds have gone by; then exactly one request is let through as a
probe (half-open). The probe's success closes the circuit and starts a fresh window; its failure
opens it for another cool-off. A probe that never reports (its request was cancelled) is given
up after ``probe_lease_s``, so the model cannot stay half-open forever.

A request rejected by the provider as malformed (HTTP 400, 413, 422) says nothing about the
provider's health: it counts as an answer. Every other error (a timeout, a refused connection,
429, 5xx, an authentication error) counts as a failure.

The decisions are made by :class:`Breaker`, a frozen value with pure transitions; the state lives
behind :class:`HealthStore`. :class:`LocalHealthStore` keeps each model's breaker in this process
(thread- and asyncio-safe: a lock held only for in-memory work, never across an ``await``);
:class:`~semroute.dispatch.shared_health.RedisHealthStore` keeps them in Redis, shared between
processes, and moves them with the same :class:`Breaker` methods.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from semroute.config.deployments import DispatchSettings, HealthSettings

__all__ = [
    "ALLOWED",
    "CLOSED",
    "Admission",
    "Breaker",
    "Declared",
    "HealthStore",
    "LocalHealthStore",
    "ModelHealth",
    "Outcome",
    "counts_as_failure",
    "probe_lease",
]

State = Literal["closed", "open", "half_open"]

REQUEST_FAULTS = frozenset({400, 413, 422})
"""Statuses that blame the request, not the provider."""


def counts_as_failure(status: int | None) -> bool:
    """Whether an error with this HTTP status (None: no response) counts against the model."""
    return status not in REQUEST_FAULTS


def probe_lease(settings: DispatchSettings) -> float:
    """Seconds after which a probe that has not reported is given up: by then its attempt
    (every retry, each up to the timeout) must have ended, so it never will."""
    return settings.timeout * (settings.retries + 1) + 1.0


@dataclass(frozen=True)
class Outcome:
    """One attempt's result, as health sees it."""

    ok: bool
    latency_ms: float
    probe: bool = False
    """The attempt was let through an open circuit (a probe, or every model was unhealthy):
    only such an outcome moves a circuit that is not closed."""


@dataclass(frozen=True)
class Admission:
    """The answer to "may this model be tried now?"."""

    allowed: bool
    probe: bool = False
    """The one request let through a half-open circuit."""
    detail: str | None = None
    """Why not, for a person (None when allowed)."""
    retry_in_s: float = 0.0
    """Seconds until a probe may go through (0 when allowed)."""
    degraded: bool = False
    """Passed over for being slow, not for failing."""


@dataclass(frozen=True)
class ModelHealth:
    """A snapshot of one model's health."""

    model: str
    state: State
    requests: int
    """Outcomes in the window."""
    error_rate: float | None
    p95_ms: float | None
    """Of the window's answers."""
    failures_in_a_row: int
    cause: str | None
    """Why the circuit is open or half-open (None when closed)."""


class HealthStore(Protocol):
    """Where models' health lives: in this process, or shared (e.g. Redis) between gateways.

    The calls are synchronous and made from the dispatcher's event loop, so a store answers
    at once: from memory, or in one round trip to a server nearby. A store that cannot reach
    its state fails open: it admits, and drops outcomes.
    """

    def admit(self, model: str) -> Admission:
        """May ``model`` be tried now? In a half-open circuit, a yes claims the one probe."""
        ...

    def record(self, model: str, outcome: Outcome) -> None:
        """Add one attempt's outcome to ``model``'s window and move its circuit."""
        ...

    def health(self, model: str) -> ModelHealth:
        """A snapshot of ``model``'s health (closed with no requests when unknown)."""
        ...


@dataclass(frozen=True)
class Breaker:
    """One model's circuit as a value: every store keeps these and moves them only with their
    methods, so a store in this process and one shared between processes make the same
    decisions."""

    outcomes: tuple[tuple[bool, float], ...] = ()
    """The window: (answered, latency in ms), oldest first."""
    in_a_row: int = 0
    state: State = "closed"
    cause: str | None = None
    degraded: bool = False
    opened_at: float = 0.0
    probe_at: float | None = None
    """When the half-open circuit's probe was let through (None: no probe in flight)."""
    errors: int = -1
    """Failures in the window (counted from it when not given)."""

    def __post_init__(self) -> None:
        if self.errors < 0:
            object.__setattr__(self, "errors", sum(1 for ok, _ in self.outcomes if not ok))

    def admit(self, now: float, cooldown_s: float, lease_s: float) -> tuple[Admission, Breaker]:
        """The answer to "may this model be tried at ``now``?", and the breaker after it
        (``self`` when unchanged; changed only when the answer claims the probe)."""
        if self.state == "closed":
            return ALLOWED, self
        if self.state == "open":
            wait = self.opened_at + cooldown_s - now
            if wait > 0:
                detail = f"{self.cause}, retry in {math.ceil(wait)} s"
                return Admission(
                    False, detail=detail, retry_in_s=wait, degraded=self.degraded
                ), self
        elif self.probe_at is not None and now - self.probe_at < lease_s:
            refused = Admission(
                False,
                detail=f"{self.cause}; a probe request is in flight",
                retry_in_s=self.probe_at + lease_s - now,
                degraded=self.degraded,
            )
            return refused, self
        return Admission(True, probe=True), replace(self, state="half_open", probe_at=now)

    def record(self, outcome: Outcome, now: float, settings: HealthSettings) -> Breaker:
        """The breaker after one attempt's ``outcome`` (``self`` when it changes nothing)."""
        s = settings
        if self.state == "closed":
            return self.added(outcome, s.window).judged(now, s)
        # An answer to a request let in before the circuit opened does not close it.
        if not outcome.probe:
            return self
        slow = s.max_p95_ms is not None and outcome.latency_ms > s.max_p95_ms
        if outcome.ok and not (self.degraded and slow):
            return Breaker(outcomes=((True, outcome.latency_ms),))  # closed, a fresh window
        if outcome.ok:
            return self._open(
                f"degraded: the probe request took {outcome.latency_ms:.0f} ms", True, now
            )
        return self._open("circuit open: the probe request failed", False, now)

    def added(self, outcome: Outcome, window: int) -> Breaker:
        """A closed breaker with ``outcome`` added to its window (the last ``window`` kept)."""
        errors = self.errors + (not outcome.ok)
        if len(self.outcomes) >= window:  # the oldest fall out (one, unless the window shrank)
            errors -= sum(1 for ok, _ in self.outcomes[: len(self.outcomes) - window + 1] if not ok)
        outcomes = (*self.outcomes, (outcome.ok, outcome.latency_ms))[-window:]
        # Built directly: dataclasses.replace costs more than the rest of a record.
        return Breaker(outcomes, 0 if outcome.ok else self.in_a_row + 1, errors=errors)

    def judged(self, now: float, settings: HealthSettings) -> Breaker:
        """A closed breaker, opened at ``now`` if its window says it must be (else ``self``)."""
        verdict = self._verdict(settings)
        return self if verdict is None else self._open(*verdict, now)

    def snapshot(self, model: str) -> ModelHealth:
        """What :meth:`HealthStore.health` reports."""
        n = len(self.outcomes)
        rate = self.errors / n if n else None
        return ModelHealth(model, self.state, n, rate, self.p95(), self.in_a_row, self.cause)

    def p95(self) -> float | None:
        answered = sorted(ms for ok, ms in self.outcomes if ok)
        if not answered:
            return None
        return answered[max(0, math.ceil(0.95 * len(answered)) - 1)]

    def _verdict(self, s: HealthSettings) -> tuple[str, bool] | None:
        """Why a closed circuit must open now, and whether for being slow (None: it stays)."""
        n = len(self.outcomes)
        if self.in_a_row >= s.failures_to_open:
            return f"circuit open: {self.in_a_row} failures in a row", False
        if n < s.min_requests:
            return None
        if self.errors / n > s.max_error_rate:
            return f"circuit open: {self.errors} of the last {n} requests failed", False
        if s.max_p95_ms is not None:
            p95 = self.p95()
            if p95 is not None and p95 > s.max_p95_ms:
                return f"degraded: p95 latency {p95:.0f} ms over {s.max_p95_ms:.0f} ms", True
        return None

    def _open(self, cause: str, degraded: bool, now: float) -> Breaker:
        return replace(
            self, state="open", cause=cause, degraded=degraded, opened_at=now, probe_at=None
        )


ALLOWED = Admission(True)
CLOSED = Breaker()
"""A model no outcome is known of."""


class LocalHealthStore:
    """Health kept in this process, for every dispatcher sharing the object.

    ``clock`` gives monotonic seconds (tests pass a fake one). At most ``max_models`` models are
    tracked; past that, the one used longest ago is forgotten (pinned model names come from
    callers, so their number is not bounded by the config).
    """

    def __init__(
        self,
        settings: HealthSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        probe_lease_s: float = 60.0,
        max_models: int = 1024,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._lease = probe_lease_s
        self._max_models = max_models
        self._breakers: OrderedDict[str, Breaker] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, model: str) -> Admission:
        with self._lock:
            b = self._breakers.get(model)
            if b is None or b.state == "closed":  # the common case, kept cheap
                return ALLOWED
            answer, after = b.admit(self._clock(), self.settings.cooldown_s, self._lease)
            self._breakers[model] = after
            return answer

    def record(self, model: str, outcome: Outcome) -> None:
        with self._lock:
            b = self._breakers.get(model, CLOSED)
            self._breakers[model] = b.record(outcome, self._clock(), self.settings)
            self._breakers.move_to_end(model)
            while len(self._breakers) > self._max_models:
                self._breakers.popitem(last=False)

    def health(self, model: str) -> ModelHealth:
        with self._lock:
            return self._breakers.get(model, CLOSED).snapshot(model)


class Declared:
    """A health store that keeps only declared models: a name a caller pinned that the index
    does not declare is always admitted and leaves no state (callers are not bounded)."""

    def __init__(self, store: HealthStore, declared: frozenset[str]) -> None:
        self._store = store
        self._declared = declared

    def admit(self, model: str) -> Admission:
        return self._store.admit(model) if model in self._declared else ALLOWED

    def record(self, model: str, outcome: Outcome) -> None:
        if model in self._declared:
            self._store.record(model, outcome)

    def health(self, model: str) -> ModelHealth:
        return self._store.health(model)
