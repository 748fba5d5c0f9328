"""Request bodies the gateway accepts: OpenAI's chat-completions body, validated with pydantic.

Every field OpenAI's API defines is accepted and passed on to the model; any other field is a
400 naming it. Passing unknown fields on would let a client hand LiteLLM its own ``api_base``
or ``api_key`` and send the provider's credentials wherever it liked.

A number that is not finite (``NaN``, ``Infinity``, or ``1e400``, which parses as infinity)
anywhere in the body is a 400 naming its place: no model accepts one, and LiteLLM would fail
to serialise it only after the request had been counted as an attempt at a model. A string
holding a lone UTF-16 surrogate escape (``"\\ud800"``) is a 400 naming its place too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from semroute.text import printable

__all__ = ["ChatRequest", "Message", "describe", "parse_body", "parse_chat"]

MAX_MESSAGES = 10_000

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(BaseModel):
    """One message; fields other than role and content (name, tool_calls, tool_call_id, ...)
    go to the model as they are."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    role: Role
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: ``model`` is ``auto`` (route it), a declared model or
    tier, or a LiteLLM model string (pin it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    # Passed on to the model as they are.
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    function_call: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=0)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    moderation: dict[str, Any] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: float | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    reasoning_effort: str | None = None
    response_format: dict[str, Any] | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    user: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        """What goes to the model besides the messages (only what the client set)."""
        return self.model_dump(exclude_none=True, exclude={"model", "messages", "stream"})

    def message_list(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_unset=True) for m in self.messages]


Loc = tuple[str | int, ...]
B = TypeVar("B", bound=BaseModel)


def parse_chat(raw: bytes, schema: type[ChatRequest] = ChatRequest) -> ChatRequest:
    """The body, validated; raises :class:`ValidationError` (see :func:`describe`)."""
    return parse_body(raw, schema)


def parse_body(raw: bytes, schema: type[B]) -> B:
    """The body, validated by ``schema`` (a JSON body with finite numbers and no lone
    surrogates); raises :class:`ValidationError` (see :func:`describe`)."""
    try:
        body = schema.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            unicode = _unicode_error(raw)
            if unicode is not None:
                raise _error(schema, unicode) from None
        raise
    for loc, value in _leaves(body):
        if isinstance(value, float) and not math.isfinite(value):
            kind = "NaN" if math.isnan(value) else "infinite"
            message = (
                f"should be a finite number, not {kind} (JSON has no NaN or Infinity, and a "
                "number as large as 1e400 reads as infinite)"
            )
            raise _error(schema, (loc, "finite_number", message))
    return body


def _error(schema: type[BaseModel], problem: tuple[Loc, str, str]) -> ValidationError:
    loc, kind, message = problem
    detail = InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=None)
    return ValidationError.from_exception_data(schema.__name__, [detail])


def _leaves(body: BaseModel) -> Iterator[tuple[Loc, Any]]:
    """Every value in ``body`` with its place, depth first (pydantic models, dicts and lists
    opened; a message's extra fields included)."""
    stack: list[tuple[Loc, Any]] = [((), body)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, BaseModel):
            items: Any = [*value.__dict__.items(), *(value.__pydantic_extra__ or {}).items()]
        elif isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            yield loc, value
            continue
        stack.extend(reversed([((*loc, k), v) for k, v in items]))


def _unicode_error(raw: bytes) -> tuple[Loc, str, str] | None:
    """Why a body the JSON parser refused is not Unicode text, and where (None: it is, or the
    body is not JSON for another reason)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (), "invalid_utf8", f"byte {exc.start} is not UTF-8; send UTF-8 text"
    try:
        data = json.loads(text)  # Python's parser keeps lone surrogates; find the place
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Loc, Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            if any(_lone_surrogate(k) for k in value):
                return loc, "lone_surrogate", f"a key {_SURROGATE}"
            stack.extend(reversed([((*loc, k), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([((*loc, i), v) for i, v in enumerate(value)]))
        elif isinstance(value, str) and _lone_surrogate(value):
            return loc, "lone_surrogate", _SURROGATE
    return None


_SURROGATE = (
    "holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair); the body must "
    "be valid Unicode, so send the character's pair or drop it"
)


def _lone_surrogate(text: str) -> bool:
    # json.loads joins a valid pair into one character: any surrogate left is alone.
    return any("\ud800" <= c <= "\udfff" for c in text)


def describe(exc: ValidationError, api: str = "chat-completions") -> str:
    """One line for a client: the first problem, naming the field (and how many more);
    ``api`` names the API whose fields the body should hold."""
    error = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    if error["type"] == "invalid_utf8":
        return f"the body is not valid JSON ({error['msg']})"
    where = ""
    for part in error["loc"]:
        if isinstance(part, str) and part.startswith("<"):  # a union's tag, not a field
            continue
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"is not a {api} field this gateway accepts"
    elif error["type"] == "model_type" and not where:
        return "the body should be a JSON object with `model` and `messages`"
    more = exc.error_count() - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''})" if more else ""
    return printable(f"{where or 'body'}: {message}{tail}")[:500]
