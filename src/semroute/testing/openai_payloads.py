"""The OpenAI chat-completions bodies the fake provider sends: a completion, a streamed answer's
chunks, an error."""

from __future__ import annotations

import time
import uuid
from typing import Any

__all__ = ["answer_events", "chunk", "completion", "error_body", "error_for_status", "new_id"]


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:12]}"


def completion(
    model: str, text: str, usage: dict[str, int], logprob: float | None = None
) -> dict[str, Any]:
    logprobs: dict[str, Any] | None = None
    if logprob is not None:  # one entry per word, each with the scripted logprob
        tokens: list[dict[str, Any]] = [
            {"token": w, "logprob": logprob, "bytes": None, "top_logprobs": []}
            for w in text.split()
        ]
        logprobs = {"content": tokens}
    return {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": usage,
    }


def answer_events(ident: str, model: str, text: str) -> list[dict[str, Any]]:
    """A streamed answer's events before the final one: the role, then one per word."""
    events = [chunk(ident, model, {"role": "assistant", "content": ""}, None)]
    for i, word in enumerate(text.split(" ")):
        events.append(chunk(ident, model, {"content": word if i == 0 else " " + word}, None))
    return events


def chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_for_status(status: int, authorization: str) -> dict[str, Any]:
    """The error body a provider sends with ``status``."""
    if status == 401:
        # Like some real providers, echo the key back: callers must keep it out of logs.
        return error_body(f"Incorrect API key provided: {authorization}", "invalid_request_error")
    if status == 429:
        return error_body("Rate limit reached; try again later.", "rate_limit_exceeded")
    return error_body(f"The server had an error ({status}).", "server_error")
