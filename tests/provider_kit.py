"""Route files whose models live on a FakeProvider, for the dispatch tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import yaml

from semroute import Dispatcher, Router
from semroute.dispatch.providers import close_litellm_clients
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index

T = TypeVar("T")

KEY_ENV = "FAKE_PROVIDER_KEY"
KEY = "sk-semroute-test-4f9a2c71b3"

# Prices registered in the config: $1 and $2 per million tokens.
PRICED = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


def deployment(provider: FakeProvider, name: str, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{name}",
            "api_base": provider.url,
            "api_key": f"os.environ/{KEY_ENV}",
            **PRICED,
            **params,
        },
    }


def routes_spec(
    folder: Path,
    provider: FakeProvider,
    *,
    dispatch: dict[str, Any] | None = None,
    models: list[dict[str, Any]] | None = None,
    weather_fallbacks: tuple[str, ...] = ("backup", "last-resort"),
) -> dict[str, Any]:
    """Routes `weather` (chain weather-model → backup → last-resort) and `greeting` (the
    default model, frontier → backup), all served by ``provider``, logging to
    ``folder/decisions.jsonl``."""
    names = ["frontier", "weather-model", "backup", "last-resort"]
    return {
        "router": {
            "default_model": "frontier",
            "default_fallbacks": ["backup"],
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {
                # Generous: an answering request must never time out on a loaded machine; the
                # tests about hanging models set their own short timeout.
                "timeout": 10.0,
                "log": str(folder / "decisions.jsonl"),
                **(dispatch or {}),
            },
        },
        "models": models if models is not None else [deployment(provider, n) for n in names],
        "routes": [
            {
                "name": "weather",
                "model": "weather-model",
                "fallbacks": list(weather_fallbacks),
                "utterances": ["what is the weather forecast for tomorrow", "will it rain today"],
            },
            {"name": "greeting", "utterances": ["hello there", "good morning friend"]},
        ],
    }


def build(
    folder: Path,
    provider: FakeProvider,
    *,
    dispatch: dict[str, Any] | None = None,
    models: list[dict[str, Any]] | None = None,
    weather_fallbacks: tuple[str, ...] = ("backup", "last-resort"),
) -> tuple[Router, Dispatcher]:
    """An index of :func:`routes_spec`; its router and its dispatcher."""
    spec = routes_spec(
        folder, provider, dispatch=dispatch, models=models, weather_fallbacks=weather_fallbacks
    )
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build_index(routes, folder / "index", encoder=FakeEncoder())
    router = Router.load(folder / "index")
    return router, Dispatcher.for_index(router.index)


def log_lines(folder: Path) -> list[dict[str, Any]]:
    log = folder / "decisions.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, then close LiteLLM's cached HTTP sessions before the loop closes."""

    async def main() -> T:
        try:
            return await coro
        finally:
            # Closed, then forgotten: a later call on another loop (the dispatchers'
            # background loop) gets new clients, never one closed here.
            error = await close_litellm_clients()
            if error is not None:
                raise error

    return asyncio.run(main())
