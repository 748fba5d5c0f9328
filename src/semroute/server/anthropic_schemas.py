"""The body of Anthropic's ``POST /v1/messages``, validated with pydantic, and its mapping onto
a chat-completions request (:func:`to_chat`), which the gateway then walks as any other.

What maps: ``system`` (a string or text blocks) becomes a system message; a message's blocks
become OpenAI's parts: ``text``, ``image`` (base64 or url source, as an ``image_url``),
``tool_use`` (an assistant's ``tool_calls``), ``tool_result`` (a ``tool`` message, placed before
the rest of the user's turn, as OpenAI wants; ``is_error`` prefixes its text with ``Error:``).
``tools`` become functions (``input_schema`` is their ``parameters``), ``tool_choice`` auto /
any / tool / none becomes auto / required / the function / none, ``disable_parallel_tool_use``
becomes ``parallel_tool_calls: false``; ``stop_sequences`` becomes ``stop``, ``metadata.user_id``
``user``; ``output_config.effort`` becomes ``reasoning_effort`` and a JSON-schema
``output_config.format`` ``response_format``; ``max_tokens`` (required), ``temperature``,
``top_p`` and ``stream`` keep their names.
``cache_control`` and ``citations`` are accepted and dropped, as are ``thinking`` blocks of an
earlier answer (no other provider can read them). What cannot map is a 400 naming it:
``top_k``, ``thinking``, server tools (a tool with a ``type``), ``document`` blocks.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from semroute.server.errors import ApiError
from semroute.server.schemas import MAX_MESSAGES, MAX_TOKENS, by_json_type

__all__ = ["MessagesRequest", "to_chat"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TextBlock(_Strict):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None
    citations: list[Any] | None = None


class ImageBlock(_Strict):
    type: Literal["image"]
    source: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


def _block_type(value: Any) -> str | None:
    """A block's tag, ``<`` its type ``>`` (None: not an object with a string ``type``); the
    ``<`` keeps the tag out of an error's place (see :func:`~semroute.server.schemas.invalid_body`)."""
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return f"<{value['type']}>"
    return None


ResultBlock = Annotated[
    Annotated[TextBlock, Tag("<text>")] | Annotated[ImageBlock, Tag("<image>")],
    Discriminator(_block_type),
]


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1, max_length=256)]
    content: Annotated[
        Annotated[str, Tag("<text>")] | Annotated[list[ResultBlock], Tag("<list>")],
        by_json_type("a string or a list of text and image blocks"),
    ] = ""
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None


class ThinkingBlock(_Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[
    Annotated[TextBlock, Tag("<text>")]
    | Annotated[ImageBlock, Tag("<image>")]
    | Annotated[ToolUseBlock, Tag("<tool_use>")]
    | Annotated[ToolResultBlock, Tag("<tool_result>")]
    | Annotated[ThinkingBlock, Tag("<thinking>")]
    | Annotated[RedactedThinkingBlock, Tag("<redacted_thinking>")],
    Discriminator(_block_type),
]


# A string or a list of blocks: an error names the block's place, not both alternatives.
Content = Annotated[
    Annotated[str, Tag("<text>")] | Annotated[list[Block], Tag("<list>")],
    by_json_type("a string or a list of content blocks"),
]
System = Annotated[
    Annotated[str, Tag("<text>")] | Annotated[list[TextBlock], Tag("<list>")],
    by_json_type("a string or a list of text blocks"),
]


class AnthropicMessage(_Strict):
    role: Literal["user", "assistant"]
    content: Content


class Tool(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputConfig(_Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: dict[str, Any] | None = None


class Metadata(_Strict):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class MessagesRequest(_Strict):
    """``POST /v1/messages``: ``model`` is ``auto`` (route it), a declared model or tier, or a
    LiteLLM model string (pin it)."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    messages: Annotated[list[AnthropicMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: System | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: Metadata | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    service_tier: str | None = None
    output_config: OutputConfig | None = None
    cache_control: dict[str, Any] | None = None


def to_chat(body: MessagesRequest) -> dict[str, Any]:
    """``body`` as a chat-completions body (see the module's docstring); :class:`ApiError` 400
    for what cannot be mapped."""
    for name in ("top_k", "thinking"):
        if getattr(body, name) is not None:
            raise _refused(name, "is not passed on by this gateway (its models may not take it)")
    out: dict[str, Any] = {"model": body.model, "messages": _messages(body)}
    out["max_tokens"] = body.max_tokens
    if body.stream:
        out["stream"] = True
    if body.stop_sequences:
        out["stop"] = list(body.stop_sequences)
    for name in ("temperature", "top_p"):
        if getattr(body, name) is not None:
            out[name] = getattr(body, name)
    if body.metadata is not None and body.metadata.user_id:
        out["user"] = body.metadata.user_id
    if body.tools:
        out["tools"] = [_tool(t, i) for i, t in enumerate(body.tools)]
    if body.tool_choice is not None:
        out.update(_tool_choice(body.tool_choice))
    if body.output_config is not None:
        out.update(_output(body.output_config))
    return out


def _output(config: OutputConfig) -> dict[str, Any]:
    """``effort`` as ``reasoning_effort`` (``xhigh`` and ``max`` as ``high``), a JSON schema
    ``format`` as ``response_format``."""
    out: dict[str, Any] = {}
    if config.effort is not None:
        out["reasoning_effort"] = {"xhigh": "high", "max": "high"}.get(config.effort, config.effort)
    if config.format is not None:
        schema = config.format.get("schema")
        if config.format.get("type") != "json_schema" or not isinstance(schema, dict):
            what = "a format is {type: json_schema, schema: {...}}"
            raise _refused("output_config.format", what)
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
    return out


def _refused(where: str, what: str) -> ApiError:
    return ApiError(400, f"{where}: {what}", code="invalid_request", param=where)


def _messages(body: MessagesRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(body.system, str) and body.system:
        out.append({"role": "system", "content": body.system})
    elif isinstance(body.system, list) and body.system:
        out.append({"role": "system", "content": "\n".join(b.text for b in body.system)})
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            out.append(_assistant(message.content, i))
        else:
            out.extend(_user(message.content, i))
    return out


def _assistant(blocks: list[Any], i: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            function = {"name": block.name, "arguments": arguments}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif isinstance(block, ImageBlock | ToolResultBlock):
            what = f"a {block.type} block belongs in a user message"
            raise _refused(f"messages[{i}].content[{j}]", what)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _user(blocks: list[Any], i: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, at))
        elif isinstance(block, ToolResultBlock):
            text, images = _result_content(block, at)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts += images
        elif isinstance(block, ToolUseBlock):
            raise _refused(at, "a tool_use block belongs in an assistant message")
    if parts and all(p["type"] == "text" for p in parts) and len(parts) == 1:
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, *([{"role": "user", "content": parts}] if parts else [])]


def _result_content(block: ToolResultBlock, at: str) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(block.content, str):
        text, images = block.content, []
    else:
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
        images = [_image(b, at) for b in block.content if isinstance(b, ImageBlock)]
    return (f"Error: {text}" if block.is_error else text), images


def _image(block: ImageBlock, at: str) -> dict[str, Any]:
    source = block.source
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _refused(f"{at}.source", "a base64 image needs media_type and data (text)")
        url = f"data:{media};base64,{data}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _refused(f"{at}.source", "an image source is {type: base64, ...} or {type: url, url}")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool(raw: dict[str, Any], i: int) -> dict[str, Any]:
    if raw.get("type") not in (None, "custom"):
        what = f"server tool {raw.get('type')!r} is not supported; declare a custom tool"
        raise _refused(f"tools[{i}]", what)
    try:
        tool = Tool.model_validate(raw)
    except ValueError:
        raise _refused(f"tools[{i}]", "a tool is {name, description, input_schema}") from None
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if choice.type == "tool":
        if not choice.name:
            raise _refused("tool_choice.name", "a tool choice of type tool names the tool")
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        out["parallel_tool_calls"] = False
    return out
