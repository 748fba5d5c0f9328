"""The semantic cache on a request's walk: look before the first model is called, answer a hit
(whole, or replayed as chunks for a stream), keep a whole answer once it is known.

A hit costs nothing: its result's ``cost_usd`` is 0, it calls no model (no attempt), and its log
line says ``"cache": "hit"`` with ``cache_similarity`` and ``cache_saved_usd`` (what the answer
cost when it was made). A request that was looked up and missed says ``"cache": "miss"``; one
the cache would not take says ``"cache": "bypass"`` and ``cache_bypass`` (why: ``tools``,
``images``, ``n``, ``temperature``, ``no_embedding``). Without a cache for its route the line
has no ``cache`` field.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from semroute.dispatch.cache import CachedAnswer, Hit, SemanticCache, Ticket
from semroute.dispatch.chunks import Assembly
from semroute.dispatch.providers import import_litellm
from semroute.dispatch.result import DispatchResult, text_of
from semroute.dispatch.streaming import AsyncDispatchStream
from semroute.records import Usage

if TYPE_CHECKING:
    from semroute.dispatch.call import Call

__all__ = ["CachedStream", "look_up", "pieces"]

CHUNK_CHARS = 32
"""A cached answer is replayed in pieces of about this many characters (at word ends)."""


def look_up(
    cache: SemanticCache | None, call: Call, scope: str | None
) -> DispatchResult | AsyncDispatchStream | None:
    """The cached answer for ``call`` (logged), or None: then the walk goes on, and its whole
    answer will be kept when it comes."""
    if cache is None:
        return None
    ticket = cache.ticket(call, scope)
    if ticket is None:
        return None
    if isinstance(ticket, str):
        call.log_extra = {"cache": "bypass", "cache_bypass": ticket}
        return None
    hit = cache.find(ticket)
    if hit is None:
        call.log_extra = {"cache": "miss"}
        call.on_answer = lambda response, model, cost: _keep(
            cache, ticket, call, response, model, cost
        )
        return None
    call.log_extra = {
        "cache": "hit",
        "cache_similarity": round(hit.similarity, 6),
        "cache_saved_usd": hit.answer.cost_usd,
    }
    if call.stream:
        return CachedStream(call, hit)
    response = _response(call.request_id, hit.answer)
    call.log(None, 0.0, None, hit.answer.text, model=hit.answer.model)
    return DispatchResult(
        request_id=call.request_id,
        decision=call.decision,
        model=hit.answer.model,
        response=response,
        attempts=(),
        usage=Usage.of(response),
        cost_usd=0.0,
        skipped=call.passed_over,
        cache=hit,
        cache_status="hit",
    )


def _keep(
    cache: SemanticCache, ticket: Ticket, call: Call, response: Any, model: str, cost: float | None
) -> None:
    """Keep a whole text answer (not a cascade's rejected one, not a tool call)."""
    text = text_of(response)
    steps = call.escalation.steps if call.escalation is not None else []
    if not text or (steps and steps[-1].verdict not in ("accepted", "final")):
        return
    try:
        finish = response.choices[0].finish_reason or "stop"
    except (AttributeError, IndexError):
        finish = "stop"
    if finish not in ("stop", "length"):
        return
    usage = Usage.of(response)
    answer = CachedAnswer(
        text,
        model,
        finish,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
        cost,
        time.time(),
    )
    cache.keep(ticket, answer)


def _response(request_id: str, answer: CachedAnswer) -> Any:
    """The cached answer as a LiteLLM ``ModelResponse`` (OpenAI's shape)."""
    litellm = import_litellm()
    return litellm.ModelResponse(
        id=f"chatcmpl-{request_id}",
        created=int(time.time()),
        model=answer.model,
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason,
            }
        ],
        usage=_usage(answer),
    )


def _usage(answer: CachedAnswer) -> Any:
    p, c = answer.prompt_tokens, answer.completion_tokens
    return import_litellm().Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def pieces(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut after a space where one is near."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        space = text.rfind(" ", start + 1, end)
        if end < len(text) and space > start:
            end = space + 1
        out.append(text[start:end])
        start = end
    return out


class CachedStream(AsyncDispatchStream):
    """A cached answer replayed as a stream: OpenAI's chunks (the first with the role, the last
    with the finish reason, then the usage chunk), sent at once."""

    def __init__(self, call: Call, hit: Hit) -> None:  # no model to read: nothing of the base's
        self._call = call
        self.request_id = call.request_id
        self.decision = call.decision
        self.model = hit.answer.model
        self.cache = hit
        self.response = _response(call.request_id, hit.answer)
        self.usage = Usage.of(self.response)
        self.cost_usd = 0.0
        self._done = False
        self._error = None
        self._chunks = self._replay(hit.answer)

    async def _replay(self, answer: CachedAnswer) -> AsyncGenerator[Any, None]:
        stream = import_litellm().ModelResponseStream
        common = {"id": f"chatcmpl-{self.request_id}", "created": int(time.time())}
        common["model"] = answer.model
        ended = False
        try:
            for i, piece in enumerate(pieces(answer.text) or [""]):
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                yield stream(**common, choices=[{"index": 0, "delta": delta}])
            done = [{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}]
            yield stream(**common, choices=done)
            yield stream(**common, choices=[], usage=_usage(answer))
            ended = True
        finally:
            self._finish(Assembly(), ended)

    def _finish(self, assembly: Assembly, ended: bool = False) -> None:
        if not self._done:
            self._done = True
            error = None if ended else self._error
            self._call.log(None, 0.0, error, self.cache.answer.text, model=self.model)
