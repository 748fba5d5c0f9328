"""The traffic page's figures: a ring of per-second buckets fed by every request the metrics
count, and the shadow verdicts and feedback read from the tail of the decision log.

Adding a request is a lock and a few counter increments (the gateway does it for each request);
a snapshot merges the last minute's buckets into one small JSON object, made at most once per
:data:`SNAPSHOT_TTL` seconds however many pages poll it. So the page costs the same at 5 or 500
requests per second: the browser gets a few kB a second, never the requests.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.dispatch.log_stats import parse_line
from semroute.dispatch.quality_stats import quality_record
from semroute.server.console.logview import feedback_score

if TYPE_CHECKING:
    from semroute.decision import Decision, Skip
    from semroute.records import Attempt

__all__ = ["LogTail", "Traffic"]

RING_S = 120
WINDOW_S = 60
SAMPLES = 500
"""Latencies kept per second (a uniform sample of that second's requests)."""
MAX_NAMES = 50
"""Distinct routes or models counted per second; more are counted as ``other``."""
SNAPSHOT_TTL = 0.5
NO_ROUTE = "(no route)"
NONE = "(none)"


class _Second:
    __slots__ = (
        "blocked",
        "cost",
        "errors",
        "fallbacks",
        "latencies",
        "models",
        "over_budget",
        "priced",
        "requests",
        "routes",
        "seen",
        "t",
    )

    def __init__(self, t: int) -> None:
        self.t = t
        self.requests = self.priced = self.fallbacks = self.errors = 0
        self.blocked = self.over_budget = self.seen = 0
        self.cost = 0.0
        self.routes: Counter[str] = Counter()
        self.models: Counter[str] = Counter()
        self.latencies: list[float] = []


class Traffic:
    """Per-second counts of the requests the gateway answered (a :data:`Listener` of the
    metrics), over the last :data:`RING_S` seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ring = [_Second(-1) for _ in range(RING_S)]
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def __call__(
        self,
        endpoint: str,
        status: int,
        decision: Decision | None,
        attempts: tuple[Attempt, ...],
        skipped: tuple[Skip, ...],
        model: str | None,
        cost_usd: float | None,
    ) -> None:
        route = (decision.route or NO_ROUTE) if decision is not None else NONE
        reason = decision.reason.value if decision is not None else ""
        served = model or (attempts[-1].model if attempts and not attempts[-1].error else None)
        latency = (decision.latency_ms if decision is not None else 0.0) + sum(
            a.latency_ms for a in attempts
        )
        failed_over = any(a.error is not None for a in attempts) and status < 400
        t = int(self._clock())
        with self._lock:
            s = self._ring[t % RING_S]
            if s.t != t:
                s = self._ring[t % RING_S] = _Second(t)
            s.requests += 1
            _count(s.routes, route)
            _count(s.models, served or NONE)
            if cost_usd is not None and math.isfinite(cost_usd):
                s.cost += cost_usd
                s.priced += 1
            s.fallbacks += failed_over
            s.errors += status >= 500
            s.blocked += reason == "blocked"
            s.over_budget += reason == "over_budget" or status == 402
            s.seen += 1
            if len(s.latencies) < SAMPLES:
                s.latencies.append(latency)
            else:  # reservoir sampling: every request of the second equally likely kept
                j = random.randrange(s.seen)
                if j < SAMPLES:
                    s.latencies[j] = latency

    def snapshot(self, window: int = WINDOW_S) -> dict[str, Any]:
        """The last ``window`` seconds: a series per second and the window's totals."""
        now = self._clock()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < SNAPSHOT_TTL:
                return self._cached[1]
            t_now = int(now)
            span = range(t_now - min(window, RING_S) + 1, t_now + 1)
            seconds = [s if (s := self._ring[t % RING_S]).t == t else None for t in span]
            out = _summarise(seconds, t_now)
            self._cached = (now, out)
            return out


def _summarise(seconds: list[_Second | None], t_now: int) -> dict[str, Any]:
    routes: Counter[str] = Counter()
    models: Counter[str] = Counter()
    latencies: list[float] = []
    series: dict[str, list[float | None]] = {
        k: [] for k in ("rps", "cost_per_request", "fallback_rate", "errors", "blocked")
    }
    totals = Counter[str]()
    cost = 0.0
    for s in seconds:
        if s is None:
            for k in series:
                series[k].append(0 if k in ("rps", "errors", "blocked") else None)
            continue
        routes.update(s.routes)
        models.update(s.models)
        latencies.extend(s.latencies)
        cost += s.cost
        for name in ("requests", "priced", "fallbacks", "errors", "blocked", "over_budget"):
            totals[name] += getattr(s, name)
        series["rps"].append(s.requests)
        series["cost_per_request"].append(s.cost / s.priced if s.priced else None)
        series["fallback_rate"].append(s.fallbacks / s.requests if s.requests else None)
        series["errors"].append(s.errors)
        series["blocked"].append(s.blocked + s.over_budget)
    n = totals["requests"]
    latencies.sort()
    return {
        "time": t_now,
        "window_s": len(seconds),
        "series": series,
        "requests": n,
        "rps": round(n / max(1, len(seconds)), 2),
        # the last complete second's requests (the current one is still counting)
        "rps_last": series["rps"][-2] if len(seconds) > 1 else None,
        "routes": dict(routes.most_common(12)),
        "models": dict(models.most_common(12)),
        "cost_per_request": cost / totals["priced"] if totals["priced"] else None,
        "fallback_rate": totals["fallbacks"] / n if n else None,
        "errors": totals["errors"],
        "blocked": totals["blocked"],
        "over_budget": totals["over_budget"],
        "latency_ms": {f"p{q}": _percentile(latencies, q / 100) for q in (50, 90, 99)},
    }


def _count(counter: Counter[str], name: str) -> None:
    counter[name if name in counter or len(counter) < MAX_NAMES else "other"] += 1


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)


# --- shadow verdicts and feedback from the log --------------------------------------------------

START_BYTES = 8 << 20
"""How much of the log's end is read when the traffic page is first opened."""
STEP_BYTES = 4 << 20
"""At most this much new log is read per update."""
MAX_REQUESTS = 100_000
"""Routes and tiers of this many recent requests are kept, for the feedback about them."""


class LogTail:
    """Shadow verdicts and feedback per route and tier, read from the log as it grows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._path: Path | None = None
        self._offset = -1
        self._ident: tuple[int, int] | None = None
        self._of: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.verdicts: dict[str, dict[str, Counter[str]]] = {"routes": {}, "tiers": {}}
        self.feedback: dict[str, list[float]] = {}
        """Per route: [count, sum of scores, scored]."""

    def update(self, path: Path | None) -> dict[str, Any]:
        """Read what the log gained since the last call (at most :data:`STEP_BYTES`)."""
        with self._lock:
            if path is not None:
                self._read(path)
            return self.to_dict()

    def _read(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if path != self._path or ident != self._ident or st.st_size < self._offset:
                self._reset()  # a new or rotated log: start again
                self._path, self._ident = path, ident
                self._offset = max(0, st.st_size - START_BYTES)
                if self._offset:  # start at a line
                    head = os.pread(fd, 1 << 16, self._offset)
                    self._offset += head.find(b"\n") + 1 if b"\n" in head else len(head)
            data = os.pread(fd, min(STEP_BYTES, st.st_size - self._offset), self._offset)
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].split(b"\n"):
            raw = parse_line(line) if line else None
            if raw is not None:
                self._add(raw)

    def _add(self, raw: dict[str, Any]) -> None:
        kind = raw.get("kind")
        if kind is None:
            route, tier = raw.get("route"), raw.get("tier")
            self._of[raw["request_id"]] = (
                route if isinstance(route, str) else NO_ROUTE,
                tier if isinstance(tier, str) else None,
            )
            if len(self._of) > MAX_REQUESTS:
                self._of.popitem(last=False)
        elif kind == "quality":
            q = quality_record(raw)
            if q is None:
                return
            key = q["verdict"] if q["status"] == "judged" else q["status"]
            self._verdict("routes", q["route"] or NO_ROUTE, key)
            if q["tier"]:
                self._verdict("tiers", q["tier"], key)
        elif kind == "feedback":
            route = self._of.get(raw["request_id"], (NO_ROUTE, None))[0]
            stats = self.feedback.setdefault(route[:200], [0.0, 0.0, 0.0])
            score = feedback_score(raw)
            stats[0] += 1
            if score is not None:
                stats[1] += score
                stats[2] += 1

    def _verdict(self, scope: str, name: str, key: str) -> None:
        groups = self.verdicts[scope]
        if name in groups or len(groups) < MAX_NAMES:
            groups.setdefault(name, Counter())[key] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "quality": {
                scope: {name: dict(c) for name, c in groups.items()}
                for scope, groups in self.verdicts.items()
            },
            "feedback": {
                route: {"count": int(n), "mean_score": round(total / scored, 3) if scored else None}
                for route, (n, total, scored) in list(self.feedback.items())[:MAX_NAMES]
            },
        }
