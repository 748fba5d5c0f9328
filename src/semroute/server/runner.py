"""Running the gateway on uvicorn: the checks made before it listens, and a clean exit.

Before anything listens: the index loads, every API key's variable is set, and an address
other than loopback is refused unless keys are configured. SIGTERM (or Ctrl+C) stops accepting
connections and lets in-flight requests and streams finish, for at most
``server.drain_timeout_s`` seconds; the process then exits 0.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from semroute.config.server import ServerSettings
from semroute.errors import ServeError
from semroute.routing.router import INDEX_ENV, default_index_path
from semroute.server.auth import Keys
from semroute.server.state import Loaded, load

__all__ = ["FACTORY", "is_loopback", "prepare", "serve"]

log = logging.getLogger("semroute.server")

FACTORY = "semroute.server.app:app_from_env"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def prepare(
    index: Path | None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> tuple[Loaded, ServerSettings]:
    """Load the index and settle the settings (the options override `server:`); raises
    :class:`ServeError` for a key whose variable is unset or a public address without keys."""
    loaded = load(Path(index or default_index_path()))
    settings = replace(
        loaded.settings,
        host=host or loaded.settings.host,
        port=port or loaded.settings.port,
        workers=workers or loaded.settings.workers,
    )
    keys = Keys(settings.keys)
    if not keys.required and not is_loopback(settings.host):
        raise ServeError(
            f"no API keys are configured, so semroute serve listens on loopback only, not "
            f"{settings.host}; add keys under `server.keys` or use --host 127.0.0.1",
            setting="keys",
        )
    return loaded, settings


def serve(loaded: Loaded, settings: ServerSettings) -> None:
    """Serve until SIGTERM or Ctrl+C, then drain and return."""
    import uvicorn

    from semroute.server.app import create_app

    if not settings.keys:
        log.warning(
            "semroute serve: no API keys configured (server.keys); listening on %s only, so "
            "only this machine can call it",
            settings.host,
        )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "timeout_graceful_shutdown": math.ceil(settings.drain_timeout_s),
        "access_log": False,  # the decision log has one line per request
        "lifespan": "on",
    }
    with _exit_quietly():
        if settings.workers > 1:
            # Each worker process loads the index itself, from the path passed down here.
            os.environ[INDEX_ENV] = str(loaded.path.absolute())
            uvicorn.run(FACTORY, factory=True, workers=settings.workers, **options)
        else:
            uvicorn.run(create_app(loaded, settings), **options)


@contextmanager
def _exit_quietly() -> Iterator[None]:
    """After a graceful shutdown uvicorn raises the signal that caused it again, for the
    handler in place before it started: with the default ones the process would die of
    SIGTERM (exit -15) or raise KeyboardInterrupt instead of exiting 0."""
    handlers = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
