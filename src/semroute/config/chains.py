"""The models a router declares (``models:`` lists and LiteLLM proxy configs) and the fallback
chains checked against them: an undeclared or repeated model is refused, a steep step down in
price or a provider LiteLLM does not know is a warning. A model's literal secrets, prices that
cannot be right and typos of the parameters that say where requests go are refused."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semroute.config.deployments import (
    ModelDeployment,
    check_params,
    check_secrets,
    load_proxy_config,
)
from semroute.config.pricing import chain_warnings, provider_warnings
from semroute.config.routefile import ParsedFile
from semroute.config.routeset import RouterSettings, RouteSet
from semroute.config.tiers import split_tiers
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = ["with_models"]


def with_models(route_set: RouteSet, parsed: list[ParsedFile]) -> RouteSet:
    """Read the declared models, check every fallback chain against them (a tier's name stands
    for its models), warn on steep steps."""
    models, files = _declared_models(parsed)
    warnings = list(route_set.warnings)
    tiers = _tiers(parsed)
    expanded: dict[str | None, tuple[str, ...]] = {}
    for p in parsed:
        chains, chain_warnings_ = _chains(p, route_set.settings, models, tiers)
        expanded.update(chains)
        warnings += chain_warnings_
        # Only a router set up to dispatch (one that declares models) needs names LiteLLM knows;
        # for routing alone a model is any label.
        plain: list[tuple[str | None, str]] = [(r.name, r.model) for r in p.spec.routes if r.model]
        if p.spec.router is not None:
            plain.append((None, route_set.settings.default_model))
        for route, name in plain if models else ():
            warnings.extend(provider_warnings([name], models, _where(p, route)))
    routes = tuple(
        dataclasses.replace(r, fallbacks=expanded[r.name]) if r.name in expanded else r
        for r in route_set.routes
    )
    settings = route_set.settings
    if None in expanded:
        settings = dataclasses.replace(settings, default_fallbacks=expanded[None])
    return dataclasses.replace(
        route_set,
        routes=routes,
        settings=settings,
        models=tuple(models),
        model_files=tuple(files),
        warnings=tuple(warnings),
    )


def _tiers(parsed: list[ParsedFile]) -> dict[str, list[str]]:
    """The `router.tiers` chains (a tier's name may stand for them in a fallback chain)."""
    for p in parsed:
        if p.spec.router is not None and p.spec.router.tiers:
            return split_tiers(p.spec.router.tiers, p.source)[0]
    return {}


def _declared_models(parsed: list[ParsedFile]) -> tuple[list[ModelDeployment], list[Path]]:
    """Every file's `models:` (a list, or the path of a LiteLLM config), and the configs read."""
    models: list[ModelDeployment] = []
    files: list[Path] = []
    for p in parsed:
        declared = p.spec.models
        if isinstance(declared, str):
            base = Path(p.source).parent if not p.source.startswith("<") else Path()
            files.append(base / declared)
            if not files[-1].is_file():
                raise RouteConfigError(
                    f"no LiteLLM config at {files[-1]}; fix the path (relative to this file)",
                    file=p.source,
                    field="models",
                    line=line_of(p.node, ("models",)),
                )
            models.extend(load_proxy_config(files[-1]))
        elif declared:
            own = [ModelDeployment.from_spec(m) for m in declared]
            check_secrets(own, p.source, node=p.node)
            check_params(own, p.source, node=p.node)
            models.extend(own)
    return models, files


def _chains(
    p: ParsedFile,
    settings: RouterSettings,
    models: list[ModelDeployment],
    tiers: dict[str, list[str]],
) -> tuple[dict[str | None, tuple[str, ...]], list[str]]:
    """The fallback chains of ``p`` (per route name; None: the default model's), each tier
    named replaced by its models; an unknown or repeated name is refused, a steep step down
    is a warning."""
    # A chain may name a declared model, the default model, a route's own model (a plain
    # LiteLLM string) or a tier.
    known = {m.model_name for m in models} | {settings.default_model}
    known |= {r.model for r in p.spec.routes if r.model}
    chains: list[tuple[str | None, tuple[Any, ...], str, Sequence[str]]] = [
        (r.name, ("routes", i), r.model or (r.cascade or [settings.default_model])[0], r.fallbacks)
        for i, r in enumerate(p.spec.routes)
        if r.fallbacks
    ]
    if p.spec.router is not None and settings.default_fallbacks:
        chains.append((None, ("router",), settings.default_model, settings.default_fallbacks))
    out: dict[str | None, tuple[str, ...]] = {}
    warnings: list[str] = []
    for route, loc, first, fallbacks in chains:
        key = "fallbacks" if route else "default_fallbacks"
        chain: list[str] = []
        for j, name in enumerate(fallbacks):
            problem = None
            if name not in known and name not in tiers:
                problem = _unknown(name, known, tiers)
            elif name == first or name in fallbacks[:j]:
                problem = f"model {name!r} is already in this chain; list each model once"
            if problem:
                raise RouteConfigError(
                    problem,
                    file=p.source,
                    route=route,
                    field=f"{key}[{j}]" if route else f"router.{key}[{j}]",
                    line=line_of(p.node, (*loc, key, j)),
                )
            members = [name] if name in known else tiers[name]
            # A tier's models already in the chain are tried once, where they first come.
            chain += [m for m in members if m != first and m not in chain]
        out[route] = tuple(chain)
        warnings.extend(chain_warnings([first, *chain], models, _where(p, route)))
    return out, warnings


def _unknown(name: str, known: set[str], tiers: dict[str, list[str]]) -> str:
    close = difflib.get_close_matches(name, sorted(known | set(tiers)), n=1)
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else "declare it under `models:`, or name the default model or a tier of `router.tiers`"
    )
    return f"model {name!r} is not declared under `models:` nor a tier; {hint}"


def _where(p: ParsedFile, route: str | None) -> str:
    return f"{p.source}: route {route!r}" if route else f"{p.source}: default model"
