"""Route files on disk → one validated, frozen :class:`RouteSet`.

A route folder holds any number of ``*.yaml`` files. Each may hold a ``routes:`` list; at most one
holds the router-wide ``router:`` mapping. :mod:`semroute.config.routefile` validates each file; the rules
that span files (unique names, an utterance in one route only, one ``router:`` block) are
checked here, declared models and fallback chains in :mod:`semroute.config.chains`; the values
they make are in :mod:`semroute.config.routeset`. Every problem is a one-line
:class:`RouteConfigError` naming the file, line, route and field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from semroute.config.cache import CacheConfig
from semroute.config.chains import with_models
from semroute.config.conversation import ConversationSettings
from semroute.config.deployments import DispatchSettings, HealthSettings
from semroute.config.encoder_path import encoder_of
from semroute.config.policy import policy_of
from semroute.config.quality_check import quality_of
from semroute.config.routefile import (
    DEFAULT_ENCODER,
    DEFAULT_THRESHOLD,
    DIFFICULTY_MODEL_FILE,
    ROUTE_FILE_SUFFIXES,
    SCORERS,
    ParsedFile,
    RouterSpec,
    read_route_file,
    route_file_schema,
    validate_route_data,
)
from semroute.config.routeset import Route, RouterSettings, RouteSet, file_digest
from semroute.config.server import ServerSettings
from semroute.config.spec_errors import with_problems
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

# The values (Route, RouterSettings, RouteSet, file_digest) live in semroute.config.routeset,
# the model and fallback-chain checks in semroute.config.chains; importable from here as before.
__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_THRESHOLD",
    "SCORERS",
    "Route",
    "RouteSet",
    "RouterSettings",
    "file_digest",
    "load_routes",
    "normalise_utterance",
    "parse_routes",
    "route_file_schema",
    "route_files",
]

# --- loading -----------------------------------------------------------------------------------


def route_files(path: str | Path) -> list[Path]:
    """The route files a path stands for: the file itself, or a folder's ``*.yaml``/``*.yml``."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = _once(f for f in p.iterdir() if f.suffix in ROUTE_FILE_SUFFIXES and f.is_file())
        if not files:
            raise RouteConfigError(
                "no route files (*.yaml or *.yml) here; add one or pass the folder that holds them",
                file=p,
            )
        return files
    if p.exists():  # a device, a pipe, a socket: there, but nothing to read routes from
        raise RouteConfigError(
            "is not a route file or a folder of them; pass a *.yaml file or the folder that "
            "holds your route files (default: routes/)",
            file=p,
        )
    raise RouteConfigError(
        "no such file or folder; pass the folder that holds your route files (default: routes/)",
        file=p,
    )


def _once(files: Iterable[Path]) -> list[Path]:
    """Each file once, however many names in the folder reach it (a symlink beside its target),
    under the name that is not a link when there is one. A link to a file elsewhere is read as
    a file of this folder: its name is the one problems give, and its relative paths are read
    against this folder."""
    chosen: dict[Path, Path] = {}
    for f in sorted(files):
        target = f.resolve()
        if target not in chosen or (chosen[target].is_symlink() and not f.is_symlink()):
            chosen[target] = f
    return sorted(chosen.values())


def load_routes(path: str | Path = "routes") -> RouteSet:
    """Read and validate a route file or a folder of them."""
    parsed = [read_route_file(f) for f in route_files(path)]
    return dataclasses.replace(_combine(parsed, Path(path)), root=Path(path))


def check_routes(path: str | Path = "routes") -> tuple[RouteSet | None, list[RouteConfigError]]:
    """:func:`load_routes`, reporting every problem instead of the first: each file's own
    (every field), then those between files (a route name or example used twice, a second
    `router:` block). Checks that need every file valid (chains, rules) run once they are."""
    parsed: list[ParsedFile] = []
    problems: list[RouteConfigError] = []
    files = route_files(path)
    for file in files:
        try:
            parsed.append(read_route_file(file))
        except RouteConfigError as exc:
            problems.extend(exc.problems or (exc,))
    if not parsed:
        return None, problems
    try:
        routes = dataclasses.replace(_combine(parsed, Path(path)), root=Path(path))
    except RouteConfigError as exc:
        # With a file left out, only the collected problems between the others are sure.
        found = list(exc.problems) if problems else list(exc.problems or (exc,))
        order = {str(f): i for i, f in enumerate(files)}  # file by file, as the files come
        return None, sorted(problems + found, key=lambda e: order.get(e.file or "", len(order)))
    return (None, problems) if problems else (routes, [])


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
    # Problems between files are all collected (`semroute validate` lists each), then raised.
    problems: list[RouteConfigError] = []
    for p in parsed:
        router_file = _only_block(p, router_file, "router", problems)
        server_file = _only_block(p, server_file, "server", problems)
        routes += _file_routes(p, name_seen, text_seen, warnings, problems)

    out_of_scope = _out_of_scope(parsed, text_seen, warnings, problems)
    if problems:
        raise with_problems(problems, "in these files")
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
        settings=_settings(router, router_file),
        out_of_scope=out_of_scope,
        sources=tuple(Path(src) for src in sources if not src.startswith("<")),
        warnings=tuple(warnings),
        health=HealthSettings(**router.health.model_dump()),
        server=_server_settings(server_file),
    )
    route_set = dataclasses.replace(route_set, difficulty=_difficulty_dir(router, router_file))
    return _with_policy(with_models(route_set, parsed), parsed, router)


def _against(base: Path, written: str) -> Path:
    """``written`` (``~`` expanded) read against ``base`` unless it is absolute, made absolute
    so that the index holds where it points whichever folder a command runs from."""
    path = Path(written).expanduser()
    return path if path.is_absolute() else (base / path).absolute()


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
    policy = policy_of(parsed, router.tiers, models=models, routes=routes, pii=router.pii.detectors)
    quality, warnings = quality_of(
        parsed, models=models, deployments=route_set.models, policy=policy
    )
    cache = CacheConfig.of(
        router.cache,
        {r.name: r.cache for p in parsed for r in p.spec.routes if r.cache is not None},
        {r.name: r.cache for p in parsed for r in p.spec.rules if r.cache is not None},
    )
    route_set = dataclasses.replace(
        route_set,
        policy=policy,
        quality=quality,
        cache=cache,
        warnings=(*route_set.warnings, *warnings),
    )
    _check_difficulty(route_set, parsed)
    return route_set


def _only_block(
    p: ParsedFile, found: ParsedFile | None, key: str, problems: list[RouteConfigError]
) -> ParsedFile | None:
    """The one file seen so far with a `key:` block (`router:`, `server:`), refusing a second
    one in ``p``."""
    if getattr(p.spec, key) is None:
        return found
    if found is not None:
        problems.append(
            RouteConfigError(
                f"a second `{key}:` block (the first is in {found.source}); keep one",
                file=p.source,
                field=key,
                line=line_of(p.node, (key,)),
            )
        )
        return found
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
    problems: list[RouteConfigError],
) -> list[Route]:
    """The routes of one file, checked against those of the files before it: unique names,
    and an utterance in one route only (a copy within a route is dropped with a warning)."""
    routes = []
    for i, r in enumerate(p.spec.routes):
        where = f"{p.source}:{line_of(p.node, ('routes', i, 'name')) or '?'}"
        if r.name in name_seen:
            problems.append(
                RouteConfigError(
                    f"route name already used at {name_seen[r.name]}; names must be unique",
                    file=p.source,
                    route=r.name,
                    field="name",
                    line=line_of(p.node, ("routes", i, "name")),
                )
            )
            continue
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
                problems.append(
                    RouteConfigError(
                        f"{text!r} is also an utterance of route {other!r} ({other_where}); "
                        "an example must belong to one route",
                        file=p.source,
                        route=r.name,
                        field=f"utterances[{j}]",
                        line=line_of(p.node, ("routes", i, "utterances", j)),
                    )
                )
                continue
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


def _base_dir(p: ParsedFile | None) -> Path | None:
    """The folder relative paths in ``p`` are read against (None: data given in memory)."""
    if p is None or p.source.startswith("<"):
        return None
    return Path(p.source).parent


def _settings(s: RouterSpec, router_file: ParsedFile | None) -> RouterSettings:
    """The router settings, with the paths they name read against the folder of the file that
    holds them, like `models:` and `difficulty:` (not against the current folder)."""
    base = _base_dir(router_file)
    dispatch = s.dispatch.model_dump()
    if dispatch["log"] is not None and base is not None:
        dispatch["log"] = str(_against(base, dispatch["log"]))
    return RouterSettings(
        default_model=s.default_model,
        encoder=encoder_of(s.encoder, router_file, base),
        encoder_runtime=s.encoder_runtime,
        threshold=s.threshold,
        min_margin=s.min_margin,
        scorer=s.scorer,
        default_fallbacks=tuple(s.default_fallbacks),
        dispatch=DispatchSettings(**dispatch),
        conversation=ConversationSettings(**s.conversation.model_dump()),
    )


def _out_of_scope(
    parsed: list[ParsedFile],
    text_seen: dict[str, tuple[str, str]],
    warnings: list[str],
    problems: list[RouteConfigError],
) -> tuple[str, ...]:
    kept: list[str] = []
    seen: set[str] = set()
    for p in parsed:
        for j, text in enumerate(p.spec.out_of_scope):
            key = normalise_utterance(text)
            if key in text_seen:
                route, where = text_seen[key]
                problems.append(
                    RouteConfigError(
                        f"{text!r} is also an utterance of route {route!r} ({where}); "
                        "an out-of-scope example cannot belong to a route",
                        file=p.source,
                        field=f"out_of_scope[{j}]",
                        line=line_of(p.node, ("out_of_scope", j)),
                    )
                )
                continue
            if key in seen:
                warnings.append(f"{p.source}: out-of-scope example {text!r} is listed twice")
                continue
            seen.add(key)
            kept.append(text.strip())
    return tuple(kept)


def normalise_utterance(text: str) -> str:
    """The form two utterances are compared in: case and spacing do not make them different."""
    return " ".join(text.split()).casefold()
