"""The gateway's Prometheus metrics (``GET /metrics``), in a registry of the app's own.

    semroute_requests_total{endpoint, route, model, rule, reason, status}
    semroute_routing_seconds                 routing latency (signals, scores, rules, checks)
    semroute_upstream_seconds{model, outcome}  each attempt at a model (outcome: ok, error)
    semroute_cost_usd_total{model}
    semroute_fallbacks_total{model}          a model failed and the next of its chain was tried
    semroute_skips_total{model, reason}      a model passed over (capability, over_budget,
                                             unhealthy)
    semroute_breaker_state{model}            0 closed, 1 half-open, 2 open (read when scraped)
    semroute_requests_in_flight
    semroute_cache_requests_total{result}    semantic cache lookups: hit, miss, bypass (not
                                             cacheable); hit rate = hit / (hit + miss)
    semroute_cache_saved_usd_total           what the answers served from the cache had cost
    semroute_route_confidence{route}         the best route's confidence of each routed request
    semroute_drift{route}                    population stability index of those confidences
                                             against the index's calibration data (read when
                                             scraped; see semroute.index.drift); absent
                                             without a calibration reference

Label values come from the index (routes, rules, declared models); a model name a client
pinned that the index does not know is counted as ``other``, so clients cannot grow the
number of series without bound. With several worker processes, each answers for itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from semroute.index.drift import BINS, DriftReference, bin_of, psi

if TYPE_CHECKING:
    from semroute.decision import Decision, Skip
    from semroute.dispatch.health import HealthStore
    from semroute.records import Attempt

__all__ = ["CONTENT_TYPE", "Listener", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_ROUTING_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)
Listener = Callable[
    [
        str,
        int,
        "Decision | None",
        "tuple[Attempt, ...]",
        "tuple[Skip, ...]",
        str | None,
        float | None,
    ],
    None,
]
"""Called with (endpoint, status, decision, attempts, skipped, model, cost) per request."""
_CONFIDENCE_BUCKETS = tuple((i + 1) / BINS for i in range(BINS))
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Counters and histograms of one app. ``models`` gives the health store and the model
    names whose breaker state is reported (read at each scrape, so a reload shows)."""

    def __init__(
        self,
        models: Callable[[], tuple[HealthStore | None, Iterable[str]]],
        drift: Callable[[], DriftReference | None] = lambda: None,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "semroute_requests",
            "Requests answered, by endpoint, route, model, rule, reason and HTTP status.",
            ["endpoint", "route", "model", "rule", "reason", "status"],
            registry=r,
        )
        self.routing = Histogram(
            "semroute_routing_seconds",
            "Time to route a request.",
            buckets=_ROUTING_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            "semroute_upstream_seconds",
            "Time of each attempt at a model.",
            ["model", "outcome"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "semroute_cost_usd", "Cost of the answers (USD).", ["model"], registry=r
        )
        self.fallbacks = Counter(
            "semroute_fallbacks",
            "Attempts that failed over to the next model.",
            ["model"],
            registry=r,
        )
        self.skips = Counter(
            "semroute_skips", "Models passed over without a try.", ["model", "reason"], registry=r
        )
        self.in_flight = Gauge(
            "semroute_requests_in_flight", "Requests being answered.", registry=r
        )
        self.cache = Counter(
            "semroute_cache_requests",
            "Semantic cache lookups by result (hit, miss, bypass).",
            ["result"],
            registry=r,
        )
        self.cache_saved = Counter(
            "semroute_cache_saved_usd",
            "What the answers served from the semantic cache had cost (USD).",
            registry=r,
        )
        self.confidence = Histogram(
            "semroute_route_confidence",
            "The best route's confidence of each routed request, by that route.",
            ["route"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.drift = _Drift(drift)
        r.register(_Breakers(models))
        self.listeners: list[Listener] = []
        """Told of each request :meth:`observe` counts (the console's traffic page)."""
        r.register(self.drift)

    def observe(
        self,
        endpoint: str,
        status: int,
        decision: Decision | None,
        label: Callable[[str], str],
        *,
        attempts: Iterable[Attempt] = (),
        skipped: Iterable[Skip] = (),
        model: str | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Count one finished request (``label`` maps a model name to its label value)."""
        attempts, skipped = tuple(attempts), tuple(skipped)
        for listen in self.listeners:
            listen(endpoint, status, decision, attempts, skipped, model, cost_usd)
        refused = decision is not None and (decision.blocked or decision.over_budget)
        served = label(model or (decision.model if decision and not refused else ""))
        self.requests.labels(
            endpoint,
            (decision.route or "") if decision else "",
            served if (decision and not refused) or model else "",
            (decision.rule or "") if decision else "",
            decision.reason.value if decision else "",
            str(status),
        ).inc()
        if decision is not None and decision.latency_ms > 0:
            self.routing.observe(decision.latency_ms / 1000)
        if decision is not None and decision.reason.value in _SCORED and decision.scores:
            best = decision.scores[0]
            self.confidence.labels(best.route).observe(best.confidence)
            self.drift.add(best.route, best.confidence)
        for a in attempts:
            name = label(a.model)
            self.upstream.labels(name, "error" if a.error else "ok").observe(a.latency_ms / 1000)
            if a.error is not None:
                self.fallbacks.labels(name).inc()
        for s in skipped:
            self.skips.labels(label(s.model), s.reason).inc()
        if cost_usd:
            self.cost.labels(served).inc(cost_usd)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Breakers:
    """``semroute_breaker_state``: each known model's circuit, asked of the health store."""

    def __init__(self, models: Callable[[], tuple[HealthStore | None, Iterable[str]]]) -> None:
        self._models = models

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "semroute_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["model"],
        )

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "semroute_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["model"],
        )
        health, names = self._models()
        if health is not None:
            for name in names:
                family.add_metric([name], STATES.get(health.health(name).state, 0.0))
        yield family


_SCORED = frozenset({"matched", "below_threshold", "ambiguous", "sticky", "rule"})


class _Drift:
    """``semroute_drift``: per route of the reference, the PSI of the confidences seen since the
    process started against the calibration data's."""

    def __init__(self, reference: Callable[[], DriftReference | None]) -> None:
        self._reference = reference
        self._counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def add(self, route: str, confidence: float) -> None:
        with self._lock:
            counts = self._counts.get(route)
            if counts is None:
                if len(self._counts) >= MAX_DRIFT_ROUTES:
                    return
                counts = self._counts[route] = [0] * BINS
            counts[bin_of(confidence, BINS)] += 1

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("semroute_drift", _DRIFT_HELP, labels=["route"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("semroute_drift", _DRIFT_HELP, labels=["route"])
        reference = self._reference()
        if reference is not None and reference.bins == BINS:
            with self._lock:
                seen = {k: list(v) for k, v in self._counts.items()}
            for route in sorted(reference.routes):
                value = psi(reference.counts(route), seen.get(route, [0] * BINS))
                if value is not None:
                    family.add_metric([route], value)
        yield family


MAX_DRIFT_ROUTES = 10_000
_DRIFT_HELP = "Population stability index of the routed confidences against calibration."
