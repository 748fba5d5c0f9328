"""How requests reach the models: one ``litellm.Router`` per :class:`~semroute.dispatch.dispatcher.Dispatcher`.

A :class:`Provider` holds the LiteLLM router built (on first use) from the index's declared
models, plus one deployment for each plain LiteLLM model string the routes, chains, tiers and
rules name. A model string only a caller names (pinned, not declared) gets a deployment too, but
at most :data:`MAX_UNLISTED` of them are kept: past that, the one used longest ago is removed
(each deployment makes every LiteLLM call a little slower, and callers are not bounded). LiteLLM picks
the deployment, resolves ``os.environ/VAR`` secrets at that moment, applies the timeout and
retries, and cools down deployments that keep failing so later requests skip them. It also
knows each decision's fallback chain and turns LiteLLM's exceptions into one-line attempt errors
with every credential LiteLLM could have sent masked (see :mod:`semroute.config.secrets`): this is the
one seam with LiteLLM, so every output (attempts, ``DispatchError``, the decision log, the CLI)
gets masked text.

LiteLLM is imported here on the first dispatch, never by ``import semroute`` or routing.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from semroute.config.deployments import DispatchConfig
from semroute.config.secrets import Masker, resolve_references
from semroute.decision import Decision, Reason
from semroute.dispatch.direct import Direct

__all__ = ["CLOSE_TRIES", "Provider", "close_litellm_clients", "import_litellm"]

MAX_ERROR_CHARS = 300
MAX_UNLISTED = 64
CLOSE_TRIES = 3
"""How many times :func:`close_litellm_clients` tries before it gives up."""
"""How many model strings the index does not declare keep a LiteLLM deployment at once."""
_LITELLM_PREFIXES = re.compile(r"^(?:litellm\.\w+:\s*|\w+(?:Error|Exception)\s*[:-]\s*)+")


def import_litellm() -> Any:
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


async def close_litellm_clients() -> RuntimeError | None:
    """Close the HTTP clients LiteLLM cached and forget them, so that a later call in this
    process (another loop's: a dispatcher's background loop, a second app) makes new ones
    instead of being handed a closed one. Its cache is shared by every thread's loop, and
    another thread adding a client breaks the iteration, so it tries :data:`CLOSE_TRIES` times;
    the last try's error when it gave up, else None."""
    import_litellm()
    import litellm
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    error: RuntimeError | None = None
    for _ in range(CLOSE_TRIES):
        try:
            await close_litellm_async_clients()  # type: ignore[no-untyped-call]
        except RuntimeError as exc:
            error = exc
            continue
        litellm.in_memory_llm_clients_cache.flush_cache()  # type: ignore[no-untyped-call]
        return None
    return error


def _provider_errors() -> tuple[type[BaseException], ...]:
    """What a failing model raises: every LiteLLM provider error derives from openai.APIError;
    a model whose deployments are all cooling down raises RouterRateLimitError (a ValueError)."""
    import openai
    from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic

    return (openai.APIError, RouterRateLimitError, RouterRateLimitErrorBasic)


def _shared_cooldowns(redis_url: str | None) -> dict[str, Any]:
    """``litellm.Router`` arguments that keep its deployment cooldowns (and the failure counts
    that start them) in Redis, so every process skips a deployment one of them cooled down.

    With a Redis URL, LiteLLM's Router puts Redis behind its router cache; it caches responses
    only with ``cache_responses=True`` (which also sets ``litellm.cache``), so that is passed
    as False. Its other uses of that cache stay off here: per-minute usage counters need
    ``tpm``/``rpm`` limits, the scheduler priority requests, affinity pre-call checks. Redis
    commands get short timeouts: LiteLLM reads cooldowns on each request, and skips Redis for a
    while after repeated failures (its own circuit breaker), going on with what it holds.
    """
    if redis_url is None:
        return {}
    timeouts = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
    return {"redis_url": redis_url, "cache_responses": False, "cache_kwargs": timeouts}


def _quality_models(config: DispatchConfig) -> tuple[str, ...]:
    """The models cascades and shadow evaluation name (they are declared too)."""
    q = config.quality
    shadows = (*q.shadows.values(), *((q.shadow,) if q.shadow else ()))
    return (
        *(m for c in q.cascades.values() for m in c.models),
        *(c.accept.judge for c in q.cascades.values() if c.accept.judge),
        *(m for s in shadows for m in (s.reference, s.judge)),
    )


class Provider:
    """The ``litellm.Router`` for one index's models, built on first use, and its chains."""

    def __init__(
        self,
        config: DispatchConfig,
        default_model: str,
        route_models: Mapping[str, str],
        *,
        redis_url: str | None = None,
        declared: Collection[str] = (),
        max_unlisted: int | None = None,
    ) -> None:
        self.config = config
        self.default_model = default_model
        self.route_models = dict(route_models)
        self.redis_url = redis_url
        """Where LiteLLM keeps deployment cooldowns, shared between processes (None: here)."""
        self.declared = frozenset(
            (
                *(m.model_name for m in config.models),
                *self._named(),
                *_quality_models(config),
                *declared,
            )
        )
        """The model names the index declares (``declared``: those of tiers and rules)."""
        self.max_unlisted = MAX_UNLISTED if max_unlisted is None else max_unlisted
        self._router: Any = None
        self._known: set[str] = set()
        self._unusable: set[str] = set()  # models LiteLLM refused to set up (say, no provider)
        # Deployments of names nobody declared, least recently used first: name -> (id, whether
        # LiteLLM's cost map got an entry of that name from it).
        self._unlisted: OrderedDict[str, tuple[str | None, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.errors: tuple[type[BaseException], ...] = ()
        self.direct = Direct(config)
        """The OpenAI-compatible deployments called without LiteLLM (see :mod:`.direct`)."""

    def _named(self) -> tuple[str, ...]:
        """The default model, the routes' models and every configured fallback."""
        return (
            self.default_model,
            *self.route_models.values(),
            *self.config.default_fallbacks,
            *(m for chain in self.config.route_fallbacks.values() for m in chain),
        )

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

    async def acompletion(self, params: dict[str, Any], chain: Sequence[str] = ()) -> Any:
        """Call ``params["model"]``: directly when it is an OpenAI-compatible deployment that
        needs nothing of LiteLLM (see :mod:`semroute.dispatch.direct`), else through LiteLLM's
        router (``chain``: the other models the request may need a deployment for)."""
        if not self.errors:
            self.errors = _provider_errors()
        endpoint = self.direct.endpoint(params)
        if endpoint is not None:
            return await self.direct.acompletion(endpoint, params)
        return await self.litellm_router(chain or (params["model"],)).acompletion(**params)

    def litellm_router(self, chain: Sequence[str] = ()) -> Any:
        """The LiteLLM router, with a deployment for every model of ``chain``."""
        with self._lock:
            if self._router is None:
                self._router = self._build()
            for name in chain:
                if name in self._unlisted:
                    self._unlisted.move_to_end(name)
                elif name not in self._known:  # a tier's or rule's model, or a caller's name
                    self._add(name)
            return self._router

    def unlisted(self) -> tuple[str, ...]:
        """The undeclared names that have a deployment now, least recently used first."""
        with self._lock:
            return tuple(self._unlisted)

    def _add(self, name: str) -> None:
        import litellm
        from litellm.types.router import Deployment, LiteLLM_Params

        self._known.add(name)
        fresh = name not in litellm.model_cost
        added = None
        try:
            added = self._router.add_deployment(
                Deployment(model_name=name, litellm_params=LiteLLM_Params(model=name))
            )
        except self.errors:
            self._unusable.add(name)
        if name in self.declared:
            return
        self._unlisted[name] = (added.model_info.id if added is not None else None, fresh)
        while len(self._unlisted) > self.max_unlisted:
            self._forget(*self._unlisted.popitem(last=False))

    def _forget(self, name: str, entry: tuple[str | None, bool]) -> None:
        """Remove an undeclared name's deployment, and what LiteLLM's cost map got from it."""
        import litellm

        model_cost = litellm.model_cost
        deployment_id, fresh = entry
        self._known.discard(name)
        self._unusable.discard(name)
        if deployment_id is not None:
            self._router.delete_deployment(deployment_id)
            model_cost.pop(deployment_id, None)
        if fresh:
            model_cost.pop(name, None)

    def _build(self) -> Any:
        litellm = import_litellm()
        self.errors = _provider_errors()
        s = self.config.settings
        # LiteLLM resolves `os.environ/VAR` in top-level parameters only; headers are resolved here.
        model_list = [
            {**m.to_dict(), "litellm_params": resolve_references(m.litellm_params)}
            for m in self.config.models
        ]
        self._known = {m.model_name for m in self.config.models}
        self._unlisted.clear()
        for name in dict.fromkeys(
            self._named()
        ):  # plain LiteLLM model strings: one deployment each
            if name not in self._known:
                model_list.append({"model_name": name, "litellm_params": {"model": name}})
                self._known.add(name)
        router = litellm.Router(
            model_list=copy.deepcopy(model_list),  # LiteLLM pops keys and resolves secrets in place
            num_retries=s.retries,
            retry_after=0,
            timeout=s.timeout,
            cooldown_time=s.cooldown,
            allowed_fails=s.allowed_fails,
            disable_cooldowns=s.cooldown == 0,
            # One model LiteLLM cannot set up must not stop every other one from answering.
            ignore_invalid_deployments=True,
            **_shared_cooldowns(self.redis_url),
        )
        self._unusable = self._known - set(router.get_model_names())
        # A LiteLLM router registers its cooldown and usage callbacks in LiteLLM's global lists,
        # which hold at most 100 (LITELLM_MAX_CALLBACKS): past that, a new router silently gets
        # no cooldowns. Take them out when this provider is closed or collected (a gateway
        # builds one per index reload; a test suite, hundreds).
        weakref.finalize(self, router.discard)
        return router

    def close(self) -> None:
        """Unregister the LiteLLM router's callbacks; the next request builds a new router."""
        with self._lock:
            router, self._router = self._router, None
        if router is not None:
            router.discard()

    def describe(self, exc: BaseException, model: str, kwargs: Mapping[str, Any]) -> str:
        """One line for a failed attempt, with every credential LiteLLM could send masked."""
        masker = Masker.collect(*(m.to_dict() for m in self.config.models), kwargs)
        # Masked before anything else: whitespace folding would break a multi-line key apart,
        # and the cut to MAX_ERROR_CHARS would leave the prefix of a key it runs through.
        message = masker.mask(str(getattr(exc, "message", None) or exc))
        # LiteLLM prefixes the provider's message with class names, often twice.
        message = _LITELLM_PREFIXES.sub("", " ".join(message.split())) or type(exc).__name__
        text = f"{type(exc).__name__}: {message}"[:MAX_ERROR_CHARS]
        missing = [
            var
            for d in self.config.models
            if d.model_name == model
            for var in d.env_vars()
            if not os.environ.get(var)
        ]
        if missing:
            text += f" (environment variable {', '.join(missing)} is not set)"
        if model in self._unusable:
            text += (
                " (LiteLLM could not set this model up: name its provider, as in "
                "openai/gpt-4o, and check its litellm_params)"
            )
        return text
