"""The models a router declares (``models:`` lists and LiteLLM proxy configs) and the fallback
chains checked against them: an undeclared or repeated model is refused, a steep step down in
price or a provider LiteLLM does not know is a warning."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semroute.config.deployments import ModelDeployment, check_secrets, load_proxy_config
from semroute.config.pricing import chain_warnings, provider_warnings
from semroute.config.routefile import ParsedFile
from semroute.config.routeset import RouterSettings, RouteSet
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = ["with_models"]


def with_models(route_set: RouteSet, parsed: list[ParsedFile]) -> RouteSet:
    """Read the declared models, check every fallback chain against them, warn on steep steps."""
    models, files = _declared_models(parsed)
    warnings = list(route_set.warnings)
    for p in parsed:
        warnings += _chain_warnings(p, route_set.settings, models)
        # Only a router set up to dispatch (one that declares models) needs names LiteLLM knows;
        # for routing alone a model is any label.
        plain: list[tuple[str | None, str]] = [(r.name, r.model) for r in p.spec.routes if r.model]
        if p.spec.router is not None:
            plain.append((None, route_set.settings.default_model))
        for route, name in plain if models else ():
            warnings.extend(provider_warnings([name], models, _where(p, route)))
    return dataclasses.replace(
        route_set, models=tuple(models), model_files=tuple(files), warnings=tuple(warnings)
    )


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
            models.extend(own)
    return models, files


def _chain_warnings(
    p: ParsedFile, settings: RouterSettings, models: list[ModelDeployment]
) -> list[str]:
    """Refuse a fallback chain of ``p`` naming an undeclared model or one twice; warn where a
    chain steps down steeply."""
    names = {m.model_name for m in models}
    chains: list[tuple[str | None, tuple[Any, ...], str, Sequence[str]]] = [
        (r.name, ("routes", i), r.model or (r.cascade or [settings.default_model])[0], r.fallbacks)
        for i, r in enumerate(p.spec.routes)
        if r.fallbacks
    ]
    if p.spec.router is not None and settings.default_fallbacks:
        chains.append((None, ("router",), settings.default_model, settings.default_fallbacks))
    warnings: list[str] = []
    for route, loc, first, fallbacks in chains:
        key = "fallbacks" if route else "default_fallbacks"
        for j, name in enumerate(fallbacks):
            problem = None
            if name not in names:
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f"did you mean {close[0]!r}?" if close else "declare it under `models:`"
                problem = f"model {name!r} is not declared under `models:`; {hint}"
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
        warnings.extend(chain_warnings([first, *fallbacks], models, _where(p, route)))
    return warnings


def _where(p: ParsedFile, route: str | None) -> str:
    return f"{p.source}: route {route!r}" if route else f"{p.source}: default model"
