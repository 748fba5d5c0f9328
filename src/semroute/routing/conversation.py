"""Routing a conversation: an OpenAI-style message list → the text to route → one Decision.

By default only the last user message counts. ``turns: N`` routes on the last N user turns
joined together. ``sticky: true`` keeps a conversation on the route it is on unless the new
turn matches another route outright, so a follow-up like "and in Python?" stays with ``code``.

Stickiness needs no stored state: the route a conversation "is on" is found by routing its user
turns in order (one batched encode) and letting each turn either match a route outright or keep
the route before it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

from semroute.config.conversation import ConversationSettings, ConversationSpec
from semroute.decision import Decision, Reason
from semroute.errors import InvalidQueryError

__all__ = [
    "ConversationSettings",
    "ConversationSpec",
    "Message",
    "as_messages",
    "route_messages",
    "user_turns",
]

Message = Mapping[str, Any]
RouteBatch = Callable[[Sequence[str]], list[Decision]]

# How many user turns a sticky conversation looks back over (each one is encoded).
STICKY_HISTORY = 8


def as_messages(query: str | Sequence[Message]) -> list[dict[str, Any]]:
    """A message list for the model: a plain string becomes one user message."""
    if isinstance(query, str):
        return [{"role": "user", "content": query}]
    user_turns(query)  # validates
    return [dict(m) for m in query]


def user_turns(messages: object) -> list[str]:
    """The text of every user message, oldest first. Raises InvalidQueryError for bad input."""
    if isinstance(messages, str | bytes | bytearray) or not isinstance(messages, Sequence):
        raise InvalidQueryError(
            "a query must be a string or a list of messages like "
            f"{{'role': 'user', 'content': '...'}}, not {type(messages).__name__}"
        )
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidQueryError(
                f"a query must be a string or a list of messages; message {i} is "
                f"{reprlib.repr(message)}, not a mapping with a 'role'"
            )
        _check_message(message, i)
        if message["role"] == "user":
            turns.append(_text(message.get("content"), i))
    return turns


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
"""The roles of OpenAI's chat messages (the gateway's schema takes these too)."""
ROLES: tuple[str, ...] = get_args(Role)
NEEDS_CONTENT = frozenset({"system", "developer", "user", "tool"})
"""Roles whose message must have content (an assistant's may hold tool calls instead)."""


def _check_message(message: Message, i: int) -> None:
    """Refuse what OpenAI's API refuses in a message, as the gateway does, before any model is
    called: an unknown role, a user, system, developer or tool message without content, a tool
    message without the id of the call it answers."""
    role = message["role"]
    if role not in ROLES:
        raise InvalidQueryError(
            f"message {i} has role {reprlib.repr(role)}; use one of {', '.join(ROLES)}"
        )
    if role in NEEDS_CONTENT and message.get("content") is None:
        raise InvalidQueryError(f"message {i} ({role}) has no content; give it a string")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidQueryError(
            f"message {i} (tool) has no tool_call_id: the id of the tool call it answers"
        )


def _text(content: object, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return str.__str__(content)  # a subclass's own methods are not ours to call
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        return " ".join(_part_text(part, i, j) for j, part in enumerate(content))
    raise InvalidQueryError(
        f"message {i} has content of type {type(content).__name__}; use a string or a list "
        "of content parts"
    )


def _part_text(part: object, i: int, j: int) -> str:
    """The text of a content part; parts of other types (images, audio) say nothing to route on."""
    if not isinstance(part, Mapping) or part.get("type") != "text":
        return ""
    text = part.get("text")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidQueryError(
            f"message {i} content part {j} has text of type {type(text).__name__}; use a string"
        )
    return str.__str__(text)


def route_messages(
    messages: Sequence[Message], settings: ConversationSettings, route_batch: RouteBatch
) -> Decision:
    """Route a conversation with ``route_batch`` (a router's batched routing function)."""
    turns = user_turns(messages)
    if not turns:
        return route_batch([""])[0]
    # Only the windows that are routed are joined, so a long conversation costs what its last
    # STICKY_HISTORY turns cost.
    last = len(turns) - (STICKY_HISTORY if settings.sticky else 1)
    windows = [
        "\n".join(turns[max(0, i - settings.turns + 1) : i + 1])
        for i in range(max(0, last), len(turns))
    ]
    if not settings.sticky:
        return route_batch(windows)[0]
    decisions = route_batch(windows)
    current = decisions[0]
    for new in decisions[1:]:
        current = stick(current, new)
    return current.evolve(latency_ms=sum(d.latency_ms for d in decisions))


def stick(current: Decision, new: Decision) -> Decision:
    """The decision for a new turn of a conversation currently routed by ``current``."""
    if new.reason == Reason.MATCHED or current.route is None:
        return new
    own = next(s for s in new.scores if s.route == current.route)
    others = [s.confidence for s in new.scores if s.route != current.route]
    return new.evolve(
        route=current.route,
        model=current.model,
        confidence=own.confidence,
        margin=own.confidence - max(others, default=0.0),
        reason=Reason.STICKY,
    )
