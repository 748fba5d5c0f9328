"""What one loaded index gives the gateway: its router, its dispatcher, and its model names.

A :class:`Loaded` is immutable; a request takes the current one when it starts and keeps it to
the end, so a reload (see :mod:`semroute.server.reload`) never changes an index under a request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.config.deployments import DispatchConfig
from semroute.config.policy import Policy
from semroute.config.server import ServerSettings
from semroute.dispatch.dispatcher import Dispatcher
from semroute.errors import SemrouteError, ServeError
from semroute.index.checksums import MANIFEST
from semroute.index.drift import DRIFT_FILE, DriftReference, read_reference
from semroute.routing.policy import Pin, tier_models
from semroute.routing.router import Router
from semroute.server.errors import ApiError
from semroute.server.shared import SharedState, shared_state

if TYPE_CHECKING:
    from semroute.server.auth import Client

__all__ = ["AUTO", "CHALLENGER_ENV", "Catalog", "Loaded", "load", "signature"]

CHALLENGER_ENV = "SEMROUTE_CHALLENGER"
"""The challenger index `semroute serve --challenger` passes to its worker processes."""
AUTO = "auto"
"""The model name that asks the gateway to route."""
OTHER = "other"
MAX_LISTED = 20
"""At most this many names in the message of a refused pin."""


@dataclass(frozen=True)
class Catalog:
    """The model names an index knows: declared models, route models, the default, the models
    of tiers and rules, the tiers; and what a client may pin of them (see :meth:`pin`)."""

    default_model: str
    models: tuple[str, ...]
    """Every model name routes, chains and tiers use, in order of first mention."""
    tiers: dict[str, tuple[str, ...]]
    fallbacks: dict[str, tuple[str, ...]]
    """The fallbacks a pinned model gets: the default's, else the first route's using it."""
    known: frozenset[str]
    policy: Policy = field(default_factory=Policy)
    """The index's rules and tiers (what a key's ``user_tier`` may pin comes from them)."""

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
            *(r.model for r in router.policy.rules if r.model),
        )
        models = tuple(dict.fromkeys(names))
        known = frozenset(models)
        return cls(router.default_model, models, tiers, fallbacks, known, router.policy)

    def pin(self, name: str, client: Client, *, allow_unlisted: bool = False) -> Pin:
        """What a request of ``client`` that names ``name`` may use: a tier is its chain; a
        model gets its configured fallbacks. Each model of the chain that the client's key may
        not use (see :meth:`allowed`) is dropped. Raises :class:`ApiError` 400 for a name the
        index does not declare (unless ``allow_unlisted``: then it is pinned alone), 403 when
        the key may not use the model named."""
        tier = self.tiers.get(name)
        if tier:
            chain = tier
        elif name in self.known:
            chain = (name, *self.fallbacks.get(name, ()))
        elif allow_unlisted:
            chain = (name,)
        else:
            raise ApiError(
                400,
                f"model {name!r} is not one this server declares; send `auto`, a name from GET "
                "/v1/models, or declare it in the route files (or set "
                "server.allow_unlisted_models: true to let clients pin any LiteLLM model)",
                code="model_not_found",
            )
        allowed = self.allowed(client)
        if allowed is not None:
            explicit = name in (client.models or ())
            if not explicit and chain[0] not in allowed:
                shown = ", ".join(sorted(allowed)[:MAX_LISTED]) or "none: send `auto`"
                raise ApiError(
                    403,
                    f"the API key {client.key} may not use model {name!r}; it may pin: {shown}",
                    type="permission_error",
                    code="model_not_allowed",
                )
            chain = tuple(m for m in chain if m in allowed)
        return Pin(chain, tier=name if tier else None)

    def allowed(self, client: Client) -> frozenset[str] | None:
        """The models ``client``'s key may pin (None: any): with a ``user_tier``, the models
        the policy gives that tier (:func:`~semroute.routing.policy.tier_models`); with
        ``models:``, those (a tier named there: its models) as well. A key with a tier the
        policy gives no models and no ``models:`` may pin any."""
        by_tier = tier_models(self.policy, client.user_tier) if client.user_tier else None
        if client.models is None:
            return None if by_tier is None else frozenset(by_tier)
        listed = (m for name in client.models for m in self.tiers.get(name, (name,)))
        return frozenset((*listed, *(by_tier or ())))

    def check_keys(self, settings: ServerSettings) -> None:
        """Raise :class:`ServeError` for a key's ``models:`` name the index does not declare
        (unless ``allow_unlisted_models``): a typo would refuse every request naming it."""
        if settings.allow_unlisted_models:
            return
        for i, ref in enumerate(settings.keys):
            for name in ref.models or ():
                if name not in self.known and name not in self.tiers:
                    raise ServeError(
                        f"model {name!r} of {ref.env}'s `models:` is not declared by the "
                        "index; declare it in the route files, or fix the name",
                        setting=f"keys[{i}].models",
                    )

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
    drift: DriftReference | None = None
    """Its calibration data's confidences (see :mod:`semroute.index.drift`), if calibrated."""


def signature(path: Path) -> tuple[int, ...]:
    """What changes when the index at ``path`` is rebuilt or recalibrated: its manifest's
    identity and time (a build renames a new folder into place; a calibration rewrites the
    manifest). Empty when there is no manifest."""
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def load_challenger(path: Path) -> Router:
    """The challenger index's router; :class:`ServeError` naming it when it cannot be loaded."""
    try:
        return Router.load(path)
    except SemrouteError as exc:
        raise ServeError(
            f"the challenger index at {path} (--challenger, or server.challenger) cannot be "
            f"loaded: {exc}",
            setting="challenger",
        ) from exc


def load(path: Path, shared: SharedState | None = None) -> Loaded:
    """Load the index at ``path`` with its dispatcher, using ``shared`` (a reload's) or the
    stores its `server.redis_url` names. Raises the :class:`~semroute.errors.IndexLoadError`
    of a bad index, or :class:`~semroute.errors.ServeError` for an unset Redis variable."""
    sig = signature(path)
    router = Router.load(path)
    settings = router.index.manifest.server_settings(path) or ServerSettings()
    challenger = os.environ.get(CHALLENGER_ENV) or settings.challenger
    if challenger:
        router = router.with_challenger(load_challenger(Path(challenger)))
    # The encoder's first run is slow; a client should not wait for it (a batch: no trace).
    router.route_batch(["warm up"])
    if shared is None:
        config = DispatchConfig.from_dict(router.index.manifest.dispatch)
        shared = shared_state(settings.redis_url, config)
    dispatcher = Dispatcher.for_index(
        router.index,
        health=shared.health,
        redis_url=shared.redis_url,
        shadow_spend=shared.shadow_spend,
        cache=shared.cache,
        sessions=shared.sessions,
    )
    catalog = Catalog.of(router, dispatcher)
    catalog.check_keys(settings)
    return Loaded(
        path,
        router,
        dispatcher,
        catalog,
        settings,
        shared,
        sig,
        sig[2] // 1_000_000_000 if sig else 0,
        _reference(router, path),
    )


def _reference(router: Router, path: Path) -> DriftReference | None:
    manifest = router.index.manifest
    return read_reference(path, manifest.checksums.get(DRIFT_FILE) if manifest.drift else None)
