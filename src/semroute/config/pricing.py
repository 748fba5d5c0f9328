"""What models cost, and the warnings a route file's model names and fallback chains earn.

Prices come from the deployment (``input_cost_per_token``/``output_cost_per_token`` in
``litellm_params`` or ``model_info``, as LiteLLM reads them) or from the cost map that ships
inside the LiteLLM package, read as JSON here so that validating route files does not import
LiteLLM.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from semroute.config.deployments import PRICE_FIELDS, ModelDeployment, is_price

__all__ = [
    "Price",
    "UnknownPriceWarning",
    "chain_warnings",
    "cost_map",
    "model_info_of",
    "price_of",
    "provider_warnings",
]

# A chain step from a model at least this expensive (input, per token: $2 per million) ...
FRONTIER_INPUT_PRICE = 2e-6
# ... to one this many times cheaper (input plus output price) is worth a warning.
STEP_DOWN_RATIO = 10.0


class UnknownPriceWarning(UserWarning):
    """A model answered that has no price in LiteLLM's cost map or the config: cost is None."""


@dataclass(frozen=True)
class Price:
    """US dollars per token."""

    input: float
    output: float

    @property
    def blended(self) -> float:
        return self.input + self.output

    def per_million(self) -> str:
        return f"${self.input * 1e6:.2f}/${self.output * 1e6:.2f} per M tokens in/out"


@lru_cache(maxsize=1)
def cost_map() -> Mapping[str, Any]:
    """LiteLLM's bundled model cost map, read without importing LiteLLM (empty if absent)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    for folder in spec.submodule_search_locations:
        file = Path(folder) / "model_prices_and_context_window_backup.json"
        if file.is_file():
            data = json.loads(file.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
    return {}


def _price_from(params: Mapping[str, Any]) -> Price | None:
    """The price ``params`` give (a missing half is 0, as LiteLLM reads it: an embedding model
    has no output price), or None if they give none or one that cannot be right (text, a
    negative number: ``validate`` refuses these and half a price in a route file, but an index
    built before it did may hold them)."""
    values: list[Any] = [params.get(f) for f in PRICE_FIELDS]
    if all(v is None for v in values):
        return None
    values = [0.0 if v is None else v for v in values]
    return Price(*map(float, values)) if all(is_price(v) for v in values) else None


def _listed_price(model: str) -> Price | None:
    entry = _listed_entry(model)
    return _price_from(entry) if entry else None


def model_info_of(model: str, deployments: Sequence[ModelDeployment] = ()) -> dict[str, Any]:
    """What LiteLLM's cost map says about a model name (for a declared one: about the model it
    deploys), overridden by the declaration's ``model_info`` (same keys as LiteLLM's, e.g.
    ``max_input_tokens``, ``supports_vision``). Empty when nothing is known. Reading it the
    first time loads the cost map (a few tenths of a second, once; never on import)."""
    for d in deployments:
        if d.model_name == model:
            listed = _listed_entry(str(d.litellm_params.get("model", model)))
            return {**listed, **dict(d.model_info)}
    return dict(_listed_entry(model))


def _listed_entry(model: str) -> Mapping[str, Any]:
    table = cost_map()
    entry = table.get(model)
    if entry is None and "/" in model:
        provider, _, bare = model.partition("/")
        candidate = table.get(bare)
        if isinstance(candidate, dict) and candidate.get("litellm_provider") == provider:
            entry = candidate
    return entry if isinstance(entry, dict) else {}


def price_of(model: str, deployments: Sequence[ModelDeployment] = ()) -> Price | None:
    """A model name's price: from its declaration (if any), else LiteLLM's cost map."""
    for d in deployments:
        if d.model_name == model:
            return (
                _price_from(d.litellm_params)
                or _price_from(d.model_info)
                or _listed_price(str(d.litellm_params["model"]))
            )
    return _listed_price(model)


def provider_warnings(
    names: Sequence[str], deployments: Sequence[ModelDeployment], where: str
) -> list[str]:
    """Warn about plain model strings LiteLLM cannot map to a provider (it would refuse them)."""
    declared = {d.model_name for d in deployments}
    return [
        f"{where}: LiteLLM does not know which provider serves model {name!r}; write it as "
        f"provider/model (e.g. openai/{name}) or declare it under `models:`"
        for name in dict.fromkeys(names)
        if name not in declared and "/" not in name and name not in cost_map()
    ]


def chain_warnings(
    chain: Sequence[str], deployments: Sequence[ModelDeployment], where: str
) -> list[str]:
    """Warn where a chain steps from a frontier model straight to a much cheaper one."""
    out = []
    for upper, lower in itertools.pairwise(chain):
        hi, lo = price_of(upper, deployments), price_of(lower, deployments)
        if hi is None or lo is None or hi.input < FRONTIER_INPUT_PRICE:
            continue
        if lo.blended * STEP_DOWN_RATIO <= hi.blended:
            ratio = hi.blended / lo.blended if lo.blended else float("inf")
            out.append(
                f"{where}: fallback chain steps from {upper!r} ({hi.per_million()}) straight to "
                f"{lower!r} ({lo.per_million()}), {ratio:.0f}x cheaper; put a model in between "
                f"or accept that answers get worse whenever {upper!r} fails"
            )
    return out
