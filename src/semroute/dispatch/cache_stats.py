"""What `semroute stats` says of the semantic cache: lookups, hits, hit rate, what hits saved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["cache_summary"]


def cache_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """From log records with ``cache`` (``hit``, ``miss``, ``bypass`` or None) and
    ``cache_saved_usd``: the counts, the hit rate (hits over lookups: hits and misses) and the
    USD the hits saved (what their answers had cost). Empty when no request met a cache."""
    counts = {"hit": 0, "miss": 0, "bypass": 0}
    saved = 0.0
    for r in records:
        status = r.get("cache")
        if status in counts:
            counts[status] += 1
            if status == "hit":
                saved += r.get("cache_saved_usd") or 0.0
    if not any(counts.values()):
        return {}
    lookups = counts["hit"] + counts["miss"]
    return {
        "lookups": lookups,
        "hits": counts["hit"],
        "bypassed": counts["bypass"],
        "hit_rate": round(counts["hit"] / lookups, 4) if lookups else None,
        "saved_usd": saved,
    }
