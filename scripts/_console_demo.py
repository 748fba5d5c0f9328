"""A gateway to show and measure the console with: four routes, a rule, models on a FakeProvider
(one of them failing a share of its requests, so fallbacks show), a decision log, served by
uvicorn in a thread of this process. Used by ui_screenshots.py and bench_console.py."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from semroute.server.app import create_app
from semroute.server.state import load
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index

KEY_ENV = "CONSOLE_DEMO_PROVIDER_KEY"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
MODELS = ("frontier", "weather-model", "billing-model", "code-model", "backup")
QUERIES = (
    "will it rain today",
    "what is the weather forecast for tomorrow",
    "why was my credit card charged twice",
    "download my invoice",
    "fix the bug in my python script",
    "hello there",
    "tell me a story about dragons",
)


def routes(folder: Path, provider: FakeProvider) -> dict[str, Any]:
    def deployment(name: str) -> dict[str, Any]:
        params = {"model": f"openai/{name}", "api_base": provider.url, **PRICES}
        return {
            "model_name": name,
            "litellm_params": {**params, "api_key": f"os.environ/{KEY_ENV}"},
        }

    return {
        "router": {
            "default_model": "frontier",
            "default_fallbacks": ["backup"],
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {"timeout": 10.0, "log": str(folder / "decisions.jsonl")},
        },
        "models": [deployment(m) for m in MODELS],
        "routes": [
            {
                "name": "weather",
                "model": "weather-model",
                "fallbacks": ["backup"],
                "utterances": ["what is the weather forecast for tomorrow", "will it rain today"],
            },
            {
                "name": "billing",
                "model": "billing-model",
                "utterances": [
                    "why was my credit card charged twice",
                    "download my invoice",
                    "send me a copy of my invoice from last month",
                ],
            },
            {
                "name": "code",
                "model": "code-model",
                "utterances": [
                    "fix the bug in my python script",
                    "write a sql query",
                    # near the billing one: the routes page shows the conflict
                    "send me a copy of my invoice from last month as csv",
                ],
            },
            {"name": "greeting", "utterances": ["hello there", "good morning friend"]},
        ],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def demo_gateway(folder: Path) -> Iterator[tuple[str, Any, Path]]:
    """(the gateway's URL, its app, its decision log) while the block runs."""
    os.environ[KEY_ENV] = "sk-console-demo"
    folder.mkdir(parents=True, exist_ok=True)
    with FakeProvider(seed=1) as provider:
        for model in MODELS:
            provider.answer(model, text=f"An answer from {model}.")
        provider.flaky("weather-model", 0.2)
        (folder / "routes").mkdir(exist_ok=True)
        spec = routes(folder, provider)
        (folder / "routes" / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        build_index(folder / "routes", folder / "index", encoder=FakeEncoder())
        app = create_app(load(folder / "index"))
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", app, folder / "decisions.jsonl"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
