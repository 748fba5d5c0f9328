"""Signals, rules and tiers: what a request's features and the caller's hints do to a decision.

Indexes are built with FakeEncoder through the real build; dispatch goes over real HTTP to a
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
from semroute.config.policy import compile_policy
from semroute.config.routes import parse_routes
from semroute.errors import BlockedError, CorruptIndexError, InvalidQueryError
from semroute.index.manifest import MANIFEST
from semroute.routing.policy import holds
from semroute.routing.signals import Hints, Signals, estimate_tokens, extract
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.provider_kit import deployment, log_lines
from tests.provider_kit import run as run_async

MODELS = ["frontier", "weather-model", "coder", "cheap-a", "cheap-b", "long"]
RULES: list[dict[str, Any]] = [
    {"name": "no-secrets", "when": {"text_matches": r"(?i)\bpassword\b"}, "action": "block"},
    {"name": "long-context", "when": {"input_tokens": {"gt": 1000}}, "model": "long"},
    {"name": "tools", "when": {"has_tools": True}, "model": "coder"},
    {"name": "code-review", "when": {"task": "code-review"}, "model": "coder"},
    {"name": "free-users", "when": {"user_tier": "free"}, "tier": "budget"},
    {
        "name": "sure-weather",
        "when": {"route": "weather", "confidence": {"gte": 0.6}},
        "model": "openai/weather-pro",
    },
]


# Every test here reaches FakeProvider with its key, and writes no log $SEMROUTE_LOG names.
pytestmark = pytest.mark.usefixtures("provider_key")


def spec(
    provider: FakeProvider | None = None,
    folder: Path | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    router: dict[str, Any] = {"default_model": "frontier", "encoder": "fake", "threshold": 0.5}
    out: dict[str, Any] = {"router": router}
    if rules is not None:
        router["tiers"] = {"budget": ["cheap-a", "cheap-b"]}
        out["rules"] = rules
    if provider is not None and folder is not None:
        router["dispatch"] = {"timeout": 10.0, "log": str(folder / "decisions.jsonl")}
        out["models"] = [deployment(provider, n) for n in MODELS]
    out["routes"] = [
        {
            "name": "weather",
            "model": "weather-model",
            "utterances": ["what is the weather forecast for tomorrow", "will it rain today"],
        },
        {"name": "greeting", "utterances": ["hello there", "good morning friend"]},
    ]
    return out


def build(folder: Path, data: dict[str, Any]) -> Router:
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    build_index(routes, folder / "index", encoder=FakeEncoder())
    return Router.load(folder / "index")


@pytest.fixture
def ruled(tmp_path: Path) -> Router:
    return build(tmp_path, spec(rules=RULES))


# --- signals -----------------------------------------------------------------------------------


def test_signals_are_read_from_an_openai_request_and_the_hints() -> None:
    request = {
        "messages": [
            {"role": "system", "content": "x" * 400},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "max_tokens": 300,
    }
    hints = Hints(task="vision", user_tier="pro", max_cost_usd=0.01, metadata={"team": "a"})
    s = extract(request["messages"], request, hints)
    assert s.system_prompt_tokens == 100
    assert s.input_tokens == 100 + estimate_tokens("what is in this picture?")
    assert (s.has_tools, s.has_images, s.json_mode, s.max_tokens) == (True, True, True, 300)
    assert (s.task, s.user_tier, s.max_cost_usd) == ("vision", "pro", 0.01)
    assert s.get("metadata.team") == "a"
    assert s.text == "what is in this picture?"
    assert "text" not in s.to_dict()  # the log must not hold the user's words


def test_a_plain_request_has_no_tools_images_or_json() -> None:
    s = extract([{"role": "user", "content": "hi"}], {"response_format": {"type": "text"}})
    assert (s.has_tools, s.has_images, s.json_mode, s.max_tokens) == (False, False, False, None)


def test_token_estimate_scales_with_the_text() -> None:
    # UTF-8 bytes / 4: a 200,000-character ASCII text is 50,000 tokens.
    assert estimate_tokens("a" * 200_000) == 50_000
    assert estimate_tokens("") == 0
    assert estimate_tokens("日本語") == 3  # 9 bytes: CJK counts more per character


# --- conditions --------------------------------------------------------------------------------


def _holds(when: dict[str, Any], **signals: Any) -> bool:
    rules = [{"name": "r", "when": when, "model": "m"}]
    policy = compile_policy(rules, {}, source="t", node=None, models=None, routes=None)
    return holds(policy.rules[0].condition, Signals(**signals))


@pytest.mark.parametrize(
    ("when", "signals", "expected"),
    [
        ({"task": "code"}, {"task": "code"}, True),
        ({"task": "code"}, {"task": "chat"}, False),
        ({"task": "code"}, {}, False),
        ({"has_tools": True}, {"has_tools": True}, True),
        ({"has_tools": False}, {"has_tools": True}, False),
        ({"user_tier": {"in": ["free", "trial"]}}, {"user_tier": "trial"}, True),
        ({"user_tier": {"in": ["free", "trial"]}}, {"user_tier": "pro"}, False),
        ({"input_tokens": {"gt": 10}}, {"input_tokens": 11}, True),
        ({"input_tokens": {"gt": 10}}, {"input_tokens": 10}, False),
        ({"input_tokens": {"gte": 10}}, {"input_tokens": 10}, True),
        ({"input_tokens": {"lt": 10}}, {"input_tokens": 10}, False),
        ({"input_tokens": {"lte": 10}}, {"input_tokens": 10}, True),
        ({"input_tokens": {"gt": 5, "lt": 10}}, {"input_tokens": 7}, True),
        ({"input_tokens": {"gt": 5, "lt": 10}}, {"input_tokens": 12}, False),
        ({"max_tokens": {"gt": 5}}, {"max_tokens": None}, False),  # unknown is not big
        ({"user_tier": {"not": "free"}}, {"user_tier": "pro"}, True),
        ({"user_tier": {"not": "free"}}, {"user_tier": "free"}, False),
        ({"user_tier": {"not": {"in": ["free", "trial"]}}}, {"user_tier": "trial"}, False),
        ({"not": {"task": "code", "has_tools": True}}, {"task": "code"}, True),
        ({"not": {"task": "code", "has_tools": True}}, {"task": "code", "has_tools": True}, False),
        ({"task": "code", "has_tools": True}, {"task": "code"}, False),  # all-of by default
        ({"any": [{"task": "code"}, {"has_tools": True}]}, {"has_tools": True}, True),
        ({"any": [{"task": "code"}, {"has_tools": True}]}, {"task": "chat"}, False),
        ({"text_matches": r"(?i)\bpassword\b"}, {"text": "my PASSWORD is"}, True),
        ({"text_matches": r"(?i)\bpassword\b"}, {"text": "passwords"}, False),
        ({"metadata.team": "search"}, {"metadata": {"team": "search"}}, True),
        ({"metadata.team": "search"}, {"metadata": {}}, False),
        ({"metadata.retries": 1}, {"metadata": {"retries": True}}, False),  # true is not 1
        ({"route": None}, {"route": None}, True),
        ({}, {}, True),
    ],
)
def test_condition(when: dict[str, Any], signals: dict[str, Any], expected: bool) -> None:
    assert _holds(when, **signals) is expected


# --- routing with rules ------------------------------------------------------------------------


def test_first_matching_rule_wins_in_file_order(ruled: Router) -> None:
    # tools (3rd) and free-users (5th) both match: the earlier one decides.
    d = ruled.route("hello there", request={"tools": [{"type": "function"}]}, user_tier="free")
    assert (d.rule, d.model, d.reason.value, d.chain) == ("tools", "coder", "rule", ("coder",))
    assert d.recommended_model == "frontier"
    assert d.route == "greeting"  # the semantic decision is kept
    assert d.signals is not None and d.signals["has_tools"] is True


def test_a_tier_rule_sets_the_chain(ruled: Router) -> None:
    d = ruled.route("hello there", user_tier="free")
    assert (d.rule, d.model, d.chain) == ("free-users", "cheap-a", ("cheap-a", "cheap-b"))


def test_a_rule_can_test_the_semantic_decision(ruled: Router) -> None:
    d = ruled.route("will it rain today", user_tier="pro")
    assert d.rule == "sure-weather"
    assert d.model == "openai/weather-pro"
    assert d.recommended_model == "weather-model"


def test_a_block_rule_blocks(ruled: Router) -> None:
    d = ruled.route("my password is hunter2")
    assert d.blocked and d.rule == "no-secrets" and d.chain == ()
    assert d.to_dict()["reason"] == "blocked"


def test_the_request_messages_feed_the_signals(ruled: Router) -> None:
    long = [{"role": "user", "content": "word " * 1000}]
    d = ruled.route("hello there", request={"messages": long})
    assert d.rule == "long-context" and d.model == "long"


def test_no_rule_matching_keeps_the_semantic_decision(ruled: Router) -> None:
    d = ruled.route("hello there", task="chat")
    assert (d.rule, d.model, d.reason.value, d.chain) == (None, "frontier", "matched", None)
    assert d.signals is not None and d.signals["task"] == "chat"


def test_a_request_that_is_not_a_mapping_is_refused(ruled: Router) -> None:
    with pytest.raises(InvalidQueryError, match="request must be a mapping"):
        ruled.route("hi", request=["messages"])  # type: ignore[arg-type]


def test_without_rules_decisions_are_unchanged(tmp_path: Path) -> None:
    router = build(tmp_path, spec())
    d = router.route("will it rain today")
    data = d.to_dict()
    old_keys = ["route", "model", "confidence", "margin", "reason", "truncated", "latency_ms"]
    assert list(data)[: len(old_keys) + 1] == [*old_keys, "scores"]
    assert (data["signals"], data["rule"], data["chain"]) == (None, None, None)
    assert data["recommended_model"] == data["model"] == "weather-model"
    manifest = json.loads((tmp_path / "index" / MANIFEST).read_text())
    assert "policy" not in manifest
    assert not router.policy


def test_rules_are_stored_in_the_index(tmp_path: Path) -> None:
    build(tmp_path, spec(rules=RULES))
    (tmp_path / "routes" / "routes.yaml").unlink()  # loading needs no route files
    router = Router.load(tmp_path / "index", encoder=FakeEncoder(), check_routes=False)
    assert [r.name for r in router.policy.rules] == [r["name"] for r in RULES]
    assert router.route("hello there", user_tier="free").rule == "free-users"


def test_a_tampered_policy_in_the_manifest_is_refused(tmp_path: Path) -> None:
    build(tmp_path, spec(rules=RULES))
    path = tmp_path / "index" / MANIFEST
    data = json.loads(path.read_text())
    data["policy"]["rules"][0]["when"] = {"text_matches": "(unclosed"}
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptIndexError, match="invalid regular expression"):
        Router.load(tmp_path / "index", encoder=FakeEncoder(), check_routes=False)


def test_rules_change_the_routes_digest_only_when_present() -> None:
    plain = parse_routes(spec())
    same = parse_routes({**spec(), "rules": []})
    ruled = parse_routes(spec(rules=RULES))
    assert plain.digest() == same.digest() != ruled.digest()


# --- dispatch over real HTTP -------------------------------------------------------------------


def test_a_blocked_request_calls_no_model(tmp_path: Path, provider: FakeProvider) -> None:
    router = build(tmp_path, spec(provider, tmp_path, RULES))
    dispatcher = Dispatcher.for_index(router.index)
    with pytest.raises(BlockedError, match="blocked by rule 'no-secrets'"):
        dispatcher.complete("my password is hunter2", router=router)
    assert provider.requests == []
    (line,) = log_lines(tmp_path)  # logged with its reason, and without the text
    assert (line["reason"], line["rule"], line["attempts"]) == ("blocked", "no-secrets", [])
    assert "hunter2" not in json.dumps(line)


def test_a_tier_chain_falls_back_in_order(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("cheap-a", status=500)
    router = build(tmp_path, spec(provider, tmp_path, RULES))
    dispatcher = Dispatcher.for_index(router.index)
    result = dispatcher.complete("hello there", router=router, user_tier="free")
    assert [(a.model, a.error is None) for a in result.attempts] == [
        ("cheap-a", False),
        ("cheap-b", True),
    ]
    assert result.model == "cheap-b"
    assert [r.model for r in provider.requests] == ["cheap-a", "cheap-b"]
    line = log_lines(tmp_path)[-1]
    assert (line["rule"], line["recommended_model"]) == ("free-users", "frontier")
    assert line["signals"]["user_tier"] == "free"
    assert "text" not in line["signals"] and "hello there" not in json.dumps(line)


def test_request_fields_in_kwargs_feed_the_rules(tmp_path: Path, provider: FakeProvider) -> None:
    router = build(tmp_path, spec(provider, tmp_path, RULES))
    dispatcher = Dispatcher.for_index(router.index)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    result = dispatcher.complete("hello there", router=router, tools=tools, task="chat")
    assert result.decision.rule == "tools"
    assert [r.model for r in provider.requests] == ["coder"]


# --- the command line --------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_route_takes_the_hints(tmp_path: Path) -> None:
    build(tmp_path, spec(rules=RULES))
    index = str(tmp_path / "index")
    code, out, _ = run("route", "hello there", "--index", index, "--tier", "free", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["rule"], data["model"], data["chain"]) == (
        "free-users",
        "cheap-a",
        ["cheap-a", "cheap-b"],
    )
    code, out, _ = run("route", "hello there", "--index", index, "--task", "code-review", "--json")
    assert json.loads(out)["rule"] == "code-review"
    code, out, _ = run("route", "hello", "--index", index, "--max-cost", "0.5", "--json")
    assert json.loads(out)["signals"]["max_cost_usd"] == 0.5
    for bad in ("nan", "inf", "-1"):
        code, _, err = run("route", "hello", "--index", index, "--max-cost", bad)
        assert code == 2 and "--max-cost" in err, bad
    code, out, _ = run("route", "hello", "--index", index, "--max-tokens", "64", "--json")
    assert json.loads(out)["signals"]["max_tokens"] == 64
    code, out, _ = run("route", "my password is x", "--index", index)
    assert code == 0 and "no-secrets" in out and "blocked" in out


def test_cli_route_reads_a_request_body(tmp_path: Path) -> None:
    build(tmp_path, spec(rules=RULES))
    body = tmp_path / "body.json"
    body.write_text(
        json.dumps(
            {
                "messages": [{"role": "user", "content": "will it rain today"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            }
        )
    )
    code, out, _ = run(
        "route", "--request", str(body), "--index", str(tmp_path / "index"), "--json"
    )
    assert code == 0, out
    data = json.loads(out)
    assert (data["route"], data["rule"], data["model"]) == ("weather", "tools", "coder")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "should be a JSON object"),
        ('{"messages": "hi"}', "`messages` should be a list"),
        ('{"messages": [{"content": "hi"}]}', "messages[0] should be an object with a role"),
        ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}', "`max_tokens`"),
    ],
)
def test_cli_route_refuses_a_bad_body_in_one_line(
    tmp_path: Path, content: str, expected: str
) -> None:
    build(tmp_path, spec(rules=RULES))
    body = tmp_path / "body.json"
    body.write_text(content)
    code, _, err = run("route", "--request", str(body), "--index", str(tmp_path / "index"))
    assert code == 1
    assert expected in err and "body.json" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_route_needs_a_query_or_a_body(tmp_path: Path) -> None:
    code, _, err = run("route", "--index", str(tmp_path))
    assert code == 2 and "QUERY" in err


def test_cli_validate_checks_rules(tmp_path: Path) -> None:
    bad = spec(rules=[{"name": "r", "when": {"user_tier": "free"}, "tier": "gold"}])
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    code, _, err = run("validate", str(tmp_path / "routes.yaml"))
    assert code == 1 and "rule 'r'" in err and "unknown tier 'gold'" in err


def test_hints_never_reach_the_provider(tmp_path: Path, provider: FakeProvider) -> None:
    router = build(tmp_path, spec(provider, tmp_path, RULES))
    dispatcher = Dispatcher.for_index(router.index)
    hints: dict[str, Any] = {"task": "chat", "user_tier": "pro", "max_cost_usd": 0.5}
    dispatcher.complete("hello there", router=router, metadata={"team": "a"}, **hints)
    dispatcher.complete("hello there", model="coder", **hints)

    async def ask() -> None:
        await dispatcher.acomplete("hello there", router=router, **hints)
        await dispatcher.acomplete("hello there", model="coder", **hints)

    run_async(ask())
    assert [r.model for r in provider.requests] == ["frontier", "coder", "frontier", "coder"]
    for request in provider.requests:
        sent = json.dumps(request.body)
        assert "user_tier" not in sent and "max_cost_usd" not in sent and "team" not in sent
