"""Per-key daily budgets: a key with ``budget_usd_per_day`` is refused (402) once what its
requests cost since midnight UTC reaches it.

The check is made before a request is routed, and the cost is added when the answer is known,
so requests already under way when the budget runs out still finish: a key can overshoot its
budget by what its requests in flight at that moment cost, on every replica together (each
of them was let in while the spend was under the budget). Spend lives in a
:class:`~semroute.server.spend.SpendStore`: this process's by default, Redis when replicas
share it; a key is known there by :func:`~semroute.server.spend.key_id`, never by itself.
"""

from __future__ import annotations

import math

from semroute.server.auth import Client
from semroute.server.errors import ApiError
from semroute.server.spend import SpendStore

__all__ = ["charge", "check_budget"]


def check_budget(store: SpendStore, client: Client) -> None:
    """Raise 402 when ``client``'s key has spent its daily budget."""
    if client.spend_id is None or client.budget_usd_per_day is None:
        return
    spent = store.spent_today(client.spend_id)
    if spent >= client.budget_usd_per_day:
        if math.isinf(spent):
            message = (
                f"the spend of the API key {client.key} today cannot be read (the server log "
                "says why); its requests are refused until it can"
            )
        else:
            message = (
                f"the API key {client.key} has spent ${spent:.6g} today, its daily budget is "
                f"${client.budget_usd_per_day:.6g}; it resets at midnight UTC"
            )
        raise ApiError(402, message, type="insufficient_quota", code="over_daily_budget")


def charge(store: SpendStore, client: Client, usd: float | None) -> None:
    """Add an answer's cost to its key's spend (keys without a budget are not tracked)."""
    if client.spend_id is not None and client.budget_usd_per_day is not None and usd:
        store.add(client.spend_id, usd)
