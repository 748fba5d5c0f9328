"""Reloading the index without a restart: when it is rebuilt (its manifest is watched) or on
SIGHUP.

The new index is loaded off the event loop while requests go on using the old one; then one
assignment makes it current. A request holds the :class:`~semroute.server.state.Loaded` it
started with, so in-flight requests finish on the old router and dispatcher and new ones get
the new ones; none fails. A new index that cannot be loaded (half-copied, corrupt, stale) is
not used: the old one keeps serving, and the log says why.

The new index's `server:` settings come with it. Those a request reads (``keys``,
``max_body_bytes``, ``allow_unlisted_models``, ``cache_scope``) apply from the next request on: a key removed from ``server.keys`` gets 401
once the reload is logged. The others (``host``, ``port``, ``workers``, ``redis_url``,
``drain_timeout_s``) are read once, at start: a new index that changes one is refused (the old
one keeps serving, with its keys) and the log names each such setting, to restart for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import fields, replace
from pathlib import Path

from semroute.config.server import ServerSettings
from semroute.errors import SemrouteError, ServeError
from semroute.server.auth import Keys
from semroute.server.state import Loaded, load, signature
from semroute.text import printable

__all__ = ["LIVE_SETTINGS", "POLL_SECONDS", "IndexHolder", "restart_needed"]

log = logging.getLogger("semroute.server")

POLL_SECONDS = 1.0
LIVE_SETTINGS = frozenset({"keys", "max_body_bytes", "allow_unlisted_models", "cache_scope"})
"""The `server:` settings a reload applies; a change to any other one needs a restart."""


def restart_needed(old: ServerSettings, new: ServerSettings) -> list[str]:
    """The settings (``server.port``, ...) that differ between ``old`` and ``new`` and that
    only a restart applies."""
    return [
        f"server.{f.name}"
        for f in fields(ServerSettings)
        if f.name not in LIVE_SETTINGS and getattr(old, f.name) != getattr(new, f.name)
    ]


class IndexHolder:
    """The index being served, and the watch that replaces it when it changes on disk."""

    def __init__(self, loaded: Loaded, settings: ServerSettings | None = None) -> None:
        self.current = loaded
        self.settings = settings or loaded.settings
        """The settings in force: the first index's, with the command line's options; a
        reload replaces its :data:`LIVE_SETTINGS`."""
        self.keys = Keys(self.settings.keys)
        """The API keys in force (:class:`ServeError` at start for a key whose variable is
        unset)."""
        self.path: Path = loaded.path
        self.shared = loaded.shared
        """The stores every index's dispatcher shares (their state survives a reload)."""
        self._lock = asyncio.Lock()
        self._failed: tuple[int, ...] | None = None
        self._retired: list[Loaded] = []
        self._pending: set[asyncio.Task[bool]] = set()
        self.reloads = 0
        """How many times a new index was put in place."""

    async def watch(self, interval: float = POLL_SECONDS) -> None:
        """Poll the manifest every ``interval`` seconds and reload when it changes (runs until
        cancelled)."""
        while True:
            await asyncio.sleep(interval)
            sig = signature(self.path)
            if sig and sig != self.current.signature and sig != self._failed:
                await self.reload("the index changed on disk")

    def reload_soon(self, why: str) -> None:
        """Start :meth:`reload` on the running loop (for a signal handler)."""
        task = asyncio.get_running_loop().create_task(self.reload(why))
        self._pending.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._pending.discard)

    async def reload(self, why: str) -> bool:
        """Load the index again and make it current; False (and the old one kept) if it
        cannot be loaded."""
        async with self._lock:
            sig = signature(self.path)
            try:
                fresh, keys = await asyncio.to_thread(self._load)
            except (SemrouteError, OSError, ValueError) as exc:  # a bad index, never a crash
                self._failed = sig
                log.warning(
                    "semroute serve: kept the index loaded before; the new one at %s cannot be "
                    "used: %s",
                    self.path,
                    printable(" ".join(str(exc).split())),
                )
                return False
            # Assigned together (no await between them): a request sees the old index with the
            # old keys or the new one with the new keys.
            old, self.current, self.keys = self.current, fresh, keys
            self.settings = replace(
                self.settings, **{name: getattr(fresh.settings, name) for name in LIVE_SETTINGS}
            )
            self._failed = None
            self.reloads += 1
            self._retire(old)
            log.info("semroute serve: reloaded the index at %s (%s)", self.path, why)
            return True

    def _load(self) -> tuple[Loaded, Keys]:
        """The new index and its keys; :class:`ServeError` when its `server:` settings change
        one that needs a restart, or name a key whose variable is unset."""
        fresh = load(self.path, self.shared)
        try:
            changed = restart_needed(self.current.settings, fresh.settings)
            if changed:
                them = "it" if len(changed) == 1 else "them"
                raise ServeError(
                    f"{', '.join(changed)} changed, and only a restart applies {them}; restart "
                    "semroute serve, or put back the value it started with"
                )
            return fresh, Keys(fresh.settings.keys)
        except ServeError:
            fresh.dispatcher.close()
            raise

    def _retire(self, old: Loaded) -> None:
        # Requests still running on the old dispatcher keep writing its log; its file is closed
        # one reload later, when no request can still hold it (a closed log reopens anyway).
        for loaded in self._retired:
            loaded.dispatcher.close()
        self._retired = [old]

    def close(self) -> None:
        for loaded in (*self._retired, self.current):
            with contextlib.suppress(OSError):
                loaded.dispatcher.close()
        self.shared.close()
