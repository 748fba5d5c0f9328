"""Reloading the index without a restart: when it is rebuilt (its manifest is watched) or on
SIGHUP.

The new index is loaded off the event loop while requests go on using the old one; then one
assignment makes it current. A request holds the :class:`~semroute.server.state.Loaded` it
started with, so in-flight requests finish on the old router and dispatcher and new ones get
the new ones; none fails. A new index that cannot be loaded (half-copied, corrupt, stale) is
not used: the old one keeps serving, and the log says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from semroute.errors import SemrouteError
from semroute.server.state import Loaded, load, signature
from semroute.text import printable

__all__ = ["POLL_SECONDS", "IndexHolder"]

log = logging.getLogger("semroute.server")

POLL_SECONDS = 1.0


class IndexHolder:
    """The index being served, and the watch that replaces it when it changes on disk."""

    def __init__(self, loaded: Loaded) -> None:
        self.current = loaded
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
                fresh = await asyncio.to_thread(load, self.path, self.shared)
            except (SemrouteError, OSError, ValueError) as exc:  # a bad index, never a crash
                self._failed = sig
                log.warning(
                    "semroute serve: kept the index loaded before; the new one at %s cannot be "
                    "used: %s",
                    self.path,
                    printable(" ".join(str(exc).split())),
                )
                return False
            old, self.current = self.current, fresh
            self._failed = None
            self.reloads += 1
            self._retire(old)
            log.info("semroute serve: reloaded the index at %s (%s)", self.path, why)
            return True

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
