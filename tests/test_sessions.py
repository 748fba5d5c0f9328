"""Sessions for agents: with sticky conversations, a multi-step agent run stays on one model
until a rule or health moves it, and the log says when and why. Through the gateway, with the
official client, a FakeProvider and (for replicas) a real redis-server."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from semroute.dispatch.sessions import LocalSessions, RedisSessions, session_key
from semroute.dispatch.shared_health import RedisLink
from semroute.routing.policy import Held
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines, serve_process
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import RedisServer

pytestmark = pytest.mark.usefixtures("provider_key")

STICKY = {"conversation": {"sticky": True}}
SYSTEM = {"role": "system", "content": "You are a travel agent. Use the tools."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "forecast",
            "description": "The weather forecast for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
KEY_A = "sk-session-a-61c0d9e2"
KEY_B = "sk-session-b-0f3a7b55"


def agent_steps(n: int = 5) -> list[list[dict[str, Any]]]:
    """The message lists of an n-step tool-using agent run: each step resends the whole
    conversation, grown by the model's tool call, the tool's result and a user turn that, on
    its own, is a greeting (it would go to the greeting route's model, frontier)."""
    messages: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": "will it rain today"}]
    steps = [copy.deepcopy(messages)]
    for i in range(1, n):
        call_id = f"call_{i}"
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "forecast", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": f"rain, {60 + i}%"},
            {"role": "user", "content": "hello there good morning friend"},
        ]
        steps.append(copy.deepcopy(messages))
    return steps


@pytest.fixture
def sticky(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    with Served(build(tmp_path, provider, router=STICKY)) as served:
        yield served


def ask(served: Served, messages: Any, key: str = "unused", **headers: str) -> Any:
    return ask_url(served.url, messages, key, **headers)


def ask_url(url: str, messages: Any, key: str = "unused", **headers: str) -> Any:
    with openai.OpenAI(
        base_url=url + "/v1", api_key=key, max_retries=0, default_headers=headers, timeout=30
    ) as client:
        return client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )


def routed_alone(served: Served, messages: Any) -> str:
    """The model routing picks for ``messages`` without a session (POST /v1/route)."""
    body = {"messages": messages}
    return str(httpx.post(served.url + "/v1/route", json=body, timeout=30).json()["model"])


def test_a_five_step_agent_run_stays_on_its_first_model(
    sticky: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    steps = agent_steps(5)
    # On their own, the later steps go elsewhere: the user's last turn is a greeting.
    assert routed_alone(sticky, steps[0]) == "weather-model"
    assert [routed_alone(sticky, s) for s in steps[1:]] == ["frontier"] * 4
    answers = [ask(sticky, messages) for messages in steps]
    assert [a.headers["x-semroute-model"] for a in answers] == ["weather-model"] * 5
    assert [a.headers["x-semroute-reason"] for a in answers] == ["matched", *["session"] * 4]
    assert {a.headers["x-semroute-route"] for a in answers} == {"weather"}
    assert provider.hits("weather-model") == 5 and provider.hits("frontier") == 0
    lines = log_lines(tmp_path)
    assert len({line["session"]["id"] for line in lines}) == 1
    assert all(line["session"]["model"] == "weather-model" for line in lines)
    assert not any("switched_from" in line["session"] for line in lines)


def test_an_open_breaker_moves_the_session_and_the_log_says_why(
    sticky: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    steps = agent_steps(5)
    for messages in steps[:2]:
        assert ask(sticky, messages).headers["x-semroute-model"] == "weather-model"
    # Other runs open weather-model's breaker (failures_to_open: 3).
    provider.error("weather-model", status=500)
    weather = [{"role": "user", "content": "will it rain today"}]
    for i in range(3):
        assert ask(sticky, weather, **{"X-Session-Id": f"other-{i}"}).http_response.is_success
    hits = provider.hits("weather-model")
    moved = ask(sticky, steps[2])
    assert moved.headers["x-semroute-model"] == "backup"
    assert moved.headers["x-semroute-skipped"] == "weather-model=unhealthy"
    assert provider.hits("weather-model") == hits  # skipped, not tried
    # The run stays on its new model, also once weather-model answers again.
    provider.answer("weather-model")
    assert [ask(sticky, s).headers["x-semroute-model"] for s in steps[3:]] == ["backup"] * 2
    session_id = log_lines(tmp_path)[0]["session"]["id"]
    mine = [
        line["session"]
        for line in log_lines(tmp_path)
        if line.get("session", {}).get("id") == session_id
    ]
    assert [s["model"] for s in mine] == ["weather-model"] * 2 + ["backup"] * 3
    switch = mine[2]
    assert switch["switched_from"] == "weather-model"
    assert switch["why"].startswith("unhealthy: ")
    assert not any("switched_from" in s for s in mine[3:])


def test_a_failed_model_moves_the_session(
    sticky: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    steps = agent_steps(3)
    assert ask(sticky, steps[0]).headers["x-semroute-model"] == "weather-model"
    provider.error("weather-model", status=503)
    assert ask(sticky, steps[1]).headers["x-semroute-model"] == "backup"
    switch = log_lines(tmp_path)[-1]["session"]
    assert switch["switched_from"] == "weather-model"
    assert switch["why"].startswith("failed: ")


def test_a_rule_overrides_the_session(tmp_path: Path, provider: FakeProvider) -> None:
    rules = [
        {"name": "oslo-to-last", "when": {"text_matches": "(?i)urgent"}, "model": "last-resort"}
    ]
    with Served(build(tmp_path, provider, router=STICKY, rules=rules)) as served:
        steps = agent_steps(3)
        assert ask(served, steps[0]).headers["x-semroute-model"] == "weather-model"
        urgent = [*steps[1][:-1], {"role": "user", "content": "urgent: will it rain today"}]
        answer = ask(served, urgent)
        assert answer.headers["x-semroute-model"] == "last-resort"
        assert answer.headers["x-semroute-reason"] == "rule"
        switch = log_lines(tmp_path)[-1]["session"]
        assert switch["switched_from"] == "weather-model"
        assert switch["why"] == "rule 'oslo-to-last' chose 'last-resort'"


def test_two_keys_with_the_same_first_turns_have_two_sessions(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_KEY_A", KEY_A)
    monkeypatch.setenv("SESSION_KEY_B", KEY_B)
    server = {"keys": ["os.environ/SESSION_KEY_A", "os.environ/SESSION_KEY_B"]}
    with Served(build(tmp_path, provider, router=STICKY, server=server)) as served:
        steps = agent_steps(2)
        assert ask(served, steps[0], KEY_A).headers["x-semroute-model"] == "weather-model"
        # B's run is its own: its greeting goes where routing sends it, A's stays.
        assert ask(served, steps[1], KEY_B).headers["x-semroute-model"] == "frontier"
        assert ask(served, steps[1], KEY_A).headers["x-semroute-model"] == "weather-model"
    a, b, a2 = (line["session"]["id"] for line in log_lines(tmp_path))
    assert a == a2 != b


def test_a_session_header_names_the_run(sticky: Served, tmp_path: Path) -> None:
    steps = agent_steps(2)
    assert ask(sticky, steps[0], **{"X-Session-Id": "run-1"}).headers["x-semroute-model"] == (
        "weather-model"
    )
    # Another conversation under the same name is the same run; another name is another run.
    other = [{"role": "user", "content": "hello there"}]
    assert ask(sticky, other, **{"X-Session-Id": "run-1"}).headers["x-semroute-model"] == (
        "weather-model"
    )
    assert ask(sticky, other, **{"X-Session-Id": "run-2"}).headers["x-semroute-model"] == (
        "frontier"
    )


def test_without_sticky_there_are_no_sessions(tmp_path: Path, provider: FakeProvider) -> None:
    with Served(build(tmp_path, provider)) as served:
        models = [ask(served, s).headers["x-semroute-model"] for s in agent_steps(2)]
    assert models == ["weather-model", "frontier"]
    assert all("session" not in line for line in log_lines(tmp_path))


def test_the_session_key_hashes_scope_and_first_turns() -> None:
    steps = agent_steps(3)
    assert session_key("a", steps[0], None) == session_key("a", steps[2], None)
    assert session_key("a", steps[0], None) != session_key("b", steps[0], None)
    other_system = [{**steps[0][0], "content": "You are a chef."}, steps[0][1]]
    assert session_key("a", other_system, None) != session_key("a", steps[0], None)
    assert session_key("a", steps[0], "x") != session_key("b", steps[0], "x")
    assert session_key("a", steps[0], "x") == session_key("a", other_system, " x ")


def test_local_sessions_are_bounded_and_expire() -> None:
    now = [0.0]
    store = LocalSessions(2, ttl_s=10.0, clock=lambda: now[0])
    store.put("a", Held(("m1",)))
    store.put("b", Held(("m2",)))
    assert store.get("a") == Held(("m1",))  # a is now the most recent
    store.put("c", Held(("m3",)))
    assert store.get("b") is None and len(store) == 2  # the least recently used went
    now[0] = 9.9
    assert store.get("c") == Held(("m3",))
    now[0] = 10.0
    assert store.get("c") is None


def test_redis_sessions_are_shared_expire_and_survive_an_outage(redis_server: RedisServer) -> None:
    link = RedisLink.from_url(redis_server.url, timeout_s=0.25)
    one = RedisSessions(link, LocalSessions(10, ttl_s=5.0), prefix="t")
    two = RedisSessions(link, LocalSessions(10, ttl_s=5.0), prefix="t")
    one.put("s", Held(("m1", "m2"), "weather"))
    assert two.get("s") == Held(("m1", "m2"), "weather")
    assert 0 < link.client.ttl("t:session:s") <= 5
    link.client.set("t:session:bad", "not json")
    assert two.get("bad") is None
    link.client.delete("t:session:bad")
    link.client.lpush("t:session:bad", "x")  # WRONGTYPE: no session, no error
    assert two.get("bad") is None
    redis_server.stop()
    assert one.get("s") == Held(("m1", "m2"), "weather")  # its own process's copy
    assert two.get("s") is None
    two.put("s2", Held(("m3",)))
    assert two.get("s2") == Held(("m3",))
    link.close()


def test_replicas_share_a_session_through_redis(
    tmp_path: Path, provider: FakeProvider, redis_server: RedisServer
) -> None:
    server = {"redis_url": "os.environ/SESSION_REDIS"}
    index = build(tmp_path, provider, router=STICKY, server=server)
    env = {KEY_ENV: KEY, "SESSION_REDIS": redis_server.url}
    steps = agent_steps(3)
    with serve_process(index, env=env) as (_, a), serve_process(index, env=env) as (_, b):
        assert ask_url(a, steps[0]).headers["x-semroute-model"] == "weather-model"
        for messages in steps[1:]:  # on the other replica
            answer = ask_url(b, messages)
            assert answer.headers["x-semroute-model"] == "weather-model"
            assert answer.headers["x-semroute-reason"] == "session"


def test_the_python_api_takes_a_session_name(tmp_path: Path, provider: FakeProvider) -> None:
    from semroute import Dispatcher, Router

    router = Router.load(build(tmp_path, provider, router=STICKY))
    with Dispatcher.for_index(router.index) as dispatcher:
        first = dispatcher.complete("will it rain today", router=router, session="run-7")
        later = dispatcher.complete("hello there", router=router, session="run-7")
        alone = dispatcher.complete("hello there", router=router)
    assert (first.model, later.model, alone.model) == ("weather-model", "weather-model", "frontier")
    assert later.decision.reason.value == "session" and later.decision.route == "weather"
