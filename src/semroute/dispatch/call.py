"""One request on its way down its fallback chain: the state the sync, async and streaming paths
share, and what it leaves behind (the result or the error, the cost, the log line, and each
attempt's outcome for provider health).

Only what the provider or the network did counts against a model's health. A request that is
at fault says nothing about the model, and the chain's next model would get the same request,
so it ends the walk with :class:`~semroute.errors.RequestRejectedError`: a number that is not
finite is refused before any model is tried; a request LiteLLM could not serialise (it fails
before a byte leaves), or one the provider rejects as malformed (400, 422), ends the walk
where it happened. A request too large for one model (413, or LiteLLM's context-window error)
goes on to the next, which may take more, and so does one LiteLLM refuses itself with a 400
(no deployment for the model, a parameter its provider does not take): neither counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Literal, Protocol

from semroute.config.pricing import UnknownPriceWarning, price_of
from semroute.decision import Skip
from semroute.dispatch.chunks import Assembly, response_of
from semroute.dispatch.health import Outcome, counts_as_failure
from semroute.dispatch.log import entry
from semroute.dispatch.log_metadata import logged_signals
from semroute.dispatch.providers import import_litellm
from semroute.dispatch.result import DispatchResult, text_of
from semroute.dispatch.rival import challenger_entry
from semroute.dispatch.spans import answer_attributes, call_attributes, reported_cost
from semroute.errors import DispatchError, InvalidQueryError, RequestRejectedError
from semroute.records import Attempt, Usage
from semroute.tracing import add_event, end_span, start_span

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from semroute.decision import Decision
    from semroute.dispatch.health import Admission, HealthStore
    from semroute.dispatch.log import DecisionLog
    from semroute.dispatch.providers import Provider
    from semroute.dispatch.result import CascadeStep
    from semroute.dispatch.sessions import SessionRun

__all__ = ["Call", "Escalating"]


class Escalating(Protocol):
    """What a call needs of its cascade (:class:`semroute.dispatch.cascade.Escalation`)."""

    steps: list[CascadeStep]

    def params(self, model: str) -> dict[str, Any]: ...
    def finish(self, model: str, response: Any, cost: float | None) -> float | None: ...
    def to_dict(self) -> dict[str, Any]: ...


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
        health: HealthStore | None = None,
        request_id: str | None = None,
    ) -> None:
        self.request_id = request_id or uuid.uuid4().hex
        self.provider = provider
        self.decision = decision
        self.messages = messages
        self.chain = chain
        self.stream = stream
        self.kwargs = kwargs
        _check_finite(kwargs, messages)
        self.attempts: list[Attempt] = []
        self.skipped: list[Skip] = []
        self.rejected = False
        """Whether the request itself was at fault (see the module's docstring)."""
        self._log = log
        self._started = 0.0
        self._health = health
        self._refused: dict[str, Admission] = {}
        self._probe = False
        self._note: str | None = None
        self.escalation: Escalating | None = None
        """The cascade this request walks (None: none)."""
        self.after: Callable[[Call, str | None, str], None] | None = None
        """Called with the answer's text and model once it is logged (shadow evaluation)."""
        self.on_answer: Callable[[Any, str, float | None], None] | None = None
        """Called with a whole answer's response, model and cost (the semantic cache)."""
        self.log_extra: dict[str, Any] = {}
        """More fields for the log line (the semantic cache's)."""
        self.cache_scope: str | None = None
        """Whose cached answers this request may get (an API key's id; None: the process's)."""
        self.redacted: Mapping[str, int] = {}
        """How many matches of each kind of personal data were replaced in the messages."""
        self.session: SessionRun | None = None
        """The agent run this request belongs to (see :mod:`semroute.dispatch.sessions`)."""
        self._span: Any = None  # the attempt's span, while one is open (tracing on)

    @property
    def decision_log(self) -> DecisionLog | None:
        return self._log

    @property
    def passed_over(self) -> tuple[Skip, ...]:
        """Every model passed over: routing's (capability, budget), then dispatch's (health)."""
        return (*self.decision.skipped, *self.skipped)

    def admit(self, model: str) -> bool:
        """Whether ``model`` may be tried now; if not, it is added to :attr:`skipped` (unless
        the request was rejected: then no model may be)."""
        if self.rejected:
            return False
        if self._health is None:
            return True
        admission = self._health.admit(model)
        if admission.allowed:
            self._probe = admission.probe
            return True
        self._refused[model] = admission
        self.skipped.append(Skip(model, "unhealthy", admission.detail or "unhealthy"))
        add_event("semroute.skipped", {"gen_ai.request.model": model, "semroute.why": "unhealthy"})
        return False

    def least_bad(self) -> str | None:
        """When every model of the chain was skipped as unhealthy, the one to try anyway: a
        degraded (slow) one before a failing one, then the one whose cool-off ends first."""
        if self.attempts or not self.skipped:
            return None
        order = {s.model: i for i, s in enumerate(self.skipped)}

        def badness(skip: Skip) -> tuple[bool, float, int]:
            a = self._refused[skip.model]
            return (not a.degraded, a.retry_in_s, order[skip.model])

        pick = min(self.skipped, key=badness)
        self.skipped.remove(pick)
        self._probe = True
        self._note = f"tried though unhealthy, as every model of the chain was ({pick.detail})"
        return pick.model

    def _outcome(self, ok: bool) -> None:
        if self._health is not None:
            last = self.attempts[-1]
            self._health.record(last.model, Outcome(ok, last.latency_ms, probe=self._probe))

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
        if self.escalation is not None:
            params.update(self.escalation.params(model))
        self._span = start_span(f"chat {model}", self.span_attributes(model), kind="client")
        return params

    def span_attributes(self, model: str, purpose: str = "answer") -> dict[str, Any]:
        """A call to ``model`` for this request, as span attributes."""
        return call_attributes(
            self.provider.config,
            model,
            request_id=self.request_id,
            route=self.decision.route,
            session=self.session.key if self.session else None,
            stream=self.stream,
            kwargs=self.kwargs if purpose == "answer" else None,
            purpose=purpose,
        )

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000

    def failed(self, model: str, exc: BaseException) -> None:
        error = self.provider.describe(exc, model, self.kwargs)
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) else None
        self.attempts.append(Attempt(model, error, self._elapsed_ms(), status, self._note))
        origin = origin_of(exc)
        self._outcome(origin == "unsent" or not counts_as_failure(status))
        self._end_span(
            {"error.type": type(exc).__name__, "http.response.status_code": status}, error
        )
        from litellm.exceptions import ContextWindowExceededError

        malformed = status in (400, 422) and not isinstance(exc, ContextWindowExceededError)
        self.rejected = origin == "unsent" or (origin == "response" and malformed)

    def answered(self, model: str, response: Any = None) -> None:
        """``model`` answered ``response`` (for a stream: sent its first chunk; its outcome is
        recorded when the stream ends or breaks)."""
        self.attempts.append(Attempt(model, None, self._elapsed_ms(), note=self._note))
        if not self.stream:
            self._outcome(True)
            self._end_span(answer_attributes(self.provider.config, model, response))

    def _end_span(self, attributes: dict[str, Any], error: str | None = None) -> None:
        span, self._span = self._span, None
        end_span(span, attributes, error=error)

    def result(self, response: Any, model: str | None = None) -> DispatchResult:
        """The answer ``model`` (default: the last model tried) gave, logged."""
        model = model or self.attempts[-1].model
        usage = Usage.of(response)
        cost = self.cost(model, response, usage)
        if self.escalation is not None:
            cost = self.escalation.finish(model, response, cost)
        out = DispatchResult(
            request_id=self.request_id,
            decision=self.decision,
            model=model,
            response=response,
            attempts=tuple(self.attempts),
            usage=usage,
            cost_usd=cost,
            skipped=self.passed_over,
            cascade=tuple(self.escalation.steps) if self.escalation else (),
            cache_status=self.log_extra.get("cache"),
        )
        text = text_of(response)
        self.log(usage, out.cost_usd, None, text, model=model)
        if self.on_answer is not None:
            self.on_answer(response, model, out.cost_usd)
        if self.after is not None:
            self.after(self, text, model)
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
        reported = reported_cost(response)
        if reported is not None:
            return reported
        if usage is None:
            return None
        return usage.prompt_tokens * price.input + usage.completion_tokens * price.output

    def give_up(self) -> DispatchError:
        """Log the failure and build the error listing every attempt."""
        tried = f"{len(self.attempts)} tried"
        if self.skipped:
            tried += f", {len(self.skipped)} skipped as unhealthy"
        what = f"route {self.decision.route!r}" if self.decision.route else "the request"
        message = f"no model answered {what} ({tried}; check their endpoints and keys)"
        error = DispatchError
        if self.rejected:
            error = RequestRejectedError
            message = (
                f"model {self.attempts[-1].model!r} rejected the request, so no other model "
                "was tried; fix the request"
            )
        self.log(None, None, message, None)
        return error(
            message,
            attempts=self.attempts,
            request_id=self.request_id,
            decision=self.decision,
            skipped=self.passed_over,
        )

    def broke(self, exc: BaseException) -> DispatchError:
        """A stream failed after it started: its last attempt fails, timed to the break."""
        last = self.attempts[-1]
        model = last.model
        status = getattr(exc, "status_code", None)
        self.attempts[-1] = dataclasses.replace(
            last,
            error=self.provider.describe(exc, model, self.kwargs),
            latency_ms=self._elapsed_ms(),
            status=status if isinstance(status, int) else None,
        )
        self._outcome(False)
        self._end_span({"error.type": type(exc).__name__}, f"the stream from {model!r} broke")
        self.log(None, None, f"the stream from {model!r} broke", None)
        return DispatchError(
            f"the stream from {model!r} broke after it started",
            attempts=self.attempts,
            request_id=self.request_id,
            decision=self.decision,
            skipped=self.passed_over,
        )

    def log(
        self,
        usage: Usage | None,
        cost: float | None,
        error: str | None,
        answer: str | None,
        *,
        model: str | None = None,
    ) -> None:
        """Write the request's one log line (``model``: the model whose answer was returned,
        when it is not the last one tried), and keep the session on the model that answered."""
        if self._span is not None:  # a stream that ended, or a call cancelled midway
            self._end_span({}, error)
        session = self._settle(model)
        if self._log is not None:
            content = self.provider.config.settings.log_content
            self._log.write(
                entry(
                    request_id=self.request_id,
                    decision=self.decision,
                    attempts=self.attempts,
                    skipped=self.passed_over,
                    usage=usage,
                    cost_usd=cost,
                    stream=self.stream,
                    error=error,
                    content=(self.messages, answer) if content else None,
                    model=model,
                )
                | _policy_fields(self.decision)
                | self._quality_fields(usage)
                | self.log_extra
                | ({"redacted": dict(self.redacted)} if self.decision.redact else {})
                | ({"session": session} if session is not None else {})
            )

    def _settle(self, model: str | None) -> dict[str, Any] | None:
        if self.session is None:
            return None
        last = self.attempts[-1] if self.attempts else None
        answered = model or (last.model if last is not None and last.error is None else None)
        return self.session.settle(
            self.decision, answered, self.chain, self.attempts, self.passed_over
        )

    def _quality_fields(self, usage: Usage | None) -> dict[str, Any]:
        """The cascade, the rule's tier, and what the default model would have cost (from this
        request's tokens), so that `semroute stats` needs no config."""
        default = None
        price = price_of(self.provider.default_model, self.provider.config.models)
        if price is not None and usage is not None:
            default = usage.prompt_tokens * price.input + usage.completion_tokens * price.output
        rival = self.decision.challenger
        return {
            "tier": self.provider.config.quality.tier_of(self.decision.rule),
            "cascade": self.escalation.to_dict() if self.escalation else None,
            "default_cost_usd": default,
        } | ({"challenger": challenger_entry(rival)} if rival is not None else {})

    def streamed(
        self, assembly: Assembly, *, ended: bool = True, error: str | None = None
    ) -> tuple[Any, Usage | None, float | None]:
        """Assemble a finished stream's chunks into one response, log it, return its numbers
        (``ended``: the stream ran to its end rather than being closed midway; ``error``: why
        it was closed, for the log line)."""
        response = None
        if assembly.count:
            response = response_of(assembly, self.messages, import_litellm())
        self._outcome(True)
        usage = Usage.of(response)
        model = self.attempts[-1].model
        self._end_span(answer_attributes(self.provider.config, model, response), error)
        cost = self.cost(model, response, usage) if response else None
        self.log(usage, cost, error, text_of(response))
        if self.on_answer is not None and ended and response is not None:
            self.on_answer(response, model, cost)
        if self.after is not None and ended and response is not None:  # a whole answer
            self.after(self, text_of(response), model)
        return response, usage, cost


Origin = Literal["response", "network", "unsent", "unknown"]


def origin_of(exc: BaseException) -> Origin:
    """Where a failed attempt's error came from, read from its chain of causes: the provider's
    HTTP response (``response``), the network or an unreadable response (``network``), or
    this process before a byte left (``unsent``: LiteLLM reports a request it could not
    serialise, a NaN or an object JSON has no form for, as a 500 of its own, caused by the
    encoder's TypeError or ValueError). LiteLLM's own refusals (a model it has no deployment
    for, a parameter the provider does not support) are ``unknown``, as is anything else."""
    import aiohttp
    import httpx

    origin: Origin = "unknown"
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, httpx.HTTPStatusError | aiohttp.ClientResponseError):
            return "response"
        network = httpx.HTTPError | aiohttp.ClientError | OSError | TimeoutError | UnicodeError
        if isinstance(link, network):
            origin = "network"
        elif type(link) in (TypeError, ValueError) and "JSON" in str(link) and origin == "unknown":
            origin = (
                "unsent"  # json.dumps: "... is not JSON serializable", "... not JSON compliant"
            )
        link = link.__cause__ or link.__context__
    return origin


def _check_finite(kwargs: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """Refuse a request holding a number that is not finite: JSON has no form for it, so no
    model could be sent it (``metadata`` stays in this process and is not checked)."""
    stack: list[tuple[tuple[Any, ...], Any]] = [
        ((k,), v) for k, v in kwargs.items() if k != "metadata"
    ]
    stack.append((("messages",), messages))
    while stack:
        loc, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            where = loc[0] + "".join(
                f"[{k if isinstance(k, int) else json.dumps(k)}]" for k in loc[1:]
            )
            raise InvalidQueryError(f"{where}= should be a finite number, not {value}")
        if isinstance(value, dict):
            stack.extend(((*loc, k), v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))


def _policy_fields(decision: Decision) -> dict[str, Any]:
    """What rules added to the decision, for the log line (the signals hold no user text, and
    only a bounded part of the caller's metadata)."""
    signals = logged_signals(decision.signals)
    return {
        "recommended_model": decision.recommended_model or decision.model,
        "rule": decision.rule,
        "signals": signals,
        "estimated_cost_usd": decision.estimated_cost_usd,
        "cost_limit_usd": decision.cost_limit_usd,
        "within_cost_limit": decision.within_cost_limit,
    }
