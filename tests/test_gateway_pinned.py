"""A request that names its model instead of `auto`: it takes the same rules, tier and cost
checks as a routed one, only declared names are accepted unless the operator allows others, and
names callers invent never pile up (deployments, health). Plus what a refused request reports:
no model in its headers, its skips in the metrics; and `n` in the cost estimate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semroute.dispatch import providers
from semroute.server.state import Loaded
from semroute.testing import FakeProvider
from tests.fuzz_support import fuzz
from tests.gateway_kit import Served, build

pytestmark = pytest.mark.usefixtures("provider_key")

APP_KEY = "sk-app-51c7e2a9d04b"
FREE_KEY = "sk-free-8e2d4a6c1b37"
LIST_KEY = "sk-list-0f9b3d7e5a21"
SAY_HELLO = [{"role": "user", "content": "hello there"}]
SECRET = [{"role": "user", "content": "my password is hunter2"}]
DECLARED = ("frontier", "weather-model", "backup", "last-resort")
BUDGET = ("last-resort", "backup")  # the free tier's models
RULES = [
    {"name": "no-secrets", "when": {"text_matches": "(?i)password"}, "action": "block"},
    {"name": "free-users", "when": {"user_tier": "free"}, "tier": "budget"},
]
ROUTER = {"tiers": {"budget": list(BUDGET), "premium": ["frontier", "backup"]}}
KEYS = [
    "os.environ/APP_KEY",
    {"key": "os.environ/FREE_KEY", "user_tier": "free"},
    {"key": "os.environ/LIST_KEY", "models": ["weather-model"]},
]
DOCUMENTED = {200, 400, 402, 403, 502, 504}
# Prices of every test model: $1 and $2 per million tokens (tests/provider_kit.py).
IN_PRICE, OUT_PRICE = 1e-6, 2e-6


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("APP_KEY", APP_KEY), ("FREE_KEY", FREE_KEY), ("LIST_KEY", LIST_KEY)):
        monkeypatch.setenv(name, value)


def serve(folder: Path, provider: FakeProvider, **server: Any) -> Served:
    index = build(folder, provider, rules=RULES, router=ROUTER, server={"keys": KEYS, **server})
    return Served(index)


@pytest.fixture
def gateway(tmp_path: Path, provider: FakeProvider, keys: None) -> Iterator[Served]:
    with serve(tmp_path, provider) as served:
        yield served


def chat(
    served: Served,
    model: str,
    key: str = APP_KEY,
    messages: list[dict[str, str]] = SAY_HELLO,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    return httpx.post(
        served.url + "/v1/chat/completions",
        json={"model": model, "messages": messages, **body},
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=60,
    )


def loaded(served: Served) -> Loaded:
    current: Loaded = served.app.state.holder.current
    return current


def deployments(served: Served) -> set[str]:
    """The model names of the LiteLLM router's deployments (none before the first request)."""
    router = loaded(served).dispatcher._provider._router
    return set() if router is None else set(router.get_model_names())


def metric_lines(served: Served, prefix: str) -> list[str]:
    text = httpx.get(served.url + "/metrics").text
    return [line for line in text.splitlines() if line.startswith(prefix)]


# --- item 1: the policy holds for a named model ---------------------------------------------


@pytest.mark.parametrize("model", ["frontier", "backup", "premium", "budget", "auto"])
def test_a_blocked_text_is_403_whatever_the_model_named(
    gateway: Served, provider: FakeProvider, model: str
) -> None:
    response = chat(gateway, model, messages=SECRET)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "blocked_by_rule"
    assert response.headers["x-semroute-rule"] == "no-secrets"
    # No model was called, so the headers name none.
    assert response.headers["x-semroute-model"] == ""
    assert provider.requests == []


def test_a_keys_tier_limits_what_it_may_pin(gateway: Served, provider: FakeProvider) -> None:
    refused = chat(gateway, "frontier", FREE_KEY)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "model_not_allowed"
    assert "'frontier'" in error["message"] and "FREE_KEY" in error["message"]
    assert FREE_KEY not in error["message"]
    assert chat(gateway, "premium", FREE_KEY).status_code == 403  # a tier of other models
    assert provider.requests == []
    allowed = chat(gateway, "backup", FREE_KEY)
    assert allowed.status_code == 200 and allowed.headers["x-semroute-model"] == "backup"
    tier = chat(gateway, "budget", FREE_KEY)
    assert tier.status_code == 200 and tier.headers["x-semroute-model"] == "last-resort"
    assert tier.headers["x-semroute-reason"] == "pinned"
    # A key without a tier or a list may pin any declared model.
    assert chat(gateway, "frontier", APP_KEY).headers["x-semroute-model"] == "frontier"


def test_a_keys_list_bounds_the_pinned_chain_too(gateway: Served, provider: FakeProvider) -> None:
    """weather-model's configured fallbacks (backup, last-resort) are not the key's to use: when
    weather-model fails, the request fails rather than reach them."""
    assert chat(gateway, "frontier", LIST_KEY).status_code == 403
    provider.error("weather-model", status=500)
    response = chat(gateway, "weather-model", LIST_KEY)
    assert response.status_code == 502
    assert [a["model"] for a in response.json()["error"]["attempts"]] == ["weather-model"]
    assert provider.hits("backup") == 0 and provider.hits("last-resort") == 0
    # The same model pinned by a key without a list keeps its fallbacks.
    assert chat(gateway, "weather-model", APP_KEY).headers["x-semroute-model"] == "backup"


def test_a_pinned_model_is_held_to_the_cost_ceiling(
    gateway: Served, provider: FakeProvider
) -> None:
    cheap = {"X-Max-Cost-USD": "0.0000001"}
    response = chat(gateway, "frontier", headers=cheap, max_tokens=1000)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "over_cost_limit"
    assert response.headers["x-semroute-model"] == ""  # nobody was called
    assert provider.requests == []


@pytest.mark.parametrize("name", ["openai/gpt-4o", "gpt-4o", "made-up", "AUTO", "Frontier"])
def test_an_undeclared_model_is_400_naming_it(
    gateway: Served, provider: FakeProvider, name: str
) -> None:
    response = chat(gateway, name)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert repr(name) in message and "server.allow_unlisted_models" in message
    assert response.json()["error"]["code"] == "model_not_found"
    assert provider.requests == []
    assert name not in deployments(gateway)


def test_an_undeclared_model_is_called_when_the_operator_allows_it(
    tmp_path: Path, provider: FakeProvider, keys: None
) -> None:
    with serve(tmp_path, provider, allow_unlisted_models=True) as served:
        response = chat(served, "made-up-model")
        blocked = chat(served, "made-up-model", messages=SECRET)
        listed = chat(served, "made-up-model", LIST_KEY)
    assert response.status_code == 502  # LiteLLM cannot set it up: no provider; but it was tried
    assert response.headers["x-semroute-model"] == "made-up-model"
    assert blocked.status_code == 403  # the rules still hold
    assert listed.status_code == 403  # and so does a key's list


def test_a_key_listing_an_undeclared_model_stops_the_start(
    tmp_path: Path, provider: FakeProvider, keys: None
) -> None:
    from semroute.errors import ServeError
    from semroute.server.state import load

    bad = [{"key": "os.environ/LIST_KEY", "models": ["weather-modle"]}]
    index = build(tmp_path, provider, server={"keys": bad})
    with pytest.raises(ServeError, match=r"server\.keys\[0\]\.models: model 'weather-modle'"):
        load(index)


# --- what a user saw ------------------------------------------------------------------------


def test_a_402_after_over_budget_skips_counts_them(gateway: Served) -> None:
    response = chat(gateway, "auto", headers={"X-Max-Cost-USD": "0.0000001"}, max_tokens=1000)
    assert response.status_code == 402
    skips = metric_lines(gateway, "semroute_skips_total")
    assert 'semroute_skips_total{model="frontier",reason="over_budget"} 1.0' in skips
    assert 'semroute_skips_total{model="backup",reason="over_budget"} 1.0' in skips
    requests = metric_lines(gateway, "semroute_requests_total")
    assert any('reason="over_budget"' in line and 'model=""' in line for line in requests)


def test_a_blocked_request_names_no_model_in_its_headers_or_metrics(gateway: Served) -> None:
    response = chat(gateway, "auto", messages=SECRET)
    assert response.status_code == 403
    assert response.headers["x-semroute-model"] == ""
    [line] = [x for x in metric_lines(gateway, "semroute_requests_total") if "blocked" in x]
    assert 'model=""' in line


# --- item 9: n choices cost n times the output ----------------------------------------------


def test_n_multiplies_the_estimated_cost(gateway: Served, provider: FakeProvider) -> None:
    def route(n: int, ceiling: float | None = None) -> dict[str, Any]:
        body = {"messages": SAY_HELLO, "max_tokens": 10, "n": n}
        headers = {"Authorization": f"Bearer {APP_KEY}"}
        if ceiling is not None:
            headers["X-Max-Cost-USD"] = repr(ceiling)
        answer = httpx.post(gateway.url + "/v1/route", json=body, headers=headers, timeout=30)
        decision: dict[str, Any] = answer.json()
        return decision

    one = route(1)["estimated_cost_usd"]
    many = one + 127 * 10 * OUT_PRICE  # the prompt is paid once, each choice's output apiece
    assert route(128)["estimated_cost_usd"] == pytest.approx(many, rel=1e-5)
    assert route(128, many * 1.001)["reason"] != "over_budget"
    assert route(128, many * 0.999)["reason"] == "over_budget"
    assert route(1, many * 0.999)["reason"] != "over_budget"
    # The chat path reads n too: refused before any model is called.
    refused = chat(
        gateway, "auto", headers={"X-Max-Cost-USD": repr(many * 0.999)}, max_tokens=10, n=128
    )
    assert refused.status_code == 402
    assert provider.requests == []


# --- item 6: names callers invent do not pile up --------------------------------------------


@pytest.mark.filterwarnings("ignore::semroute.config.pricing.UnknownPriceWarning")
def test_undeclared_names_keep_at_most_max_unlisted_deployments(
    tmp_path: Path, provider: FakeProvider, keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(providers, "MAX_UNLISTED", 3)
    # Plain LiteLLM strings, called with the server's own provider settings: the FakeProvider.
    monkeypatch.setenv("OPENAI_API_BASE", provider.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-own-key")
    names = [f"openai/made-up-{i}" for i in range(8)]
    with serve(tmp_path, provider, allow_unlisted_models=True) as served:
        assert chat(served, "frontier").status_code == 200
        for name in names:
            assert chat(served, name).status_code == 200, name
        assert chat(served, names[5]).status_code == 200  # used again: the most recent now
        dispatcher = loaded(served).dispatcher
        kept = dispatcher.unlisted_models()
        live = deployments(served)
        health = dispatcher.health
    assert kept == (names[6], names[7], names[5])
    assert set(names) & live == set(kept)
    assert set(DECLARED) <= live  # declared models are never evicted
    assert health is not None
    assert health.health("frontier").requests == 1
    assert all(health.health(name).requests == 0 for name in names)  # no health state


# --- properties over pinned names -----------------------------------------------------------

names = (
    st.sampled_from([*DECLARED, "budget", "premium", "auto"])
    | st.sampled_from(["openai/gpt-4o", "anthropic/claude-3-5-sonnet", "gpt-4o", "AUTO", ""])
    | st.text(max_size=40)
)


def test_no_pinned_name_is_a_500_or_a_bypass(
    tmp_path: Path, provider: FakeProvider, keys: None
) -> None:
    """Whatever the name, key and text: a documented status; a blocked text never answered; a
    free key never answered by a model outside its tier; no undeclared name gets a LiteLLM
    deployment or health state (allow_unlisted_models is off)."""
    with serve(tmp_path, provider) as served, httpx.Client(timeout=60) as http:
        health = loaded(served).dispatcher.health
        assert health is not None

        @fuzz(60)
        @given(
            model=names,
            key=st.sampled_from([APP_KEY, FREE_KEY, LIST_KEY]),
            secret=st.booleans(),
            stream=st.booleans(),
        )
        def check(model: str, key: str, secret: bool, stream: bool) -> None:
            before = len(provider.requests)
            body = {"model": model, "messages": SECRET if secret else SAY_HELLO, "stream": stream}
            headers = {"Authorization": f"Bearer {key}"}
            with http.stream(
                "POST", served.url + "/v1/chat/completions", json=body, headers=headers
            ) as response:
                text = response.read().decode("utf-8", "replace")
            status = response.status_code
            assert status in DOCUMENTED, (status, text[:300])
            if status != 200:
                assert "Traceback" not in text and json.loads(text)["error"]["message"]
            called = {r.model for r in provider.requests[before:]}
            if secret:
                assert status in (400, 403) and not called
            if key == FREE_KEY:
                assert called <= set(BUDGET), (model, called)
            if key == LIST_KEY and model != "auto":  # its list is what it may pin
                assert called <= {"weather-model"}, (model, called)
            if model not in (*DECLARED, "budget", "premium", "auto"):
                assert status == 400 and not called
            assert deployments(served) <= set(DECLARED)
            assert loaded(served).dispatcher.unlisted_models() == ()
            assert health.health(model).requests == 0 or model in DECLARED

        check()
        assert httpx.get(served.url + "/healthz").status_code == 200


def test_v1_route_checks_and_pins_a_named_model_as_an_answer_would(
    gateway: Served, provider: FakeProvider
) -> None:
    def route(model: str, key: str = APP_KEY) -> httpx.Response:
        body = {"model": model, "messages": SAY_HELLO}
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.post(gateway.url + "/v1/route", json=body, headers=headers, timeout=30)

    unknown = route("made-up")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "model_not_found"
    forbidden = route("frontier", FREE_KEY)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "model_not_allowed"
    pinned = route("backup", FREE_KEY)
    assert pinned.status_code == 200
    assert (pinned.json()["reason"], pinned.json()["model"]) == ("pinned", "backup")
    assert pinned.headers["x-semroute-reason"] == "pinned"
    assert route("auto").json()["reason"] != "pinned"
    assert provider.requests == []  # /v1/route never calls a model
