"""Paths in a route file are read against its own folder; fallback chains may name the default
model and tiers, and an unknown name gets a suggestion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute import Dispatcher, Router
from semroute.config.routes import load_routes, parse_routes
from semroute.errors import RouteConfigError
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index


def _routes(api_base: str = "http://127.0.0.1:9/v1", **router: Any) -> dict[str, Any]:
    model = {
        "model": "openai/small",
        "api_base": api_base,
        "api_key": "os.environ/FAKE_KEY",
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
    }
    return {
        "router": {"default_model": "small", "encoder": "fake", **router},
        "models": [{"model_name": "small", "litellm_params": model}],
        "routes": [{"name": "greet", "utterances": ["hello there", "good morning"]}],
    }


def test_the_decision_log_is_written_beside_the_route_file_whatever_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "routes").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("FAKE_KEY", "anything")
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    with FakeProvider() as provider:
        data = _routes(provider.url, dispatch={"log": "logs/decisions.jsonl"})
        (project / "routes" / "r.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        monkeypatch.chdir(project)  # the index is built from the project's folder...
        build_index(Path("routes"), Path("index"), encoder=FakeEncoder())
        monkeypatch.chdir(elsewhere)  # ...and the request is sent from another one
        router = Router.load(project / "index", encoder=FakeEncoder())
        with Dispatcher.for_index(router.index) as dispatcher:
            dispatcher.complete("hello there", router=router)
    assert (project / "routes" / "logs" / "decisions.jsonl").is_file()
    assert not (elsewhere / "logs").exists() and not (project / "logs").exists()


def test_an_absolute_log_path_and_one_under_home_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for written, expected in [
        (str(tmp_path / "abs.jsonl"), tmp_path / "abs.jsonl"),
        ("~/semroute.jsonl", tmp_path / "home" / "semroute.jsonl"),
    ]:
        file = tmp_path / "routes" / "r.yaml"
        file.parent.mkdir(exist_ok=True)
        file.write_text(yaml.safe_dump(_routes(dispatch={"log": written})), encoding="utf-8")
        assert load_routes(file).settings.dispatch.log == str(expected)


def test_a_local_encoder_folder_is_read_against_the_route_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "routes" / "my-encoder").mkdir(parents=True)
    file = tmp_path / "routes" / "r.yaml"
    data = _routes()
    data["router"]["encoder"] = "my-encoder"
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_routes("routes").settings.encoder == str(tmp_path / "routes" / "my-encoder")
    # A hub name with no such folder beside the file is kept as written.
    data["router"]["encoder"] = "sentence-transformers/all-MiniLM-L6-v2"
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_routes("routes").settings.encoder == "sentence-transformers/all-MiniLM-L6-v2"


# --- fallback chains ---------------------------------------------------------------------------


def _chain_routes(fallbacks: list[str], default: str = "gpt-4o") -> dict[str, Any]:
    params = {"api_key": "os.environ/OPENAI_API_KEY"}
    return {
        "router": {
            "default_model": default,
            "encoder": "fake",
            "tiers": {"budget": ["gpt-4o-mini", "claude-haiku"]},
        },
        "models": [
            {"model_name": n, "litellm_params": {"model": f"openai/{n}", **params}}
            for n in ("gpt-4o-mini", "claude-haiku", "claude-sonnet")
        ],
        "routes": [
            {
                "name": "code",
                "model": "claude-sonnet",
                "fallbacks": fallbacks,
                "utterances": ["fix this TypeError in my script"],
            }
        ],
    }


def test_a_fallback_may_name_the_default_model_even_when_it_is_not_declared() -> None:
    routes = parse_routes(_chain_routes(["gpt-4o"]))
    assert routes.routes[0].fallbacks == ("gpt-4o",)
    assert routes.dispatch_config().route_fallbacks == {"code": ("gpt-4o",)}


def test_a_fallback_naming_a_tier_stands_for_its_models_in_order() -> None:
    routes = parse_routes(_chain_routes(["budget", "gpt-4o"]))
    assert routes.routes[0].fallbacks == ("gpt-4o-mini", "claude-haiku", "gpt-4o")
    # A tier's model already in the chain is tried once, where it first comes.
    routes = parse_routes(_chain_routes(["claude-haiku", "budget"]))
    assert routes.routes[0].fallbacks == ("claude-haiku", "gpt-4o-mini")


def test_default_fallbacks_may_name_a_tier() -> None:
    data = _chain_routes(["gpt-4o"])
    data["router"]["default_fallbacks"] = ["budget"]
    routes = parse_routes(data)
    assert routes.settings.default_fallbacks == ("gpt-4o-mini", "claude-haiku")


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("gpt-4", "did you mean 'gpt-4o'?"), ("budgte", "did you mean 'budget'?")],
)
def test_an_unknown_fallback_gets_did_you_mean(name: str, suggestion: str) -> None:
    with pytest.raises(RouteConfigError) as caught:
        parse_routes(_chain_routes([name]))
    message = str(caught.value)
    assert f"model {name!r} is not declared" in message and suggestion in message
    assert "fallbacks[0]" in message


def test_a_name_like_nothing_says_what_a_fallback_may_name() -> None:
    with pytest.raises(RouteConfigError, match="name the default model or a tier"):
        parse_routes(_chain_routes(["zzzzzzzz"]))
