"""Dispatch: send a routed request to its model through LiteLLM, down the model's fallback chain.

    result = router.complete("why does my script raise KeyError?")
    result.text, result.model, result.attempts, result.usage, result.cost_usd

A decision's chain is its model followed by the route's ``fallbacks:`` (for the default model,
``default_fallbacks:``). Each step is one call to the ``litellm.Router`` of
:mod:`semroute.dispatch.providers`, which picks the deployment and applies timeouts, retries and cooldowns.
semroute steps from one model to the next itself, with LiteLLM's own fallbacks switched off,
because it reports every attempt (model, error, latency) and LiteLLM's fallback path re-raises
only the last error and times nothing per step.

When no model answers, the request is logged and one :class:`DispatchError` lists every attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semroute.config.deployments import UnknownPriceWarning, price_of
from semroute.config.secrets import is_secret_name
from semroute.decision import Decision, Reason
from semroute.dispatch.log import entry, open_log
from semroute.dispatch.providers import import_litellm, provider_for, run_in_background
from semroute.dispatch.streaming import END, AsyncDispatchStream, DispatchStream, text_of
from semroute.errors import DispatchError, InvalidQueryError
from semroute.records import Attempt, Usage
from semroute.routing.conversation import Message, as_messages

if TYPE_CHECKING:
    from semroute.routing.router import Router

__all__ = [
    "AsyncDispatchStream",
    "Attempt",
    "DispatchResult",
    "DispatchStream",
    "Usage",
    "acomplete",
    "complete",
]


@dataclass(frozen=True)
class DispatchResult:
    """A dispatched request's answer and how it was reached."""

    request_id: str
    decision: Decision
    model: str
    """The model that answered (a fallback, when ``decision.model`` failed)."""
    response: Any
    """LiteLLM's ``ModelResponse``."""
    attempts: tuple[Attempt, ...]
    usage: Usage | None
    cost_usd: float | None
    """From LiteLLM's cost map or the prices in the config; None (with a warning) if unknown."""

    @property
    def text(self) -> str | None:
        """The first choice's message content."""
        return text_of(self.response)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """The models that failed before one answered."""
        return tuple(a.model for a in self.attempts if a.error is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "text": self.text,
            "model": self.model,
            "fallbacks": list(self.fallbacks),
            "attempts": [a.to_dict() for a in self.attempts],
            "usage": dataclasses.asdict(self.usage) if self.usage else None,
            "cost_usd": self.cost_usd,
            "decision": self.decision.to_dict(),
        }


# --- one request -------------------------------------------------------------------------------


class Call:
    """A request on its way down its chain: the state the sync and async paths share."""

    def __init__(
        self,
        router: Router,
        decision: Decision,
        messages: list[dict[str, Any]],
        fallbacks: Sequence[str] | None,
        stream: bool,
        kwargs: dict[str, Any],
    ) -> None:
        self.request_id = uuid.uuid4().hex
        self.provider = provider_for(router)
        self.decision = decision
        self.messages = messages
        self.chain = self.provider.chain(decision, fallbacks)
        self.stream = stream
        self.kwargs = kwargs
        self.attempts: list[Attempt] = []
        self._started = 0.0

    def params(self, model: str) -> dict[str, Any]:
        self._started = time.perf_counter()
        params = {**self.kwargs, "model": model, "messages": self.messages, "stream": self.stream}
        params["disable_fallbacks"] = True  # semroute walks the chain (see the module docstring)
        params["metadata"] = {
            **(self.kwargs.get("metadata") or {}),
            "semroute_request_id": self.request_id,
            "semroute_route": self.decision.route,
        }
        if self.stream:  # ask the provider for token counts in the last chunk
            params.setdefault("stream_options", {"include_usage": True})
        return params

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000

    def failed(self, model: str, exc: BaseException) -> None:
        error = self.provider.describe(exc, model, self.kwargs)
        status = getattr(exc, "status_code", None)
        self.attempts.append(
            Attempt(model, error, self._elapsed_ms(), status if isinstance(status, int) else None)
        )

    def answered(self, model: str) -> None:
        self.attempts.append(Attempt(model, None, self._elapsed_ms()))

    def result(self, response: Any) -> DispatchResult:
        model = self.attempts[-1].model
        usage = Usage.of(response)
        out = DispatchResult(
            request_id=self.request_id,
            decision=self.decision,
            model=model,
            response=response,
            attempts=tuple(self.attempts),
            usage=usage,
            cost_usd=self.cost(model, response, usage),
        )
        self.log(usage, out.cost_usd, None, text_of(response))
        return out

    def cost(self, model: str, response: Any, usage: Usage | None) -> float | None:
        price = price_of(model, self.provider.config.models)
        if price is None:
            warnings.warn(
                f"no price known for model {model!r}, so cost_usd is None; add "
                "input_cost_per_token and output_cost_per_token to its litellm_params",
                UnknownPriceWarning,
                stacklevel=4,
            )
            return None
        reported = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        if isinstance(reported, int | float) and reported > 0:
            return float(reported)
        if usage is None:
            return None
        return usage.prompt_tokens * price.input + usage.completion_tokens * price.output

    def give_up(self) -> DispatchError:
        """Log the failure and build the error listing every attempt."""
        tried = len(self.attempts)
        what = f"route {self.decision.route!r}" if self.decision.route else "the request"
        message = f"no model answered {what} ({tried} tried; check their endpoints and keys)"
        self.log(None, None, message, None)
        return DispatchError(
            message, attempts=self.attempts, request_id=self.request_id, decision=self.decision
        )

    def broke(self, exc: BaseException) -> DispatchError:
        """A stream failed after it started: its last attempt becomes a failure."""
        last = self.attempts[-1]
        model = last.model
        status = getattr(exc, "status_code", None)
        self.attempts[-1] = dataclasses.replace(
            last,
            error=self.provider.describe(exc, model, self.kwargs),
            status=status if isinstance(status, int) else None,
        )
        self.log(None, None, f"the stream from {model!r} broke", None)
        return DispatchError(
            f"the stream from {model!r} broke after it started",
            attempts=self.attempts,
            request_id=self.request_id,
            decision=self.decision,
        )

    def log(
        self, usage: Usage | None, cost: float | None, error: str | None, answer: str | None
    ) -> None:
        settings = self.provider.config.settings
        log = open_log(settings.log)
        if log is not None:
            log.write(
                entry(
                    request_id=self.request_id,
                    decision=self.decision,
                    attempts=self.attempts,
                    usage=usage,
                    cost_usd=cost,
                    stream=self.stream,
                    error=error,
                    content=(self.messages, answer) if settings.log_content else None,
                )
            )

    def streamed(self, chunks: list[Any]) -> tuple[Any, Usage | None, float | None]:
        """Assemble a finished stream's chunks into one response, log it, return its numbers."""
        response = None
        if chunks:
            response = import_litellm().stream_chunk_builder(chunks, messages=self.messages)
        usage = Usage.of(response)
        cost = self.cost(self.attempts[-1].model, response, usage) if response else None
        self.log(usage, cost, None, text_of(response))
        return response, usage, cost


def _pinned(model: str) -> Decision:
    return Decision(
        route=None,
        model=model,
        confidence=0.0,
        margin=0.0,
        reason=Reason.PINNED,
        latency_ms=0.0,
        scores=(),
    )


def _start(
    router: Router,
    messages: str | Sequence[Message],
    decision: Decision,
    fallbacks: Sequence[str] | None,
    stream: bool,
    kwargs: dict[str, Any],
) -> Call:
    if "messages" in kwargs:
        raise TypeError("pass the messages as the first argument, not as messages=")
    for name, value in kwargs.items():
        # LiteLLM would reject it with an error that quotes the value: the key, in a traceback.
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and is_secret_name(name):
            raise InvalidQueryError(
                f"{name}= must be a string, not {type(value).__name__}; pass the key as text"
            )
    return Call(router, decision, as_messages(messages), fallbacks, stream, kwargs)


# --- entry points ------------------------------------------------------------------------------


def complete(
    router: Router,
    messages: str | Sequence[Message],
    *,
    model: str | None = None,
    fallbacks: Sequence[str] | None = None,
    stream: bool = False,
    **kwargs: Any,
) -> DispatchResult | DispatchStream:
    """Route ``messages`` (a string or OpenAI-style message list) and get the answer.

    ``model`` pins a model: nothing is routed and no fallback is used unless ``fallbacks`` names
    some. ``stream=True`` returns a :class:`DispatchStream`. Other keywords (``temperature``,
    ``max_tokens``, ``tools``, ...) go to LiteLLM. Raises :class:`DispatchError` when no model of
    the chain answers.
    """
    decision = _pinned(model) if model else router.route(messages)
    call = _start(router, messages, decision, fallbacks, stream, kwargs)
    out = run_in_background(_walk(call))
    return DispatchStream(out) if isinstance(out, AsyncDispatchStream) else out


async def acomplete(
    router: Router,
    messages: str | Sequence[Message],
    *,
    model: str | None = None,
    fallbacks: Sequence[str] | None = None,
    stream: bool = False,
    **kwargs: Any,
) -> DispatchResult | AsyncDispatchStream:
    """The asynchronous :func:`complete`. Routing runs in a worker thread, off the event loop."""
    decision = _pinned(model) if model else await asyncio.to_thread(router.route, messages)
    call = _start(router, messages, decision, fallbacks, stream, kwargs)
    return await _walk(call)


async def _walk(call: Call) -> DispatchResult | AsyncDispatchStream:
    """Try each model of the chain until one answers (for a stream: sends its first chunk)."""
    litellm_router = call.provider.litellm_router(call.chain)
    for name in call.chain:
        try:
            response = await litellm_router.acompletion(**call.params(name))
            if not call.stream:
                call.answered(name)
                return call.result(response)
            rest = aiter(response)
            first = await anext(rest, END)  # a stream failing before its first chunk fails over
        except call.provider.errors as exc:
            call.failed(name, exc)
            continue
        call.answered(name)
        return AsyncDispatchStream(call, first, rest)
    raise call.give_up()
