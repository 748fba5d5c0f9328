"""The route file format: pydantic specs, its JSON Schema, and validating one file.

Untrusted input stops here. Each file is parsed by :mod:`semroute.config.yamlsafe` (no tags,
no alias bombs), validated with ``extra="forbid"`` (a typo is an error, not a silently ignored key), and every
problem becomes a one-line :class:`RouteConfigError` naming the file, line, route and field.
Rules that span files live in :mod:`semroute.config.routes`.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    model_validator,
)

from semroute.config.cache import CacheField, CacheSpec
from semroute.config.conversation import ConversationSpec
from semroute.config.deployments import DispatchSpec, HealthSpec, ModelSpec, json_ready
from semroute.config.pii import PiiSpec
from semroute.config.quality import AcceptSpec, RouterShadowSpec, ShadowSpec
from semroute.config.server import ServerSpec
from semroute.config.spec_errors import config_error, not_finite
from semroute.config.yamlsafe import read_yaml
from semroute.errors import RouteConfigError

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_RUNTIME",
    "DEFAULT_SCORER",
    "DEFAULT_THRESHOLD",
    "DIFFICULTY_MODEL_FILE",
    "ROUTE_FILE_SUFFIXES",
    "SCORERS",
    "ParsedFile",
    "RouteFileSpec",
    "RouteSpec",
    "RouterSpec",
    "RuleSpec",
    "RuntimeName",
    "ScorerName",
    "read_route_file",
    "route_file_schema",
    "validate_route_data",
]

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DIFFICULTY_MODEL_FILE = "difficulty.json"
"""The file that marks a difficulty model's folder (see semroute.index.difficulty)."""
DEFAULT_THRESHOLD = 0.5
ScorerName = Literal["hybrid", "head", "nearest", "centroid", "top5"]
RuntimeName = Literal["onnx", "onnx-int8", "static"]
DEFAULT_RUNTIME: RuntimeName = "onnx-int8"
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


CostCeiling = Annotated[float, Field(gt=0.0, strict=True)]
Cascade = Annotated[list[NonBlank], Field(min_length=2, max_length=10)]


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
    metadata: Annotated[dict[str, Any], AfterValidator(json_ready)] = Field(
        default_factory=dict, description="Free-form data."
    )
    # --- dispatch ---
    fallbacks: list[NonBlank] = Field(
        default_factory=list,
        description="Models declared under `models:` to try in order when this route's model fails.",
    )
    # --- policy ---
    max_cost_usd: CostCeiling | None = Field(
        default=None, description="Cost ceiling (USD) for the requests this route sends."
    )
    # --- cost versus quality ---
    cascade: Cascade | None = Field(
        default=None,
        description="Models tried in order (instead of `model:`): an answer that fails "
        "`accept:` escalates to the next one.",
    )
    accept: AcceptSpec | None = Field(default=None, description="The cascade's checks.")
    shadow: ShadowSpec | None = Field(default=None, description="Overrides the router's shadow.")
    cache: CacheField | None = Field(
        default=None,
        description="`false`: never cached; a mapping: overrides the router's `cache:`.",
    )


DEFAULT_EXPECTED_OUTPUT = 256


class TierSpec(_Strict):
    """A tier in its mapping form: a chain of models and a cost ceiling."""

    models: list[NonBlank] | None = Field(
        default=None, min_length=1, description="The chain, first tried first."
    )
    max_cost_usd: CostCeiling | None = Field(
        default=None, description="Skip a model whose estimated cost (USD) is over this."
    )
    cascade: Cascade | None = Field(
        default=None,
        description="Instead of `models:`: models tried in order, an answer that fails "
        "`accept:` escalating to the next one.",
    )
    accept: AcceptSpec | None = Field(default=None, description="The cascade's checks.")
    shadow: ShadowSpec | None = Field(default=None, description="Overrides the router's shadow.")

    @model_validator(mode="after")
    def _one_chain(self) -> TierSpec:
        if (self.models is None) == (self.cascade is None):
            raise ValueError("needs exactly one of `models:` or `cascade:`")
        return self


# The list form or the mapping form, tagged so an error is reported for the form written.
TierField = Annotated[
    Annotated[list[NonBlank], Tag("list")] | Annotated[TierSpec, Tag("mapping")],
    Discriminator(lambda v: "mapping" if isinstance(v, dict | TierSpec) else "list"),
]


class RouterSpec(_Strict):
    """Router-wide settings: the `router:` mapping, held by at most one file."""

    default_model: NonBlank = Field(
        description="General model for every query no route matches confidently."
    )
    encoder: NonBlank = Field(
        default=DEFAULT_ENCODER,
        description="sentence-transformers model name or local folder (relative to this file "
        "when it is there) used to embed text.",
    )
    encoder_runtime: RuntimeName = Field(
        default=DEFAULT_RUNTIME,
        description="How text is embedded: onnx-int8 (default: the ONNX export quantised to "
        "int8, 1.5-2x faster than fp32, within 0.3 points of its accuracy on CLINC150), onnx "
        "(fp32, identical to sentence-transformers) or static (a distilled model2vec model: "
        "sub-millisecond, less accurate).",
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
    health: HealthSpec = Field(default_factory=HealthSpec)
    # --- policy ---
    pii: PiiSpec = Field(default_factory=PiiSpec)
    tiers: dict[Name, TierField] = Field(
        default_factory=dict,
        description="Named chains of models for rules' `tier:` (first is tried first): a list, "
        "or `{models: [...], max_cost_usd: X}` to give the tier a cost ceiling.",
    )
    expected_output_tokens: int = Field(
        default=DEFAULT_EXPECTED_OUTPUT,
        gt=0,
        strict=True,
        description="Output tokens a request is expected to produce when it sets no "
        "max_tokens; used to estimate its cost against a ceiling.",
    )
    # --- cost versus quality ---
    shadow: RouterShadowSpec | None = Field(
        default=None,
        description="Send a sampled share of requests also to a reference model, in the "
        "background, and have a judge compare the answers.",
    )
    difficulty: NonBlank | None = Field(
        default=None,
        description="Folder of a model written by `semroute train-difficulty` (relative to this "
        "file): rules can then test the `difficulty` signal (0-1; above 0.5: the model's "
        "calibrated choice of the strong model).",
    )
    cache: CacheSpec | None = Field(
        default=None,
        description="The semantic cache: an answer is reused for a request of the same route, "
        "model chain, system prompt and parameters whose last user turn is this similar to a "
        "cached one (none: no cache).",
    )


class RuleSpec(_Strict):
    """One rule of the top-level `rules:` list (see semroute.config.policy)."""

    name: Name = Field(description="Unique rule name, e.g. `no-secrets`.")
    when: dict[str, Any] = Field(
        default_factory=dict,
        description="Signals and their tests, all of which must hold (empty: always).",
    )
    action: Literal["block"] | None = Field(default=None, description="`block`: call no model.")
    model: NonBlank | None = Field(default=None, description="Send the request to this model.")
    tier: Name | None = Field(default=None, description="Send it down this tier's chain.")
    max_cost_usd: CostCeiling | None = Field(
        default=None, description="Cost ceiling (USD) for the requests this rule sends."
    )
    cascade: Cascade | None = Field(
        default=None,
        description="Send it down these models in order: an answer that fails `accept:` "
        "escalates to the next one.",
    )
    accept: AcceptSpec | None = Field(default=None, description="The cascade's checks.")
    shadow: ShadowSpec | None = Field(default=None, description="Overrides the router's shadow.")
    cache: CacheField | None = Field(
        default=None,
        description="`false`: never cached; a mapping: overrides the router's `cache:`.",
    )
    redact: list[NonBlank] | None = Field(
        default=None,
        description="Kinds of personal data (email, api_key, ...) replaced by placeholders "
        "before the request leaves; alone, the next rules still apply.",
    )


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
    # --- policy ---
    rules: list[RuleSpec] = Field(
        default_factory=list, description="Tried in order before dispatch; the first match wins."
    )
    # --- gateway ---
    server: ServerSpec | None = Field(
        default=None, description="Settings of `semroute serve` (at most one file holds them)."
    )


def route_file_schema() -> dict[str, Any]:
    """JSON Schema of the route file format, for editor autocompletion."""
    schema = RouteFileSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "semroute route file"
    return schema


# --- reading one file ----------------------------------------------------------------------------


@dataclass
class ParsedFile:
    source: str
    spec: RouteFileSpec
    node: yaml.Node | None


def read_route_file(path: Path) -> ParsedFile:
    data, node = read_yaml(path)
    if node is None:
        raise RouteConfigError("file is empty; add a `routes:` list or delete it", file=path)
    if not isinstance(data, dict):
        raise RouteConfigError(
            f"expected a mapping with `routes:` (and optionally `router:`), got {type(data).__name__}",
            file=path,
            line=node.start_mark.line + 1,
        )
    return validate_route_data(data, str(path), node)


def validate_route_data(data: dict[str, Any], source: str, node: yaml.Node | None) -> ParsedFile:
    errors: list[Any] = []
    try:
        spec = RouteFileSpec.model_validate(data)
    except ValidationError as exc:
        errors = list(exc.errors())
    # Every number in the file must be finite, whatever field holds it (see spec_errors).
    non_finite = not_finite(data)
    if errors or non_finite:
        raise config_error(errors, data, source, node, RouteFileSpec, non_finite=non_finite)
    return ParsedFile(source, spec, node)
