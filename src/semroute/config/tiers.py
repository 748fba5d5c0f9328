"""A route file's `router.tiers`: named chains of models (``tier: [a, b]``, or
``{models | cascade, max_cost_usd, ...}``), their cost ceilings, and the checks that every tier
names known models. Rules send to a tier by name (:mod:`semroute.config.policy`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml

from semroute.config.conditions import is_number
from semroute.config.routefile import TierSpec
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = ["check_tiers", "is_ceiling", "known_model", "split_tiers"]


def split_tiers(
    tiers: Mapping[str, Any], source: str
) -> tuple[dict[str, list[str]], dict[str, float], dict[str, str]]:
    """Tiers as written (a list of models, or ``{models | cascade, max_cost_usd, ...}``): their
    chains, their cost ceilings and, for those written as a mapping, the key of the chain."""
    chains: dict[str, list[str]] = {}
    limits: dict[str, float] = {}
    mapped: dict[str, str] = {}
    for name, tier in tiers.items():
        if isinstance(tier, TierSpec):
            tier = tier.model_dump(exclude_none=True)
        if isinstance(tier, Mapping):  # a cascade is the tier's chain
            mapped[str(name)] = "cascade" if "cascade" in tier else "models"
        models, limit = (
            (tier.get(mapped[str(name)]), tier.get("max_cost_usd"))
            if isinstance(tier, Mapping)
            else (tier, None)
        )
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise RouteConfigError(
                "tiers should map names to lists of models", file=source, field=f"tiers.{name}"
            )
        if limit is not None and not is_ceiling(limit):
            raise RouteConfigError(
                f"max_cost_usd should be a positive number (got {limit!r})",
                file=source,
                field=f"tiers.{name}.max_cost_usd",
            )
        chains[str(name)] = list(models)
        if limit is not None:
            limits[str(name)] = float(limit)
    return chains, limits, mapped


def is_ceiling(value: Any) -> bool:
    return is_number(value) and value > 0


def known_model(name: str, models: Collection[str]) -> bool:
    """Whether a rule, tier or cascade may name ``name``: declared, or a LiteLLM name with its
    provider (``openai/x``)."""
    return name in models or ("/" in name.strip("/"))


def check_tiers(
    tiers: Mapping[str, Sequence[str]],
    models: Collection[str] | None,
    source: str,
    node: yaml.Node | None,
    mapped: Mapping[str, str] | None,
) -> None:
    """Each tier names at least one model, each one known (``models`` None: not checked)."""
    for name, chain in tiers.items():
        key = (mapped or {}).get(name)
        at: tuple[Any, ...] = ("router", "tiers", name, *((key,) if key else ()))
        for j, model in enumerate(chain):
            if models is not None and not known_model(model, models):
                raise RouteConfigError(
                    f"unknown model {model!r}; declare it under `models:`, use a route's model, "
                    "or write a LiteLLM name with its provider (e.g. openai/gpt-4o-mini)",
                    file=source,
                    field=".".join(str(p) for p in at) + f"[{j}]",
                    line=line_of(node, (*at, j)),
                )
        if not chain:
            raise RouteConfigError(
                "a tier needs at least one model",
                file=source,
                field=f"router.tiers.{name}",
                line=line_of(node, ("router", "tiers", name)),
            )
