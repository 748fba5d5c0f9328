"""Dispatch: send a request to its model through LiteLLM, down the model's fallback chain.

    dispatcher = Dispatcher.for_index(router.index)
    result = dispatcher.complete("why does my script raise KeyError?", router=router)
    result.text, result.model, result.attempts, result.usage, result.cost_usd

A decision's chain is its model followed by the route's ``fallbacks:`` (for the default model,
``default_fallbacks:``). Each step is one call to the ``litellm.Router`` of
:mod:`semroute.dispatch.providers`, which picks the deployment and applies timeouts, retries and
cooldowns. semroute steps from one model to the next itself, with LiteLLM's own fallbacks switched
off, because it reports every attempt (model, error, latency) and LiteLLM's fallback path re-raises
only the last error and times nothing per step.

Before each step, the model's health is asked (see :mod:`semroute.dispatch.health`): a model
whose circuit is open, or that is degraded, is skipped without an attempt and named in the
result's ``skipped``. Health is kept for the models the index declares only: a name a caller
pinned that it does not declare is always tried and leaves no health state. When every model of the chain is skipped, the least bad one is tried anyway
(its attempt carries a ``note`` saying so): a request is never failed without trying a model.

When no model answers, the request is logged and one :class:`DispatchError` lists every attempt.

A route, rule or tier with a cascade puts the cascade's models at the front of the chain and
checks each answer but the last model's (see :mod:`semroute.dispatch.cascade`). A request with
a shadow setting is, when sampled, evaluated in the background after it has been answered (see
:mod:`semroute.dispatch.shadow`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from semroute.config.deployments import DispatchConfig
from semroute.config.secrets import is_secret_name
from semroute.decision import Decision, Reason
from semroute.dispatch.arguments import pin_of, pinned, router_of, routing_hints
from semroute.dispatch.cache import CacheStore, LocalCacheStore, SemanticCache
from semroute.dispatch.cache_serve import look_up
from semroute.dispatch.call import Call
from semroute.dispatch.cascade import Escalation, plan
from semroute.dispatch.health import Declared, HealthStore, LocalHealthStore, probe_lease
from semroute.dispatch.log import DecisionLogs
from semroute.dispatch.loop import BackgroundLoop
from semroute.dispatch.providers import Provider
from semroute.dispatch.result import DispatchResult
from semroute.dispatch.routing_threads import in_routing_thread
from semroute.dispatch.sessions import LocalSessions, SessionRun, SessionStore
from semroute.dispatch.shadow import DailySpend, ShadowRunner
from semroute.dispatch.streaming import END, AsyncDispatchStream, DispatchStream
from semroute.errors import BlockedError, CostLimitError, InvalidQueryError, SemrouteError
from semroute.routing.conversation import Message, as_messages
from semroute.routing.pii import Detectors, Redacted, redact_messages
from semroute.routing.policy import Pin

if TYPE_CHECKING:
    from types import TracebackType

    from semroute.index.store import RouteIndex
    from semroute.routing.router import Router

__all__ = ["AsyncDispatchStream", "DispatchResult", "DispatchStream", "Dispatcher"]

_log = logging.getLogger(__name__)


class Dispatcher:
    """Sends requests down the fallback chains of one index's models.

    Build one with :meth:`for_index`. It owns the ``litellm.Router`` (built on the first
    request) and the decision log it writes; its synchronous calls run on the process's
    :class:`~semroute.dispatch.loop.BackgroundLoop`. It is safe to share between threads;
    :meth:`close` (or a ``with`` block) closes its log file.

    ``health`` is where models' health is kept: by default a :class:`LocalHealthStore` of its
    own, built from the ``health:`` settings (none when they say ``enabled: false``); pass one
    to share it between dispatchers, or a store shared between processes. ``redis_url``: a Redis
    server where LiteLLM keeps its deployment cooldowns, shared between processes (None: each
    process keeps its own). ``shadow_spend``: where shadow calls' cost is counted against the
    daily cap (default: this dispatcher's own). ``sessions``: where sessions' models are kept
    (default, with ``router.conversation.sticky``: this dispatcher's own; see
    :mod:`semroute.dispatch.sessions`).
    """

    def __init__(
        self,
        config: DispatchConfig,
        *,
        default_model: str,
        route_models: Mapping[str, str] | None = None,
        health: HealthStore | None = None,
        redis_url: str | None = None,
        shadow_spend: DailySpend | None = None,
        declared: Collection[str] = (),
        cache: CacheStore | None = None,
        space: str = "",
        pii: Detectors | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.config = config
        self._pii = pii or Detectors()  # a decision's `redact` kinds are replaced with these
        self.default_model = default_model
        self._provider = Provider(
            config, default_model, route_models or {}, redis_url=redis_url, declared=declared
        )
        self._loop = BackgroundLoop.shared()
        self._logs = DecisionLogs()
        if health is None and config.health.enabled:
            lease = probe_lease(config.settings)
            health = LocalHealthStore(config.health, probe_lease_s=lease)
        self.health = health
        """Where models' health is kept (None: health is off and every model is tried)."""
        self._tracked = None if health is None else Declared(health, self._provider.declared)
        self.shadow = ShadowRunner(config.quality.limits, self._loop, shadow_spend)
        """The background shadow evaluation (see :mod:`semroute.dispatch.shadow`)."""
        store = cache or LocalCacheStore(config.cache.max_entries)
        self.cache = SemanticCache(config.cache, store, space=space) if config.cache else None
        """The semantic cache (None: no route has one; see :mod:`semroute.dispatch.cache`)."""
        sticky = config.conversation.sticky
        self.sessions = (sessions or LocalSessions.of(config.conversation)) if sticky else None
        """Where sessions' models are kept (None: sessions are off, the router is not sticky)."""

    @classmethod
    def for_index(
        cls,
        index: RouteIndex,
        *,
        health: HealthStore | None = None,
        redis_url: str | None = None,
        shadow_spend: DailySpend | None = None,
        cache: CacheStore | None = None,
        sessions: SessionStore | None = None,
    ) -> Dispatcher:
        """The dispatcher for the models, chains and dispatch settings stored in ``index``
        (``cache``: where the semantic cache keeps answers; default: this dispatcher's own)."""
        config = DispatchConfig.from_dict(index.manifest.dispatch)
        policy = index.manifest.rules(index.path)
        if not config.quality.rule_tiers:  # an index built before the log named rules' tiers
            tiers = {r.name: r.tier for r in policy.rules if r.tier}
            quality = dataclasses.replace(config.quality, rule_tiers=tiers)
            config = dataclasses.replace(config, quality=quality)
        return cls(
            config,
            default_model=index.settings["default_model"],
            route_models={r.name: r.model for r in index.routes},
            health=health,
            redis_url=redis_url,
            shadow_spend=shadow_spend,
            sessions=sessions,
            declared=(
                *(m for chain in policy.tiers.values() for m in chain),
                *(r.model for r in policy.rules if r.model),
            ),
            cache=cache,
            space=index.encoder_info.fingerprint,
            pii=Detectors(policy.pii),
        )

    def chain(self, decision: Decision, fallbacks: Sequence[str] | None = None) -> tuple[str, ...]:
        """The models to try for ``decision``, in order (``fallbacks`` replaces the configured;
        a rule's chain replaces the route's)."""
        if decision.chain and fallbacks is None:
            return decision.chain
        return self._provider.chain(decision, fallbacks)

    @overload
    def complete(
        self,
        messages: str | Sequence[Message],
        *,
        router: Router | None = ...,
        model: str | Pin | None = ...,
        fallbacks: Sequence[str] | None = ...,
        stream: Literal[False] = ...,
        **kwargs: Any,
    ) -> DispatchResult: ...
    @overload
    def complete(
        self,
        messages: str | Sequence[Message],
        *,
        router: Router | None = ...,
        model: str | Pin | None = ...,
        fallbacks: Sequence[str] | None = ...,
        stream: Literal[True],
        **kwargs: Any,
    ) -> DispatchStream: ...
    def complete(
        self,
        messages: str | Sequence[Message],
        *,
        router: Router | None = None,
        model: str | Pin | None = None,
        fallbacks: Sequence[str] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> DispatchResult | DispatchStream:
        """Route ``messages`` (a string or OpenAI-style message list) with ``router`` and get the
        answer.

        ``model`` (a name, or a :class:`~semroute.routing.policy.Pin`) pins a model instead: no
        fallback is used unless ``fallbacks`` names some. With ``router``, the pin is checked as
        a routed request is: a blocking rule refuses it (:class:`BlockedError`), its chain is
        checked for capability and cost, and every cost ceiling applies (reason ``pinned``);
        without one, nothing is checked. ``stream=True`` returns a :class:`DispatchStream`.
        Other keywords (``temperature``, ``max_tokens``, ``tools``, ...) go to LiteLLM. Raises
        :class:`DispatchError` when no model of the chain answers.
        """
        hints = routing_hints(kwargs)
        pin = pin_of(model, fallbacks)
        session = self._session(kwargs, pin, hints)
        if pin is not None and router is None:
            decision, fallbacks = pinned(pin.chain[0]), pin.chain[1:] or fallbacks
        else:
            decision, fallbacks = router_of(router).route(messages, pin=pin, **hints), None
        call, escalation = self._start(messages, decision, fallbacks, stream, kwargs)
        call.session = session
        out = self._loop.run(self._walk(call, escalation))
        return DispatchStream(out, self._loop) if isinstance(out, AsyncDispatchStream) else out

    @overload
    async def acomplete(
        self,
        messages: str | Sequence[Message],
        *,
        router: Router | None = ...,
        model: str | Pin | None = ...,
        fallbacks: Sequence[str] | None = ...,
        stream: Literal[False] = ...,
        **kwargs: Any,
    ) -> DispatchResult: ...
    @overload
    async def acomplete(
        self,
        messages: str | Sequence[Message],
        *,
        router: Router | None = ...,
        model: str | Pin | None = ...,
        fallbacks: Sequence[str] | None = ...,
        stream: Literal[True],
        **kwargs: Any,
    ) -> AsyncDispatchStream: ...
    async def acomplete(
        self,
        messages: str | Sequence[Message],
        *,
        router: Router | None = None,
        model: str | Pin | None = None,
        fallbacks: Sequence[str] | None = None,
        stream: bool = False,
        request_id: str | None = None,
        route_inline: bool = False,
        **kwargs: Any,
    ) -> DispatchResult | AsyncDispatchStream:
        """The asynchronous :meth:`complete`. Routing runs in a worker thread, off the event loop,
        unless ``route_inline`` (for a caller whose loop has nothing else to do meanwhile).

        ``request_id`` names the request in the log and the result (default: a new one).
        ``session`` (both methods) names the agent run the request belongs to (see
        :mod:`semroute.dispatch.sessions`)."""
        hints = routing_hints(kwargs)
        pin = pin_of(model, fallbacks)
        redacted = None
        session = self._session(kwargs, pin, hints)
        if pin is not None and router is None:
            decision, fallbacks = pinned(pin.chain[0]), pin.chain[1:] or fallbacks
        elif route_inline:
            fallbacks = None
            decision, redacted = self._route(router_of(router), messages, pin, hints)
        else:
            fallbacks = None  # a routed pin's checked chain is the decision's
            routing = asyncio.ensure_future(
                in_routing_thread(self._route, router_of(router), messages, pin, hints)
            )
            try:
                decision, redacted = await asyncio.shield(routing)
            except asyncio.CancelledError:
                # The caller went away while the request was routed (a gateway's client hung
                # up): routing ends in its thread anyway, and the request gets its log line.
                # (A refusal by a rule is logged by _start itself.) Any other error has no one
                # left to raise it to, so it is logged here rather than lost.
                try:
                    decision, redacted = await routing
                    call, _ = self._start(
                        messages, decision, fallbacks, stream, kwargs, request_id, redacted
                    )
                    call.log(None, None, "cancelled before a model was called", None)
                except (BlockedError, CostLimitError):
                    pass
                except (SemrouteError, TypeError) as exc:
                    _log.warning("request %s, cancelled while routed, failed: %s", request_id, exc)
                raise
        call, escalation = self._start(
            messages, decision, fallbacks, stream, kwargs, request_id, redacted
        )
        call.session = session
        return await self._walk(call, escalation)

    def _route(
        self, router: Router, messages: Any, pin: Pin | None, hints: dict[str, Any]
    ) -> tuple[Decision, Redacted | None]:
        # Routing and redaction both in a worker thread: a large scan stays off the event loop.
        d = router.route(messages, pin=pin, **hints)
        return d, redact_messages(as_messages(messages), d.redact, self._pii) if d.redact else None

    def _session(
        self, kwargs: dict[str, Any], pin: Pin | None, hints: dict[str, Any]
    ) -> SessionRun | None:
        """The session ``session=`` names (a pinned request has none): its chain is ``held``."""
        key, store = kwargs.pop("session", None), None if pin else self.sessions
        run = SessionRun.open(store, key, self._provider.declared)
        if run is None:
            return None
        hints["held"] = run.held
        return run

    def close(self) -> None:
        """Close the decision log file and release LiteLLM's router (the next request reopens
        the one and builds the other)."""
        self._logs.close()
        self._provider.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start(
        self,
        messages: str | Sequence[Message],
        decision: Decision,
        fallbacks: Sequence[str] | None,
        stream: bool,
        kwargs: dict[str, Any],
        request_id: str | None = None,
        redacted: Redacted | None = None,
    ) -> tuple[Call, Escalation | None]:
        if "messages" in kwargs:
            raise TypeError("pass the messages as the first argument, not as messages=")
        for name, value in kwargs.items():
            # LiteLLM would reject it with an error that quotes the value: the key, in a traceback.
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and is_secret_name(name):
                raise InvalidQueryError(
                    f"{name}= must be a string, not {type(value).__name__}; pass the key as text"
                )
        quality = self.config.quality
        scope = kwargs.pop("cache_scope", None)
        escalation, chain = plan(quality, decision, self.chain(decision, fallbacks), stream)
        sent, counts = redacted or redact_messages(
            as_messages(messages), decision.redact, self._pii
        )
        call = Call(
            self._provider,
            decision,
            sent,
            chain,
            stream=stream,
            kwargs=kwargs,
            log=self._logs.open(self.config.settings.log),
            health=self._tracked,
            request_id=request_id,
        )
        call.escalation, call.redacted, call.cache_scope = escalation, counts, scope
        if decision.reason != Reason.PINNED:
            shadow = quality.shadow_for(decision.route, decision.rule)
            call.after = self.shadow.hook(shadow, call.request_id)
        refusal: BlockedError | CostLimitError | None = None
        if decision.blocked:
            refusal = BlockedError(decision.rule or "?", decision=decision)
        elif decision.over_budget:  # no model of the chain fits the request's cost ceiling
            refusal = CostLimitError.of(decision)
        if refusal is not None:  # logged with its reason; no model is called
            call.log(None, None, str(refusal), None)
            raise refusal
        return call, escalation

    async def _walk(
        self, call: Call, escalation: Escalation | None
    ) -> DispatchResult | AsyncDispatchStream:
        """Try each model of the chain until one answers (for a stream: sends its first chunk),
        unless the semantic cache has the answer."""
        cached = look_up(self.cache, call, call.cache_scope)
        if cached is not None:
            return cached
        for name in _candidates(call):
            try:
                response = await self._provider.acompletion(call.params(name), call.chain)
                if call.stream:
                    rest = aiter(response)  # failing before its first chunk, it fails over
                    first = await anext(rest, END)
            except self._provider.errors as exc:
                call.failed(name, exc)
                if escalation is not None:
                    escalation.failed(name, call.attempts[-1].error)
                continue
            except asyncio.CancelledError:
                # The caller went away (a gateway's client hung up): the request still gets
                # its one log line.
                call.log(None, None, f"cancelled while waiting for {name!r}", None)
                raise
            call.answered(name, None if call.stream else response)
            if call.stream:
                return AsyncDispatchStream(call, first, rest)
            if escalation is None or await escalation.accepts(call, name, response):
                return call.result(response)
        rejected = escalation.take_rejected() if escalation is not None else None
        if rejected is not None:  # better a rejected answer than none
            return call.result(*rejected)
        raise call.give_up()

    def unlisted_models(self) -> tuple[str, ...]:
        """The model names the index does not declare that have a LiteLLM deployment now (at
        most :data:`~semroute.dispatch.providers.MAX_UNLISTED`), least recently used first."""
        return self._provider.unlisted()

    def wait_for_shadows(self, timeout: float | None = None) -> bool:
        """Wait until every shadow job has written its quality record (say, before the process
        exits); False if ``timeout`` seconds passed first."""
        return self.shadow.wait(timeout)


def _candidates(call: Call) -> Iterator[str]:
    """The models to try, asked one at a time: health is asked about a model only when the
    one before it has failed (so a probe is claimed only for a model that is tried)."""
    for name in call.chain:
        if call.admit(name):
            yield name
    last = call.least_bad()
    if last is not None:
        yield last
