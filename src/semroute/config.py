"""Route files: YAML on disk → validated, frozen :class:`RouteSet`.

A route folder holds any number of ``*.yaml`` files. Each may hold a ``routes:`` list; at most one
holds the router-wide ``router:`` mapping. pydantic validates each file (``extra="forbid"``, so a
typo is an error, not a silently ignored key); cross-file rules (unique names, an utterance in one
route only, one ``router:`` block) are checked here. Every problem becomes a one-line
:class:`RouteConfigError` naming the file, line, route and field.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)

from semroute.conversation import ConversationSettings, ConversationSpec
from semroute.errors import RouteConfigError
from semroute.models import (
    DispatchConfig,
    DispatchSettings,
    DispatchSpec,
    ModelDeployment,
    ModelSpec,
    chain_warnings,
    check_secrets,
    load_proxy_config,
    provider_warnings,
)

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_THRESHOLD",
    "Route",
    "RouteFileSpec",
    "RouteSet",
    "RouterSettings",
    "load_routes",
    "parse_routes",
    "route_file_schema",
]

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_THRESHOLD = 0.5
ScorerName = Literal["hybrid", "head", "nearest", "centroid", "top5"]
RuntimeName = Literal["onnx", "onnx-int8", "static"]
SCORERS: tuple[str, ...] = get_args(ScorerName)
DEFAULT_SCORER: ScorerName = "hybrid"
ROUTE_FILE_SUFFIXES = (".yaml", ".yml")


# --- file format (untrusted input) -------------------------------------------------------------


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _example_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank; write the example text or delete the entry")
    return value


def _trimmed_name(value: str) -> str:
    if value != value.strip() or not value:
        raise ValueError("must be non-empty with no leading or trailing spaces")
    if any(not ch.isprintable() for ch in value):
        raise ValueError("must not contain line breaks, tabs or other control characters")
    return value


NonBlank = Annotated[str, AfterValidator(_not_blank)]
Utterance = Annotated[str, AfterValidator(_example_text)]
Name = Annotated[str, Field(max_length=100), AfterValidator(_trimmed_name)]
# strict: YAML's `no`/`yes` would otherwise become 0.0/1.0 and "0.7" a number.
Fraction = Annotated[float, Field(ge=0.0, le=1.0, strict=True)]


# A list of deployments or the path of a LiteLLM config: tagged, so that an error in a list entry
# is reported for the list alone (the tag is dropped from the error's location, see _untagged).
ModelsField = Annotated[
    Annotated[list[ModelSpec], Tag("list")] | Annotated[NonBlank, Tag("path")],
    Discriminator(lambda v: "path" if isinstance(v, str) else "list"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteSpec(_Strict):
    """One route as written in a route file."""

    name: Name = Field(description="Unique route name, e.g. `code`.")
    utterances: list[Utterance] = Field(
        min_length=1, description="Example requests that belong to this route."
    )
    description: str | None = Field(default=None, description="What the route is for.")
    model: NonBlank | None = Field(
        default=None, description="LiteLLM model this route dispatches to (default: router's)."
    )
    threshold: Fraction | None = Field(
        default=None, description="Minimum confidence for this route (default: router's)."
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form data.")
    # --- dispatch ---
    fallbacks: list[NonBlank] = Field(
        default_factory=list,
        description="Models declared under `models:` to try in order when this route's model fails.",
    )


class RouterSpec(_Strict):
    """Router-wide settings: the `router:` mapping, held by at most one file."""

    default_model: NonBlank = Field(
        description="General model for every query no route matches confidently."
    )
    encoder: NonBlank = Field(
        default=DEFAULT_ENCODER,
        description="sentence-transformers model name or local path used to embed text.",
    )
    encoder_runtime: RuntimeName = Field(
        default="onnx",
        description="How text is embedded: onnx (exact, default), onnx-int8 (faster, "
        "slightly different vectors) or static (a distilled model2vec model: sub-millisecond, "
        "less accurate).",
    )
    threshold: Fraction = Field(
        default=DEFAULT_THRESHOLD, description="Default minimum confidence for every route."
    )
    min_margin: Fraction = Field(
        default=0.0,
        description="When the best route leads the runner-up by less than this, the query is "
        "ambiguous and goes to the default model.",
    )
    scorer: ScorerName = Field(
        default=DEFAULT_SCORER,
        description="How a route's confidence is computed: hybrid (learned head + closest "
        "example), head, nearest (closest example), centroid, top5 (mean of 5 closest).",
    )
    # --- dispatch ---
    default_fallbacks: list[NonBlank] = Field(
        default_factory=list,
        description="Models declared under `models:` to try in order when the default model fails.",
    )
    dispatch: DispatchSpec = Field(default_factory=DispatchSpec)
    conversation: ConversationSpec = Field(default_factory=ConversationSpec)


class RouteFileSpec(_Strict):
    """A semroute route file."""

    router: RouterSpec | None = None
    routes: list[RouteSpec] = Field(default_factory=list)
    out_of_scope: list[Utterance] = Field(
        default_factory=list,
        description="Requests no route should take (they go to the default model); used to "
        "train the learned head and by `semroute calibrate`.",
    )
    # --- dispatch ---
    models: ModelsField | None = Field(
        default=None,
        description="LiteLLM `model_list` entries, or the path of a LiteLLM proxy config.yaml.",
    )


def route_file_schema() -> dict[str, Any]:
    """JSON Schema of the route file format, for editor autocompletion."""
    schema = RouteFileSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "semroute route file"
    return schema


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
    encoder_runtime: str = "onnx"
    threshold: float = DEFAULT_THRESHOLD
    min_margin: float = 0.0
    scorer: str = DEFAULT_SCORER
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
        return _sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str))

    def dispatch_config(self) -> DispatchConfig:
        return DispatchConfig(
            models=self.models,
            route_fallbacks={r.name: r.fallbacks for r in self.routes if r.fallbacks},
            default_fallbacks=self.settings.default_fallbacks,
            settings=self.settings.dispatch,
            conversation=self.settings.conversation,
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
    parsed = [_read_file(f) for f in route_files(path)]
    return dataclasses.replace(_combine(parsed, Path(path)), root=Path(path))


def parse_routes(data: Mapping[str, Any], *, source: str = "<routes>") -> RouteSet:
    """Validate route data already in memory (the same shape as a route file)."""
    return _combine([_validate(dict(data), source, None)])


@dataclass
class _Parsed:
    source: str
    spec: RouteFileSpec
    node: yaml.Node | None


def _read_file(path: Path) -> _Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteConfigError(
            f"cannot read file ({exc}); check it is UTF-8 text", file=path
        ) from exc
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RouteConfigError("file is empty; add a `routes:` list or delete it", file=path)
        _check_tree(node, path)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problem_mark = getattr(exc, "problem_mark", None)
        context = getattr(exc, "context", None)
        context_mark: Any = getattr(exc, "context_mark", None)
        # Point at where the unfinished construct began (an unclosed quote or bracket), which is
        # where the fix goes; the parser only notices the problem later, often at end of file.
        opened = context_mark is not None and str(context).startswith("while")
        mark = context_mark if opened else problem_mark
        where = ""
        if opened and problem_mark and context_mark.line != problem_mark.line:
            where = f" ({context} that starts here; noticed at line {problem_mark.line + 1})"
        raise RouteConfigError(
            f"invalid YAML: {problem}{where}; fix the syntax",
            file=path,
            line=mark.line + 1 if mark else None,
        ) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RouteConfigError(
            f"expected a mapping with `routes:` (and optionally `router:`), got {type(data).__name__}",
            file=path,
            line=node.start_mark.line + 1,
        )
    return _validate(data, str(path), node)


MAX_EXPANDED_NODES = 1_000_000


def _check_tree(root: yaml.Node, path: Path) -> None:
    """Reject what PyYAML accepts silently: duplicate keys (the last one wins, dropping data),
    aliases that refer to themselves, and aliases that expand into an enormous document."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:  # a shared alias: counted, not walked again
            return sizes[key]
        if key in active:
            raise RouteConfigError(
                "a YAML alias refers to itself; remove the anchor or the alias",
                file=path,
                line=node.start_mark.line + 1,
            )
        active.add(key)
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        raise RouteConfigError(
                            f"key {k.value!r} appears twice in one mapping; merge them",
                            file=path,
                            line=k.start_mark.line + 1,
                        )
                    seen.add(k.value)
                size += walk(k) + walk(v)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(walk(item) for item in node.value)
        active.discard(key)
        sizes[key] = size
        if size > MAX_EXPANDED_NODES:
            raise RouteConfigError(
                f"YAML aliases expand this file to over {MAX_EXPANDED_NODES:,} entries; "
                "write the entries out or use fewer aliases",
                file=path,
                line=node.start_mark.line + 1,
            )
        return size

    try:
        walk(root)
    except RecursionError:
        raise RouteConfigError("nested too deeply to read", file=path) from None


def _validate(data: dict[str, Any], source: str, node: yaml.Node | None) -> _Parsed:
    try:
        spec = RouteFileSpec.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, data, source, node) from None
    return _Parsed(source, spec, node)


def _config_error(
    exc: ValidationError, data: dict[str, Any], source: str, node: yaml.Node | None
) -> RouteConfigError:
    # A typo shows up twice: the unknown key and the required key it misspells. Report the typo,
    # then whatever comes first in the file.
    errors = sorted(
        (_untagged(e) for e in exc.errors()),
        key=lambda e: (e["type"] != "extra_forbidden", _line_of(node, e["loc"]) or 0),
    )
    err = errors[0]
    loc = tuple(err["loc"])
    route = None
    field_path: str | None = _field_path(loc)
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        routes = data.get("routes")
        entry = routes[loc[1]] if isinstance(routes, list) and loc[1] < len(routes) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        route = name if isinstance(name, str) else f"#{loc[1] + 1}"
        field_path = _field_path(loc[2:]) or None
    message = _describe(err, loc)
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in this file)"
    return RouteConfigError(
        message, file=source, route=route, field=field_path, line=_line_of(node, loc)
    )


def _describe(err: Any, loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = list(_spec_at(loc[:-1]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        return f"unknown field; {hint}"
    if kind == "missing":
        return "is required"
    if kind == "too_short" and loc[-1] == "utterances":
        return "needs at least one utterance"
    given = err.get("input")
    if kind in ("model_type", "dict_type"):
        return f"should be a mapping of keys to values (got {given!r})"
    if kind == "string_type" and given is None:
        return "is empty; write a value or delete the entry"
    if kind == "string_type" and isinstance(given, bool | int | float):
        return f"should be text, not {given!r}; put it in quotes"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error",) and not isinstance(given, dict | list):
        msg += f" (got {given!r})"
    return msg[0].lower() + msg[1:]


def _untagged(err: Any) -> Any:
    loc = tuple(err["loc"])
    if loc[:1] == ("models",) and loc[1:2] in (("list",), ("path",)):
        return {**err, "loc": ("models", *loc[2:])}
    return err


def _spec_at(loc: Sequence[Any]) -> type[BaseModel]:
    """The pydantic model a (parent) error location points into, e.g. RouterSpec for `router`."""
    model: type[BaseModel] = RouteFileSpec
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            continue  # a list index or a union member's tag
        inner = _spec_in(info.annotation)
        if inner is None:
            break
        model = inner
    return model


def _spec_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _spec_in(arg)
        if found is not None:
            return found
    return None


def _field_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """The line a pydantic error location points at: the key for a mapping entry."""
    if node is None:
        return None
    current, marker = node, node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            match = next(((k, v) for k, v in current.value if k.value == part), None)
            if match is None:
                break
            marker, current = match
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                break
            marker = current = current.value[part]
        else:
            break
    return int(marker.start_mark.line) + 1


# --- cross-file rules --------------------------------------------------------------------------


def _combine(parsed: list[_Parsed], root: Path | None = None) -> RouteSet:
    settings_src: tuple[str, RouterSpec] | None = None
    routes: list[Route] = []
    name_seen: dict[str, str] = {}
    text_seen: dict[str, tuple[str, str]] = {}
    warnings: list[str] = []

    for p in parsed:
        if p.spec.router is not None:
            if settings_src is not None:
                raise RouteConfigError(
                    f"a second `router:` block (the first is in {settings_src[0]}); keep one",
                    file=p.source,
                    field="router",
                    line=_line_of(p.node, ("router",)),
                )
            settings_src = (p.source, p.spec.router)
        for i, r in enumerate(p.spec.routes):
            where = f"{p.source}:{_line_of(p.node, ('routes', i, 'name')) or '?'}"
            if r.name in name_seen:
                raise RouteConfigError(
                    f"route name already used at {name_seen[r.name]}; names must be unique",
                    file=p.source,
                    route=r.name,
                    field="name",
                    line=_line_of(p.node, ("routes", i, "name")),
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
                        line=_line_of(p.node, ("routes", i, "utterances", j)),
                    )
                own.add(key)
                text_seen[key] = (r.name, where)
                kept.append(text.strip())
            routes.append(
                Route(
                    name=r.name,
                    utterances=tuple(kept),
                    model=r.model,
                    threshold=r.threshold,
                    description=r.description,
                    metadata=dict(r.metadata),
                    fallbacks=tuple(r.fallbacks),
                )
            )

    out_of_scope = _out_of_scope(parsed, text_seen, warnings)
    sources = [p.source for p in parsed]
    # Rules about the whole set of files are reported against the file or folder given.
    whole = str(root) if root is not None else sources[0]
    searched = "" if len(sources) == 1 else f" in any of {', '.join(Path(s).name for s in sources)}"
    if settings_src is None:
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
    s = settings_src[1]
    settings = RouterSettings(
        default_model=s.default_model,
        encoder=s.encoder,
        encoder_runtime=s.encoder_runtime,
        threshold=s.threshold,
        min_margin=s.min_margin,
        scorer=s.scorer,
        **_dispatch_settings(s),
    )
    route_set = RouteSet(
        routes=tuple(routes),
        settings=settings,
        out_of_scope=out_of_scope,
        sources=tuple(Path(src) for src in sources if not src.startswith("<")),
        warnings=tuple(warnings),
    )
    return _with_models(route_set, parsed)


# --- dispatch: models and fallback chains ------------------------------------------------------


def _dispatch_settings(s: RouterSpec) -> dict[str, Any]:
    return {
        "default_fallbacks": tuple(s.default_fallbacks),
        "dispatch": DispatchSettings(**s.dispatch.model_dump()),
        "conversation": ConversationSettings(**s.conversation.model_dump()),
    }


def _with_models(route_set: RouteSet, parsed: list[_Parsed]) -> RouteSet:
    """Read the declared models, check every fallback chain against them, warn on steep steps."""
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
                    line=_line_of(p.node, ("models",)),
                )
            models.extend(load_proxy_config(files[-1]))
        elif declared:
            own = [ModelDeployment.from_spec(m) for m in declared]
            check_secrets(own, p.source)
            models.extend(own)
    names = {m.model_name for m in models}
    warnings = list(route_set.warnings)
    settings = route_set.settings
    for p in parsed:
        chains: list[tuple[str | None, tuple[Any, ...], str, Sequence[str]]] = [
            (r.name, ("routes", i), r.model or settings.default_model, r.fallbacks)
            for i, r in enumerate(p.spec.routes)
            if r.fallbacks
        ]
        if p.spec.router is not None and settings.default_fallbacks:
            chains.append((None, ("router",), settings.default_model, settings.default_fallbacks))
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
                        line=_line_of(p.node, (*loc, key, j)),
                    )
            warnings.extend(chain_warnings([first, *fallbacks], models, _where(p, route)))
        # Only a router set up to dispatch (one that declares models) needs names LiteLLM knows;
        # for routing alone a model is any label.
        plain: list[tuple[str | None, str]] = [(r.name, r.model) for r in p.spec.routes if r.model]
        if p.spec.router is not None:
            plain.append((None, settings.default_model))
        for route, name in plain if models else ():
            warnings.extend(provider_warnings([name], models, _where(p, route)))
    return dataclasses.replace(
        route_set, models=tuple(models), model_files=tuple(files), warnings=tuple(warnings)
    )


def _where(p: _Parsed, route: str | None) -> str:
    return f"{p.source}: route {route!r}" if route else f"{p.source}: default model"


def _out_of_scope(
    parsed: list[_Parsed], text_seen: dict[str, tuple[str, str]], warnings: list[str]
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
                    line=_line_of(p.node, ("out_of_scope", j)),
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
