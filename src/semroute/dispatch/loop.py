"""A private event loop in a daemon thread, for the synchronous entry points.

Synchronous calls run semroute's asynchronous path on this loop. One path means one behaviour to
prove; and LiteLLM's own synchronous streaming re-requests a stream that breaks before its first
chunk without end, where its asynchronous path gives up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")


class BackgroundLoop:
    """An event loop running in its own daemon thread, started on the first :meth:`run`.

    Every dispatcher of a process uses the one :meth:`shared` loop: LiteLLM keeps its HTTP
    clients (and their connections) per event loop, so one loop shares them all. It runs until
    the process exits; stopping it would leave those clients' connections open, and LiteLLM has
    no way to close the clients of one loop.
    """

    _shared: ClassVar[BackgroundLoop | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "semroute-dispatch") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> BackgroundLoop:
        """The process's loop (its thread starts on the first :meth:`run`)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but its own)."""
        if self._loop is not None and _running_loop() is self._loop:
            coro.close()
            raise RuntimeError(
                "a synchronous dispatch call from dispatch's own loop; await acomplete"
            )
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop without waiting for it (from any thread, its own too)."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name=self._name, daemon=True
                ).start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
