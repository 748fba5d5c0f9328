"""The semantic cache's settings: ``router.cache``, and ``cache:`` on a route or a rule.

    router:
      cache: {similarity: 0.97, ttl_s: 3600, max_entries: 100000}
    routes:
      - name: chitchat
        cache: {similarity: 0.95}    # overrides the router's similarity for this route
      - name: code
        cache: false                 # never cached
    rules:
      - name: tools
        when: {has_tools: true}
        model: gpt-4o
        cache: {any_request: true}   # cache this rule's requests though they carry tools

Without ``router.cache`` nothing is cached unless a route or rule gives a mapping (or ``true``):
it then takes the defaults below for what it does not say. A rule's setting wins over its
route's, which wins over the router's. A request with tools, images, ``n`` above 1 or a
``temperature`` above ``max_temperature`` is never cached (its answer is not meant to repeat)
unless the setting that applies says ``any_request: true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_TEMPERATURE",
    "CacheConfig",
    "CacheField",
    "CacheOverrideSpec",
    "CacheSettings",
    "CacheSpec",
]

DEFAULT_SIMILARITY = 0.97
DEFAULT_TTL_S = 3600.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_TEMPERATURE = 1.0
"""Above this ``temperature`` a request asks for variety, so it is not cached (OpenAI's own
default temperature is 1.0: a request that sets none is cached)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Similarity = Annotated[float, Field(gt=0.0, le=1.0, strict=False)]
Seconds = Annotated[float, Field(gt=0.0, le=30 * 86_400, allow_inf_nan=False)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]


class CacheOverrideSpec(_Strict):
    """A route's or rule's ``cache:`` mapping: what it changes of the router's."""

    similarity: Similarity | None = Field(
        default=None,
        description="Cosine similarity of the last user turn's embedding to a cached one at or "
        "above which the cached answer is returned.",
    )
    ttl_s: Seconds | None = Field(default=None, description="Seconds an answer stays cached.")
    max_temperature: Temperature | None = Field(
        default=None,
        description="Requests with a higher `temperature` are not cached (default 1.0).",
    )
    any_request: bool | None = Field(
        default=None,
        strict=True,
        description="Cache requests with tools, images, n > 1 or a high temperature too.",
    )


class CacheSpec(CacheOverrideSpec):
    """The ``router.cache`` mapping."""

    max_entries: int = Field(
        default=DEFAULT_MAX_ENTRIES,
        ge=1,
        le=10_000_000,
        strict=True,
        description="Answers kept in each process (least recently used out first), and "
        "max_entries/100 (at least 64) per bucket of alike requests (in Redis too).",
    )


# `false`/`true` or a mapping, tagged so an error is reported for the form written.
CacheField = Annotated[
    Annotated[bool, Tag("switch"), Field(strict=True)]
    | Annotated[CacheOverrideSpec, Tag("mapping")],
    Discriminator(lambda v: "switch" if isinstance(v, bool) else "mapping"),
]


@dataclass(frozen=True)
class CacheSettings:
    """What the cache does for one request."""

    similarity: float = DEFAULT_SIMILARITY
    ttl_s: float = DEFAULT_TTL_S
    max_temperature: float = DEFAULT_MAX_TEMPERATURE
    any_request: bool = False

    def over(self, spec: CacheOverrideSpec) -> CacheSettings:
        """These settings with what ``spec`` says instead."""
        given = {k: v for k, v in spec.model_dump().items() if v is not None and k in _FIELDS}
        return replace(self, **given)


_FIELDS = ("similarity", "ttl_s", "max_temperature", "any_request")

Scope = tuple[str, str]
"""Where a setting was given: (``route`` or ``rule``, its name)."""


@dataclass(frozen=True)
class CacheConfig:
    """Every cache setting of a router: the router's (None: off) and the routes' and rules'
    (None: off there)."""

    default: CacheSettings | None = None
    overrides: Mapping[Scope, CacheSettings | None] = field(default_factory=dict)
    max_entries: int = DEFAULT_MAX_ENTRIES

    def __bool__(self) -> bool:
        return self.default is not None or any(v is not None for v in self.overrides.values())

    def settings_for(self, route: str | None, rule: str | None) -> CacheSettings | None:
        """The settings a request takes: its rule's, else its route's, else the router's
        (None: not cached)."""
        for kind, name in (("rule", rule), ("route", route)):
            if name is not None and (kind, name) in self.overrides:
                return self.overrides[(kind, name)]
        return self.default

    @classmethod
    def of(
        cls,
        router: CacheSpec | None,
        routes: Mapping[str, CacheOverrideSpec | bool],
        rules: Mapping[str, CacheOverrideSpec | bool],
    ) -> CacheConfig:
        """The config of the specs written (``routes``/``rules``: only those with ``cache:``)."""
        base = CacheSettings().over(router) if router is not None else None
        overrides: dict[Scope, CacheSettings | None] = {}
        for kind, specs in (("route", routes), ("rule", rules)):
            for name, spec in specs.items():
                if spec is False:
                    overrides[(kind, name)] = None
                elif spec is True:
                    overrides[(kind, name)] = base or CacheSettings()
                elif isinstance(spec, CacheOverrideSpec):
                    overrides[(kind, name)] = (base or CacheSettings()).over(spec)
        entries = router.max_entries if router is not None else DEFAULT_MAX_ENTRIES
        return cls(base, overrides, entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": vars(self.default).copy() if self.default else None,
            "overrides": [
                [k, n, vars(s).copy() if s else None] for (k, n), s in self.overrides.items()
            ],
            "max_entries": self.max_entries,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheConfig:
        """Settings stored in an index, validated again (a ValueError when malformed)."""

        def settings(raw: Any) -> CacheSettings | None:
            return CacheSettings().over(CacheOverrideSpec.model_validate(raw)) if raw else None

        entries = CacheSpec.model_validate({"max_entries": data.get("max_entries", 1)})
        return cls(
            settings(data.get("default")),
            {(str(k), str(n)): settings(s) for k, n, s in data.get("overrides", ())},
            entries.max_entries,
        )
