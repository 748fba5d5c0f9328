"""The console's pages: what each one reads from the served index, the metrics and the log.

Everything shown is rendered on the server by Jinja2 with autoescaping on, so a log line or a
query holding markup is shown as text; the pages' scripts only fetch fragments and small JSON.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.dispatch.log import LOG_ENV
from semroute.dispatch.routing_threads import in_routing_thread
from semroute.errors import SemrouteError
from semroute.server.console.logview import FILTERS, LogFilter, entry_at, page
from semroute.server.console.routes_info import routes_summary
from semroute.server.console.traffic import LogTail, Traffic

if TYPE_CHECKING:
    from semroute.server.reload import IndexHolder
    from semroute.server.state import Loaded

__all__ = ["MAX_QUERY", "Pages", "hints_of", "log_path"]

MAX_QUERY = 8_000
"""A longer playground query is cut (the page says so)."""
TOOLS = [{"type": "function", "function": {"name": "tool", "parameters": {"type": "object"}}}]
PAGE_ROWS = 50


def log_path(loaded: Loaded) -> Path | None:
    """The decision log the served dispatcher writes ($SEMROUTE_LOG, else ``dispatch.log``)."""
    configured = os.environ.get(LOG_ENV) or loaded.dispatcher.config.settings.log
    return Path(configured).expanduser().absolute() if configured else None


def hints_of(params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The playground's routing hints from its form (task, tier, max cost, tools), and the
    problems with them (a bad max cost is ignored and named)."""
    hints: dict[str, Any] = {}
    problems = []
    for name, key in (("task", "task"), ("tier", "user_tier")):
        text = (params.get(name) or "").strip()[:200]
        if text:
            hints[key] = text
    cost = (params.get("max_cost") or "").strip()
    if cost:
        try:
            value = float(cost)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            hints["max_cost_usd"] = value
        else:
            problems.append("max cost: should be a positive number of US dollars; ignored")
    return hints, problems


class Pages:
    """The data behind each page, for the index being served."""

    def __init__(self, holder: IndexHolder, traffic: Traffic) -> None:
        self.holder = holder
        self.traffic = traffic
        self.tail = LogTail()
        self._routes: tuple[Loaded, dict[str, Any]] | None = None

    async def decision(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The playground's view of a query: the decision (``/v1/route``'s) and the form."""
        query = params.get("q") or ""
        cut = len(query) > MAX_QUERY
        query = query[:MAX_QUERY]
        hints, problems = hints_of(params)
        tools = params.get("tools") == "1"
        form = {
            "q": query,
            "task": params.get("task", "")[:200],
            "tier": params.get("tier", "")[:200],
            "max_cost": params.get("max_cost", "")[:40],
            "tools": tools,
        }
        if cut:
            problems.append(f"the query was cut to {MAX_QUERY} characters")
        if not query.strip():
            return {"form": form, "decision": None, "problems": problems}
        loaded = self.holder.current
        messages = [{"role": "user", "content": query}]
        request: dict[str, Any] = {"messages": messages}
        if tools:
            request["tools"] = TOOLS
        try:
            decision = await in_routing_thread(
                loaded.router.route, messages, request=request, **hints
            )
        except SemrouteError as exc:
            problems.append(str(exc))
            return {"form": form, "decision": None, "problems": problems}
        shown = decision.to_dict()
        shown["scores"] = sorted(shown["scores"], key=lambda s: -s["confidence"])
        refused = decision.blocked or decision.over_budget
        chain = () if refused else loaded.dispatcher.chain(decision)
        health = self.holder.shared.health
        shown["chain"] = [
            {"model": m, "state": health.health(m).state if health is not None else "closed"}
            for m in chain
        ]
        return {"form": form, "decision": shown, "problems": problems}

    async def traffic_data(self) -> dict[str, Any]:
        """The traffic page's JSON: the last minute's counts, breakers, verdicts, feedback."""
        snapshot = self.traffic.snapshot()
        loaded = self.holder.current
        path = log_path(loaded)
        quality, breakers = await asyncio.to_thread(
            lambda: (self.tail.update(path), self._breakers(loaded))
        )
        return {**snapshot, **quality, "breakers": breakers}

    def _breakers(self, loaded: Loaded) -> dict[str, str]:
        health = self.holder.shared.health
        if health is None:
            return {}
        return {name: health.health(name).state for name in loaded.catalog.models[:50]}

    async def log_page(self, params: Mapping[str, str]) -> dict[str, Any]:
        where = LogFilter.of(params)
        before_text = params.get("before", "")
        before = int(before_text) if _offset(before_text) else None
        loaded = self.holder.current
        path = log_path(loaded)
        if path is None:
            return {"path": None, "filter": where, "rows": None, "filters": FILTERS}
        found = await asyncio.to_thread(page, path, where, before, PAGE_ROWS)
        return {
            "path": str(path),
            "filter": where,
            "rows": found,
            "next": {**where.query(), "before": found.next_before}
            if found.next_before is not None
            else None,
            "filters": FILTERS,
            "routes": [r.name for r in loaded.router.routes],
            "models": loaded.catalog.models,
        }

    async def entry(self, params: Mapping[str, str]) -> dict[str, Any] | None:
        at, request_id = params.get("at", ""), params.get("id", "")
        path = log_path(self.holder.current)
        if path is None or not _offset(at) or not 0 < len(request_id) <= 200:
            return None
        found = await asyncio.to_thread(entry_at, path, int(at), request_id)
        if found is None:
            return None
        record, related = found
        return {
            "record": record,
            "related": related,
            "quality": [r for r in related if r.get("kind") == "quality"],
            "feedback": [r for r in related if r.get("kind") == "feedback"],
            "cascade": record.get("cascade") if isinstance(record.get("cascade"), dict) else None,
        }

    async def routes(self) -> dict[str, Any]:
        loaded = self.holder.current
        if self._routes is None or self._routes[0] is not loaded:
            self._routes = (loaded, await asyncio.to_thread(routes_summary, loaded.router))
        return self._routes[1]


def _offset(text: str) -> bool:
    """Whether ``text`` is a byte offset (ASCII digits, short enough to be one)."""
    return text.isascii() and text.isdigit() and len(text) <= 20
