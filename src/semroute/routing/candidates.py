"""Capability and cost: which candidate models of a decision's chain can serve a request, and
within what cost.

After the rules (or the semantic decision) give a chain of candidates, a candidate is skipped
(``capability``) when its model info says it cannot serve the request: a context window
(``max_input_tokens``, else ``max_tokens``) smaller than the input plus ``max_tokens``; tools
sent to a model without ``supports_function_calling``; images to one without
``supports_vision``; JSON mode required of one without ``supports_response_schema``. Model info
comes from LiteLLM's cost map (read as JSON, see :func:`semroute.config.pricing.model_info_of`),
overridden by a deployment's ``model_info``. Unknown is capable: a model the cost map does not
list, or a key it does not give, is never skipped. When every candidate fails a check, the chain
is kept as it was (the model info may be wrong; the provider will say).

A candidate's cost is estimated as input tokens x input price + (``max_tokens``, else the
router's ``expected_output_tokens``) x ``n`` (the choices asked for) x output price. With a ceiling (the ``max_cost_usd`` hint,
a rule's, its tier's or the route's: the strictest applies) a candidate over it is skipped
(``over_budget``); a candidate without a known price is kept. When none fits, the decision says
``over_budget``, names the cheapest candidate and its estimate, and has an empty chain: routing
never raises for cost, dispatching raises :class:`~semroute.errors.CostLimitError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semroute.config.deployments import DispatchConfig, ModelDeployment
from semroute.config.pricing import Price, model_info_of, price_of
from semroute.decision import Reason, Skip
from semroute.routing.signals import Signals

__all__ = ["Candidates", "ModelFacts"]

CAPABILITY, OVER_BUDGET = "capability", "over_budget"


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the checks need to know about one model (None: unknown)."""

    context_window: int | None = None
    tools: bool | None = None
    vision: bool | None = None
    json_mode: bool | None = None
    price: Price | None = None

    @classmethod
    def of(cls, info: Mapping[str, Any], price: Price | None) -> ModelFacts:
        window = _count(info.get("max_input_tokens")) or _count(info.get("max_tokens"))
        return cls(
            context_window=window,
            tools=_flag(info.get("supports_function_calling")),
            vision=_flag(info.get("supports_vision")),
            json_mode=_flag(info.get("supports_response_schema")),
            price=price,
        )

    def problem(self, signals: Signals) -> str | None:
        """Why this model cannot serve a request with ``signals`` (None: it can, or unknown)."""
        need = signals.input_tokens + (signals.max_tokens or 0)
        if self.context_window is not None and need > self.context_window:
            return (
                f"context window {self.context_window} tokens < {signals.input_tokens} input + "
                f"{signals.max_tokens or 0} max_tokens"
            )
        if signals.has_tools and self.tools is False:
            return "no tool calling (supports_function_calling: false) and the request sends tools"
        if signals.has_images and self.vision is False:
            return "no vision (supports_vision: false) and the request sends images"
        if signals.json_mode and self.json_mode is False:
            return "no JSON mode (supports_response_schema: false) and the request requires it"
        return None

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        if self.price is None:
            return None
        return input_tokens * self.price.input + output_tokens * self.price.output


class Candidates:
    """The capability and cost checks for one index's models (facts looked up once per model,
    on first use)."""

    def __init__(
        self, dispatch: Mapping[str, Any], default_model: str, expected_output_tokens: int
    ) -> None:
        config = DispatchConfig.from_dict(dispatch)
        self._deployments: tuple[ModelDeployment, ...] = config.models
        self._route_fallbacks = config.route_fallbacks
        self._default_fallbacks = config.default_fallbacks
        self._default_model = default_model
        self.expected_output_tokens = expected_output_tokens
        self._facts: dict[str, ModelFacts] = {}

    def facts(self, model: str) -> ModelFacts:
        found = self._facts.get(model)
        if found is None:
            info = model_info_of(model, self._deployments)
            found = self._facts[model] = ModelFacts.of(info, price_of(model, self._deployments))
        return found

    def chain(
        self, model: str, route: str | None, chain: tuple[str, ...] | None = None
    ) -> tuple[str, ...]:
        """The candidates: a rule's ``chain``, else ``model`` and the configured fallbacks of
        ``route`` (or of the default model), as the dispatcher orders them."""
        if chain is not None:
            return chain
        rest: Sequence[str] = ()
        if route is not None and route in self._route_fallbacks:
            rest = self._route_fallbacks[route]
        elif model == self._default_model:
            rest = self._default_fallbacks
        return tuple(dict.fromkeys((model, *rest)))

    def check(
        self, chain: tuple[str, ...], signals: Signals, ceiling: float | None
    ) -> dict[str, Any]:
        """The :class:`Decision` fields the checks of ``chain`` set (see the module docstring):
        the cost fields always; ``model``, ``chain`` and ``skipped`` when a candidate is passed
        over; ``reason`` too when none fits the ceiling."""
        skipped: list[Skip] = []
        capable: list[str] = []
        for model in chain:
            why = self.facts(model).problem(signals)
            if why is None:
                capable.append(model)
            else:
                skipped.append(Skip(model, CAPABILITY, why))
        if not capable:  # every check failed: keep the chain, the provider will tell
            capable, skipped = list(chain), []
        output = (signals.max_tokens or self.expected_output_tokens) * signals.n
        costs = {m: self.facts(m).cost(signals.input_tokens, output) for m in capable}
        kept = capable
        if ceiling is not None:
            kept = [m for m in capable if (costs[m] or 0.0) <= ceiling]
            skipped += [
                Skip(m, OVER_BUDGET, f"estimated ${costs[m]:.6g} > ${ceiling:.6g} limit")
                for m in capable
                if m not in kept and costs[m] is not None
            ]
            skipped.sort(key=lambda s: chain.index(s.model))
        if not kept:
            cheapest = min(capable, key=lambda m: costs[m] or 0.0)
            return {
                "model": cheapest,
                "reason": Reason.OVER_BUDGET,
                "chain": (),
                "skipped": tuple(skipped),
                "estimated_cost_usd": costs[cheapest],
                "cost_limit_usd": ceiling,
                "within_cost_limit": False,
            }
        estimate = costs[kept[0]]
        out: dict[str, Any] = {
            "estimated_cost_usd": estimate,
            "cost_limit_usd": ceiling,
            "within_cost_limit": None
            if ceiling is None or estimate is None
            else estimate <= ceiling,
        }
        if skipped:
            out.update(model=kept[0], chain=tuple(kept), skipped=tuple(skipped))
        return out


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
