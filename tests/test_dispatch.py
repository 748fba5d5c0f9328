"""Dispatch through LiteLLM, proven over real HTTP against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

import semroute
from semroute import Dispatcher, DispatchError, Reason, UnknownPriceWarning
from semroute.testing import FakeProvider
from tests.provider_kit import KEY, KEY_ENV, build, deployment, log_lines, run

# Every test here reaches FakeProvider with its key, and writes no log $SEMROUTE_LOG names.
pytestmark = pytest.mark.usefixtures("provider_key")


def test_happy_path_answers_from_the_routed_model(tmp_path: Path, provider: FakeProvider) -> None:
    router, dispatcher = build(tmp_path, provider)
    result = dispatcher.complete("will it rain today", router=router)
    assert result.decision.route == "weather"
    assert result.model == "weather-model"
    assert result.text == "Hello from weather-model."
    assert [(a.model, a.error) for a in result.attempts] == [("weather-model", None)]
    assert result.fallbacks == ()
    (request,) = provider.requests
    assert request.model == "weather-model"
    assert request.authorization == f"Bearer {KEY}"  # the key came from the environment


def test_failover_walks_the_chain_in_order(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("weather-model", status=500)
    provider.malformed("backup")
    router, dispatcher = build(tmp_path, provider)
    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "last-resort"
    assert result.text == "Hello from last-resort."
    assert [a.model for a in result.attempts] == ["weather-model", "backup", "last-resort"]
    assert result.fallbacks == ("weather-model", "backup")
    assert result.attempts[0].status == 500
    assert "500" in (result.attempts[0].error or "")
    assert result.attempts[1].error  # malformed JSON is a failure, not an answer
    assert all(a.latency_ms > 0 for a in result.attempts)
    assert [r.model for r in provider.requests] == ["weather-model", "backup", "last-resort"]


def test_default_model_falls_back_to_default_fallbacks(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("frontier", status=503)
    router, dispatcher = build(tmp_path, provider)
    result = dispatcher.complete("explain quantum entanglement", router=router)
    assert result.decision.route is None and result.decision.model == "frontier"
    assert (result.model, result.fallbacks) == ("backup", ("frontier",))


def test_rate_limited_model_fails_over(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("weather-model", status=429, retry_after=30)
    router, dispatcher = build(tmp_path, provider)
    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "backup"
    assert result.attempts[0].status == 429


def test_hanging_model_times_out_and_fails_over(tmp_path: Path, provider: FakeProvider) -> None:
    provider.hang("weather-model")
    router, dispatcher = build(tmp_path, provider, dispatch={"timeout": 0.3})
    result = dispatcher.complete("will it rain today", router=router)
    assert result.model == "backup"
    assert (result.attempts[0].error or "").startswith("Timeout")


def test_every_model_failing_raises_dispatch_error_listing_attempts(
    tmp_path: Path, provider: FakeProvider
) -> None:
    for name in ("weather-model", "backup", "last-resort"):
        provider.error(name, status=500)
    router, dispatcher = build(tmp_path, provider)
    with pytest.raises(DispatchError) as caught:
        dispatcher.complete("will it rain today", router=router)
    err = caught.value
    assert [a.model for a in err.attempts] == ["weather-model", "backup", "last-resort"]
    assert all(a.error and a.status == 500 for a in err.attempts)
    assert err.decision is not None and err.decision.route == "weather"
    assert "weather-model" in str(err) and "last-resort" in str(err)
    (line,) = log_lines(tmp_path)  # the failure is logged once, with every attempt
    assert line["model"] is None and line["error"]
    assert line["request_id"] == err.request_id
    assert line["fallbacks"] == ["weather-model", "backup", "last-resort"]


def test_streaming_yields_chunks_after_the_decision(tmp_path: Path, provider: FakeProvider) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher = build(tmp_path, provider)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    # Decided, and failed over, before the first chunk is read.
    assert stream.decision.route == "weather"
    assert stream.model == "backup"
    assert [a.model for a in stream.attempts] == ["weather-model", "backup"]
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p for p in pieces if p) == "Hello from backup."
    assert stream.text == "Hello from backup."
    assert stream.usage is not None and stream.usage.completion_tokens == 3
    assert stream.cost_usd == pytest.approx(
        stream.usage.prompt_tokens * 1e-6 + stream.usage.completion_tokens * 2e-6
    )
    (line,) = log_lines(tmp_path)
    assert line["stream"] is True and line["model"] == "backup"
    assert line["completion_tokens"] == 3


def test_a_stream_dropped_unread_and_unclosed_still_gets_its_log_line(
    tmp_path: Path, provider: FakeProvider
) -> None:
    import gc

    router, dispatcher = build(tmp_path, provider)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    request_id = stream.request_id
    del stream
    gc.collect()
    (line,) = log_lines(tmp_path)
    assert line["request_id"] == request_id and line["stream"] is True
    assert line["error"] == (
        "the stream was dropped before its end: neither read to its end nor closed"
    )
    # A stream read to its end, or closed, is not logged again when it goes.
    for close in (False, True):
        stream = dispatcher.complete("will it rain today", router=router, stream=True)
        if close:
            stream.close()
        else:
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        del stream
        gc.collect()
    assert [x["error"] for x in log_lines(tmp_path)[1:]] == [None, None]


def test_a_stream_that_breaks_before_its_first_chunk_fails_over(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.malformed("weather-model")
    router, dispatcher = build(tmp_path, provider)
    stream = dispatcher.complete("will it rain today", router=router, stream=True)
    assert stream.model == "backup"
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_async_streaming(tmp_path: Path, provider: FakeProvider) -> None:
    router, dispatcher = build(tmp_path, provider)

    async def main() -> tuple[str, str | None]:
        stream = await dispatcher.acomplete("will it rain today", router=router, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return text, stream.text

    assert run(main()) == ("Hello from weather-model.", "Hello from weather-model.")
    assert len(log_lines(tmp_path)) == 1


def test_usage_and_cost_from_prices_registered_in_the_config(
    tmp_path: Path, provider: FakeProvider
) -> None:
    router, dispatcher = build(tmp_path, provider)
    result = dispatcher.complete("will it rain today", router=router)
    assert result.usage is not None
    # The fake provider counts words: "will it rain today" in, "Hello from weather-model." out.
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 3)
    assert result.cost_usd == pytest.approx(4 * 1e-6 + 3 * 2e-6)
    (line,) = log_lines(tmp_path)
    assert line["cost_usd"] == pytest.approx(result.cost_usd)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (4, 3)


def test_cost_from_litellms_cost_map_for_a_known_model(
    tmp_path: Path, provider: FakeProvider
) -> None:
    models = [
        {
            "model_name": "frontier",
            "litellm_params": {
                "model": "openai/gpt-4o-mini",  # priced in LiteLLM's cost map
                "api_base": provider.url,
                "api_key": f"os.environ/{KEY_ENV}",
            },
        },
        *(deployment(provider, n) for n in ("weather-model", "backup", "last-resort")),
    ]
    router, dispatcher = build(tmp_path, provider, models=models)
    result = dispatcher.complete("explain quantum entanglement", router=router)
    assert result.model == "frontier"
    assert result.usage is not None
    # gpt-4o-mini: $0.15 / $0.60 per million tokens in / out.
    expected = result.usage.prompt_tokens * 0.15e-6 + result.usage.completion_tokens * 0.6e-6
    assert result.cost_usd == pytest.approx(expected)


def test_a_model_without_a_price_costs_none_with_a_warning(
    tmp_path: Path, provider: FakeProvider
) -> None:
    unpriced = {
        "model_name": "backup",
        "litellm_params": {"model": "openai/backup", "api_base": provider.url, "api_key": "x"},
    }
    unpriced["litellm_params"]["api_key"] = f"os.environ/{KEY_ENV}"
    models = [deployment(provider, n) for n in ("frontier", "weather-model", "last-resort")]
    _, dispatcher = build(tmp_path, provider, models=[*models, unpriced])
    with pytest.warns(UnknownPriceWarning, match="'backup'"):
        result = dispatcher.complete("hi", model="backup")
    assert result.cost_usd is None
    assert result.usage is not None


def test_pinned_model_is_not_routed_and_has_no_fallbacks(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("backup", status=500)
    _, dispatcher = build(tmp_path, provider)
    with pytest.raises(DispatchError) as caught:
        dispatcher.complete("will it rain today", model="backup")
    assert [a.model for a in caught.value.attempts] == ["backup"]
    assert caught.value.decision is not None
    assert caught.value.decision.reason == Reason.PINNED
    provider.answer("backup")
    result = dispatcher.complete("will it rain today", model="backup", fallbacks=["frontier"])
    assert (result.model, result.decision.route) == ("backup", None)


def test_pinned_plain_litellm_model_string(tmp_path: Path, provider: FakeProvider) -> None:
    _, dispatcher = build(tmp_path, provider)
    with pytest.warns(UnknownPriceWarning):
        result = dispatcher.complete(
            "hi", model="openai/adhoc", api_base=provider.url, api_key="sk-adhoc-9999"
        )
    assert result.text == "Hello from adhoc."
    assert provider.requests[-1].authorization == "Bearer sk-adhoc-9999"


def test_messages_and_litellm_parameters_reach_the_provider(
    tmp_path: Path, provider: FakeProvider
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "will it rain today"},
    ]
    router, dispatcher = build(tmp_path, provider)
    result = dispatcher.complete(messages, router=router, temperature=0.2, max_tokens=50)
    assert result.decision.route == "weather"
    body = provider.requests[0].body
    assert body["messages"] == messages
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)


def test_keys_never_reach_errors_or_the_log(tmp_path: Path, provider: FakeProvider) -> None:
    # A provider that echoes the key it was sent, as some do in 401 messages.
    provider.error("weather-model", status=401)
    provider.error("backup", status=401)
    provider.error("last-resort", status=401)
    router, dispatcher = build(tmp_path, provider, dispatch={"log_content": True})
    with pytest.raises(DispatchError) as caught:
        dispatcher.complete("will it rain today", router=router)
    assert provider.requests[0].authorization == f"Bearer {KEY}"
    assert KEY not in str(caught.value)
    assert all(KEY not in (a.error or "") for a in caught.value.attempts)
    assert "***" in (caught.value.attempts[0].error or "")
    log = (tmp_path / "decisions.jsonl").read_text()
    assert "will it rain today" in log  # content was opted in ...
    assert KEY not in log  # ... keys never are


def test_an_unset_key_variable_is_named_in_the_attempt(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, dispatcher = build(tmp_path, provider)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(DispatchError, match=f"environment variable {KEY_ENV} is not set"):
        dispatcher.complete("will it rain today", router=router)


def test_one_log_line_per_request_without_content_by_default(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=500)
    router, dispatcher = build(tmp_path, provider)
    first = dispatcher.complete("will it rain today", router=router)
    dispatcher.complete("good morning friend", router=router)
    lines = log_lines(tmp_path)
    assert len(lines) == 2
    line = lines[0]
    assert line["request_id"] == first.request_id
    assert (line["route"], line["reason"]) == ("weather", "matched")
    assert line["recommended_model"] == "weather-model"
    assert (line["model"], line["fallbacks"]) == ("backup", ["weather-model"])
    assert [a["model"] for a in line["attempts"]] == ["weather-model", "backup"]
    assert line["top_scores"][0]["route"] == "weather"
    assert line["routing_ms"] >= 0 and line["model_ms"] > 0
    assert line["error"] is None
    assert "messages" not in line and "answer" not in line
    assert "will it rain" not in (tmp_path / "decisions.jsonl").read_text()


def test_semroute_log_overrides_the_configured_path(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, dispatcher = build(tmp_path, provider)
    monkeypatch.setenv("SEMROUTE_LOG", str(tmp_path / "elsewhere.jsonl"))
    dispatcher.complete("will it rain today", router=router)
    assert not (tmp_path / "decisions.jsonl").exists()
    assert len((tmp_path / "elsewhere.jsonl").read_text().splitlines()) == 1


def test_module_level_complete_uses_the_default_router(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(tmp_path, provider)
    monkeypatch.setenv("SEMROUTE_INDEX", str(tmp_path / "index"))
    assert semroute.complete("will it rain today").model == "weather-model"
    result = run(semroute.acomplete([{"role": "user", "content": "hello there"}]))
    assert (result.decision.route, result.model) == ("greeting", "frontier")


def test_200_concurrent_requests_with_30_percent_failures_all_answer(
    tmp_path: Path, provider: FakeProvider
) -> None:
    # The routed model's provider fails 30% of requests at random, and so does the first
    # fallback's; the last fallback is healthy. Every request must come back with an answer,
    # and the log must hold one well-formed line per request.
    provider.flaky("weather-model", rate=0.3)
    provider.flaky("backup", rate=0.3)
    router, dispatcher = build(tmp_path, provider)

    async def main() -> list[Any]:
        calls = [
            dispatcher.acomplete(f"will it rain today, question {i}", router=router)
            for i in range(200)
        ]
        return await asyncio.gather(*calls)

    results = run(main())
    assert len(results) == 200
    assert all(r.text and r.text.startswith("Hello from ") for r in results)
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 200
    records = [json.loads(line) for line in lines]
    assert {r["request_id"] for r in records} == {r.request_id for r in results}
    assert all(r["error"] is None and r["model"] for r in records)
    # What the log says happened is what the server saw.
    failed_at_primary = sum(1 for r in records if "weather-model" in r["fallbacks"])
    assert failed_at_primary == provider.hits("weather-model", status=500)
    assert sum(len(r["attempts"]) for r in records) == len(provider.requests)
    assert 0 < failed_at_primary < 200


def test_a_model_litellm_cannot_set_up_fails_over_and_says_why(
    tmp_path: Path, provider: FakeProvider
) -> None:
    models = [deployment(provider, n) for n in ("frontier", "backup", "last-resort")]
    models.append({"model_name": "weather-model", "litellm_params": {"model": "no-provider-x"}})
    router, dispatcher = build(tmp_path, provider, models=models)
    result = dispatcher.complete(
        "will it rain today", router=router
    )  # the other models still answer
    assert result.model == "backup"
    assert "LiteLLM could not set this model up" in (result.attempts[0].error or "")
    with pytest.raises(DispatchError, match="name its provider"):
        dispatcher.complete("hi", model="another-model-without-provider")


def test_a_dispatcher_needs_a_router_unless_a_model_is_pinned(
    tmp_path: Path, provider: FakeProvider
) -> None:
    _, dispatcher = build(tmp_path, provider)
    with pytest.raises(TypeError, match="router="):
        dispatcher.complete("will it rain today")
    assert provider.requests == []


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        (
            {"model": "backup", "fallbacks": "frontier"},
            semroute.InvalidQueryError,
            "fallbacks= must be a list of model names, not str",
        ),
        (
            {"model": "backup", "fallbacks": [5]},
            semroute.InvalidQueryError,
            "fallbacks[0] must be a model's name, not 5",
        ),
        (
            {"model": "backup", "fallbacks": [["frontier"]]},
            semroute.InvalidQueryError,
            "fallbacks[0] must be a model's name",
        ),
        ({"model": ""}, semroute.InvalidQueryError, "model= is empty"),
        ({"model": "  "}, semroute.InvalidQueryError, "model= is empty"),
        (
            {"router": "indexes/default"},
            TypeError,
            "router= must be a semroute Router (Router.load(index)), not str",
        ),
    ],
)
def test_wrong_arguments_are_refused_before_any_model_is_called(
    tmp_path: Path, provider: FakeProvider, kwargs: dict[str, Any], error: type, says: str
) -> None:
    router, dispatcher = build(tmp_path, provider)
    if kwargs.get("model") == "":
        kwargs = {**kwargs, "router": router}
    with pytest.raises(error) as caught:
        dispatcher.complete("will it rain today", **kwargs)
    assert says in str(caught.value)
    assert provider.requests == [] and log_lines(tmp_path) == []


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([{"role": "wizard", "content": "hi"}], "message 0 has role 'wizard'; use one of system"),
        ([{"role": "user"}], "message 0 (user) has no content"),
        ([{"role": "user", "content": None}], "message 0 (user) has no content"),
        (
            [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}],
            "message 1 (tool) has no tool_call_id",
        ),
    ],
)
def test_messages_openai_would_refuse_are_refused_before_any_model_is_called(
    tmp_path: Path, provider: FakeProvider, messages: list[dict[str, Any]], says: str
) -> None:
    router, dispatcher = build(tmp_path, provider)
    for kwargs in ({"router": router}, {"model": "backup"}):
        with pytest.raises(semroute.InvalidQueryError, match=re.escape(says)):
            dispatcher.complete(messages, **kwargs)
    assert provider.requests == []
    # An agent's turns (an assistant's tool calls without content, the tool's answer) pass.
    turns = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert dispatcher.complete(turns, model="backup").text


def test_a_closed_dispatcher_closes_its_log_and_reopens_it_on_the_next_request(
    tmp_path: Path, provider: FakeProvider
) -> None:
    router, _ = build(tmp_path, provider)
    with Dispatcher.for_index(router.index) as dispatcher:
        assert dispatcher.complete("will it rain today", router=router).model == "weather-model"
    assert dispatcher.complete("hello there", router=router).model == "frontier"
    dispatcher.close()
    assert [line["route"] for line in log_lines(tmp_path)] == ["weather", "greeting"]


def test_synchronous_calls_of_every_dispatcher_share_one_loop_thread(
    tmp_path: Path, provider: FakeProvider
) -> None:
    def loop_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "semroute-dispatch")

    router, first = build(tmp_path, provider)
    first.complete("will it rain today", router=router)
    second = Dispatcher.for_index(router.index)
    second.complete("will it rain today", router=router)
    assert loop_threads() == 1


def test_dispatchers_that_are_gone_leave_litellm_room_for_cooldowns(
    tmp_path: Path, provider: FakeProvider
) -> None:
    """LiteLLM keeps at most 100 callbacks per list; a router registered past that gets no
    cooldowns. A gateway builds a dispatcher per index reload: the ones gone must leave.
    (Only calls through LiteLLM build its router: OpenAI-compatible deployments go direct.)"""
    import gc

    import litellm

    router, first = build(tmp_path, provider, dispatch={"direct": False})
    first.complete("will it rain today", router=router)
    for i in range(120):
        dispatcher = Dispatcher.for_index(router.index)
        dispatcher.complete("will it rain today", router=router)
        if i % 2:
            dispatcher.close()  # closed, or merely dropped
        del dispatcher
    gc.collect()
    last = Dispatcher.for_index(router.index)
    last.complete("will it rain today", router=router)
    callbacks = litellm.failure_callback
    registered = [getattr(c, "__self__", None) for c in callbacks]
    assert last._provider.litellm_router() in registered
    assert len(callbacks) < 100
