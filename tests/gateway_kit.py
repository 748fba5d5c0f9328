"""A gateway over models that live on a FakeProvider, for the gateway tests: the index, a real
uvicorn server on 127.0.0.1 (in a thread, or a `semroute serve` process), and its clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from semroute.server.app import create_app
from semroute.server.protocol import CoalescingProtocol
from semroute.server.state import load
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.provider_kit import routes_spec


def spec(
    folder: Path,
    provider: FakeProvider,
    *,
    server: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    router: dict[str, Any] | None = None,
    dispatch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dispatch tests' routes (see :func:`tests.provider_kit.routes_spec`), with rules,
    router settings and a `server:` block."""
    out = routes_spec(folder, provider, dispatch=dispatch)
    out["router"].update(router or {})
    if rules:
        out["rules"] = rules
    if server is not None:
        out["server"] = server
    return out


def build(folder: Path, provider: FakeProvider, **kw: Any) -> Path:
    """Write the route files and build their index; returns the index folder."""
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(
        yaml.safe_dump(spec(folder, provider, **kw), sort_keys=False)
    )
    build_index(routes, folder / "index", encoder=FakeEncoder())
    return folder / "index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A gateway app on a real uvicorn server in a thread of this process."""

    def __init__(self, index: Path) -> None:
        self.app = create_app(load(index))
        self.port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            access_log=False,
            log_level="warning",
            http=CoalescingProtocol,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def log_lines(folder: Path) -> list[dict[str, Any]]:
    import json

    log = folder / "decisions.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


@contextmanager
def serve_process(
    index: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`semroute serve` in its own process on a free port, until it is ready; stopped (SIGTERM,
    then killed) at the end."""
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "from semroute.cli.main import main; main()",
        "serve",
        "--index",
        str(index),
        "--port",
        str(port),
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"semroute serve exited {proc.returncode}: {output}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("semroute serve did not get ready")
