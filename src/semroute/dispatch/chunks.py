"""A streamed chunk as an OpenAI-compatible model sent it, and a chunk's fields for a relay."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Assembly", "RawChunk", "chunk_fields", "response_of"]


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


class Assembly:
    """A stream's chunks, taken in as they pass, for the one answer they make up.

    A directly called model's chunks in OpenAI's plain shape are folded in as they come
    (:meth:`whole`): what is kept of each is its text and its JSON's bytes, not its parsed
    JSON, about a sixth of the memory. The bytes are for LiteLLM's assembler, which reads every
    chunk (:meth:`chunks`): for a stream that turns out to hold what only it reads, or that
    ends without a usage chunk. LiteLLM's own chunks are kept as they are.
    """

    __slots__ = ("_choices", "_first", "_kept", "_plain", "_usage", "count", "direct")

    def __init__(self) -> None:
        self.count = 0
        """The chunks taken in."""
        self.direct = True
        """Whether every chunk came from a model called directly (a :class:`RawChunk`)."""
        self._kept: list[Any] = []  # a RawChunk's JSON bytes (its parsed JSON if it has none)
        self._plain = True  # every chunk so far folded in
        self._first: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def add(self, chunk: Any) -> None:
        self.count += 1
        if not isinstance(chunk, RawChunk):
            self.direct = self._plain = False
            self._kept.append(chunk)
            return
        self._kept.append(chunk.data if chunk.raw is None else chunk.raw)
        if self._plain:
            self._plain = self._fold(chunk.data)

    def _fold(self, data: dict[str, Any]) -> bool:
        """Take in one chunk's JSON; False when it holds what only LiteLLM's assembler reads."""
        if self.count == 1:
            self._first = {k: data.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if data.get("usage"):
            self._usage = data["usage"]
        for choice in data.get("choices") or ():
            if not _plain(choice):
                return False
            slot = self._choices.setdefault(
                choice.get("index", 0),
                {"role": None, "text": [], "refusal": [], "tools": {}, "finish": None},
            )
            delta = choice.get("delta") or {}
            slot["role"] = slot["role"] or delta.get("role")
            if text := delta.get("content"):
                slot["text"].append(text)
            if refusal := delta.get("refusal"):
                slot["refusal"].append(refusal)
            for call in delta.get("tool_calls") or ():
                if not _add_tool_call(slot["tools"], call):
                    return False
            if choice.get("finish_reason"):
                slot["finish"] = choice["finish_reason"]
        return True

    def whole(self) -> dict[str, Any] | None:
        """The answer in OpenAI's chat completion shape (what ``litellm.ModelResponse`` is
        built from), or None when it holds what only LiteLLM's assembler reads: a chunk not
        from a model called directly; a delta with more than a role, text, a refusal and tool
        calls; logprobs; no usage chunk (LiteLLM then counts the tokens).

        Built here because LiteLLM's assembler costs a fraction of a millisecond of the event
        loop per stream, and prices the answer by the model name the upstream reports, at
        LiteLLM's list price, where the deployment's own price is what counts.
        """
        if not (self._plain and self.count and isinstance(self._usage, dict)):
            return None
        choices = self._choices
        return {
            **self._first,
            "object": "chat.completion",
            "choices": [_choice(index, slot) for index, slot in sorted(choices.items())],
            "usage": self._usage,
        }

    def chunks(self) -> list[Any]:
        """Every chunk, for LiteLLM's assembler: a :class:`RawChunk`'s JSON parsed again (it
        reads a chunk as a mapping), LiteLLM's own as it came."""
        return [json.loads(c) if isinstance(c, bytes) else c for c in self._kept]


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
    if slot["refusal"]:
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


def response_of(assembly: Assembly, messages: list[dict[str, Any]], litellm: Any) -> Any:
    """A finished stream as one ``ModelResponse`` (``litellm``: the module, as
    :func:`~semroute.dispatch.providers.import_litellm` gives it): a direct stream's in OpenAI's
    plain shape by :meth:`Assembly.whole`, anything else by LiteLLM's assembler; None when the
    answer cannot be read (usage that is not token counts): the stream was relayed all the
    same, and is logged without usage or cost."""
    try:
        whole = assembly.whole()
        if whole is not None:
            return litellm.ModelResponse(**whole)
        response = litellm.stream_chunk_builder(assembly.chunks(), messages=messages)
    except (ValueError, TypeError, litellm.APIError):  # pydantic's errors are ValueErrors
        return None
    if assembly.direct and response is not None:
        # Its price is LiteLLM's list price for the name the upstream reported, not the
        # deployment's (see Assembly.whole).
        response._hidden_params.pop("response_cost", None)
    return response
