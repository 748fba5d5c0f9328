"""Request bodies the gateway accepts: OpenAI's chat-completions body, validated with pydantic.

Every field OpenAI's API defines is accepted and passed on to the model; any other field is a
400 naming it. Passing unknown fields on would let a client hand LiteLLM its own ``api_base``
or ``api_key`` and send the provider's credentials wherever it liked.

A number that is not finite (``NaN``, ``Infinity``, or ``1e400``, which parses as infinity)
anywhere in the body is a 400 naming its place: no model accepts one, and LiteLLM would fail
to serialise it only after the request had been counted as an attempt at a model. A string
holding a lone UTF-16 surrogate escape (``"\\ud800"``) is a 400 naming its place too. Integers
are bounded by what upstreams parse: token counts by :data:`MAX_TOKENS`, ``seed`` by a signed
64-bit integer.

A message's shape is checked as OpenAI checks it: a system, developer, user or tool message has
content (not null), a tool message a ``tool_call_id``. A field that takes one of several JSON
types (``content``, ``stop``, ``tool_choice``, ``function_call``) is a union tagged by the type
of its value, so a wrong value is one error at the field (``tool_choice: should be a string or
an object``), not one per member of the union.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from semroute.routing.conversation import NEEDS_CONTENT, Role
from semroute.server.errors import ApiError
from semroute.text import printable

__all__ = [
    "MAX_TOKENS",
    "ChatRequest",
    "Message",
    "by_json_type",
    "invalid_body",
    "json_kind",
    "parse_body",
    "parse_chat",
]

MAX_MESSAGES = 10_000
MAX_TOKENS = 2**31 - 1
"""The most a token count (``max_tokens``, ``max_completion_tokens``) or another count may be:
a signed 32-bit integer, which every upstream parses (models write some hundred thousand tokens
at most). A larger number would reach the model only to fail there, or overflow."""
MAX_SEED = 2**63 - 1
"""``seed`` is a signed 64-bit integer (OpenAI's type for it; vLLM's too)."""


Count = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Int32 = Annotated[int, Field(ge=-MAX_TOKENS - 1, le=MAX_TOKENS)]
Int64 = Annotated[int, Field(ge=-MAX_SEED - 1, le=MAX_SEED)]


def json_kind(value: Any) -> str | None:
    """The tag of a union member for ``value``'s JSON type: ``<text>``, ``<list>`` or
    ``<object>`` (None: another type, which no member takes). Tags start with ``<`` so that
    :func:`invalid_body` leaves them out of a field's place."""
    if isinstance(value, str):
        return "<text>"
    if isinstance(value, list):
        return "<list>"
    if isinstance(value, dict):
        return "<object>"
    return None


def by_json_type(what: str) -> Discriminator:
    """Tag a union's members by :func:`json_kind`: a value of another type is one error at the
    field, ``should be {what}``, instead of one per member (``tool_choice.str: ...`` and
    ``(1 more problem)``)."""
    return Discriminator(
        json_kind, custom_error_type="invalid_type", custom_error_message=f"should be {what}"
    )


# A message's content parts go to the model whatever their `type`: OpenAI-compatible servers
# (vLLM, SGLang, ...) take part types OpenAI does not (`video_url`, `audio_url`, ...), and a
# gateway in front of them must pass on what they understand; the model refuses what it does
# not (a 400 `rejected_by_model`, which moves no breaker).
Content = Annotated[
    Annotated[str, Tag("<text>")] | Annotated[list[dict[str, Any]], Tag("<list>")],
    by_json_type("a string or a list of content parts (objects)"),
]
TextOrObject = Annotated[
    Annotated[str, Tag("<text>")] | Annotated[dict[str, Any], Tag("<object>")],
    by_json_type("a string or an object"),
]
Stop = Annotated[
    Annotated[str, Tag("<text>")] | Annotated[list[str], Tag("<list>")],
    by_json_type("a string or a list of strings"),
]


class Message(BaseModel):
    """One message: its ``role``, its ``content`` (a string or a list of parts; null or left
    out only on an assistant's or function's message) and, on a ``tool`` message, the
    ``tool_call_id`` it answers. Other fields (name, tool_calls, ...) go to the model as they
    are."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    role: Role
    content: Content | None = Field(default=None, validate_default=True)
    tool_call_id: str | None = Field(default=None, validate_default=True)

    @field_validator("content")
    @classmethod
    def _content_given(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value is None and role in NEEDS_CONTENT:
            raise PydanticCustomError(
                "content_required",
                "is required on a {role} message: a string or a list of content parts, not null",
                {"role": role},
            )
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _answers_a_call(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("role") == "tool":
            raise PydanticCustomError(
                "tool_call_id_required",
                "is required on a tool message (the id of the tool call it answers)",
            )
        return value


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
    function_call: TextOrObject | None = None
    functions: list[dict[str, Any]] | None = None
    logit_bias: dict[str, Int32] | None = None
    logprobs: bool | None = None
    max_completion_tokens: Count | None = None
    max_tokens: Count | None = None
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
    seed: Int64 | None = None
    service_tier: str | None = None
    stop: Stop | None = None
    store: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    tool_choice: TextOrObject | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: Count | None = None
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
    """The body, validated; raises :class:`ValidationError` (see :func:`invalid_body`)."""
    return parse_body(raw, schema)


def parse_body(raw: bytes, schema: type[B]) -> B:
    """The body, validated by ``schema`` (a JSON body with finite numbers and no lone
    surrogates); raises :class:`ValidationError` (see :func:`invalid_body`)."""
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


def invalid_body(exc: ValidationError, api: str = "chat-completions") -> ApiError:
    """The 400 for a body that does not validate: one line for the client, the first problem
    naming the field (and how many more), that field its ``param`` (None: the whole body);
    ``api`` names the API whose fields the body should hold."""
    text, param = _described(exc, api)
    return ApiError(400, text, code="invalid_request", param=param)


def _described(exc: ValidationError, api: str) -> tuple[str, str | None]:
    error = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        text = f"the body is not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
        return text, None
    if error["type"] == "invalid_utf8":
        return f"the body is not valid JSON ({error['msg']})", None
    where = ""
    for part in error["loc"]:
        if isinstance(part, str) and part.startswith("<"):  # a union's tag, not a field
            continue
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"is not a {api} field this gateway accepts"
    elif error["type"] == "model_type" and not where:
        return "the body should be a JSON object with `model` and `messages`", None
    elif error["type"] == "union_tag_invalid":
        # Only the Messages API's blocks are tagged by a value of theirs, their `type`.
        where = f"{where}.type" if where else "type"
        context = error.get("ctx") or {}
        expected = str(context.get("expected_tags", "")).replace("<", "").replace(">", "")
        message = f"should be one of {expected}, not {str(context.get('tag')).strip('<>')!r}"
    elif error["type"] == "union_tag_not_found":
        message = "should be an object with a `type` (a string)"
    more = exc.error_count() - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''})" if more else ""
    text = printable(f"{where or 'body'}: {message}{tail}")[:500]
    return text, printable(where)[:200] or None
