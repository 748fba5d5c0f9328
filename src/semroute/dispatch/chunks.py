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

    __slots__ = ("_chunk", "data")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self._chunk: Any = None

    @property
    def chunk(self) -> Any:
        """LiteLLM's ``ModelResponseStream`` for it."""
        if self._chunk is None:
            import litellm

            self._chunk = litellm.ModelResponseStream(**json.loads(json.dumps(self.data)))
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
