"""Request bodies the gateway accepts: OpenAI's chat-completions body, validated with pydantic.

Every field OpenAI's API defines is accepted and passed on to the model; any other field is a
400 naming it. Passing unknown fields on would let a client hand LiteLLM its own ``api_base``
or ``api_key`` and send the provider's credentials wherever it liked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from semroute.text import printable

__all__ = ["ChatRequest", "Message", "describe", "parse_chat"]

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


def parse_chat(raw: bytes) -> ChatRequest:
    """The body, validated; raises :class:`ValidationError` (see :func:`describe`)."""
    return ChatRequest.model_validate_json(raw)


def describe(exc: ValidationError) -> str:
    """One line for a client: the first problem, naming the field (and how many more)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a chat-completions field this gateway accepts"
    elif error["type"] == "model_type" and not where:
        return "the body should be a JSON object with `model` and `messages`"
    more = exc.error_count() - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''})" if more else ""
    return printable(f"{where or 'body'}: {message}{tail}")[:500]
