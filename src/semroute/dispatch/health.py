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

The state lives behind :class:`HealthStore`: :class:`LocalHealthStore` keeps it in this process
(thread- and asyncio-safe: a lock held only for in-memory work, never across an ``await``); a
store shared between processes implements the same two calls, :meth:`HealthStore.admit` and
:meth:`HealthStore.record`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from semroute.config.deployments import HealthSettings

__all__ = [
    "Admission",
    "HealthStore",
    "LocalHealthStore",
    "ModelHealth",
    "Outcome",
    "counts_as_failure",
]

State = Literal["closed", "open", "half_open"]

REQUEST_FAULTS = frozenset({400, 413, 422})
"""Statuses that blame the request, not the provider."""


def counts_as_failure(status: int | None) -> bool:
    """Whether an error with this HTTP status (None: no response) counts against the model."""
    return status not in REQUEST_FAULTS


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
    """Where models' health lives: in this process, or shared (e.g. Redis) between gateways."""

    def admit(self, model: str) -> Admission:
        """May ``model`` be tried now? In a half-open circuit, a yes claims the one probe."""
        ...

    def record(self, model: str, outcome: Outcome) -> None:
        """Add one attempt's outcome to ``model``'s window and move its circuit."""
        ...

    def health(self, model: str) -> ModelHealth:
        """A snapshot of ``model``'s health (closed with no requests when unknown)."""
        ...


@dataclass
class _Breaker:
    outcomes: deque[tuple[bool, float]]
    in_a_row: int = 0
    state: State = "closed"
    cause: str | None = None
    degraded: bool = False
    opened_at: float = 0.0
    probe_at: float | None = None
    errors: int = 0

    def add(self, ok: bool, latency_ms: float) -> None:
        if len(self.outcomes) == self.outcomes.maxlen and not self.outcomes[0][0]:
            self.errors -= 1
        self.outcomes.append((ok, latency_ms))
        self.errors += 0 if ok else 1

    def p95(self) -> float | None:
        answered = sorted(ms for ok, ms in self.outcomes if ok)
        if not answered:
            return None
        return answered[max(0, math.ceil(0.95 * len(answered)) - 1)]


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
        self._breakers: OrderedDict[str, _Breaker] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, model: str) -> Admission:
        with self._lock:
            b = self._breakers.get(model)
            if b is None or b.state == "closed":
                return Admission(True)
            now = self._clock()
            if b.state == "open":
                wait = b.opened_at + self.settings.cooldown_s - now
                if wait > 0:
                    detail = f"{b.cause}, retry in {math.ceil(wait)} s"
                    return Admission(False, detail=detail, retry_in_s=wait, degraded=b.degraded)
                b.state = "half_open"
            elif b.probe_at is not None and now - b.probe_at < self._lease:
                return Admission(
                    False,
                    detail=f"{b.cause}; a probe request is in flight",
                    retry_in_s=b.probe_at + self._lease - now,
                    degraded=b.degraded,
                )
            b.probe_at = now
            return Admission(True, probe=True)

    def record(self, model: str, outcome: Outcome) -> None:
        s = self.settings
        with self._lock:
            b = self._breaker(model)
            slow = s.max_p95_ms is not None and outcome.latency_ms > s.max_p95_ms
            if b.state != "closed":
                # An answer to a request let in before the circuit opened does not close it.
                if not outcome.probe:
                    return
                if outcome.ok and not (b.degraded and slow):
                    self._close(b)
                    b.add(True, outcome.latency_ms)
                elif outcome.ok:
                    cause = f"degraded: the probe request took {outcome.latency_ms:.0f} ms"
                    self._open(b, cause, True)
                else:
                    self._open(b, "circuit open: the probe request failed", False)
                return
            b.add(outcome.ok, outcome.latency_ms)
            b.in_a_row = 0 if outcome.ok else b.in_a_row + 1
            self._judge(b)

    def health(self, model: str) -> ModelHealth:
        with self._lock:
            b = self._breakers.get(model)
            if b is None:
                return ModelHealth(model, "closed", 0, None, None, 0, None)
            n = len(b.outcomes)
            return ModelHealth(
                model,
                b.state,
                n,
                b.errors / n if n else None,
                b.p95(),
                b.in_a_row,
                b.cause,
            )

    def _judge(self, b: _Breaker) -> None:
        s = self.settings
        n = len(b.outcomes)
        if b.in_a_row >= s.failures_to_open:
            self._open(b, f"circuit open: {b.in_a_row} failures in a row", False)
        elif n >= s.min_requests and b.errors / n > s.max_error_rate:
            self._open(b, f"circuit open: {b.errors} of the last {n} requests failed", False)
        elif s.max_p95_ms is not None and n >= s.min_requests:
            p95 = b.p95()
            if p95 is not None and p95 > s.max_p95_ms:
                cause = f"degraded: p95 latency {p95:.0f} ms over {s.max_p95_ms:.0f} ms"
                self._open(b, cause, True)

    def _open(self, b: _Breaker, cause: str, degraded: bool) -> None:
        b.state, b.cause, b.degraded = "open", cause, degraded
        b.opened_at = self._clock()
        b.probe_at = None

    @staticmethod
    def _close(b: _Breaker) -> None:
        b.outcomes.clear()
        b.errors = b.in_a_row = 0
        b.state, b.cause, b.degraded, b.probe_at = "closed", None, False, None

    def _breaker(self, model: str) -> _Breaker:
        b = self._breakers.get(model)
        if b is None:
            b = self._breakers[model] = _Breaker(deque(maxlen=self.settings.window))
            while len(self._breakers) > self._max_models:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(model)
        return b
