"""Drift: whether the traffic a decision log holds still looks like the calibration data.

Per route, the population stability index (see :mod:`semroute.index.drift`) of the logged best
confidences of the requests whose best route it is, against the same on the calibration data
(stored in the index by ``semroute calibrate``); and the share of requests that went to the
default model against the calibration data's. A route's ``alarm`` is set when its PSI is over
:data:`~semroute.index.drift.PSI_ALARM` (0.2) with at least :data:`MIN_REQUESTS` requests
logged for it; the default share's when it moved by more than :data:`SHARE_ALARM` (0.15) over
at least :data:`MIN_REQUESTS` requests. The report's ``alarm`` is any of them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.index.drift import PSI_ALARM, DriftReference, bin_of, psi

if TYPE_CHECKING:
    from semroute.tuning.logread import Logged

__all__ = ["MIN_REQUESTS", "SHARE_ALARM", "drift_report"]

MIN_REQUESTS = 30
SHARE_ALARM = 0.15
SEMANTIC = frozenset({"matched", "below_threshold", "ambiguous", "sticky", "rule"})
"""The reasons whose decision came from the semantic scores (not pinned, empty or blocked)."""


def drift_report(reference: DriftReference, requests: list[Logged]) -> dict[str, Any]:
    """The ``drift`` of `semroute stats --json`."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(reference.bins))
    scored = to_default = 0
    for r in requests:
        if r.best is None or r.reason not in SEMANTIC:
            continue
        scored += 1
        to_default += r.route is None
        counts[r.best[0]][bin_of(r.best[1], reference.bins)] += 1
    routes = {}
    for name in sorted(set(reference.routes) | set(counts)):
        window = counts.get(name, np.zeros(reference.bins))
        value = psi(reference.counts(name), window)
        n = int(window.sum())
        routes[name] = {
            "psi": round(value, 4) if value is not None else None,
            "requests": n,
            "reference_rows": int(reference.counts(name).sum()),
            "alarm": bool(value is not None and value > PSI_ALARM and n >= MIN_REQUESTS),
        }
    share = to_default / scored if scored else None
    moved = share is not None and abs(share - reference.default_share) > SHARE_ALARM
    share_alarm = bool(moved and scored >= MIN_REQUESTS)
    return {
        "statistic": "psi",
        "psi_alarm": PSI_ALARM,
        "min_requests": MIN_REQUESTS,
        "requests": scored,
        "routes": routes,
        "default_share": {
            "logged": round(share, 4) if share is not None else None,
            "calibration": reference.default_share,
            "alarm": share_alarm,
        },
        "alarm": share_alarm or any(v["alarm"] for v in routes.values()),
    }
