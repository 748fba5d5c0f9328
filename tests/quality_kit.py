"""Route files with cascades and shadow settings whose models live on a FakeProvider."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from semroute import Dispatcher, Router
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.provider_kit import deployment

MODELS = ("frontier", "cheap", "strong", "judge", "reference")
# The cheap model costs a tenth of the others ($0.1 and $0.2 per million tokens).
CHEAP = {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}
EXTRACT = "parse this invoice into json"
CHAT = "hello there"


def spec(
    provider: FakeProvider,
    folder: Path,
    *,
    extract: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    router: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Routes `extract` and `chat` (the default model, frontier, unless they say otherwise)."""
    out: dict[str, Any] = {
        "router": {
            "default_model": "frontier",
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {"timeout": 10.0, "log": str(folder / "decisions.jsonl")},
            **(router or {}),
        },
        "models": [deployment(provider, n, **CHEAP if n == "cheap" else {}) for n in MODELS],
        "routes": [
            {
                "name": "extract",
                "utterances": [EXTRACT, "extract the fields as json"],
                **(extract or {}),
            },
            {"name": "chat", "utterances": [CHAT, "good morning friend"], **(chat or {})},
        ],
    }
    if rules:
        out["rules"] = rules
    return out


def build(folder: Path, data: dict[str, Any]) -> tuple[Router, Dispatcher]:
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    build_index(routes, folder / "index", encoder=FakeEncoder())
    router = Router.load(folder / "index")
    return router, Dispatcher.for_index(router.index)


def lines(folder: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The log's lines: decision lines (``kind`` None) or records of ``kind``."""
    log = folder / "decisions.jsonl"
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in records if r.get("kind") == kind]


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds (a bound on waiting, never an assertion on time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)
