"""Capability and cost: which candidates of a chain can serve a request, and within what cost.

Indexes are built with FakeEncoder through the real build; model info and prices are the
deployments' own (``model_info`` and ``litellm_params``); dispatch goes over real HTTP to a
FakeProvider.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from semroute import Dispatcher, Router
from semroute.cli.main import main
from semroute.config.policy import Policy
from semroute.decision import Reason
from semroute.errors import CostLimitError, DispatchError
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.provider_kit import deployment

# $1/$2 per million tokens in/out (provider_kit's price) and a model 1000 times dearer.
CHEAP_IN, CHEAP_OUT = 1e-6, 2e-6
DEAR = {"input_cost_per_token": 1e-3, "output_cost_per_token": 2e-3}
INFO: dict[str, dict[str, Any]] = {
    "small-window": {"max_input_tokens": 100},
    "no-tools": {"supports_function_calling": False},
    "no-vision": {"supports_vision": False},
    "no-json": {"supports_response_schema": False},
    "able": {
        "max_input_tokens": 128_000,
        "supports_function_calling": True,
        "supports_vision": True,
        "supports_response_schema": True,
    },
}
TIERS: dict[str, Any] = {
    "window": ["small-window", "able"],
    "tools": ["no-tools", "able"],
    "vision": ["no-vision", "able"],
    "json": ["no-json", "able"],
    "unknown": ["mystery", "able"],
    "spendy": ["dear", "able"],
    "capped": {"models": ["dear", "able"], "max_cost_usd": 0.01},
    "only-dear": ["dear"],
}
RULES: list[dict[str, Any]] = [
    *({"name": name, "when": {"task": name}, "tier": name} for name in TIERS),
    {
        "name": "rule-capped",
        "when": {"task": "rule-capped"},
        "tier": "spendy",
        "max_cost_usd": 0.01,
    },
    {"name": "no-tools-only", "when": {"task": "no-tools-only"}, "model": "no-tools"},
]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


# Every test here reaches FakeProvider with its key, and writes no log $SEMROUTE_LOG names.
pytestmark = pytest.mark.usefixtures("provider_key")


def spec(provider: FakeProvider, folder: Path, *, rules: bool = True) -> dict[str, Any]:
    models = [
        {**deployment(provider, name), "model_info": INFO[name]}
        for name in ("small-window", "no-tools", "no-vision", "no-json", "able")
    ]
    models.append(deployment(provider, "dear", **DEAR))
    mystery = deployment(provider, "mystery")  # no model info and no price
    mystery["litellm_params"] = {
        k: v for k, v in mystery["litellm_params"].items() if "cost" not in k
    }
    models += [mystery, deployment(provider, "frontier")]
    out: dict[str, Any] = {
        "router": {
            "default_model": "frontier",
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {"timeout": 10.0, "log": str(folder / "decisions.jsonl")},
        },
        "models": models,
        "routes": [
            {
                "name": "weather",
                "model": "dear",
                "fallbacks": ["able"],
                "max_cost_usd": 0.01,
                "utterances": ["what is the weather forecast for tomorrow", "will it rain today"],
            },
            {"name": "greeting", "utterances": ["hello there", "good morning friend"]},
        ],
    }
    if rules:
        out["router"]["tiers"] = TIERS
        out["rules"] = RULES
    return out


def build(folder: Path, data: dict[str, Any]) -> Router:
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    build_index(routes, folder / "index", encoder=FakeEncoder())
    return Router.load(folder / "index")


@pytest.fixture
def router(tmp_path: Path, provider: FakeProvider) -> Router:
    return build(tmp_path, spec(provider, tmp_path))


def skips(decision: Any) -> list[tuple[str, str]]:
    return [(s.model, s.reason) for s in decision.skipped]


# --- capability --------------------------------------------------------------------------------

LONG = "hello there " + "word " * 200  # about 260 tokens: over small-window's 100
CASES = [
    ("window", LONG, {}, "small-window", "context window 100 tokens"),
    ("tools", "hello there", {"tools": TOOLS}, "no-tools", "no tool calling"),
    (
        "vision",
        [{"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}],
        {},
        "no-vision",
        "no vision",
    ),
    (
        "json",
        "hello there",
        {"response_format": {"type": "json_object"}},
        "no-json",
        "no JSON mode",
    ),
]


@pytest.mark.parametrize(("task", "query", "request_", "incapable", "detail"), CASES)
def test_a_candidate_that_cannot_serve_the_request_is_skipped(
    router: Router, task: str, query: Any, request_: dict[str, Any], incapable: str, detail: str
) -> None:
    d = router.route(query, request=request_ or None, task=task)
    assert (d.model, d.chain, d.rule) == ("able", ("able",), task)
    assert skips(d) == [(incapable, "capability")]
    assert detail in d.skipped[0].detail


@pytest.mark.parametrize("task", ["window", "tools", "vision", "json"])
def test_a_request_that_needs_nothing_special_skips_nothing(router: Router, task: str) -> None:
    d = router.route("hello there", task=task)
    assert d.skipped == ()
    assert d.model == TIERS[task][0]


def test_max_tokens_counts_against_the_context_window(router: Router) -> None:
    assert router.route("hello there", task="window").model == "small-window"
    d = router.route("hello there", task="window", request={"max_tokens": 200})
    assert (d.model, skips(d)) == ("able", [("small-window", "capability")])
    assert "+ 200 max_tokens" in d.skipped[0].detail


def test_unknown_model_info_is_assumed_capable(router: Router) -> None:
    d = router.route("hello there", task="unknown", request={"tools": TOOLS, "max_tokens": 10**6})
    assert (d.model, skips(d)) == ("mystery", [("able", "capability")])


def test_when_no_candidate_is_capable_the_chain_is_kept(router: Router) -> None:
    d = router.route("hello there", task="no-tools-only", request={"tools": TOOLS})
    assert (d.model, d.chain, d.skipped) == ("no-tools", ("no-tools",), ())


def test_model_info_from_litellm_cost_map_is_used_for_known_models(tmp_path: Path) -> None:
    tier = ["openai/gpt-3.5-turbo", "openai/gpt-4o-mini"]
    data = {
        "router": {"default_model": "gpt-4o", "encoder": "fake", "tiers": {"t": tier}},
        "routes": [{"name": "greeting", "utterances": ["hello there", "good morning friend"]}],
        "rules": [{"name": "t", "when": {"task": "t"}, "tier": "t"}],
    }
    router = build(tmp_path, data)
    # gpt-3.5-turbo's window is 16,385 tokens in LiteLLM's map; gpt-4o-mini's 128,000.
    d = router.route("hello there", task="t", request={"max_tokens": 20_000})
    assert d.model == "openai/gpt-4o-mini"
    assert skips(d) == [("openai/gpt-3.5-turbo", "capability")]
    assert d.estimated_cost_usd is not None and d.estimated_cost_usd > 0


# --- cost --------------------------------------------------------------------------------------


def test_the_estimate_is_input_and_output_tokens_times_their_prices(router: Router) -> None:
    d = router.route("hello there", task="spendy", max_cost_usd=10.0)
    tokens = d.signals["input_tokens"] if d.signals else 0
    assert d.model == "dear"
    assert d.estimated_cost_usd == pytest.approx(tokens * 1e-3 + 256 * 2e-3, rel=1e-5)
    assert (d.cost_limit_usd, d.within_cost_limit) == (10.0, True)
    d = router.route("hello there", task="spendy", request={"max_tokens": 10})
    assert d.estimated_cost_usd == pytest.approx(tokens * 1e-3 + 10 * 2e-3, rel=1e-5)
    assert (d.cost_limit_usd, d.within_cost_limit) == (None, None)


def test_a_ceiling_takes_the_first_candidate_that_fits(router: Router) -> None:
    d = router.route("hello there", task="spendy", max_cost_usd=0.01)
    tokens = d.signals["input_tokens"] if d.signals else 0
    assert (d.model, d.chain, d.reason) == ("able", ("able",), Reason.RULE)
    assert skips(d) == [("dear", "over_budget")]
    assert "> $0.01 limit" in d.skipped[0].detail
    assert d.estimated_cost_usd == pytest.approx(tokens * CHEAP_IN + 256 * CHEAP_OUT, rel=1e-5)
    assert d.within_cost_limit is True


def test_max_tokens_can_bring_a_candidate_under_the_ceiling(router: Router) -> None:
    d = router.route("hello there", task="spendy", max_cost_usd=0.05, request={"max_tokens": 5})
    assert (d.model, d.skipped, d.within_cost_limit) == ("dear", (), True)


@pytest.mark.parametrize(
    ("hints", "limit"),
    [
        ({"task": "capped"}, 0.01),  # the tier's {models, max_cost_usd}
        ({"task": "rule-capped"}, 0.01),  # the rule's max_cost_usd
        ({"task": "capped", "max_cost_usd": 0.5}, 0.01),  # the strictest ceiling applies
        ({"task": "spendy", "max_cost_usd": 0.002}, 0.002),
    ],
)
def test_a_ceiling_set_on_a_tier_rule_or_hint(
    router: Router, hints: dict[str, Any], limit: float
) -> None:
    d = router.route("hello there", **hints)
    assert (d.model, skips(d), d.cost_limit_usd) == ("able", [("dear", "over_budget")], limit)


def test_a_ceiling_set_on_a_route(router: Router) -> None:
    d = router.route("will it rain today", task="chat")
    assert (d.route, d.rule, d.recommended_model) == ("weather", None, "dear")
    assert (d.model, d.chain, skips(d)) == ("able", ("able",), [("dear", "over_budget")])
    assert router.route("hello there", task="chat").cost_limit_usd is None


def test_a_candidate_without_a_price_fits_any_ceiling(router: Router) -> None:
    d = router.route("hello there", task="unknown", max_cost_usd=1e-9)
    assert (d.model, d.estimated_cost_usd, d.within_cost_limit) == ("mystery", None, None)
    assert skips(d) == [("able", "over_budget")]


def test_over_budget_is_a_decision_and_a_cost_limit_error(router: Router) -> None:
    d = router.route("hello there", task="spendy", max_cost_usd=1e-6)
    assert (d.reason, d.over_budget, d.model, d.chain) == (
        Reason.OVER_BUDGET,
        True,
        "able",
        (),
    )
    assert skips(d) == [("dear", "over_budget"), ("able", "over_budget")]
    assert (d.within_cost_limit, d.cost_limit_usd) == (False, 1e-6)
    assert d.estimated_cost_usd is not None and d.estimated_cost_usd > 1e-6
    err = CostLimitError.of(d)
    assert (err.cheapest, err.ceiling_usd, err.decision) == ("able", 1e-6, d)
    assert "'able'" in str(err) and "$1e-06 limit" in str(err)
    one = router.route("hello there", task="only-dear", max_cost_usd=0.01)
    assert (one.reason, one.model) == (Reason.OVER_BUDGET, "dear")


def test_the_tier_mapping_is_stored_and_read_back(router: Router) -> None:
    policy = router.policy
    assert policy.tiers["capped"] == ("dear", "able")
    assert policy.tier_limits == {"capped": 0.01}
    assert policy.route_limits == {"weather": 0.01}
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())), "manifest.json")
    assert again == policy
    assert again.to_dict()["tiers"]["capped"] == {"models": ["dear", "able"], "max_cost_usd": 0.01}
    assert again.to_dict()["tiers"]["spendy"] == ["dear", "able"]


def test_expected_output_tokens_is_configurable(tmp_path: Path, provider: FakeProvider) -> None:
    data = spec(provider, tmp_path)
    data["router"]["expected_output_tokens"] = 1000
    router = build(tmp_path, data)
    d = router.route("hello there", task="spendy")
    tokens = d.signals["input_tokens"] if d.signals else 0
    assert d.estimated_cost_usd == pytest.approx(tokens * 1e-3 + 1000 * 2e-3, rel=1e-5)
    assert Policy.from_dict(router.policy.to_dict(), "m").expected_output_tokens == 1000


# --- unchanged without rules or hints ----------------------------------------------------------


def test_without_rules_ceilings_or_hints_nothing_is_checked(
    tmp_path: Path, provider: FakeProvider
) -> None:
    data = spec(provider, tmp_path, rules=False)
    del data["routes"][0]["max_cost_usd"]
    router = build(tmp_path, data)
    d = router.route("will it rain today")
    assert (d.model, d.chain, d.skipped, d.signals) == ("dear", None, (), None)
    out = d.to_dict()
    assert (out["skipped"], out["estimated_cost_usd"], out["within_cost_limit"]) == ([], None, None)
    # A hint is enough to read the request and check its candidates.
    assert router.route("will it rain today", max_cost_usd=0.01).model == "able"


def test_a_route_ceiling_applies_without_rules(tmp_path: Path, provider: FakeProvider) -> None:
    router = build(tmp_path, spec(provider, tmp_path, rules=False))
    d = router.route("will it rain today")
    assert (d.model, skips(d), d.cost_limit_usd) == ("able", [("dear", "over_budget")], 0.01)
    assert router.route("hello there").signals is not None


# --- dispatch over real HTTP -------------------------------------------------------------------


def test_a_skipped_candidate_is_never_called(router: Router, provider: FakeProvider) -> None:
    dispatcher = Dispatcher.for_index(router.index)
    result = dispatcher.complete("hello there", router=router, task="tools", tools=TOOLS)
    assert [r.model for r in provider.requests] == ["able"]
    assert (result.model, skips(result.decision)) == ("able", [("no-tools", "capability")])


def test_the_cost_choice_is_the_model_called(router: Router, provider: FakeProvider) -> None:
    dispatcher = Dispatcher.for_index(router.index)
    provider.error("able", status=500)
    with pytest.raises(DispatchError, match="able"):
        dispatcher.complete("hello there", router=router, task="capped")
    assert [r.model for r in provider.requests] == ["able"]  # never the over-budget "dear"


# --- the command line --------------------------------------------------------------------------


def test_cli_route_shows_the_checks(router: Router) -> None:
    index = str(router.index.path)
    args = ["route", "hello there", "--index", index, "--task", "spendy", "--max-cost", "0.01"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "able" and data["within_cost_limit"] is True
    assert data["skipped"][0]["model"] == "dear" and data["skipped"][0]["reason"] == "over_budget"
    assert data["estimated_cost_usd"] > 0 and data["cost_limit_usd"] == 0.01
    human = CliRunner().invoke(main, args).stdout
    assert "skipped dear (over_budget)" in human and "limit $0.01" in human
    over = CliRunner().invoke(main, [*args[:-1], "0.000001"]).stdout
    assert "over budget" in over and "no model is called" in over


# --- what dispatch does with the checks ---------------------------------------------------------


def test_over_budget_raises_cost_limit_error_and_calls_no_model(
    router: Router, provider: FakeProvider, tmp_path: Path
) -> None:
    dispatcher = Dispatcher.for_index(router.index)
    with pytest.raises(CostLimitError, match=r"dear.*0\.0001") as info:
        dispatcher.complete("hello there", router=router, task="only-dear", max_cost_usd=0.0001)
    assert provider.requests == []
    assert info.value.decision is not None and info.value.decision.over_budget
    assert "\n" not in str(info.value)
    dispatcher.close()
    (line,) = (json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines())
    assert (line["reason"], line["model"], line["attempts"]) == ("over_budget", None, [])
    assert line["error"] == str(info.value) and line["within_cost_limit"] is False


def test_routing_skips_reach_the_result_the_log_and_stats(
    router: Router, provider: FakeProvider, tmp_path: Path
) -> None:
    dispatcher = Dispatcher.for_index(router.index)
    result = dispatcher.complete("hello there", router=router, task="tools", tools=TOOLS)
    dispatcher.complete("hello there", router=router)  # no rule matches
    dispatcher.close()
    assert [(s.model, s.reason) for s in result.skipped] == [("no-tools", "capability")]
    first, second = (
        json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()
    )
    assert first["rule"] == "tools" and second["rule"] is None
    assert first["skipped"][0]["reason"] == "capability"
    assert first["estimated_cost_usd"] > 0
    assert first["cost_limit_usd"] is None and first["within_cost_limit"] is None  # no ceiling
    stats = CliRunner().invoke(main, ["stats", str(tmp_path / "decisions.jsonl"), "--json"])
    data = json.loads(stats.stdout)
    assert data["rules"] == {
        "tools": {"requests": 1, "share": 0.5},
        "(no rule)": {"requests": 1, "share": 0.5},
    }
    assert data["skip_reasons"]["capability"]["skips"] == 1
    table = CliRunner().invoke(main, ["stats", str(tmp_path / "decisions.jsonl")])
    assert "rule" in table.output and "tools" in table.output
