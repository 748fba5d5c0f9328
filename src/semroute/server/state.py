"""What one loaded index gives the gateway: its router, its dispatcher, and its model names.

A :class:`Loaded` is immutable; a request takes the current one when it starts and keeps it to
the end, so a reload (see :mod:`semroute.server.reload`) never changes an index under a request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semroute.config.deployments import DispatchConfig
from semroute.config.server import ServerSettings
from semroute.dispatch.dispatcher import Dispatcher
from semroute.index.checksums import MANIFEST
from semroute.routing.router import Router
from semroute.server.shared import SharedState, shared_state

__all__ = ["AUTO", "Catalog", "Loaded", "load", "signature"]

AUTO = "auto"
"""The model name that asks the gateway to route."""
OTHER = "other"


@dataclass(frozen=True)
class Catalog:
    """The model names an index knows: declared models, route models, the default, tiers."""

    default_model: str
    models: tuple[str, ...]
    """Every model name routes, chains and tiers use, in order of first mention."""
    tiers: dict[str, tuple[str, ...]]
    fallbacks: dict[str, tuple[str, ...]]
    """The fallbacks a pinned model gets: the default's, else the first route's using it."""
    known: frozenset[str]

    @classmethod
    def of(cls, router: Router, dispatcher: Dispatcher) -> Catalog:
        config = dispatcher.config
        fallbacks: dict[str, tuple[str, ...]] = {router.default_model: config.default_fallbacks}
        for route in router.routes:
            chain = config.route_fallbacks.get(route.name)
            if chain:
                fallbacks.setdefault(route.model, chain)
        tiers = dict(router.policy.tiers)
        names = (
            router.default_model,
            *config.default_fallbacks,
            *(r.model for r in router.routes),
            *(m for chain in config.route_fallbacks.values() for m in chain),
            *(m.model_name for m in config.models),
            *(m for chain in tiers.values() for m in chain),
        )
        models = tuple(dict.fromkeys(names))
        return cls(router.default_model, models, tiers, fallbacks, frozenset(models))

    def pin(self, name: str) -> tuple[str, tuple[str, ...]]:
        """The model and fallbacks for a request that names ``name``: a tier is its chain; a
        model gets its configured fallbacks (none for a model the index does not know)."""
        tier = self.tiers.get(name)
        if tier:
            return tier[0], tier[1:]
        return name, self.fallbacks.get(name, ())

    def label(self, model: str) -> str:
        """``model`` as a metrics label: a known name, else ``other``."""
        return model if model in self.known else OTHER

    def listing(self, created: int) -> dict[str, Any]:
        """``GET /v1/models``: ``auto``, every model name, every tier (OpenAI's list shape)."""
        ids = [AUTO, *self.models, *(t for t in self.tiers if t not in self.models)]
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": created, "owned_by": "semroute"}
                for i in ids
            ],
        }


@dataclass(frozen=True)
class Loaded:
    """One index as the gateway serves it."""

    path: Path
    router: Router
    dispatcher: Dispatcher
    catalog: Catalog
    settings: ServerSettings
    """Its `server:` settings (the defaults when its route files had none)."""
    shared: SharedState
    """The health and spend stores (kept from the first index loaded, across reloads)."""
    signature: tuple[int, ...]
    created: int
    """When its manifest was written (Unix seconds): the models' ``created``."""


def signature(path: Path) -> tuple[int, ...]:
    """What changes when the index at ``path`` is rebuilt or recalibrated: its manifest's
    identity and time (a build renames a new folder into place; a calibration rewrites the
    manifest). Empty when there is no manifest."""
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def load(path: Path, shared: SharedState | None = None) -> Loaded:
    """Load the index at ``path`` with its dispatcher, using ``shared`` (a reload's) or the
    stores its `server.redis_url` names. Raises the :class:`~semroute.errors.IndexLoadError`
    of a bad index, or :class:`~semroute.errors.ServeError` for an unset Redis variable."""
    sig = signature(path)
    router = Router.load(path)
    router.route("warm up")  # the encoder's first run is slow; a client should not wait for it
    settings = router.index.manifest.server_settings(path) or ServerSettings()
    if shared is None:
        config = DispatchConfig.from_dict(router.index.manifest.dispatch)
        shared = shared_state(settings.redis_url, config)
    dispatcher = Dispatcher.for_index(
        router.index,
        health=shared.health,
        redis_url=shared.redis_url,
        shadow_spend=shared.shadow_spend,
    )
    return Loaded(
        path,
        router,
        dispatcher,
        Catalog.of(router, dispatcher),
        settings,
        shared,
        sig,
        sig[2] // 1_000_000_000 if sig else 0,
    )
