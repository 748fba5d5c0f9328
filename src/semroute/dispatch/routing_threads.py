"""The threads requests are routed in, off the event loop: one per core, at a lower priority.

Routing is CPU work (an encoder pass, then the policy). More threads than cores only take turns
on them (asyncio's default executor has cores + 4), and each runnable thread also takes turns
with the event loop, which relays the streams in flight. On Linux the routing threads run at
:data:`NICE` (a lower priority than the loop's thread), so that when the cores are busy a
stream's next chunk is relayed before the next request is routed.

Measured with ``scripts/bench_gateway.py --smoke`` (2,000 requests 64 at a time, 300 streamed,
128 slow streams), two runs each, interleaved, on 2 cores: asyncio's default executor served
275 and 307 req/s with the p99 time between a long stream's chunks +3.7 and +3.2 ms over
direct's; one thread per core at the loop's priority 313 and 381 req/s, +5.8 and +2.0 ms; one
thread per core at nice 5 357 and 375 req/s, +1.6 and +2.0 ms.

With ``--workers 2`` on the same 2 cores (4 interleaved rounds of 2,000 requests 64 at a time,
``scripts/bench_gateway.py``'s servers), one routing thread per worker instead of one per core
served 559 against 550 req/s (one worker: 593), so each worker keeps one thread per core: the
cores, not the threads, are what the workers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["NICE", "in_routing_thread"]

T = TypeVar("T")

NICE = 5
"""How much lower than the process's own a routing thread's priority is (Linux only)."""

_pool: tuple[int, ThreadPoolExecutor] | None = None
"""The pool, and the process it was made in (a forked child makes its own)."""
_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            pool = ThreadPoolExecutor(
                cores or os.cpu_count() or 1, "semroute-route", initializer=_lower_priority
            )
            _pool = (os.getpid(), pool)
        return _pool[1]


def _lower_priority() -> None:
    # Linux keeps a priority per thread (on other systems the call would name a process).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + NICE)


async def in_routing_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a routing thread, with this task's context (as
    ``asyncio.to_thread`` keeps it)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_threads(), call)
