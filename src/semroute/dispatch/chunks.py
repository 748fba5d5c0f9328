"""A streamed chunk as an OpenAI-compatible model sent it, and a chunk's fields for a relay."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RawChunk", "chunk_fields"]


class RawChunk:
    """A streamed chunk as an OpenAI-compatible model sent it (its parsed JSON), from a model
    called directly (see :mod:`semroute.dispatch.direct`). LiteLLM's ``ModelResponseStream``
    is built from it only when someone asks (:attr:`chunk`): the gateway relays ``data`` as
    it is, and building LiteLLM's object for every chunk cost more than the rest of the relay.
    """

    __slots__ = ("_chunk", "data", "more", "raw")

    def __init__(self, data: dict[str, Any], raw: bytes | None = None) -> None:
        self.data = data
        self.raw = raw
        """The JSON as the model sent it, where a relay may send it on as it is; else None."""
        self.more = False
        """Whether the next chunk came in the same read (it follows without a wait): a relay
        sends the two together."""
        self._chunk: Any = None

    @property
    def chunk(self) -> Any:
        """LiteLLM's ``ModelResponseStream`` for it."""
        if self._chunk is None:
            import litellm

            fields = json.loads(json.dumps(self.data))
            try:
                self._chunk = litellm.ModelResponseStream(**fields)
            except ValueError:  # usage that is not token counts (pydantic's errors are these)
                fields.pop("usage", None)
                self._chunk = litellm.ModelResponseStream(**fields)
        return self._chunk


def chunk_fields(chunk: Any) -> dict[str, Any]:
    """A chunk's fields as a new dict, without the ones that are None (LiteLLM's object's
    ``model_dump(exclude_none=True)``, or a :class:`RawChunk`'s JSON)."""
    if isinstance(chunk, RawChunk):
        fields: dict[str, Any] = _without_none(chunk.data)
        return fields
    dumped: dict[str, Any] = chunk.model_dump(exclude_none=True)
    return dumped


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


_PLAIN_DELTA = frozenset({"role", "content", "tool_calls", "refusal"})


def assemble(chunks: list[RawChunk]) -> dict[str, Any] | None:
    """A finished stream's chunks as the one answer they make up, in OpenAI's chat completion
    shape (what ``litellm.ModelResponse`` is built from), or None when they hold what only
    LiteLLM's assembler reads: a delta with more than a role, text, a refusal and tool calls;
    logprobs; no usage chunk (LiteLLM then counts the tokens).

    Built here because LiteLLM's assembler costs a fraction of a millisecond of the event
    loop per stream, and prices the answer by the model name the upstream reports, at
    LiteLLM's list price, where the deployment's own price is what counts.
    """
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for raw in chunks:
        if raw.data.get("usage"):
            usage = raw.data["usage"]
        for choice in raw.data.get("choices") or ():
            if not _plain(choice):
                return None
            slot = choices.setdefault(
                choice.get("index", 0),
                {"role": None, "text": [], "refusal": [], "tools": {}, "finish": None},
            )
            delta = choice.get("delta") or {}
            slot["role"] = slot["role"] or delta.get("role")
            slot["text"].append(delta.get("content") or "")
            slot["refusal"].append(delta.get("refusal") or "")
            for call in delta.get("tool_calls") or ():
                if not _add_tool_call(slot["tools"], call):
                    return None
            if choice.get("finish_reason"):
                slot["finish"] = choice["finish_reason"]
    if not isinstance(usage, dict) or not chunks:
        return None
    first = chunks[0].data
    return {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [_choice(index, slot) for index, slot in sorted(choices.items())],
        "usage": usage,
    }


def _plain(choice: Any) -> bool:
    if not isinstance(choice, dict) or choice.get("logprobs") is not None:
        return False
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict) or not delta.keys() <= _PLAIN_DELTA:
        return False
    index = choice.get("index", 0)
    finish = choice.get("finish_reason")
    texts = (delta.get("content"), delta.get("refusal"), delta.get("role"), finish)
    return (
        isinstance(index, int)
        and all(t is None or isinstance(t, str) for t in texts)
        and isinstance(delta.get("tool_calls") or [], list)
    )


def _add_tool_call(tools: dict[int, dict[str, Any]], call: Any) -> bool:
    """Add one streamed piece of a tool call (its id and name come whole, the last one given
    counting, as LiteLLM reads them; its arguments in pieces); False for a piece not in
    OpenAI's shape."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(call.get("index", 0), int):
        return False
    parts = (call.get("id"), call.get("type"), function.get("name"), function.get("arguments"))
    if not all(p is None or isinstance(p, str) for p in parts):
        return False
    tool = tools.setdefault(call.get("index", 0), {"id": None, "name": None, "arguments": []})
    tool["id"] = call.get("id") or tool["id"]
    tool["name"] = function.get("name") or tool["name"]
    tool["arguments"].append(function.get("arguments") or "")
    return True


def _choice(index: int, slot: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": slot["role"] or "assistant",
        "content": "".join(slot["text"]) or None,
    }
    if any(slot["refusal"]):
        message["refusal"] = "".join(slot["refusal"])
    if slot["tools"]:
        message["tool_calls"] = [
            {
                "id": tool["id"],
                "type": "function",
                "function": {"name": tool["name"], "arguments": "".join(tool["arguments"])},
            }
            for _, tool in sorted(slot["tools"].items())
        ]
    return {"index": index, "message": message, "finish_reason": slot["finish"]}


def response_of(chunks: list[Any], messages: list[dict[str, Any]], litellm: Any) -> Any:
    """A finished stream's chunks as one ``ModelResponse`` (``litellm``: the module, as
    :func:`~semroute.dispatch.providers.import_litellm` gives it): a direct stream's in OpenAI's
    plain shape by :func:`assemble`, anything else by LiteLLM's assembler; None when the answer
    cannot be read (usage that is not token counts): the stream was relayed all the same, and
    is logged without usage or cost."""
    direct = all(isinstance(c, RawChunk) for c in chunks)
    try:
        whole = assemble(chunks) if direct else None
        if whole is not None:
            return litellm.ModelResponse(**whole)
        # LiteLLM's assembler reads a chunk as a mapping: a RawChunk's JSON will do.
        parts = [c.data if isinstance(c, RawChunk) else c for c in chunks]
        response = litellm.stream_chunk_builder(parts, messages=messages)
    except (ValueError, TypeError, litellm.APIError):  # pydantic's errors are ValueErrors
        return None
    if direct and response is not None:
        # Its price is LiteLLM's list price for the name the upstream reported, not the
        # deployment's (see assemble).
        response._hidden_params.pop("response_cost", None)
    return response
