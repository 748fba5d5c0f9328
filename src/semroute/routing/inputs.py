"""What :class:`~semroute.routing.router.Router` checks of its inputs before routing them: a
query is a string, a request's messages are a list (refused with
:class:`~semroute.errors.InvalidQueryError`, naming what was given)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from semroute.errors import InvalidQueryError
from semroute.routing.conversation import Message

__all__ = ["check_query", "kind_of", "messages_of"]


def messages_of(
    query: str | Sequence[Message], request: Mapping[str, Any] | None
) -> Sequence[Mapping[str, Any]]:
    """The messages signals are read from: the request's, else the query's."""
    if request is not None and not isinstance(request, Mapping):
        raise InvalidQueryError(f"request must be a mapping, not {kind_of(request)}")
    messages = (request or {}).get("messages")
    if messages is None:
        messages = [{"role": "user", "content": query}] if isinstance(query, str) else query
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidQueryError(f"request messages must be a list, not {kind_of(messages)}")
    return messages


def check_query(query: object, what: str = "a query") -> None:
    if not isinstance(query, str):
        hint = "; decode it first" if isinstance(query, bytes | bytearray) else ""
        raise InvalidQueryError(f"{what} must be a string, not {kind_of(query)}{hint}")


def kind_of(value: object) -> str:
    if value is None:
        return "None"
    return "a single string" if isinstance(value, str) else type(value).__name__
