"""Running the gateway on uvicorn: the checks made before it listens, and a clean exit.

Before anything listens: the address is free (checked before the index loads, which takes a
while), the index loads, every API key's variable is set, and an address other than loopback is
refused unless keys are configured. SIGTERM (or Ctrl+C) stops accepting connections and lets
in-flight requests and streams finish, for at most ``server.drain_timeout_s`` seconds; a stream
still running then is cut (it ends with an error event, see :mod:`semroute.server.sse`), and the
process exits 0 soon after.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from semroute.config.server import ServerSettings, is_loopback
from semroute.errors import SemrouteError, ServeError
from semroute.index.manifest import Manifest
from semroute.routing.router import INDEX_ENV, default_index_path
from semroute.server.auth import Keys
from semroute.server.state import Loaded, load

__all__ = ["FACTORY", "check", "check_address", "is_loopback", "prepare", "serve"]

log = logging.getLogger("semroute.server")

FACTORY = "semroute.server.app:app_from_env"


def prepare(
    index: Path | None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> tuple[Loaded, ServerSettings]:
    """Load the index and settle the settings (the options override `server:`); raises
    :class:`ServeError` for a key whose variable is unset, a public address without keys or an
    address in use."""
    path = Path(index or default_index_path())

    def settle(stored: ServerSettings) -> ServerSettings:
        return replace(
            stored,
            host=host or stored.host,
            port=port or stored.port,
            workers=workers or stored.workers,
        )

    try:  # the manifest alone has the settings: a busy port is found before the long load
        stored = Manifest.read(path).server_settings(path) or ServerSettings()
    except SemrouteError:
        stored = None  # loading the index says what is wrong with it (or recovers it)
    if stored is not None:
        check(settle(stored))
    loaded = load(path)
    settings = settle(loaded.settings)
    if stored is None:
        check(settings)
    return loaded, settings


def check(settings: ServerSettings) -> None:
    """Raise :class:`ServeError` for a key whose variable is unset, a public address without
    keys, or an address nothing can listen on."""
    keys = Keys(settings.keys)
    if not keys.required and not is_loopback(settings.host):
        raise ServeError(
            f"no API keys are configured, so semroute serve listens on loopback only, not "
            f"{settings.host}; add keys under `server.keys` or use --host 127.0.0.1",
            setting="keys",
        )
    check_address(settings.host, settings.port)


def check_address(host: str, port: int) -> None:
    """Raise :class:`ServeError` if nothing can listen on ``host``:``port`` (another process
    listens there, the address is not this machine's, the port is privileged)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on {host!r}: {exc.strerror}; use --host with an address of this "
            "machine",
            setting="host",
        ) from None
    for i, (family, kind, proto, _, address) in enumerate(addresses):
        with socket.socket(family, kind, proto) as sock:
            # As the server will bind: reusing a port left in TIME_WAIT, IPv6 apart from IPv4.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ServeError(
                        f"port {port} on {host} is in use by another process; stop it, or "
                        "choose another port with --port",
                        setting="port",
                    ) from None
                if exc.errno == errno.EADDRNOTAVAIL and i < len(addresses) - 1:
                    continue  # a family this machine does not have (the server skips it too)
                raise ServeError(
                    f"cannot listen on {host} port {port}: {exc.strerror}", setting="host"
                ) from None


def serve(loaded: Loaded, settings: ServerSettings) -> None:
    """Serve until SIGTERM or Ctrl+C, then drain and return."""
    import uvicorn

    from semroute.server.app import create_app, quick_exit
    from semroute.server.protocol import CoalescingProtocol

    if not settings.keys:
        log.warning(
            "semroute serve: no API keys configured (server.keys); listening on %s only, so "
            "only this machine can call it",
            settings.host,
        )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # Then the streams still running are cut (uvicorn's hint says int; a float works).
        "timeout_graceful_shutdown": settings.drain_timeout_s,
        "access_log": False,  # the decision log has one line per request
        "lifespan": "on",
        "http": CoalescingProtocol,
    }
    quick_exit()
    with _exit_quietly():
        if settings.workers > 1:
            # Each worker process loads the index itself, from the path passed down here.
            os.environ[INDEX_ENV] = str(loaded.path.absolute())
            uvicorn.run(FACTORY, factory=True, workers=settings.workers, **options)
        else:
            uvicorn.run(create_app(loaded, settings, freeze_loaded=True), **options)


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
