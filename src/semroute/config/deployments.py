"""Model deployments as LiteLLM declares them, and the dispatch settings of a route file.

Deployments are declared in LiteLLM's own ``model_list`` format, so a team's LiteLLM setup is
reused as it is: ``model_name`` (the name routes use) plus ``litellm_params`` (what LiteLLM calls,
with ``os.environ/VAR`` for secrets). They come from a top-level ``models:`` list in a route file
or from a LiteLLM proxy ``config.yaml`` named by path (its ``model_list``).

Secrets stay unresolved here and in the index: ``os.environ/VAR`` is looked up only when a
request is dispatched. A literal secret anywhere in a model entry (an ``api_key``, a header such
as ``Authorization``, a URL's ``user:password@``) is refused: it would end up in the index and in
git (see :mod:`semroute.config.secrets`).

A price that cannot be right (text, a negative number, half of one) and a typo of a parameter
that says where requests go (``api_bse``) are refused too (:func:`check_params`). Prices and the
warnings about fallback chains live in :mod:`semroute.config.pricing`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from semroute.config.cache import CacheConfig
from semroute.config.conversation import ConversationSettings
from semroute.config.params_check import PRICE_FIELDS, check_params, is_price
from semroute.config.quality import QualityConfig
from semroute.config.secrets import env_references, literal_secrets
from semroute.config.spec_errors import NotFiniteError
from semroute.config.yamlsafe import line_of, read_yaml
from semroute.errors import RouteConfigError

if TYPE_CHECKING:
    import yaml

__all__ = [
    "PRICE_FIELDS",
    "DispatchConfig",
    "DispatchSettings",
    "DispatchSpec",
    "HealthSettings",
    "HealthSpec",
    "ModelDeployment",
    "ModelSpec",
    "check_params",
    "check_secrets",
    "is_price",
    "json_ready",
    "load_proxy_config",
]

T = TypeVar("T")


# --- file format (untrusted input) -------------------------------------------------------------


class ModelSpec(BaseModel):
    """One entry of LiteLLM's ``model_list``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field(
        min_length=1, description="The name routes and fallbacks use, e.g. `gpt-4o`."
    )
    litellm_params: dict[str, Any] = Field(
        description="What LiteLLM calls: `model` plus e.g. `api_base`, `api_key: "
        "os.environ/OPENAI_API_KEY`, `input_cost_per_token`."
    )
    model_info: dict[str, Any] = Field(default_factory=dict, description="LiteLLM model info.")

    @field_validator("litellm_params")
    @classmethod
    def _has_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        model = value.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("needs `model:`, the LiteLLM model string (e.g. openai/gpt-4o)")
        return json_ready(value)

    @field_validator("model_info")
    @classmethod
    def _info_json_ready(cls, value: dict[str, Any]) -> dict[str, Any]:
        return json_ready(value)


class _ProxyModelSpec(ModelSpec):
    # A LiteLLM proxy config is the team's own file, read by LiteLLM too: keep keys we do not use.
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _extra_json_ready(self) -> _ProxyModelSpec:
        json_ready(self.model_extra or {})
        return self


def json_ready(value: T) -> T:
    """``value`` unchanged if the index's JSON manifest can hold it, else a ValueError saying
    what cannot (YAML reads `.nan`, `.inf`, dates and `!!binary` into values JSON has not)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, float) and not math.isfinite(item):
            raise NotFiniteError(
                f"{item!r} cannot be stored in the index (JSON has no NaN or infinity); "
                "write a finite number or a string"
            )
        elif not isinstance(item, str | int | float | None):
            raise ValueError(
                f"a {type(item).__name__} ({str(item)[:40]!r}) cannot be stored in the index; "
                "put the value in quotes"
            )
    return value


class DispatchSpec(BaseModel):
    """The `router.dispatch` mapping: LiteLLM Router settings and the decision log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(
        default=60.0, gt=0, strict=True, description="Seconds to wait for a model, then fail over."
    )
    retries: int = Field(
        default=0, ge=0, strict=True, description="Retries of a failed model before its fallbacks."
    )
    cooldown: float = Field(
        default=5.0,
        ge=0,
        strict=True,
        description="Seconds LiteLLM skips a deployment it judged unhealthy (0: never).",
    )
    allowed_fails: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        description="Failures within `cooldown` seconds before a deployment cools down "
        "(default: LiteLLM's own policy).",
    )
    log: str | None = Field(
        default=None,
        min_length=1,
        description="JSON-lines decision log file, relative to this file ($SEMROUTE_LOG, "
        "relative to the current folder, overrides).",
    )
    log_content: bool = Field(
        default=False, strict=True, description="Also log prompts and answers."
    )
    direct: bool = Field(
        default=True,
        strict=True,
        description="Call OpenAI-compatible deployments (`openai/...` with an `api_base`) "
        "directly rather than through LiteLLM (faster; false: everything through LiteLLM).",
    )


class HealthSpec(BaseModel):
    """The `router.health` mapping: when a model is passed over before it is tried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, strict=True, description="false: try every model.")
    window: int = Field(
        default=20, ge=1, le=10_000, strict=True, description="Recent requests kept per model."
    )
    min_requests: int = Field(
        default=5,
        ge=1,
        strict=True,
        description="Requests in the window before its error rate or latency is judged.",
    )
    max_error_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        strict=True,
        description="An error rate over this in the window opens the model's circuit.",
    )
    failures_to_open: int = Field(
        default=3, ge=1, strict=True, description="Failures in a row that open the circuit."
    )
    cooldown_s: float = Field(
        default=30.0,
        gt=0,
        strict=True,
        description="Seconds an open circuit waits before one probe request is let through.",
    )
    max_p95_ms: float | None = Field(
        default=None,
        gt=0,
        strict=True,
        description="A p95 latency over this in the window marks the model degraded "
        "(skipped like an open circuit); null: latency is not judged.",
    )

    @model_validator(mode="after")
    def _judgeable(self) -> HealthSpec:
        if self.min_requests > self.window:
            raise ValueError(
                f"min_requests ({self.min_requests}) is more than window ({self.window}): "
                "the window could never hold enough requests to judge"
            )
        return self


# --- runtime values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDeployment:
    """One deployment, exactly as declared (secrets still ``os.environ/VAR`` references)."""

    model_name: str
    litellm_params: Mapping[str, Any]
    model_info: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelDeployment:
        return cls(
            spec.model_name,
            dict(spec.litellm_params),
            dict(spec.model_info),
            dict(spec.model_extra or {}),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDeployment:
        rest = {k: v for k, v in data.items() if k not in ("model_name", "litellm_params")}
        info = rest.pop("model_info", None) or {}
        return cls(data["model_name"], dict(data["litellm_params"]), dict(info), rest)

    def to_dict(self) -> dict[str, Any]:
        """The ``model_list`` entry, JSON-ready (what the index stores and LiteLLM receives)."""
        out: dict[str, Any] = {
            "model_name": self.model_name,
            "litellm_params": dict(self.litellm_params),
        }
        if self.model_info:
            out["model_info"] = dict(self.model_info)
        out.update(self.extra)
        return out

    def env_vars(self) -> list[str]:
        """The environment variables this deployment reads (``os.environ/VAR`` values, headers
        included)."""
        return list(dict.fromkeys(env_references(self.litellm_params)))


@dataclass(frozen=True)
class DispatchSettings:
    """Validated `router.dispatch` settings (see :class:`DispatchSpec`)."""

    timeout: float = 60.0
    retries: int = 0
    cooldown: float = 5.0
    allowed_fails: int | None = None
    log: str | None = None
    log_content: bool = False
    direct: bool = True


@dataclass(frozen=True)
class HealthSettings:
    """Validated `router.health` settings (see :class:`HealthSpec`)."""

    enabled: bool = True
    window: int = 20
    min_requests: int = 5
    max_error_rate: float = 0.5
    failures_to_open: int = 3
    cooldown_s: float = 30.0
    max_p95_ms: float | None = None


@dataclass(frozen=True)
class DispatchConfig:
    """What dispatching needs, as an index stores it: deployments, chains and settings."""

    models: tuple[ModelDeployment, ...] = ()
    route_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_fallbacks: tuple[str, ...] = ()
    settings: DispatchSettings = field(default_factory=DispatchSettings)
    conversation: ConversationSettings = field(default_factory=ConversationSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    quality: QualityConfig = field(default_factory=QualityConfig)
    """Cascades and shadow evaluation."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """The semantic cache (see :mod:`semroute.config.cache`)."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "models": [m.to_dict() for m in self.models],
            "route_fallbacks": {k: list(v) for k, v in self.route_fallbacks.items()},
            "default_fallbacks": list(self.default_fallbacks),
            "settings": dataclasses.asdict(self.settings),
            "conversation": dataclasses.asdict(self.conversation),
            "health": dataclasses.asdict(self.health),
        }
        # Absent without cascades, shadows or tiered rules: older manifests read the same.
        if self.quality or self.quality.rule_tiers:
            out["quality"] = self.quality.to_dict()
        if self.cache:  # likewise without a cache
            out["cache"] = self.cache.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DispatchConfig:
        return cls(
            models=tuple(ModelDeployment.from_dict(m) for m in data.get("models", ())),
            route_fallbacks={k: tuple(v) for k, v in data.get("route_fallbacks", {}).items()},
            default_fallbacks=tuple(data.get("default_fallbacks", ())),
            settings=DispatchSettings(**data.get("settings", {})),
            conversation=ConversationSettings(**data.get("conversation", {})),
            health=HealthSettings(**data.get("health", {})),
            quality=QualityConfig.from_dict(data.get("quality") or {}),
            cache=CacheConfig.from_dict(data.get("cache") or {}),
        )


# --- loading -----------------------------------------------------------------------------------


def check_secrets(
    deployments: Iterable[ModelDeployment],
    source: str,
    *,
    prefix: str = "models",
    node: yaml.Node | None = None,
) -> None:
    """Refuse credentials written into a file: they would end up in the index and in git."""
    for i, d in enumerate(deployments):
        entry = d.to_dict()
        for where, problem in literal_secrets(entry):
            field_path = f"{prefix}[{i}].{where}"
            raise RouteConfigError(
                f"model {d.model_name!r} {problem}; write `{where.rsplit('.', 1)[-1]}: "
                "os.environ/VAR` and set VAR in the environment",
                file=source,
                field=field_path,
                line=line_of(node, (prefix, i, *_loc(where))),
            )


def _loc(where: str) -> list[str | int]:
    """``litellm_params.extra_headers.Authorization`` / ``x[0]`` as a location for line_of."""
    out: list[str | int] = []
    for part in where.split("."):
        name, _, rest = part.partition("[")
        out.append(name)
        out += [int(i) for i in rest.rstrip("]").split("][") if i] if rest else []
    return out


def load_proxy_config(path: Path) -> tuple[ModelDeployment, ...]:
    """The ``model_list`` of a LiteLLM proxy ``config.yaml``, read with the same guards as a
    route file (size, depth, alias expansion)."""
    data, node = read_yaml(path)
    if not isinstance(data, dict) or "model_list" not in data:
        raise RouteConfigError(
            "no `model_list:` in this LiteLLM config; point `models:` at a proxy config.yaml",
            file=path,
        )
    entries = data["model_list"]
    if not isinstance(entries, list) or not entries:
        got = "an empty list" if isinstance(entries, list) else _kind(entries)
        raise RouteConfigError(
            f"model_list should be a list of deployments (got {got}); write each as "
            "`- model_name: ...` with its `litellm_params:`",
            file=path,
            field="model_list",
            line=line_of(node, ("model_list",)),
        )
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(ModelDeployment.from_spec(_ProxyModelSpec.model_validate(entry)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise RouteConfigError(
                str(err["msg"]).removeprefix("Value error, "),
                file=path,
                field=f"model_list[{i}]" + (f".{where}" if where else ""),
                line=line_of(node, ("model_list", i, *err["loc"])),
            ) from None
    deployments = tuple(out)
    check_secrets(deployments, str(path), prefix="model_list", node=node)
    check_params(deployments, str(path), prefix="model_list", node=node)
    return deployments


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return f"{type(value).__name__} {str(value)[:40]}"
