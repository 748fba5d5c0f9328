"""Cascades and shadow evaluation: the ``cascade:``, ``accept:`` and ``shadow:`` keys of route
files, and the frozen :class:`QualityConfig` dispatch reads.

    routes:
      - name: extract
        cascade: [cheap, strong]          # try cheap first; escalate when its answer is rejected
        accept: {json: true, judge: strong}
    router:
      shadow: {sample: 0.05, reference: strong, judge: strong, max_cost_usd_per_day: 2}

A route, a rule or a tier may say ``cascade:``; each answer but the last model's is checked by
every check of its ``accept:`` mapping. ``shadow:`` under ``router:`` applies to every request;
a route, rule or tier may override its ``sample``, ``reference`` or ``judge``. The pydantic specs
here validate one file; the checks that need every file (model names) are in
:mod:`semroute.config.quality_check`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from semroute.config.regex import MAX_PATTERN, compile_user_pattern

__all__ = [
    "MAX_CHECKED_CHARS",
    "AcceptSpec",
    "Acceptance",
    "Cascade",
    "QualityConfig",
    "RouterShadowSpec",
    "Shadow",
    "ShadowLimits",
    "ShadowSpec",
]

MAX_CHECKED_CHARS = 100_000
"""An answer longer than this fails the regex and JSON checks unread: both take time linear in
the answer (the regex runs on RE2, see :mod:`semroute.config.regex`), so its size bounds it."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _compiled(value: str) -> str:
    compile_user_pattern(value)  # a ValueError saying what RE2 refused
    return value


def _schema(value: dict[str, Any]) -> dict[str, Any]:
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(value).check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return value


ModelName = Annotated[str, Field(max_length=200), AfterValidator(_not_blank)]
Pattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN), AfterValidator(_compiled)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AcceptSpec(_Strict):
    """The ``accept:`` mapping: checks a cascade's answer must pass (all of them) to be kept."""

    min_logprob: float | None = Field(
        default=None,
        le=0.0,
        strict=True,
        description="The answer's mean token log-probability must be at least this (the model "
        "is asked for logprobs; an answer without them is rejected as `no_logprobs`).",
    )
    valid_json: bool = Field(
        default=False, alias="json", strict=True, description="The answer must be valid JSON."
    )
    json_schema: Annotated[dict[str, Any], AfterValidator(_schema)] | None = Field(
        default=None, description="The answer must be JSON valid against this JSON Schema."
    )
    regex: Pattern | None = Field(
        default=None, description="A regular expression the answer must contain a match of."
    )
    judge: ModelName | None = Field(
        default=None, description="A model asked whether the answer is acceptable."
    )

    @model_validator(mode="after")
    def _some_check(self) -> AcceptSpec:
        checks = (self.min_logprob, self.valid_json or None, self.json_schema, self.regex)
        if all(c is None for c in (*checks, self.judge)):
            raise ValueError(
                "needs at least one check: min_logprob, json, json_schema, regex, judge"
            )
        return self


class ShadowSpec(_Strict):
    """A route's, rule's or tier's ``shadow:``: overrides the router's."""

    sample: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        strict=True,
        description="Share of requests also sent to the reference model (0..1; 0: none).",
    )
    reference: ModelName | None = Field(
        default=None, description="The model the answers are compared with."
    )
    judge: ModelName | None = Field(default=None, description="The model that compares them.")


class RouterShadowSpec(ShadowSpec):
    """The router's ``shadow:``: the default for every request, and what shadow calls may cost."""

    max_cost_usd_per_day: float = Field(
        default=1.0,
        gt=0.0,
        strict=True,
        description="Shadow calls (reference and judge) stop for the day (UTC) once they have "
        "cost this much (USD, per process).",
    )
    max_concurrent: int = Field(
        default=2, ge=1, le=64, strict=True, description="Shadow requests running at once."
    )
    max_queued: int = Field(
        default=100,
        ge=0,
        le=10_000,
        strict=True,
        description="Shadow requests waiting to run; one more is dropped (and counted).",
    )


# --- runtime values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Acceptance:
    """Validated ``accept:`` checks."""

    min_logprob: float | None = None
    valid_json: bool = False
    json_schema: Mapping[str, Any] | None = None
    regex: str | None = None
    judge: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.min_logprob is not None:
            out["min_logprob"] = self.min_logprob
        if self.valid_json:
            out["json"] = True
        if self.json_schema is not None:
            out["json_schema"] = dict(self.json_schema)
        if self.regex is not None:
            out["regex"] = self.regex
        if self.judge is not None:
            out["judge"] = self.judge
        return out

    @classmethod
    def from_spec(cls, spec: AcceptSpec) -> Acceptance:
        return cls(spec.min_logprob, spec.valid_json, spec.json_schema, spec.regex, spec.judge)


@dataclass(frozen=True)
class Cascade:
    """Models tried in order: each answer but the last model's is kept only if it passes
    ``accept``."""

    models: tuple[str, ...]
    accept: Acceptance

    def to_dict(self) -> dict[str, Any]:
        return {"models": list(self.models), "accept": self.accept.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cascade:
        spec = AcceptSpec.model_validate(data["accept"])
        return cls(tuple(str(m) for m in data["models"]), Acceptance.from_spec(spec))


@dataclass(frozen=True)
class Shadow:
    """Where a sampled request is shadowed: ``sample`` 0 means never."""

    sample: float
    reference: str
    judge: str

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "reference": self.reference, "judge": self.judge}


@dataclass(frozen=True)
class ShadowLimits:
    """What shadow calls may cost and how many may wait or run (see :class:`RouterShadowSpec`)."""

    max_cost_usd_per_day: float = 1.0
    max_concurrent: int = 2
    max_queued: int = 100


Scope = tuple[str, str]
"""Where a setting was given: (``route``, ``rule`` or ``tier``, its name)."""


@dataclass(frozen=True)
class QualityConfig:
    """Every cascade and shadow setting of a router, keyed by where it was given."""

    cascades: Mapping[Scope, Cascade] = field(default_factory=dict)
    shadows: Mapping[Scope, Shadow] = field(default_factory=dict)
    """Overrides of the router's shadow (a ``sample`` of 0 turns shadowing off there)."""
    shadow: Shadow | None = None
    """The router's own shadow setting (None: none)."""
    limits: ShadowLimits = field(default_factory=ShadowLimits)
    rule_tiers: Mapping[str, str] = field(default_factory=dict)
    """The tier each rule sends to, so a rule's request finds its tier's settings."""

    def __bool__(self) -> bool:
        return bool(self.cascades or self.shadows or self.shadow)

    def scopes(self, route: str | None, rule: str | None) -> list[Scope]:
        """Where settings for a request are looked up, most specific first: a rule's own and
        its tier's; without a rule, the route's."""
        if rule is not None:
            tier = self.rule_tiers.get(rule)
            return [("rule", rule), *([("tier", tier)] if tier else [])]
        return [("route", route)] if route is not None else []

    def cascade_for(self, route: str | None, rule: str | None) -> tuple[Scope, Cascade] | None:
        """The cascade a request takes, and where it was set (None: no cascade)."""
        return next(
            ((s, self.cascades[s]) for s in self.scopes(route, rule) if s in self.cascades), None
        )

    def shadow_for(self, route: str | None, rule: str | None) -> Shadow | None:
        """The shadow setting a request takes (None, or a ``sample`` of 0: not shadowed). A
        rule's request falls back to its route's setting, then the router's."""
        scopes = self.scopes(route, rule)
        if rule is not None and route is not None:
            scopes.append(("route", route))
        return next((self.shadows[s] for s in scopes if s in self.shadows), self.shadow)

    def tier_of(self, rule: str | None) -> str | None:
        return self.rule_tiers.get(rule) if rule is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cascades": [[*k, c.to_dict()] for k, c in self.cascades.items()],
            "shadows": [[*k, s.to_dict()] for k, s in self.shadows.items()],
            "shadow": self.shadow.to_dict() if self.shadow else None,
            "limits": vars(self.limits).copy(),
            "rule_tiers": dict(self.rule_tiers),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityConfig:
        shadow = data.get("shadow")
        return cls(
            cascades={(k, n): Cascade.from_dict(c) for k, n, c in data.get("cascades", ())},
            shadows={(k, n): Shadow(**s) for k, n, s in data.get("shadows", ())},
            shadow=Shadow(**shadow) if shadow else None,
            limits=ShadowLimits(**data.get("limits", {})),
            rule_tiers=dict(data.get("rule_tiers", {})),
        )
