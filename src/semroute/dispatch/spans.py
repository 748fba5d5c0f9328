"""A model call as span attributes, in OpenTelemetry's GenAI conventions (see
:mod:`semroute.tracing`): what was asked of which model, and what its answer said."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from semroute.config.pricing import price_of
from semroute.records import Usage, unbelievable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from semroute.config.deployments import DispatchConfig

__all__ = ["answer_attributes", "call_attributes", "reported_cost"]


def reported_cost(response: Any) -> float | None:
    """The cost LiteLLM reported for ``response`` (None: none, or none to believe: one that is
    not a finite number over 0, or one reckoned from token counts that cannot be true)."""
    hidden = getattr(response, "_hidden_params", None)
    reported = hidden.get("response_cost") if isinstance(hidden, dict) else None
    if isinstance(reported, bool) or not isinstance(reported, int | float):
        return None
    usage = getattr(response, "usage", None)
    if usage is not None and unbelievable(usage) is not None:
        return None
    try:
        cost = float(reported)
    except OverflowError:  # an int past float's range
        return None
    return cost if math.isfinite(cost) and cost > 0 else None


def provider_of(config: DispatchConfig, model: str) -> str | None:
    """The provider LiteLLM sends ``model`` to (``openai`` for ``openai/gpt-4o``; None:
    not said)."""
    target = next(
        (str(d.litellm_params.get("model", "")) for d in config.models if d.model_name == model),
        model,
    )
    return target.partition("/")[0] if "/" in target else None


def call_attributes(
    config: DispatchConfig,
    model: str,
    *,
    request_id: str,
    route: str | None,
    session: str | None,
    stream: bool = False,
    kwargs: Mapping[str, Any] | None = None,
    purpose: str = "answer",
) -> dict[str, Any]:
    """The attributes of a call to ``model`` for one request (``purpose``: ``answer`` for the
    request's own answer, ``judge`` for a cascade's judge; ``kwargs``: the request's)."""
    provider = provider_of(config, model)
    kwargs = kwargs or {}
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the name before the conventions' 1.37
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": kwargs.get("max_tokens"),
        "gen_ai.request.temperature": kwargs.get("temperature"),
        "gen_ai.conversation.id": session,
        "semroute.request_id": request_id,
        "semroute.route": route,
        "semroute.purpose": purpose,
        "semroute.stream": stream,
    }


def answer_attributes(config: DispatchConfig, model: str, response: Any) -> dict[str, Any]:
    """What ``model``'s answer says: the model that answered, tokens, finish reasons, cost."""
    usage = Usage.of(response)
    price = price_of(model, config.models)
    cost = reported_cost(response)
    if cost is None and price is not None and usage is not None:
        cost = usage.prompt_tokens * price.input + usage.completion_tokens * price.output
    choices = getattr(response, "choices", None) or []
    reasons = [str(c.finish_reason) for c in choices if getattr(c, "finish_reason", None)]
    return {
        "gen_ai.response.model": getattr(response, "model", None),
        "gen_ai.response.id": getattr(response, "id", None),
        "gen_ai.response.finish_reasons": reasons or None,
        "gen_ai.usage.input_tokens": usage.prompt_tokens if usage else None,
        "gen_ai.usage.output_tokens": usage.completion_tokens if usage else None,
        "semroute.cost_usd": cost,
    }
