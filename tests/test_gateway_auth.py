"""The gateway's keys, budgets and `server:` settings: from the route files to a 401 or 402."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.config.routes import load_routes, parse_routes
from semroute.errors import CorruptIndexError, RouteConfigError, ServeError, StaleIndexError
from semroute.index.manifest import Manifest
from semroute.server.app import create_app
from semroute.server.state import load
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines, spec

pytestmark = pytest.mark.usefixtures("provider_key")

APP_KEY = "sk-app-7d1c5e0b9a2f"
FREE_KEY = "sk-free-3b8e6a4c1d90"
SAY_HELLO = [{"role": "user", "content": "hello there"}]
KEYS = {
    "keys": [
        "os.environ/APP_KEY",
        # Each answer costs $0.000008 at the test prices (2 prompt tokens at $1 per million, 3
        # completion tokens at $2): the budget is 2.5 answers' worth, so the fourth is refused.
        {"key": "os.environ/FREE_KEY", "user_tier": "free", "budget_usd_per_day": 0.00002},
    ]
}
RULES = [{"name": "free-users", "when": {"user_tier": "free"}, "model": "last-resort"}]


@pytest.fixture
def keyed(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    monkeypatch.setenv("APP_KEY", APP_KEY)
    monkeypatch.setenv("FREE_KEY", FREE_KEY)
    with Served(build(tmp_path, provider, server=KEYS, rules=RULES)) as served:
        yield served


def ask(served: Served, key: str, **kw: Any) -> Any:
    with openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0) as c:
        return c.chat.completions.with_raw_response.create(model="auto", messages=SAY_HELLO, **kw)


def test_a_missing_or_wrong_key_is_401(keyed: Served, provider: FakeProvider) -> None:
    for key in ("sk-wrong", APP_KEY[:-1], APP_KEY + "x", APP_KEY.upper()):
        with pytest.raises(openai.AuthenticationError) as caught:
            ask(keyed, key)
        assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    no_header = httpx.post(keyed.url + "/v1/chat/completions", json={"model": "auto"})
    assert no_header.status_code == 401
    assert httpx.get(keyed.url + "/v1/models").status_code == 401
    assert provider.requests == []


def test_a_right_key_is_let_in_by_any_of_the_usual_headers(keyed: Served) -> None:
    assert ask(keyed, APP_KEY).parse().choices[0].message.content == "Hello from frontier."
    body = {"model": "auto", "messages": SAY_HELLO}
    for header in ("api-key", "x-api-key"):
        response = httpx.post(
            keyed.url + "/v1/chat/completions", json=body, headers={header: APP_KEY}
        )
        assert response.status_code == 200, header
    models = httpx.get(keyed.url + "/v1/models", headers={"Authorization": f"Bearer {APP_KEY}"})
    assert models.status_code == 200


def test_a_keys_tier_cannot_be_raised_by_a_header(keyed: Served, tmp_path: Path) -> None:
    free = ask(keyed, FREE_KEY, extra_headers={"X-User-Tier": "premium"})
    assert free.headers["x-semroute-rule"] == "free-users"
    assert free.headers["x-semroute-model"] == "last-resort"
    app = ask(keyed, APP_KEY, extra_headers={"X-User-Tier": "free"})
    assert app.headers["x-semroute-model"] == "last-resort"  # a key without a tier: the header's
    assert [line["signals"]["user_tier"] for line in log_lines(tmp_path)] == ["free", "free"]


def test_a_key_over_its_daily_budget_is_402(keyed: Served, provider: FakeProvider) -> None:
    for _ in range(3):  # spent $0, $0.000008, $0.000016: under the budget
        assert ask(keyed, FREE_KEY).parse().choices[0].message.content == "Hello from last-resort."
    with pytest.raises(openai.APIStatusError) as caught:
        ask(keyed, FREE_KEY)
    assert caught.value.status_code == 402
    error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
    assert error["code"] == "over_daily_budget"
    assert "FREE_KEY" in error["message"] and FREE_KEY not in error["message"]
    assert "has spent $2.4e-05 today, its daily budget is $2e-05" in error["message"]
    assert provider.hits("last-resort") == 3
    assert ask(keyed, APP_KEY).parse().choices  # a key without a budget is not limited


def test_keys_never_reach_the_log_or_the_metrics(keyed: Served, tmp_path: Path) -> None:
    ask(keyed, APP_KEY)
    with pytest.raises(openai.AuthenticationError):
        ask(keyed, "sk-guess-" + APP_KEY)
    text = (tmp_path / "decisions.jsonl").read_text() + httpx.get(keyed.url + "/metrics").text
    assert APP_KEY not in text and FREE_KEY not in text


def test_an_unset_key_variable_stops_the_start_with_one_line(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_KEY", APP_KEY)
    monkeypatch.delenv("FREE_KEY", raising=False)
    index = build(tmp_path, provider, server=KEYS)
    with pytest.raises(ServeError, match=r"server\.keys\[1\]: environment variable FREE_KEY"):
        create_app(load(index))
    result = CliRunner().invoke(main, ["serve", "--index", str(index)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "FREE_KEY is not set" in result.output


def test_a_public_address_without_keys_is_refused(tmp_path: Path, provider: FakeProvider) -> None:
    index = build(tmp_path, provider)
    result = CliRunner().invoke(main, ["serve", "--index", str(index), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "listens on loopback only" in result.output and result.output.count("\n") == 1


def _with_server(server: Any) -> dict[str, Any]:
    return {
        "router": {"default_model": "m", "encoder": "fake"},
        "routes": [{"name": "r", "utterances": ["hi"]}],
        "server": server,
    }


@pytest.mark.parametrize(
    ("server", "field", "words"),
    [
        ({"keys": ["sk-literal-key-123"]}, "server.keys", "os.environ/VAR"),
        ({"keys": [{"key": "sk-literal-key-123"}]}, "server.keys", "os.environ/VAR"),
        ({"keys": [{"key": "os.environ/K", "budget_usd_per_day": 0}]}, "server.keys", "greater"),
        ({"keys": [{"key": "os.environ/K", "tier": "free"}]}, "server.keys", "unknown field"),
        ({"redis_url": "redis://:hunter2@cache:6379/0"}, "server.redis_url", "password"),
        ({"redis_url": "http://cache"}, "server.redis_url", "redis://"),
        ({"port": 0}, "server.port", "greater"),
        ({"workers": "4"}, "server.workers", "integer"),
        ({"hots": "0.0.0.0"}, "server", "did you mean 'host'"),
    ],
)
def test_bad_server_settings_are_one_line_naming_the_field(
    server: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(RouteConfigError) as caught:
        parse_routes(_with_server(server), source="gateway.yaml")
    message = str(caught.value)
    assert message.startswith(f"gateway.yaml: field '{field}")
    assert words in message
    assert "hunter2" not in message and "sk-literal" not in message


def test_server_settings_round_trip_through_the_index(
    tmp_path: Path, provider: FakeProvider
) -> None:
    server = {"host": "0.0.0.0", "port": 9001, "workers": 2, **KEYS, "redis_url": "os.environ/R"}
    index = build(tmp_path, provider, server=server)
    settings = Manifest.read(index).server_settings(index)
    assert settings is not None
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9001, 2)
    assert [k.env for k in settings.keys] == ["APP_KEY", "FREE_KEY"]
    assert settings.keys[1].user_tier == "free"
    assert settings.redis_url == "os.environ/R"
    without = build(tmp_path / "plain", provider)
    assert Manifest.read(without).server_settings(without) is None


def test_a_second_server_block_is_refused(tmp_path: Path, provider: FakeProvider) -> None:
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "a.yaml").write_text(yaml.safe_dump(spec(tmp_path, provider, server={})))
    (routes / "b.yaml").write_text(yaml.safe_dump({"server": {"port": 9000}}))
    with pytest.raises(RouteConfigError, match=r"b\.yaml:1: field 'server': a second `server:`"):
        load_routes(routes)


def test_editing_the_server_block_makes_the_index_stale(
    tmp_path: Path, provider: FakeProvider
) -> None:
    from semroute.routing.router import Router

    index = build(tmp_path, provider, server={"port": 9000})
    routes = tmp_path / "routes" / "routes.yaml"
    routes.write_text(yaml.safe_dump(spec(tmp_path, provider, server={"port": 9001})))
    with pytest.raises(StaleIndexError, match="build-index"):
        Router.load(index)


def test_a_tampered_server_block_in_the_manifest_is_refused(
    tmp_path: Path, provider: FakeProvider
) -> None:
    import json

    index = build(tmp_path, provider, server={"port": 9000})
    data = json.loads((index / "manifest.json").read_text())
    data["server"]["keys"] = [{"key": "sk-literal"}]
    (index / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorruptIndexError, match="server settings are malformed"):
        Manifest.read(index)
