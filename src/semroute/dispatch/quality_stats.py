"""Cost and quality per route, rule and tier, from the decision log: what `semroute stats`
shows beside its request counts.

Per group: requests, average cost, the saving against sending every request to the default
model (each request's ``default_cost_usd``: its tokens at the default model's prices, logged at
request time), how often a cascade escalated, and the shadow verdicts (win / tie / loss of the
answers against the reference model's) from the log's quality records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import semroute.text as text

__all__ = ["QUALITY_STATUSES", "VERDICTS", "GroupQuality", "group_quality", "quality_record"]

QUALITY_STATUSES = ("judged", "dropped", "failed")
VERDICTS = ("win", "tie", "loss")
SCOPES = (("routes", "route"), ("rules", "rule"), ("tiers", "tier"))
NO_ROUTE = "(no route)"
_LARGEST = 1e300


@dataclass
class GroupQuality:
    """One route's, rule's or tier's requests and shadow verdicts."""

    requests: int = 0
    cost_usd: float = 0.0
    priced: int = 0
    compared_cost_usd: float = 0.0
    """Cost of the requests whose default-model cost is known too."""
    default_cost_usd: float = 0.0
    compared: int = 0
    cascades: int = 0
    escalated: int = 0
    shadow: dict[str, int] = field(default_factory=dict)
    shadow_cost_usd: float = 0.0

    def add_request(self, r: Mapping[str, Any]) -> None:
        self.requests += 1
        cost, default = r["cost_usd"], r["default_cost_usd"]
        if cost is not None:
            self.cost_usd += cost
            self.priced += 1
            if default is not None:
                self.compared += 1
                self.compared_cost_usd += cost
                self.default_cost_usd += default
        cascade = r.get("cascade")
        if isinstance(cascade, dict):
            self.cascades += 1
            self.escalated += cascade.get("escalated") is True

    def add_quality(self, q: Mapping[str, Any]) -> None:
        key = q["verdict"] if q["status"] == "judged" else q["status"]
        self.shadow[key] = self.shadow.get(key, 0) + 1
        self.shadow_cost_usd += q["cost_usd"] or 0.0

    def to_dict(self) -> dict[str, Any]:
        judged = sum(self.shadow.get(v, 0) for v in VERDICTS)
        saving = self.default_cost_usd - self.compared_cost_usd
        return {
            "requests": self.requests,
            "avg_cost_usd": _ratio(self.cost_usd, self.priced),
            "avg_default_cost_usd": _ratio(self.default_cost_usd, self.compared),
            "saving_usd": _finite(saving) if self.compared else None,
            "saving_share": _ratio(saving, self.default_cost_usd, 4),
            "cascade_requests": self.cascades,
            "escalated": self.escalated,
            "escalation_rate": _ratio(self.escalated, self.cascades, 4),
            "shadow": {
                "judged": judged,
                **{v: self.shadow.get(v, 0) for v in VERDICTS},
                **{f"{v}_rate": _ratio(self.shadow.get(v, 0), judged, 4) for v in VERDICTS},
                "dropped": self.shadow.get("dropped", 0),
                "failed": self.shadow.get("failed", 0),
                "cost_usd": _finite(self.shadow_cost_usd),
            },
        }


def group_quality(
    requests: Iterable[Mapping[str, Any]], quality: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, GroupQuality]]:
    """``{"routes" | "rules" | "tiers": {name: GroupQuality}}``, groups by most requests. A
    request without a route counts under ``(no route)``; rules and tiers list only requests that
    had one."""
    out: dict[str, dict[str, GroupQuality]] = {plural: {} for plural, _ in SCOPES}
    for r in requests:
        for plural, key in _groups(r):
            out[plural].setdefault(key, GroupQuality()).add_request(r)
    for q in quality:
        for plural, key in _groups(q):
            out[plural].setdefault(key, GroupQuality()).add_quality(q)
    return {
        k: dict(sorted(v.items(), key=lambda kv: (-kv[1].requests, kv[0]))) for k, v in out.items()
    }


def _groups(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = [("routes", record["route"] or NO_ROUTE)]
    found += [(plural, record[key]) for plural, key in SCOPES[1:] if record[key]]
    return found


def quality_record(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields stats reads from a quality record, or None when one has the wrong type: a
    ``status`` other than judged / dropped / failed, a judged ``verdict`` other than win / tie /
    loss, a ``route``, ``rule`` or ``tier`` that is not text or null, a ``cost_usd`` that is not
    a finite number or null."""
    status, verdict = raw.get("status"), raw.get("verdict")
    if status not in QUALITY_STATUSES or (status == "judged") != (verdict in VERDICTS):
        return None
    out: dict[str, Any] = {"status": status, "verdict": verdict}
    for key in ("route", "rule", "tier"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            return None
        out[key] = text.clean(value) if value is not None else None
    cost = raw.get("cost_usd")
    if cost is not None and not _is_number(cost):
        return None
    out["cost_usd"] = float(cost) if cost is not None else None
    return out


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return -_LARGEST <= value <= _LARGEST


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ratio(part: float, whole: float, digits: int | None = None) -> float | None:
    if not whole:
        return None
    value = part / whole
    if not math.isfinite(value):
        return None
    return round(value, digits) if digits is not None else value
