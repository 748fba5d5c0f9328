"""OpenAI-compatible upstreams, called directly instead of through LiteLLM.

A deployment written ``model: openai/<name>`` with an ``api_base`` is a server that speaks
OpenAI's chat completions API (vLLM, llama.cpp, Ollama, TGI, LM Studio, a corporate proxy, the
test kit's FakeProvider). LiteLLM spends milliseconds of CPU on each call to one (its logging
object, its cost calculator, which rebuilds a map of every model it knows when a deployment
gives its own prices, its response conversion), and semroute already does the rest itself:
the fallback chain, the circuit breakers, the cost and the log. So such a deployment is called
here: the request's OpenAI parameters are POSTed as they are to ``{api_base}/chat/completions``
on one pooled HTTP session (aiohttp) per event loop, and the answer comes back as LiteLLM's
``ModelResponse`` (or, streamed, its ``ModelResponseStream`` chunks), so everything after the
call is the same whichever way it went.

A deployment is called directly only when nothing in it needs LiteLLM: one deployment of that
name (LiteLLM would balance several), only the parameters in :data:`DEPLOYMENT_KEYS`, and a
request holding only OpenAI's own parameters (a Python caller's LiteLLM-specific keyword, such
as ``mock_response``, sends that request through LiteLLM). Errors are LiteLLM's exception
classes, raised from the aiohttp error that caused them, so that failover, health and the
attempt's text treat both ways alike. What LiteLLM's router adds besides is not applied to
these deployments: its deployment cooldowns (semroute's breakers, ``router.health``, judge
them) and its retries (``dispatch.retries`` retries here, on a network error, 408, 409, 429
or 5xx). ``dispatch: {direct: false}`` sends every deployment through LiteLLM.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from semroute.config.deployments import DispatchConfig
from semroute.config.secrets import ENV_PREFIX
from semroute.dispatch.upstream_read import (
    answer_problem,
    caused,
    connection_error,
    read_answer,
    read_chunks,
    upstream_error,
)

__all__ = ["DEPLOYMENT_KEYS", "Direct", "Endpoint", "close_direct_clients"]

DEPLOYMENT_KEYS = frozenset(
    {
        "model",
        "api_base",
        "api_key",
        "timeout",
        "stream_timeout",
        "extra_headers",
        "organization",
        "input_cost_per_token",
        "output_cost_per_token",
        "rpm",
        "tpm",
    }
)
"""The ``litellm_params`` a deployment called directly may have."""

OPENAI_PARAMS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
    }
)
"""Request parameters sent to the upstream as they are."""

_OWN = frozenset({"model", "messages", "stream", "metadata", "disable_fallbacks"})
"""Parameters semroute sets itself; ``metadata`` and ``disable_fallbacks`` are not sent."""

_RETRIED = frozenset({408, 409, 429})
_MAX_ERROR_BODY = 2000


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible deployment: where to POST, the upstream's model name, its key."""

    url: str
    model: str
    api_key: str | None
    headers: Mapping[str, str]
    timeout: float
    stream_timeout: float
    proxy: str | None = None
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...)."""

    def request_headers(self) -> dict[str, str]:
        """The headers, with ``os.environ/VAR`` values read now; with no key, as LiteLLM's
        OpenAI client does: ``OPENAI_API_KEY``, and a refusal when there is none."""
        out = {"content-type": "application/json"}
        key = _resolve(self.api_key) if self.api_key is not None else None
        key = key or os.environ.get("OPENAI_API_KEY")
        if not key:
            from litellm import exceptions as errors

            raise errors.AuthenticationError(
                message="no API key: the deployment's api_key is not set",
                llm_provider="openai",
                model=self.model,
            )
        out["authorization"] = f"Bearer {key}"
        for name, value in self.headers.items():
            resolved = _resolve(value)
            if resolved is not None:
                out[name] = resolved
        return out


def _resolve(value: str | None) -> str | None:
    if value is not None and value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX) :])
    return value


def endpoints(config: DispatchConfig) -> dict[str, Endpoint]:
    """The declared deployments that can be called directly, by model name."""
    if not config.settings.direct:
        return {}
    count = Counter(d.model_name for d in config.models)
    out = {}
    for d in config.models:
        p = d.litellm_params
        model, base = p.get("model"), p.get("api_base")
        headers = p.get("extra_headers") or {}
        if (
            count[d.model_name] != 1
            or not set(p) <= DEPLOYMENT_KEYS
            or not isinstance(model, str)
            or not model.startswith("openai/")
            or not isinstance(base, str)
            or not base.startswith(("http://", "https://"))
            or not isinstance(p.get("api_key", ""), str)
            or not isinstance(headers, Mapping)
            or not all(isinstance(v, str) for v in headers.values())
        ):
            continue
        timeout = _seconds(p.get("timeout"), config.settings.timeout)
        out[d.model_name] = Endpoint(
            url=base.rstrip("/") + "/chat/completions",
            model=model.removeprefix("openai/"),
            api_key=p.get("api_key"),
            headers={str(k): v for k, v in headers.items()}
            | ({"OpenAI-Organization": p["organization"]} if p.get("organization") else {}),
            timeout=timeout,
            stream_timeout=_seconds(p.get("stream_timeout"), timeout),
            proxy=_proxy_for(base),
        )
    return out


def _proxy_for(url: str) -> str | None:
    """The proxy the environment sets for ``url``, read once (reading it on each request,
    as a client that trusts the environment does, costs more than the rest of the call)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _seconds(value: Any, default: float) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if number else default


class Direct:
    """Calls the deployments :func:`endpoints` found, on this loop's pooled client."""

    def __init__(self, config: DispatchConfig) -> None:
        self.endpoints = endpoints(config)
        self.retries = config.settings.retries

    def endpoint(self, params: Mapping[str, Any]) -> Endpoint | None:
        """The endpoint for this request, if it can go directly."""
        found = self.endpoints.get(params["model"])
        if found is None or not all(k in OPENAI_PARAMS or k in _OWN for k in params):
            return None
        return found

    async def acompletion(self, endpoint: Endpoint, params: Mapping[str, Any]) -> Any:
        """The answer (a ``ModelResponse``), or for a stream an iterator of its chunks whose
        response has started (so a model that fails before it is failed over)."""
        body = {k: v for k, v in params.items() if k in OPENAI_PARAMS and v is not None}
        body["model"] = endpoint.model
        body["messages"] = params["messages"]
        stream = bool(params.get("stream"))
        if stream:
            body["stream"] = True
        try:
            content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:  # checked before; a caller's odd object
            raise upstream_error(
                500, f"the request cannot be sent as JSON: {exc}", endpoint.model
            ) from exc
        for attempt in range(self.retries + 1):
            try:
                return await self._send(endpoint, content, stream)
            except _Retryable as retry:
                if attempt == self.retries:
                    raise retry.error from retry.error.__cause__
        raise AssertionError("unreachable")

    async def _send(self, endpoint: Endpoint, content: bytes, stream: bool) -> Any:
        import aiohttp
        import litellm
        from litellm import exceptions as errors

        seconds = endpoint.stream_timeout if stream else endpoint.timeout
        if stream:  # a stream may run long: its limit is on the wait for each read
            timeout = aiohttp.ClientTimeout(sock_connect=endpoint.timeout, sock_read=seconds)
        else:
            timeout = aiohttp.ClientTimeout(total=seconds)
        headers = endpoint.request_headers()
        try:
            posting = _session().post(
                endpoint.url, data=content, headers=headers, timeout=timeout, proxy=endpoint.proxy
            )
            if stream:  # however slowly bytes come, the first chunk comes in `seconds` or never
                first_by = asyncio.get_running_loop().time() + seconds
                async with asyncio.timeout_at(first_by):
                    response = await posting
            else:
                response = await posting
            if response.status >= 300:
                text = (await response.content.read(_MAX_ERROR_BODY)).decode("utf-8", "replace")
                response.release()
                raise _status_error(response, text, endpoint)
            if stream:
                return read_chunks(response, endpoint.model, seconds, first_by)
            try:
                answer = json.loads(await read_answer(response, endpoint.model))
                problem = answer_problem(answer)
                if problem is None:
                    return litellm.ModelResponse(**answer)
            except (ValueError, TypeError) as exc:
                error = upstream_error(
                    502, f"the answer is not a chat completion: {exc}", endpoint.model
                )
                raise _Retryable(caused(error, exc)) from None
            raise _Retryable(upstream_error(502, problem, endpoint.model))
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
            error = errors.Timeout(
                message=f"no answer in {seconds:g} s", model=endpoint.model, llm_provider="openai"
            )
            raise _Retryable(caused(error, exc)) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(connection_error(exc, endpoint.model)) from None


def _status_error(response: Any, text: str, endpoint: Endpoint) -> BaseException:
    """The error for an upstream's answer with a failing HTTP status (``_Retryable`` when
    another try may go better)."""
    import aiohttp

    status = int(response.status)
    error = caused(
        upstream_error(status, text, endpoint.model),
        aiohttp.ClientResponseError(
            response.request_info, (), status=status, message=text[:200], headers=None
        ),
    )
    return _Retryable(error) if status in _RETRIED or status >= 500 else error


class _Retryable(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_sessions: dict[asyncio.AbstractEventLoop, Any] = {}


def _session() -> Any:
    """This event loop's pooled HTTP session (an aiohttp session belongs to one loop).

    It is closed when the loop shuts down its asynchronous generators (``asyncio.run`` and
    uvicorn do as they end), by a generator started with it; or by :func:`close_direct_clients`.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0)
        session = aiohttp.ClientSession(connector=connector, timeout=None)
        _sessions[loop] = session
        keeper = _keep(loop, session)
        started = loop.create_task(_first(keeper))  # from now on, the loop's shutdown closes it
        _starting.add(started)
        started.add_done_callback(_starting.discard)
        _keepers[loop] = keeper
    return session


_keepers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
_starting: set[asyncio.Task[Any]] = set()


async def _first(keeper: AsyncGenerator[None, None]) -> None:
    await anext(keeper)


async def _keep(loop: asyncio.AbstractEventLoop, session: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if _sessions.get(loop) is session:
            del _sessions[loop]
            _keepers.pop(loop, None)
        await session.close()


async def close_direct_clients() -> None:
    """Close this loop's pooled session (a gateway's shutdown); the next call opens another."""
    loop = asyncio.get_running_loop()
    session = _sessions.pop(loop, None)
    keeper = _keepers.pop(loop, None)
    if keeper is not None:
        await keeper.aclose()
    if session is not None:
        await session.close()
