"""Route files on disk → one validated, frozen :class:`RouteSet`.

A route folder holds any number of ``*.yaml`` files. Each may hold a ``routes:`` list; at most one
holds the router-wide ``router:`` mapping. :mod:`semroute.config.routefile` validates each file; the rules
that span files (unique names, an utterance in one route only, one ``router:`` block, declared
models and fallback chains) are checked here. Every problem is a one-line
:class:`RouteConfigError` naming the file, line, route and field.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semroute.config.conversation import ConversationSettings
from semroute.config.deployments import (
    DispatchConfig,
    DispatchSettings,
    HealthSettings,
    ModelDeployment,
    check_secrets,
    load_proxy_config,
)
from semroute.config.policy import Policy, policy_of
from semroute.config.pricing import chain_warnings, provider_warnings
from semroute.config.quality import QualityConfig
from semroute.config.quality_check import quality_of
from semroute.config.routefile import (
    DEFAULT_ENCODER,
    DEFAULT_RUNTIME,
    DEFAULT_SCORER,
    DEFAULT_THRESHOLD,
    DIFFICULTY_MODEL_FILE,
    ROUTE_FILE_SUFFIXES,
    SCORERS,
    ParsedFile,
    RouterSpec,
    RuntimeName,
    ScorerName,
    read_route_file,
    route_file_schema,
    validate_route_data,
)
from semroute.config.server import ServerSettings
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_THRESHOLD",
    "SCORERS",
    "Route",
    "RouteSet",
    "RouterSettings",
    "load_routes",
    "parse_routes",
    "route_file_schema",
]

# --- runtime values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A validated route."""

    name: str
    utterances: tuple[str, ...]
    model: str | None = None
    threshold: float | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouterSettings:
    """Validated router-wide settings."""

    default_model: str
    encoder: str = DEFAULT_ENCODER
    encoder_runtime: RuntimeName = DEFAULT_RUNTIME
    threshold: float = DEFAULT_THRESHOLD
    min_margin: float = 0.0
    scorer: ScorerName = DEFAULT_SCORER
    # --- dispatch ---
    default_fallbacks: tuple[str, ...] = ()
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    conversation: ConversationSettings = field(default_factory=ConversationSettings)


@dataclass(frozen=True)
class RouteSet:
    """Every route of a router plus its settings, ready to be embedded."""

    routes: tuple[Route, ...]
    settings: RouterSettings
    out_of_scope: tuple[str, ...] = ()
    """Example requests that belong to no route."""
    sources: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    root: Path | None = None
    """The file or folder the routes were loaded from (None when built in memory)."""
    models: tuple[ModelDeployment, ...] = ()
    """Declared model deployments (``models:`` lists and LiteLLM proxy configs)."""
    model_files: tuple[Path, ...] = ()
    """LiteLLM proxy configs the models were read from."""
    policy: Policy = field(default_factory=Policy)
    """The ``rules:`` (all files', in file order) and ``router.tiers``."""
    health: HealthSettings = field(default_factory=HealthSettings)
    """The ``router.health`` settings: when dispatch passes over an unhealthy model."""
    quality: QualityConfig = field(default_factory=QualityConfig)
    """Cascades and shadow evaluation (``cascade:``, ``accept:``, ``shadow:``)."""
    server: ServerSettings | None = None
    """The ``server:`` settings of ``semroute serve`` (None: no file has them)."""
    difficulty: Path | None = None
    """The folder of the difficulty model (``router.difficulty``, resolved against its file)."""

    def threshold_for(self, route: Route) -> float:
        return route.threshold if route.threshold is not None else self.settings.threshold

    def model_for(self, route: Route) -> str:
        return route.model or self.settings.default_model

    def digest(self) -> str:
        """A hash of everything that shapes routing decisions and dispatch, independent of file
        layout."""
        payload = {
            "settings": _asdict(self.settings),
            "routes": sorted((_asdict(r) for r in self.routes), key=lambda r: r["name"]),
            "out_of_scope": sorted(self.out_of_scope),
            "models": [m.to_dict() for m in self.models],
        }
        if self.policy:  # absent without rules, so older indexes stay fresh
            payload["policy"] = self.policy.to_dict()
        if self.health != HealthSettings():  # absent by default, so older indexes stay fresh
            payload["health"] = dataclasses.asdict(self.health)
        if self.quality:  # absent without cascades or shadows, so older indexes stay fresh
            payload["quality"] = self.quality.to_dict()
        if self.server is not None:  # absent without a `server:` block, likewise
            payload["server"] = self.server.to_dict()
        if self.difficulty is not None:  # the model's content, wherever its folder is
            payload["difficulty"] = file_digest(self.difficulty / DIFFICULTY_MODEL_FILE)
        return _sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str))

    def dispatch_config(self) -> DispatchConfig:
        return DispatchConfig(
            models=self.models,
            route_fallbacks={r.name: r.fallbacks for r in self.routes if r.fallbacks},
            default_fallbacks=self.settings.default_fallbacks,
            settings=self.settings.dispatch,
            conversation=self.settings.conversation,
            health=self.health,
            quality=self.quality,
        )


def _asdict(obj: Route | RouterSettings) -> dict[str, Any]:
    if isinstance(obj, RouterSettings):
        return dataclasses.asdict(obj)
    out = {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    out["utterances"] = list(obj.utterances)
    out["metadata"] = dict(obj.metadata)
    return out


# --- loading -----------------------------------------------------------------------------------


def route_files(path: str | Path) -> list[Path]:
    """The route files a path stands for: the file itself, or a folder's ``*.yaml``/``*.yml``."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in ROUTE_FILE_SUFFIXES and f.is_file())
        if not files:
            raise RouteConfigError(
                "no route files (*.yaml) here; add one or pass the folder that holds them",
                file=p,
            )
        return files
    raise RouteConfigError(
        "no such file or folder; pass the folder that holds your route files (default: routes/)",
        file=p,
    )


def load_routes(path: str | Path = "routes") -> RouteSet:
    """Read and validate a route file or a folder of them."""
    parsed = [read_route_file(f) for f in route_files(path)]
    return dataclasses.replace(_combine(parsed, Path(path)), root=Path(path))


def parse_routes(data: Mapping[str, Any], *, source: str = "<routes>") -> RouteSet:
    """Validate route data already in memory (the same shape as a route file)."""
    return _combine([validate_route_data(dict(data), source, None)])


# --- cross-file rules --------------------------------------------------------------------------


def _combine(parsed: list[ParsedFile], root: Path | None = None) -> RouteSet:
    router_file: ParsedFile | None = None
    server_file: ParsedFile | None = None
    routes: list[Route] = []
    name_seen: dict[str, str] = {}
    text_seen: dict[str, tuple[str, str]] = {}
    warnings: list[str] = []
    for p in parsed:
        router_file = _only_block(p, router_file, "router")
        server_file = _only_block(p, server_file, "server")
        routes += _file_routes(p, name_seen, text_seen, warnings)

    out_of_scope = _out_of_scope(parsed, text_seen, warnings)
    sources = [p.source for p in parsed]
    # Rules about the whole set of files are reported against the file or folder given.
    whole = str(root) if root is not None else sources[0]
    searched = "" if len(sources) == 1 else f" in any of {', '.join(Path(s).name for s in sources)}"
    router = router_file.spec.router if router_file is not None else None
    if router is None:
        raise RouteConfigError(
            f"no `router:` block with a `default_model`{searched}; add one to a route file "
            "(the model that answers queries no route matches)",
            file=whole,
        )
    if not routes:
        raise RouteConfigError(
            "no routes defined; add a `routes:` list with at least one route",
            file=whole,
        )
    route_set = RouteSet(
        routes=tuple(routes),
        settings=_settings(router),
        out_of_scope=out_of_scope,
        sources=tuple(Path(src) for src in sources if not src.startswith("<")),
        warnings=tuple(warnings),
        health=HealthSettings(**router.health.model_dump()),
        server=_server_settings(server_file),
    )
    route_set = dataclasses.replace(route_set, difficulty=_difficulty_dir(router, router_file))
    return _with_policy(_with_models(route_set, parsed), parsed, router)


def _difficulty_dir(router: RouterSpec, router_file: ParsedFile | None) -> Path | None:
    """The difficulty model's folder, checked to hold a model (its content is checked when
    the index is built)."""
    if router.difficulty is None or router_file is None:
        return None
    source, node = router_file.source, router_file.node
    base = Path(source).parent if not source.startswith("<") else Path()
    folder = base / router.difficulty
    if not (folder / DIFFICULTY_MODEL_FILE).is_file():
        raise RouteConfigError(
            f"no difficulty model at {folder} (no {DIFFICULTY_MODEL_FILE}); train one with "
            f"`semroute train-difficulty DATA --out {folder}` or fix the path (relative to this "
            "file)",
            file=source,
            field="router.difficulty",
            line=line_of(node, ("router", "difficulty")),
        )
    return folder


def _check_difficulty(route_set: RouteSet, parsed: list[ParsedFile]) -> None:
    """A rule testing `difficulty` needs a model to compute it."""
    rule = route_set.policy.uses("difficulty")
    if rule is None or route_set.difficulty is not None:
        return
    for p in parsed:
        for i, spec in enumerate(p.spec.rules):
            if spec.name == rule.name:
                raise RouteConfigError(
                    "tests `difficulty` but the router has no difficulty model; set "
                    "`router: {difficulty: DIR}` to a folder written by `semroute "
                    "train-difficulty`",
                    file=p.source,
                    rule=rule.name,
                    field="when",
                    line=line_of(p.node, ("rules", i, "when")),
                )


def _with_policy(route_set: RouteSet, parsed: list[ParsedFile], router: RouterSpec) -> RouteSet:
    # As for routes: only a router that declares models (to dispatch) needs known names; for
    # routing alone a model is any label.
    models: set[str] | None = None
    if route_set.models:
        models = {m.model_name for m in route_set.models} | {route_set.settings.default_model}
        models |= {r.model for p in parsed for r in p.spec.routes if r.model}
    routes = {r.name for r in route_set.routes}
    policy = policy_of(parsed, router.tiers, models=models, routes=routes)
    quality, warnings = quality_of(
        parsed, models=models, deployments=route_set.models, policy=policy
    )
    route_set = dataclasses.replace(
        route_set,
        policy=policy,
        quality=quality,
        warnings=(*route_set.warnings, *warnings),
    )
    _check_difficulty(route_set, parsed)
    return route_set


def _only_block(p: ParsedFile, found: ParsedFile | None, key: str) -> ParsedFile | None:
    """The one file seen so far with a `key:` block (`router:`, `server:`), refusing a second
    one in ``p``."""
    if getattr(p.spec, key) is None:
        return found
    if found is not None:
        raise RouteConfigError(
            f"a second `{key}:` block (the first is in {found.source}); keep one",
            file=p.source,
            field=key,
            line=line_of(p.node, (key,)),
        )
    return p


def _server_settings(p: ParsedFile | None) -> ServerSettings | None:
    if p is None or p.spec.server is None:
        return None
    return ServerSettings.from_spec(p.spec.server)


def _file_routes(
    p: ParsedFile,
    name_seen: dict[str, str],
    text_seen: dict[str, tuple[str, str]],
    warnings: list[str],
) -> list[Route]:
    """The routes of one file, checked against those of the files before it: unique names,
    and an utterance in one route only (a copy within a route is dropped with a warning)."""
    routes = []
    for i, r in enumerate(p.spec.routes):
        where = f"{p.source}:{line_of(p.node, ('routes', i, 'name')) or '?'}"
        if r.name in name_seen:
            raise RouteConfigError(
                f"route name already used at {name_seen[r.name]}; names must be unique",
                file=p.source,
                route=r.name,
                field="name",
                line=line_of(p.node, ("routes", i, "name")),
            )
        name_seen[r.name] = where
        kept: list[str] = []
        own: set[str] = set()
        for j, text in enumerate(r.utterances):
            key = normalise_utterance(text)
            if key in own:
                warnings.append(
                    f"{p.source}: route {r.name!r}: utterance {text!r} is listed twice; "
                    "the copy is ignored"
                )
                continue
            if key in text_seen and text_seen[key][0] != r.name:
                other, other_where = text_seen[key]
                raise RouteConfigError(
                    f"{text!r} is also an utterance of route {other!r} ({other_where}); "
                    "an example must belong to one route",
                    file=p.source,
                    route=r.name,
                    field=f"utterances[{j}]",
                    line=line_of(p.node, ("routes", i, "utterances", j)),
                )
            own.add(key)
            text_seen[key] = (r.name, where)
            kept.append(text.strip())
        routes.append(
            Route(
                name=r.name,
                utterances=tuple(kept),
                model=r.model or (r.cascade[0] if r.cascade else None),
                threshold=r.threshold,
                description=r.description,
                metadata=dict(r.metadata),
                fallbacks=tuple(r.fallbacks),
            )
        )
    return routes


def _settings(s: RouterSpec) -> RouterSettings:
    return RouterSettings(
        default_model=s.default_model,
        encoder=s.encoder,
        encoder_runtime=s.encoder_runtime,
        threshold=s.threshold,
        min_margin=s.min_margin,
        scorer=s.scorer,
        default_fallbacks=tuple(s.default_fallbacks),
        dispatch=DispatchSettings(**s.dispatch.model_dump()),
        conversation=ConversationSettings(**s.conversation.model_dump()),
    )


# --- dispatch: models and fallback chains ------------------------------------------------------


def _with_models(route_set: RouteSet, parsed: list[ParsedFile]) -> RouteSet:
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


def _out_of_scope(
    parsed: list[ParsedFile], text_seen: dict[str, tuple[str, str]], warnings: list[str]
) -> tuple[str, ...]:
    kept: list[str] = []
    seen: set[str] = set()
    for p in parsed:
        for j, text in enumerate(p.spec.out_of_scope):
            key = normalise_utterance(text)
            if key in text_seen:
                route, where = text_seen[key]
                raise RouteConfigError(
                    f"{text!r} is also an utterance of route {route!r} ({where}); "
                    "an out-of-scope example cannot belong to a route",
                    file=p.source,
                    field=f"out_of_scope[{j}]",
                    line=line_of(p.node, ("out_of_scope", j)),
                )
            if key in seen:
                warnings.append(f"{p.source}: out-of-scope example {text!r} is listed twice")
                continue
            seen.add(key)
            kept.append(text.strip())
    return tuple(kept)


def normalise_utterance(text: str) -> str:
    """The form two utterances are compared in: case and spacing do not make them different."""
    return " ".join(text.split()).casefold()


def file_digest(path: Path) -> str:
    return _sha256(path.read_bytes())


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
