"""Model declarations: route-file models and LiteLLM proxy configs, prices, chain warnings, and
what the index keeps of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from semroute import Dispatcher, Router, StaleIndexError
from semroute.cli.main import main
from semroute.config.pricing import Price, price_of
from semroute.config.routes import load_routes, parse_routes
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index

PROXY_CONFIG = {
    "model_list": [
        {
            "model_name": "gpt-4o",
            "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"},
            "model_info": {"id": "primary-gpt-4o"},
            "tpm": 100000,  # LiteLLM keys semroute does not use are kept, not refused
        },
        {
            "model_name": "claude-sonnet",
            "litellm_params": {
                "model": "anthropic/claude-sonnet-4-20250514",
                "api_key": "os.environ/ANTHROPIC_API_KEY",
            },
        },
    ],
    "litellm_settings": {"drop_params": True},
    "router_settings": {"routing_strategy": "simple-shuffle"},
}

ROUTES: dict[str, Any] = {
    "router": {
        "default_model": "gpt-4o",
        "default_fallbacks": ["claude-sonnet"],
        "encoder": "fake",
    },
    "models": "../litellm/config.yaml",
    "routes": [
        {
            "name": "code",
            "model": "mistral/codestral-latest",
            "fallbacks": ["gpt-4o", "claude-sonnet"],
            "utterances": ["fix this TypeError in my script"],
        }
    ],
}


def write(tmp_path: Path, routes: dict[str, Any] = ROUTES) -> Path:
    (tmp_path / "litellm").mkdir(exist_ok=True)
    (tmp_path / "litellm" / "config.yaml").write_text(yaml.safe_dump(PROXY_CONFIG))
    folder = tmp_path / "routes"
    folder.mkdir(exist_ok=True)
    (folder / "routes.yaml").write_text(yaml.safe_dump(routes))
    return folder


def test_models_from_a_litellm_proxy_config(tmp_path: Path) -> None:
    route_set = load_routes(write(tmp_path))
    assert [m.model_name for m in route_set.models] == ["gpt-4o", "claude-sonnet"]
    assert route_set.models[0].extra == {"tpm": 100000}
    assert route_set.routes[0].fallbacks == ("gpt-4o", "claude-sonnet")
    assert route_set.settings.default_fallbacks == ("claude-sonnet",)
    assert route_set.warnings == ()


def test_the_index_keeps_models_and_chains_but_never_resolved_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-resolved-secret-value")
    build_index(write(tmp_path), tmp_path / "index", encoder=FakeEncoder())
    manifest = (tmp_path / "index" / "manifest.json").read_text()
    assert "sk-resolved-secret-value" not in manifest
    assert "os.environ/OPENAI_API_KEY" in manifest
    config = Dispatcher.for_index(Router.load(tmp_path / "index").index).config
    assert config.route_fallbacks == {"code": ("gpt-4o", "claude-sonnet")}
    assert config.default_fallbacks == ("claude-sonnet",)
    assert config.models[0].litellm_params["api_key"] == "os.environ/OPENAI_API_KEY"


def test_changing_the_litellm_config_makes_the_index_stale(tmp_path: Path) -> None:
    build_index(write(tmp_path), tmp_path / "index", encoder=FakeEncoder())
    changed = copy.deepcopy(PROXY_CONFIG)
    changed["model_list"][0]["litellm_params"]["model"] = "openai/gpt-4.1"
    (tmp_path / "litellm" / "config.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(StaleIndexError, match="build-index"):
        Router.load(tmp_path / "index")


def test_a_proxy_config_without_a_model_list_is_refused(tmp_path: Path) -> None:
    folder = write(tmp_path)
    (tmp_path / "litellm" / "config.yaml").write_text("litellm_settings: {}\n")
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1
    assert "config.yaml" in result.stderr and "no `model_list:`" in result.stderr


def test_validate_warns_when_a_chain_steps_from_frontier_straight_to_cheap() -> None:
    data = {
        "router": {"default_model": "gpt-4o", "default_fallbacks": ["gpt-4o-mini"]},
        "models": [
            {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {"model_name": "sonnet", "litellm_params": {"model": "claude-sonnet-4-20250514"}},
        ],
        "routes": [
            {
                "name": "code",
                "model": "sonnet",
                "fallbacks": ["gpt-4o-mini"],
                "utterances": ["fix this TypeError"],
            },
            {
                "name": "chat",
                "model": "gpt-4o-mini",
                "fallbacks": ["sonnet"],  # stepping up is fine
                "utterances": ["hello there"],
            },
        ],
    }
    warnings = parse_routes(data).warnings
    assert len(warnings) == 2
    default, code = sorted(warnings)
    assert "route 'code'" in code and "from 'sonnet'" in code and "'gpt-4o-mini'" in code
    assert "default model" in default and "from 'gpt-4o'" in default and "17x cheaper" in default


def test_validate_prints_chain_warnings(tmp_path: Path) -> None:
    routes = copy.deepcopy(ROUTES)
    routes["models"] = [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}},
        {"model_name": "cheap", "litellm_params": {"model": "groq/llama-3.1-8b-instant"}},
    ]
    routes["router"]["default_fallbacks"] = ["cheap"]
    routes["routes"][0]["fallbacks"] = ["gpt-4o"]
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, routes))])
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "straight to 'cheap'" in result.stderr


@pytest.mark.parametrize(
    ("model", "declared", "price"),
    [
        ("gpt-4o", [], Price(2.5e-6, 10e-6)),
        ("openai/gpt-4o-mini", [], Price(0.15e-6, 0.6e-6)),  # provider prefix of the cost map
        ("my-model", [], None),
        ("alias", [{"model": "openai/gpt-4o-mini"}], Price(0.15e-6, 0.6e-6)),
        ("alias", [{"model": "openai/x", "input_cost_per_token": 1e-6}], Price(1e-6, 0.0)),
    ],
)
def test_prices(model: str, declared: list[dict[str, Any]], price: Price | None) -> None:
    from semroute.config.deployments import ModelDeployment

    deployments = [ModelDeployment("alias", params) for params in declared]
    found = price_of(model, deployments)
    if price is None:
        assert found is None
    else:
        assert found == pytest.approx(price)


def test_digest_changes_with_models_and_fallbacks(tmp_path: Path) -> None:
    base = load_routes(write(tmp_path)).digest()
    routes = copy.deepcopy(ROUTES)
    routes["routes"][0]["fallbacks"] = ["claude-sonnet"]
    assert load_routes(write(tmp_path, routes)).digest() != base
    routes = copy.deepcopy(ROUTES)
    routes["router"]["dispatch"] = {"timeout": 5}
    assert load_routes(write(tmp_path, routes)).digest() != base


def test_schema_documents_the_new_fields() -> None:
    result = CliRunner().invoke(main, ["schema"])
    schema = json.loads(result.stdout)
    assert {"models", "router", "routes"} <= schema["properties"].keys()
    assert "fallbacks" in schema["$defs"]["RouteSpec"]["properties"]
    router = schema["$defs"]["RouterSpec"]["properties"]
    assert {"default_fallbacks", "dispatch", "conversation"} <= router.keys()


def test_validate_warns_about_a_model_litellm_cannot_place() -> None:
    data: dict[str, Any] = {
        "router": {"default_model": "gpt-4o"},
        "models": [{"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}}],
        "routes": [
            {"name": "a", "model": "claude-3-5-haiku-20241022", "utterances": ["x"]},
            {"name": "b", "model": "anthropic/claude-3-5-haiku-20241022", "utterances": ["y"]},
            {"name": "c", "model": "claude-haiku-4-5", "utterances": ["z"]},
        ],
    }
    (warning,) = parse_routes(data).warnings
    assert "route 'a'" in warning and "does not know which provider" in warning
    del data["models"]  # routing alone: a model is any label
    assert parse_routes(data).warnings == ()
