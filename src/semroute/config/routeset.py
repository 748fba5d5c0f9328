"""The validated, frozen values a route folder loads into: :class:`Route`,
:class:`RouterSettings` and the :class:`RouteSet` of a whole router, with the digest that tells
whether an index was built from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semroute.config.cache import CacheConfig
from semroute.config.conversation import ConversationSettings
from semroute.config.deployments import (
    DispatchConfig,
    DispatchSettings,
    HealthSettings,
    ModelDeployment,
)
from semroute.config.policy import Policy
from semroute.config.quality import QualityConfig
from semroute.config.routefile import (
    DEFAULT_ENCODER,
    DEFAULT_RUNTIME,
    DEFAULT_SCORER,
    DEFAULT_THRESHOLD,
    DIFFICULTY_MODEL_FILE,
    RuntimeName,
    ScorerName,
)
from semroute.config.server import ServerSettings

__all__ = ["Route", "RouteSet", "RouterSettings", "file_digest"]


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
    cache: CacheConfig = field(default_factory=CacheConfig)
    """The semantic cache (``router.cache``, and ``cache:`` on routes and rules)."""
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
        if self.cache:  # absent without a cache, likewise
            payload["cache"] = self.cache.to_dict()
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
            cache=self.cache,
        )


def _asdict(obj: Route | RouterSettings) -> dict[str, Any]:
    if isinstance(obj, RouterSettings):
        return dataclasses.asdict(obj)
    out = {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    out["utterances"] = list(obj.utterances)
    out["metadata"] = dict(obj.metadata)
    return out


def file_digest(path: Path) -> str:
    return _sha256(path.read_bytes())


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
