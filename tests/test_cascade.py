"""Cascades over real HTTP: a cheap model's answer is checked, and a rejected one escalates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from semroute import RouteConfigError
from semroute.config.routes import parse_routes
from semroute.testing import FakeProvider
from tests.provider_kit import PRICED, run
from tests.quality_kit import CHEAP, EXTRACT, build, lines, spec

pytestmark = pytest.mark.usefixtures("provider_key")

GOOD_JSON = '{"total": 12, "currency": "EUR"}'


def cascade(provider: FakeProvider, folder: Path, accept: dict[str, Any], **extra: Any) -> Any:
    return build(
        folder,
        spec(provider, folder, extract={"cascade": ["cheap", "strong"], "accept": accept}, **extra),
    )


def models_called(provider: FakeProvider) -> list[str]:
    return [r.model for r in provider.requests]


def billed(body: dict[str, Any], answer: str, price: dict[str, float]) -> float:
    """What answering ``body`` with ``answer`` costs: the FakeProvider's usage (the words of the
    messages, the words of the answer) times ``price``."""
    prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    completion = len(answer.split())
    return prompt * price["input_cost_per_token"] + completion * price["output_cost_per_token"]


@pytest.mark.parametrize(
    ("accept", "cheap_text", "check"),
    [
        ({"json": True}, "the total is 12 euros", "json"),
        ({"json_schema": {"type": "object", "required": ["total"]}}, '{"sum": 12}', "json_schema"),
        ({"json_schema": {"type": "object"}}, "[1, 2", "json"),
        ({"regex": r"^\{.*\}$"}, "total: 12", "regex"),
        # Several checks: all must pass; the regex passes, the JSON does not.
        ({"regex": "total", "json": True}, "total: 12", "json"),
    ],
)
def test_a_failed_check_escalates_to_the_next_model(
    tmp_path: Path, provider: FakeProvider, accept: dict[str, Any], cheap_text: str, check: str
) -> None:
    provider.answer("cheap", cheap_text)
    provider.answer("strong", GOOD_JSON)
    router, dispatcher = cascade(provider, tmp_path, accept)
    result = dispatcher.complete(EXTRACT, router=router)
    assert (result.model, result.text) == ("strong", GOOD_JSON)
    assert result.decision.model == "cheap"
    cheap, strong = result.cascade
    assert (cheap.model, cheap.verdict, cheap.check) == ("cheap", "rejected", check)
    assert cheap.detail
    assert (strong.model, strong.verdict) == ("strong", "final")
    assert models_called(provider) == ["cheap", "strong"]
    # Both answers are paid for: the result's cost is their sum.
    assert cheap.cost_usd is not None and strong.cost_usd is not None
    assert result.cost_usd == pytest.approx(cheap.cost_usd + strong.cost_usd)
    (line,) = lines(tmp_path)  # one decision line for the request, both attempts in it
    assert line["model"] == "strong" and line["recommended_model"] == "cheap"
    assert [a["model"] for a in line["attempts"]] == ["cheap", "strong"]
    assert line["cascade"]["escalated"] is True
    assert [s["verdict"] for s in line["cascade"]["steps"]] == ["rejected", "final"]
    assert line["cascade"]["steps"][0]["check"] == check
    assert line["cost_usd"] == pytest.approx(result.cost_usd)


@pytest.mark.parametrize(
    "accept",
    [
        {"json": True},
        {"json_schema": {"type": "object", "required": ["total", "currency"]}},
        {"regex": r'"currency":\s*"[A-Z]{3}"'},
        {"json": True, "regex": "total", "min_logprob": -0.5},
    ],
)
def test_an_accepted_answer_is_returned_without_calling_the_next_model(
    tmp_path: Path, provider: FakeProvider, accept: dict[str, Any]
) -> None:
    provider.answer("cheap", GOOD_JSON, logprob=-0.1)
    router, dispatcher = cascade(provider, tmp_path, accept)
    result = dispatcher.complete(EXTRACT, router=router)
    assert (result.model, result.text) == ("cheap", GOOD_JSON)
    assert [(s.model, s.verdict) for s in result.cascade] == [("cheap", "accepted")]
    assert models_called(provider) == ["cheap"]
    (line,) = lines(tmp_path)
    assert line["cascade"]["escalated"] is False and line["model"] == "cheap"


def test_json_in_a_code_block_counts_as_json(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("cheap", f"```json\n{GOOD_JSON}\n```")
    router, dispatcher = cascade(provider, tmp_path, {"json": True})
    assert dispatcher.complete(EXTRACT, router=router).model == "cheap"


@pytest.mark.parametrize(
    ("logprob", "verdict"), [(-0.1, "accepted"), (-2.0, "rejected"), (None, "no_logprobs")]
)
def test_min_logprob_asks_the_cheap_model_for_logprobs(
    tmp_path: Path, provider: FakeProvider, logprob: float | None, verdict: str
) -> None:
    provider.answer("cheap", "twelve euros in total", logprob=logprob)
    router, dispatcher = cascade(provider, tmp_path, {"min_logprob": -0.5})
    result = dispatcher.complete(EXTRACT, router=router)
    assert result.cascade[0].verdict == verdict
    assert result.model == ("cheap" if verdict == "accepted" else "strong")
    cheap_request = provider.requests[0]
    assert cheap_request.body.get("logprobs") is True
    if verdict == "rejected":
        assert "-2.000" in (result.cascade[0].detail or "")
    # The last model's answer is never checked, so it is not asked for logprobs.
    assert all("logprobs" not in r.body for r in provider.requests[1:])


@pytest.mark.parametrize(("said", "model"), [("ACCEPT", "cheap"), (" reject. ", "strong")])
def test_the_judge_decides(tmp_path: Path, provider: FakeProvider, said: str, model: str) -> None:
    provider.answer("judge", said)
    router, dispatcher = cascade(provider, tmp_path, {"judge": "judge"})
    result = dispatcher.complete(EXTRACT, router=router)
    assert result.model == model
    judge_request = next(r for r in provider.requests if r.model == "judge")
    prompt = judge_request.body["messages"][-1]["content"]
    assert EXTRACT in prompt and "Hello from cheap." in prompt
    # The judge's call is paid for too: the cheap step costs the cheap answer and the verdict,
    # each its tokens (as the FakeProvider counts them: words) times its model's price.
    cheap_request = next(r for r in provider.requests if r.model == "cheap")
    answer_cost = billed(cheap_request.body, "Hello from cheap.", CHEAP)
    judge_cost = billed(judge_request.body, said, PRICED)
    assert judge_cost > answer_cost  # the judge's long prompt at ten times the price
    assert result.cascade[0].cost_usd == pytest.approx(answer_cost + judge_cost, rel=1e-9)
    if model == "strong":  # rejected: the strong answer is paid for as well
        strong_request = next(r for r in provider.requests if r.model == "strong")
        strong_cost = billed(strong_request.body, "Hello from strong.", PRICED)
        assert result.cascade[1].cost_usd == pytest.approx(strong_cost, rel=1e-9)
    assert result.cost_usd == pytest.approx(sum(s.cost_usd or 0.0 for s in result.cascade))
    (line,) = lines(tmp_path)
    assert line["cost_usd"] == pytest.approx(result.cost_usd)


def test_the_judge_is_asked_only_when_the_cheaper_checks_pass(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.answer("cheap", "not json")
    router, dispatcher = cascade(provider, tmp_path, {"json": True, "judge": "judge"})
    dispatcher.complete(EXTRACT, router=router)
    assert models_called(provider) == ["cheap", "strong"]


@pytest.mark.parametrize("judge", ["error", "garbage", "hang"])
def test_a_failing_judge_escalates_and_never_fails_the_request(
    tmp_path: Path, provider: FakeProvider, judge: str
) -> None:
    if judge == "error":
        provider.error("judge", status=500)
    elif judge == "garbage":
        provider.answer("judge", "Well, the answer seems mostly fine to me.")
    else:
        provider.hang("judge")
    data = spec(
        provider, tmp_path, extract={"cascade": ["cheap", "strong"], "accept": {"judge": "judge"}}
    )
    data["router"]["dispatch"]["timeout"] = 1.0
    router, dispatcher = build(tmp_path, data)
    result = dispatcher.complete(EXTRACT, router=router)
    assert result.model == "strong" and result.text == "Hello from strong."
    step = result.cascade[0]
    assert (step.verdict, step.check) == ("judge_error", "judge")
    assert step.detail
    (line,) = lines(tmp_path)
    assert line["error"] is None and line["cascade"]["steps"][0]["verdict"] == "judge_error"


def test_a_rejected_answer_is_returned_when_every_later_model_fails(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("judge", status=500)
    provider.error("strong", status=503)
    router, dispatcher = cascade(provider, tmp_path, {"judge": "judge"})
    result = dispatcher.complete(EXTRACT, router=router)
    assert (result.model, result.text) == ("cheap", "Hello from cheap.")
    assert [(s.model, s.verdict) for s in result.cascade] == [
        ("cheap", "judge_error"),
        ("strong", "failed"),
    ]
    assert result.fallbacks == ("strong",)
    (line,) = lines(tmp_path)
    assert line["model"] == "cheap" and line["error"] is None


def test_a_failing_cheap_model_escalates(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("cheap", status=500)
    router, dispatcher = cascade(provider, tmp_path, {"json": True})
    result = dispatcher.complete(EXTRACT, router=router)
    assert result.model == "strong"
    assert [(s.model, s.verdict) for s in result.cascade] == [
        ("cheap", "failed"),
        ("strong", "final"),
    ]
    assert result.cost_usd == result.cascade[1].cost_usd  # a failed call costs nothing


def test_the_async_path_walks_the_cascade_too(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("cheap", "no json")
    router, dispatcher = cascade(provider, tmp_path, {"json": True})
    result = run(dispatcher.acomplete(EXTRACT, router=router))
    assert [s.verdict for s in result.cascade] == ["rejected", "final"]


def test_a_stream_goes_to_the_cascades_last_model(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("cheap", GOOD_JSON)
    router, dispatcher = cascade(provider, tmp_path, {"json": True})
    stream = dispatcher.complete(EXTRACT, router=router, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert (stream.model, text) == ("strong", "Hello from strong.")
    assert models_called(provider) == ["strong"]
    (line,) = lines(tmp_path)
    assert line["cascade"]["streamed"] is True and line["cascade"]["steps"] == []


def test_a_rule_and_a_tier_may_cascade(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("cheap", "not json")
    data = spec(
        provider,
        tmp_path,
        router={"tiers": {"budget": {"cascade": ["cheap", "strong"], "accept": {"json": True}}}},
        rules=[
            {"name": "tiered", "when": {"task": "summarise"}, "tier": "budget"},
            {
                "name": "own",
                "when": {"task": "extract"},
                "cascade": ["cheap", "frontier"],
                "accept": {"regex": "^[{]"},
            },
        ],
    )
    router, dispatcher = build(tmp_path, data)
    tiered = dispatcher.complete("hello there", router=router, task="summarise")
    assert tiered.model == "strong" and tiered.decision.rule == "tiered"
    own = dispatcher.complete("hello there", router=router, task="extract")
    assert own.model == "frontier" and own.cascade[0].check == "regex"
    first, second = lines(tmp_path)
    assert (first["tier"], first["cascade"]["scope"], first["cascade"]["name"]) == (
        "budget",
        "tier",
        "budget",
    )
    assert (second["tier"], second["cascade"]["scope"]) == (None, "rule")


def test_a_pinned_request_takes_no_cascade(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("cheap", "not json")
    _, dispatcher = cascade(provider, tmp_path, {"json": True})
    result = dispatcher.complete(EXTRACT, model="cheap")
    assert result.model == "cheap" and result.cascade == ()


# --- validation ----------------------------------------------------------------------------------


def _data(route: dict[str, Any], router: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "router": {"default_model": "frontier", **(router or {})},
        "models": [
            {"model_name": n, "litellm_params": {"model": f"openai/{n}"}}
            for n in ("frontier", "cheap", "strong")
        ],
        "routes": [{"name": "extract", "utterances": ["parse this"], **route}],
    }


@pytest.mark.parametrize(
    ("route", "router", "field", "words"),
    [
        (
            {"cascade": ["cheap", "strnog"], "accept": {"json": True}},
            None,
            "cascade[1]",
            "unknown model",
        ),
        ({"cascade": ["cheap", "cheap"], "accept": {"json": True}}, None, "cascade[1]", "already"),
        ({"cascade": ["cheap"], "accept": {"json": True}}, None, "cascade", "at least 2"),
        ({"cascade": ["cheap", "strong"]}, None, "cascade", "needs `accept:`"),
        ({"accept": {"json": True}}, None, "accept", "add `cascade:`"),
        (
            {"cascade": ["cheap", "strong"], "model": "cheap", "accept": {"json": True}},
            None,
            "model",
            "not both",
        ),
        ({"cascade": ["cheap", "strong"], "accept": {}}, None, "accept", "at least one check"),
        (
            {"cascade": ["cheap", "strong"], "accept": {"regex": "(unclosed"}},
            None,
            "accept.regex",
            "invalid regular expression",
        ),
        (
            {"cascade": ["cheap", "strong"], "accept": {"json_schema": {"type": 12}}},
            None,
            "accept.json_schema",
            "not a valid JSON Schema",
        ),
        (
            {"cascade": ["cheap", "strong"], "accept": {"min_logprob": 0.5}},
            None,
            "accept.min_logprob",
            "less than or equal to 0",
        ),
        (
            {"cascade": ["cheap", "strong"], "accept": {"judge": "judgy"}},
            None,
            "accept.judge",
            "unknown model",
        ),
        (
            {"cascade": ["cheap", "strong"], "accept": {"jsn": True}},
            None,
            "accept.jsn",
            "unknown field",
        ),
        (
            {},
            {"shadow": {"sample": 1.5, "reference": "strong", "judge": "strong"}},
            "router.shadow.sample",
            "less than or equal to 1",
        ),
        (
            {},
            {"shadow": {"sample": -0.1, "reference": "strong", "judge": "strong"}},
            "router.shadow.sample",
            "greater than or equal to 0",
        ),
        (
            {},
            {"shadow": {"sample": 0.1, "reference": "gpt-9", "judge": "strong"}},
            "router.shadow.reference",
            "unknown model",
        ),
        (
            {},
            {"shadow": {"sample": 0.1, "judge": "strong"}},
            "router.shadow.reference",
            "needs `reference:`",
        ),
        ({"shadow": {"sample": 0.5}}, None, "shadow.reference", "needs `reference:`"),
        (
            {},
            {
                "shadow": {
                    "sample": 0.1,
                    "reference": "strong",
                    "judge": "strong",
                    "max_cost_usd_per_day": 0,
                }
            },
            "router.shadow.max_cost_usd_per_day",
            "greater than 0",
        ),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_field(
    route: dict[str, Any], router: dict[str, Any] | None, field: str, words: str
) -> None:
    with pytest.raises(RouteConfigError) as caught:
        parse_routes(_data(route, router), source="routes.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert "routes.yaml" in message and field in message and words in message, message


def test_a_tier_and_a_rule_are_checked_too() -> None:
    data = _data(
        {},
        {
            "tiers": {
                "t": {"cascade": ["cheap", "strong"], "models": ["cheap"], "accept": {"json": True}}
            }
        },
    )
    with pytest.raises(RouteConfigError, match=r"tiers.*exactly one of `models:` or `cascade:`"):
        parse_routes(data, source="routes.yaml")
    data = _data({})
    data["rules"] = [
        {"name": "r", "when": {"task": "x"}, "cascade": ["cheap", "nope"], "accept": {"json": True}}
    ]
    with pytest.raises(RouteConfigError, match=r"rule 'r'.*cascade\[1\].*unknown model 'nope'"):
        parse_routes(data, source="routes.yaml")
    data["rules"] = [
        {
            "name": "r",
            "when": {"task": "x"},
            "model": "cheap",
            "cascade": ["cheap", "strong"],
            "accept": {"json": True},
        }
    ]
    with pytest.raises(RouteConfigError, match="exactly one of"):
        parse_routes(data, source="routes.yaml")


def test_a_cascade_routes_to_its_first_model_and_changes_the_digest() -> None:
    plain = parse_routes(_data({"model": "cheap"}))
    cascaded = parse_routes(_data({"cascade": ["cheap", "strong"], "accept": {"json": True}}))
    assert cascaded.routes[0].model == "cheap"
    assert plain.digest() != cascaded.digest()
    assert not plain.quality and cascaded.quality
    # The index stores it: a dispatcher made from the stored settings knows the cascade.
    from semroute.config.deployments import DispatchConfig

    stored = DispatchConfig.from_dict(cascaded.dispatch_config().to_dict())
    assert stored.quality == cascaded.quality
    assert "quality" not in plain.dispatch_config().to_dict()


def test_semroute_chat_shows_the_cascade(tmp_path: Path, provider: FakeProvider) -> None:
    from click.testing import CliRunner

    from semroute.cli.main import main

    provider.answer("cheap", "not json")
    cascade(provider, tmp_path, {"json": True})
    args = ["chat", EXTRACT, "--index", str(tmp_path / "index")]
    human = CliRunner().invoke(main, args)
    assert human.exit_code == 0, human.output
    assert "cascade cheap: rejected (json: not valid JSON" in human.stdout
    assert "cascade strong: final" in human.stdout
    as_json = CliRunner().invoke(main, [*args, "--json"])
    steps = json.loads(as_json.stdout)["cascade"]
    assert [(s["model"], s["verdict"]) for s in steps] == [
        ("cheap", "rejected"),
        ("strong", "final"),
    ]
