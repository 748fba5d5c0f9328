"""What a response says of the semantic cache: its headers and its metrics.

x-semroute-cache: hit | miss | bypass     (absent: no cache for the request's route)
x-semroute-cache-similarity: 0.9873      (a hit's: how close the request was to the cached one)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semroute.server.headers import PREFIX

if TYPE_CHECKING:
    from semroute.server.auth import Client
    from semroute.server.metrics import Metrics

__all__ = ["GLOBAL", "cache_headers", "cache_scope", "count_cache"]

GLOBAL = "global"
ANONYMOUS = "anonymous"


def cache_scope(setting: str, client: Client) -> str:
    """Whose cached answers a request may get: its key's (``server.cache_scope: key``, the
    default: a key never reads another's), or every key's (``global``)."""
    if setting == GLOBAL:
        return GLOBAL
    return f"key:{client.spend_id}" if client.spend_id is not None else ANONYMOUS


def cache_headers(answer: Any) -> dict[str, str]:
    """The cache headers of a result or stream."""
    status = getattr(answer, "cache_status", None)
    if status is None:
        return {}
    out = {PREFIX + "cache": status}
    hit = getattr(answer, "cache", None)
    if hit is not None:
        out[PREFIX + "cache-similarity"] = f"{hit.similarity:.4f}"
    return out


def count_cache(metrics: Metrics, answer: Any) -> None:
    """Count a finished request's cache lookup (and what a hit saved)."""
    status = getattr(answer, "cache_status", None)
    if status is None:
        return
    metrics.cache.labels(status).inc()
    hit = getattr(answer, "cache", None)
    if hit is not None and hit.answer.cost_usd:
        metrics.cache_saved.inc(hit.answer.cost_usd)
