"""One request on its way down its fallback chain: the state the sync, async and streaming paths
share, and what it leaves behind (the result or the error, the cost, the log line)."""

from __future__ import annotations

import dataclasses
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any

from semroute.config.pricing import UnknownPriceWarning, price_of
from semroute.dispatch.log import entry
from semroute.dispatch.providers import import_litellm
from semroute.dispatch.result import DispatchResult, text_of
from semroute.errors import DispatchError
from semroute.records import Attempt, Usage

if TYPE_CHECKING:
    from semroute.decision import Decision
    from semroute.dispatch.log import DecisionLog
    from semroute.dispatch.providers import Provider

__all__ = ["Call"]


class Call:
    """A request on its way down its chain."""

    def __init__(
        self,
        provider: Provider,
        decision: Decision,
        messages: list[dict[str, Any]],
        chain: tuple[str, ...],
        *,
        stream: bool,
        kwargs: dict[str, Any],
        log: DecisionLog | None,
    ) -> None:
        self.request_id = uuid.uuid4().hex
        self.provider = provider
        self.decision = decision
        self.messages = messages
        self.chain = chain
        self.stream = stream
        self.kwargs = kwargs
        self.attempts: list[Attempt] = []
        self._log = log
        self._started = 0.0

    def params(self, model: str) -> dict[str, Any]:
        self._started = time.perf_counter()
        params = {**self.kwargs, "model": model, "messages": self.messages, "stream": self.stream}
        params["disable_fallbacks"] = True  # semroute walks the chain (see dispatch.dispatcher)
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
        if self._log is not None:
            content = self.provider.config.settings.log_content
            self._log.write(
                entry(
                    request_id=self.request_id,
                    decision=self.decision,
                    attempts=self.attempts,
                    usage=usage,
                    cost_usd=cost,
                    stream=self.stream,
                    error=error,
                    content=(self.messages, answer) if content else None,
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
