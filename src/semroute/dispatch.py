"""Dispatch: send a routed request to its model through LiteLLM, down the model's fallback chain.

    result = router.complete("why does my script raise KeyError?")
    result.text, result.model, result.attempts, result.usage, result.cost_usd

A decision's chain is its model followed by the route's ``fallbacks:`` (for the default model,
``default_fallbacks:``). Each step is one call to a ``litellm.Router`` built from the index's
declared models: LiteLLM picks the deployment, resolves ``os.environ/VAR`` secrets, applies the
timeout and retries, and cools down deployments that keep failing so later requests skip them.
semroute steps from one model group to the next itself, with LiteLLM's own fallbacks switched
off, because it reports every attempt (model, error, latency), and LiteLLM's fallback path
re-raises only the last error and times nothing per step.

LiteLLM is imported on the first dispatch, never by ``import semroute`` or routing. Its errors
are turned into attempts here and, when no model answers, into one :class:`DispatchError`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import re
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semroute.config import DispatchConfig
from semroute.conversation import Message, as_messages
from semroute.decision import Decision, Reason
from semroute.decision_log import entry, open_log
from semroute.errors import DispatchError
from semroute.models import SECRET_PARAM, UnknownPriceWarning, price_of

if TYPE_CHECKING:
    from semroute.router import Router

__all__ = [
    "AsyncDispatchStream",
    "Attempt",
    "DispatchResult",
    "DispatchStream",
    "Dispatcher",
    "Usage",
    "acomplete",
    "complete",
]

MAX_ERROR_CHARS = 300
_LITELLM_PREFIXES = re.compile(r"^(?:litellm\.\w+:\s*|\w+(?:Error|Exception)\s*[:-]\s*)+")
_END = object()  # a stream that ended before its first chunk


@dataclass(frozen=True)
class Attempt:
    """One model tried for a request: ``error`` is None for the one that answered."""

    model: str
    error: str | None
    latency_ms: float
    status: int | None = None
    """The provider's HTTP status, when it sent one."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass(frozen=True)
class Usage:
    """Tokens a response used, as the provider reported them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, response: Any) -> Usage | None:
        usage = getattr(response, "usage", None)
        if usage is None:
            return None
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        return cls(
            prompt, completion, int(getattr(usage, "total_tokens", 0) or prompt + completion)
        )


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
        return _text_of(self.response)

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


# --- LiteLLM -----------------------------------------------------------------------------------


def _import_litellm() -> Any:
    # LiteLLM otherwise downloads its price list on import; the copy it ships is used instead.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    if "LITELLM_LOG" not in os.environ:
        # semroute reports failures itself (attempts, DispatchError, the log); LiteLLM's own
        # stderr lines would repeat them. LITELLM_LOG=DEBUG brings them back.
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return litellm


def _provider_errors() -> tuple[type[BaseException], ...]:
    """What a failing model raises: every LiteLLM provider error derives from openai.APIError;
    a model whose deployments are all cooling down raises RouterRateLimitError (a ValueError)."""
    import openai
    from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic

    return (openai.APIError, RouterRateLimitError, RouterRateLimitErrorBasic)


class Dispatcher:
    """The ``litellm.Router`` for one semroute router, built on first use, and its chains."""

    def __init__(
        self, config: DispatchConfig, default_model: str, route_models: Mapping[str, str]
    ) -> None:
        self.config = config
        self.default_model = default_model
        self.route_models = dict(route_models)
        self._router: Any = None
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self.errors: tuple[type[BaseException], ...] = ()

    def chain(self, decision: Decision, fallbacks: Sequence[str] | None = None) -> tuple[str, ...]:
        """The models to try for ``decision``, in order (``fallbacks`` replaces the configured)."""
        if fallbacks is not None:
            rest: Sequence[str] = fallbacks
        elif decision.reason == Reason.PINNED:
            rest = ()
        elif decision.route is not None and decision.route in self.config.route_fallbacks:
            rest = self.config.route_fallbacks[decision.route]
        elif decision.model == self.default_model:
            rest = self.config.default_fallbacks
        else:
            rest = ()
        return tuple(dict.fromkeys((decision.model, *rest)))

    def litellm_router(self, chain: Sequence[str] = ()) -> Any:
        """The LiteLLM router, with a deployment for every model of ``chain``."""
        with self._lock:
            if self._router is None:
                self._router = self._build()
            for name in chain:
                if name not in self._known:  # a model named only by the caller (pinned)
                    from litellm.types.router import Deployment, LiteLLM_Params

                    self._router.add_deployment(
                        Deployment(model_name=name, litellm_params=LiteLLM_Params(model=name))
                    )
                    self._known.add(name)
            return self._router

    def _build(self) -> Any:
        litellm = _import_litellm()
        self.errors = _provider_errors()
        s = self.config.settings
        model_list = [m.to_dict() for m in self.config.models]
        self._known = {m.model_name for m in self.config.models}
        named = (
            self.default_model,
            *self.route_models.values(),
            *self.config.default_fallbacks,
            *(m for chain in self.config.route_fallbacks.values() for m in chain),
        )
        for name in dict.fromkeys(named):  # plain LiteLLM model strings: one deployment each
            if name not in self._known:
                model_list.append({"model_name": name, "litellm_params": {"model": name}})
                self._known.add(name)
        return litellm.Router(
            model_list=copy.deepcopy(model_list),  # LiteLLM pops keys and resolves secrets in place
            num_retries=s.retries,
            retry_after=0,
            timeout=s.timeout,
            cooldown_time=s.cooldown,
            allowed_fails=s.allowed_fails,
            disable_cooldowns=s.cooldown == 0,
        )

    def describe(self, exc: BaseException, model: str, kwargs: Mapping[str, Any]) -> str:
        """One line for a failed attempt, with every known secret masked."""
        message = str(getattr(exc, "message", None) or exc)
        # LiteLLM prefixes the provider's message with class names, often twice.
        message = _LITELLM_PREFIXES.sub("", " ".join(message.split())) or type(exc).__name__
        text = f"{type(exc).__name__}: {message}"[:MAX_ERROR_CHARS]
        for secret in self._secrets(kwargs):
            text = text.replace(secret, "***")
        missing = [
            var
            for d in self.config.models
            if d.model_name == model
            for var in d.env_vars()
            if not os.environ.get(var)
        ]
        if missing:
            text += f" (environment variable {', '.join(missing)} is not set)"
        return text

    def _secrets(self, kwargs: Mapping[str, Any]) -> list[str]:
        values = [os.environ.get(v) for d in self.config.models for v in d.env_vars()]
        values += [v for k, v in kwargs.items() if SECRET_PARAM.search(k) and isinstance(v, str)]
        # Longest first, so a key that contains another is masked whole.
        return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


_dispatchers: weakref.WeakKeyDictionary[Router, Dispatcher] = weakref.WeakKeyDictionary()
_dispatchers_lock = threading.Lock()


def dispatcher_for(router: Router) -> Dispatcher:
    with _dispatchers_lock:
        found = _dispatchers.get(router)
        if found is None:
            found = _dispatchers[router] = Dispatcher(
                router.dispatch_config,
                router.default_model,
                {r.name: r.model for r in router.routes},
            )
        return found


# --- one request -------------------------------------------------------------------------------


class _Call:
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
        self.dispatcher = dispatcher_for(router)
        self.decision = decision
        self.messages = messages
        self.chain = self.dispatcher.chain(decision, fallbacks)
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
        error = self.dispatcher.describe(exc, model, self.kwargs)
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
        self.log(usage, out.cost_usd, None, _text_of(response))
        return out

    def cost(self, model: str, response: Any, usage: Usage | None) -> float | None:
        price = price_of(model, self.dispatcher.config.models)
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
            error=self.dispatcher.describe(exc, model, self.kwargs),
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
        settings = self.dispatcher.config.settings
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
            response = _import_litellm().stream_chunk_builder(chunks, messages=self.messages)
        usage = Usage.of(response)
        cost = self.cost(self.attempts[-1].model, response, usage) if response else None
        self.log(usage, cost, None, _text_of(response))
        return response, usage, cost


def _text_of(response: Any) -> str | None:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _pinned(model: str) -> Decision:
    return Decision(None, model, 0.0, 0.0, Reason.PINNED, (), 0.0)


def _start(
    router: Router,
    messages: str | Sequence[Message],
    decision: Decision,
    fallbacks: Sequence[str] | None,
    stream: bool,
    kwargs: dict[str, Any],
) -> _Call:
    if "messages" in kwargs:
        raise TypeError("pass the messages as the first argument, not as messages=")
    return _Call(router, decision, as_messages(messages), fallbacks, stream, kwargs)


# --- streams -----------------------------------------------------------------------------------


class _StreamBase:
    """What both stream kinds know before the first chunk, and after the last."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self.request_id = call.request_id
        self.decision = call.decision
        self.model = call.attempts[-1].model
        self.response: Any = None
        """The assembled ``ModelResponse``, once the stream has ended."""
        self.usage: Usage | None = None
        self.cost_usd: float | None = None
        self._done = False

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return tuple(self._call.attempts)

    @property
    def text(self) -> str | None:
        return _text_of(self.response)

    def _finish(self, chunks: list[Any]) -> None:
        if not self._done:
            self._done = True
            self.response, self.usage, self.cost_usd = self._call.streamed(chunks)


class DispatchStream(_StreamBase):
    """A streamed answer: iterate for LiteLLM's chunks. ``decision``, ``model`` and ``attempts``
    are known before the first chunk; ``response``, ``usage`` and ``cost_usd`` after the last.
    The log line is written when the stream ends or is closed."""

    def __init__(self, call: _Call, first: Any, rest: Iterator[Any]) -> None:
        super().__init__(call)
        self._chunks = self._run(first, rest)

    def __iter__(self) -> Iterator[Any]:
        return self._chunks

    def close(self) -> None:
        """Stop reading (the connection is released and the log line written)."""
        self._chunks.close()
        self._finish([])  # for a stream closed before its first chunk was read

    def __enter__(self) -> DispatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, first: Any, rest: Iterator[Any]) -> Generator[Any, None, None]:
        chunks: list[Any] = []
        try:
            if first is not _END:
                chunks.append(first)
                yield first
                for chunk in rest:
                    chunks.append(chunk)
                    yield chunk
        except self._call.dispatcher.errors as exc:
            self._done = True
            raise self._call.broke(exc) from exc
        finally:
            self._finish(chunks)
            close = getattr(rest, "close", None)
            if callable(close):
                close()


class AsyncDispatchStream(_StreamBase):
    """The asynchronous :class:`DispatchStream`: ``async for chunk in stream``."""

    def __init__(self, call: _Call, first: Any, rest: AsyncIterator[Any]) -> None:
        super().__init__(call)
        self._chunks = self._run(first, rest)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks

    async def aclose(self) -> None:
        """Stop reading (the connection is released and the log line written)."""
        await self._chunks.aclose()
        self._finish([])  # for a stream closed before its first chunk was read

    async def __aenter__(self) -> AsyncDispatchStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, first: Any, rest: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
        chunks: list[Any] = []
        try:
            if first is not _END:
                chunks.append(first)
                yield first
                async for chunk in rest:
                    chunks.append(chunk)
                    yield chunk
        except self._call.dispatcher.errors as exc:
            self._done = True
            raise self._call.broke(exc) from exc
        finally:
            self._finish(chunks)
            close = getattr(rest, "aclose", None)
            if callable(close):
                await close()


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
    litellm_router = call.dispatcher.litellm_router(call.chain)
    for name in call.chain:
        try:
            response = litellm_router.completion(**call.params(name))
            if not stream:
                call.answered(name)
                return call.result(response)
            rest = iter(response)
            first = next(rest, _END)  # a stream that fails before its first chunk fails over
        except call.dispatcher.errors as exc:
            call.failed(name, exc)
            continue
        call.answered(name)
        return DispatchStream(call, first, rest)
    raise call.give_up()


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
    litellm_router = call.dispatcher.litellm_router(call.chain)
    for name in call.chain:
        try:
            response = await litellm_router.acompletion(**call.params(name))
            if not stream:
                call.answered(name)
                return call.result(response)
            rest = response.__aiter__()
            try:
                first = await rest.__anext__()
            except StopAsyncIteration:
                first = _END
        except call.dispatcher.errors as exc:
            call.failed(name, exc)
            continue
        call.answered(name)
        return AsyncDispatchStream(call, first, rest)
    raise call.give_up()
