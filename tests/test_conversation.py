"""Routing a conversation: message lists, the last N user turns, sticky routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute import InvalidQueryError, Reason, Router
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import ROUTES_YAML, write_routes


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def router_with(tmp_path: Path, **conversation: Any) -> Router:
    router = {
        "router": {
            "default_model": "frontier-model",
            "encoder": "fake",
            "threshold": 0.5,
            "conversation": conversation,
        }
    }
    routes = write_routes(tmp_path / "routes", ROUTES_YAML, yaml.safe_dump(router))
    build_index(routes, tmp_path / "index", encoder=FakeEncoder())
    return Router.load(tmp_path / "index")


WEATHER_THEN_FOLLOW_UP = [
    {"role": "system", "content": "You are helpful."},
    user("will it rain today"),
    assistant("Probably, take an umbrella."),
    user("and in Paris?"),
]


def test_a_message_list_routes_on_the_last_user_message_by_default(tmp_path: Path) -> None:
    router = router_with(tmp_path)
    messages = [user("cancel my subscription plan"), assistant("Done."), user("will it rain today")]
    d, plain = router.route(messages), router.route("will it rain today")
    assert (d.route, d.reason, d.confidence) == (plain.route, plain.reason, plain.confidence)
    d = router.route(WEATHER_THEN_FOLLOW_UP)
    assert (d.route, d.reason) == (None, Reason.BELOW_THRESHOLD)  # "and in Paris?" alone


def test_turns_takes_earlier_user_turns_into_account(tmp_path: Path) -> None:
    d = router_with(tmp_path, turns=2).route(WEATHER_THEN_FOLLOW_UP)
    assert (d.route, d.reason) == ("weather", Reason.MATCHED)


def test_sticky_keeps_a_follow_up_on_its_route(tmp_path: Path) -> None:
    d = router_with(tmp_path, sticky=True).route(WEATHER_THEN_FOLLOW_UP)
    assert (d.route, d.model, d.reason) == ("weather", "weather-model", Reason.STICKY)
    weather = next(s for s in d.scores if s.route == "weather")
    assert d.confidence == weather.confidence  # the kept route's score for the new turn


def test_sticky_lets_a_turn_that_clearly_matches_elsewhere_switch(tmp_path: Path) -> None:
    router = router_with(tmp_path, sticky=True)
    d = router.route([user("will it rain today"), user("download my invoice")])
    assert (d.route, d.reason) == ("billing", Reason.MATCHED)
    # ... and the conversation then stays on the route it switched to.
    d = router.route(
        [user("will it rain today"), user("download my invoice"), user("and the other")]
    )
    assert (d.route, d.reason) == ("billing", Reason.STICKY)


def test_sticky_has_nothing_to_keep_in_a_new_conversation(tmp_path: Path) -> None:
    d = router_with(tmp_path, sticky=True).route([user("and in Paris?")])
    assert (d.route, d.reason) == (None, Reason.BELOW_THRESHOLD)


def test_content_parts_and_empty_conversations(tmp_path: Path) -> None:
    router = router_with(tmp_path)
    parts = [
        {"type": "text", "text": "will it rain"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "today"},
    ]
    assert router.route([{"role": "user", "content": parts}]).route == "weather"
    assert router.route([]).reason == Reason.EMPTY_QUERY
    assert router.route([{"role": "system", "content": "hi"}]).reason == Reason.EMPTY_QUERY


@pytest.mark.parametrize(
    "query",
    [
        [{"content": "no role"}],
        ["a plain string in a list"],
        [{"role": "user", "content": 42}],
        {"role": "user", "content": "a single message, not a list"},
    ],
)
def test_bad_message_lists_raise_invalid_query_error(tmp_path: Path, query: Any) -> None:
    with pytest.raises(InvalidQueryError):
        router_with(tmp_path).route(query)


@pytest.mark.model
def test_and_in_python_stays_with_code_in_the_bundled_example(bundled_index: Path) -> None:
    router = Router.load(bundled_index)
    conversation = [
        user("write a function that reverses a string in JavaScript"),
        assistant("function reverse(s) { return s.split('').reverse().join(''); }"),
        user("and in Python?"),
    ]
    alone = router.route("and in Python?")
    assert alone.route is None  # on its own, the follow-up matches no route
    d = router.route(conversation)
    assert (d.route, d.model, d.reason) == ("code", "mistral/codestral-latest", Reason.STICKY)
    # A turn that clearly belongs elsewhere still moves the conversation.
    switched = router.route([*conversation, assistant("def reverse(s): ..."), user("thanks!")])
    assert (switched.route, switched.reason) == ("small_talk", Reason.MATCHED)
