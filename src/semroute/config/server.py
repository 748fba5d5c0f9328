"""The ``server:`` block of the route files: how ``semroute serve`` listens and whom it lets in.

    server:
      host: 0.0.0.0
      port: 8000
      keys:
        - os.environ/APP_KEY
        - {key: os.environ/FREE_KEY, user_tier: free, budget_usd_per_day: 5}
        - {key: os.environ/BATCH_KEY, models: [gpt-4o-mini], rpm: 60, tpm: 100000}
        - {key: os.environ/OPS_KEY, admin: true}
      redis_url: os.environ/REDIS_URL
      cache_scope: key
      allow_unlisted_models: false
      ui: true

At most one route file holds it (like ``router:``). API keys, like every other secret, come only
from the environment: a key written out in the file is refused, and so is a ``redis_url`` with a
password in it. The settings are stored in the index, references unresolved, so ``semroute serve
--index DIR`` needs no route files; the variables are read when the server starts.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from semroute.config.secrets import ENV_PREFIX, literal_secrets

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "KeyRef",
    "KeySpec",
    "ServerSettings",
    "ServerSpec",
    "env_value",
    "is_loopback",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 8 << 20


def _env_reference(value: str) -> str:
    name = value[len(ENV_PREFIX) :] if value.startswith(ENV_PREFIX) else ""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(
            "must be an os.environ/VAR reference (a key written in the file would be a secret "
            "in plain text); export the key as VAR and write os.environ/VAR"
        )
    return value


def _safe_url(value: str) -> str:
    if value.startswith(ENV_PREFIX):
        return _env_reference(value)
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL, or os.environ/VAR")
    if any(True for _ in literal_secrets({"redis_url": value})):
        raise ValueError("holds a password; write os.environ/VAR and export the URL as VAR instead")
    return value


EnvReference = Annotated[str, AfterValidator(_env_reference)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
MAX_KEY_MODELS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeySpec(_Strict):
    """An API key with what it carries."""

    key: EnvReference = Field(description="os.environ/VAR: the variable holding the key.")
    user_tier: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="The `user_tier` of every request made with this key (a header cannot "
        "change it).",
    )
    budget_usd_per_day: Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)] | None = (
        Field(
            default=None,
            description="What this key's requests may cost per UTC day; past it they get 402.",
        )
    )
    models: Annotated[list[ModelName], Field(max_length=MAX_KEY_MODELS)] | None = Field(
        default=None,
        description="The model and tier names this key may pin (besides its tier's models); "
        "none: any the index declares, unless the key has a user_tier.",
    )
    rpm: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        strict=True,
        description="Requests per minute this key may make; past it they get 429.",
    )
    tpm: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000_000,
        strict=True,
        description="Estimated tokens (prompt + max output) per minute; past it: 429.",
    )
    admin: bool = Field(
        default=False,
        strict=True,
        description="Whether this key may sign in to the console (`/ui`) when `keys` are set.",
    )


# A bare reference or a mapping, tagged so an error is reported for the form written (the tag is
# dropped from the error's location by semroute.config.routefile).
KeyField = Annotated[
    Annotated[EnvReference, Tag("reference")] | Annotated[KeySpec, Tag("mapping")],
    Discriminator(lambda v: "mapping" if isinstance(v, dict | KeySpec) else "reference"),
]


class ServerSpec(_Strict):
    """The `server:` mapping: settings of `semroute serve`, held by at most one file."""

    host: Annotated[str, Field(min_length=1)] = Field(
        default=DEFAULT_HOST,
        description="Address to listen on (an address other than loopback needs `keys`).",
    )
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, strict=True)
    workers: int = Field(default=1, ge=1, le=256, strict=True, description="Worker processes.")
    keys: list[KeyField] = Field(
        default_factory=list,
        description="API keys clients must send (`Authorization: Bearer KEY`): os.environ/VAR, "
        "or {key: os.environ/VAR, user_tier: ..., budget_usd_per_day: ...}. None: no key is "
        "asked and the server listens on loopback only.",
    )
    redis_url: Annotated[str, AfterValidator(_safe_url)] | None = Field(
        default=None,
        description="Redis shared by replicas (health, per-key spend, LiteLLM's cooldowns); "
        "none: each process keeps its own.",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        gt=0,
        strict=True,
        description="On SIGTERM, seconds in-flight requests and streams get to finish.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        strict=True,
        description="Largest request body accepted (larger: 413).",
    )
    allow_unlisted_models: bool = Field(
        default=False,
        strict=True,
        description="Let a request pin a LiteLLM model string the index does not declare "
        "(called with the server's provider keys); false: such a request gets 400.",
    )
    cache_scope: Literal["key", "global"] = Field(
        default="key",
        description="Whose answers the semantic cache may return: `key` (each API key its "
        "own: one tenant never reads another's) or `global` (every key's, for one tenant).",
    )
    ui: bool = Field(
        default=True,
        strict=True,
        description="Serve the console under /ui (with `keys`, only a key marked `admin: true` "
        "signs in); false: /ui is 404.",
    )
    challenger: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Another index that routes every request too (its decision is logged as "
        "`challenger`; no model is called for it). A relative path is read from the folder "
        "semroute serve runs in.",
    )


# --- runtime values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRef:
    """One API key as configured: the variable that holds it, and what it carries."""

    env: str
    """The variable's name (the key's name in logs, metrics and spend; never its value)."""
    user_tier: str | None = None
    budget_usd_per_day: float | None = None
    models: tuple[str, ...] | None = None
    """The names this key may pin besides its tier's models (None: no list of its own)."""
    rpm: int | None = None
    """Requests per minute (None: no limit)."""
    tpm: int | None = None
    """Estimated tokens per minute (None: no limit)."""
    admin: bool = False
    """Whether the key may sign in to the console."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": ENV_PREFIX + self.env,
            "user_tier": self.user_tier,
            "budget_usd_per_day": self.budget_usd_per_day,
            "models": list(self.models) if self.models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "admin": self.admin,
        }


@dataclass(frozen=True)
class ServerSettings:
    """Validated `server:` settings (see :class:`ServerSpec`)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    keys: tuple[KeyRef, ...] = ()
    redis_url: str | None = None
    """A URL, or an os.environ/VAR reference to one (see :func:`env_value`)."""
    drain_timeout_s: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    allow_unlisted_models: bool = False
    """Whether a request may pin a model string the index does not declare."""
    cache_scope: str = "key"
    """Whose answers the semantic cache may return: ``key`` or ``global``."""
    ui: bool = True
    """Whether the console is served under /ui."""
    challenger: str | None = None
    """The challenger index's folder (None: none)."""

    @classmethod
    def from_spec(cls, spec: ServerSpec) -> ServerSettings:
        keys = tuple(
            KeyRef(k[len(ENV_PREFIX) :])
            if isinstance(k, str)
            else KeyRef(
                k.key[len(ENV_PREFIX) :],
                k.user_tier,
                k.budget_usd_per_day,
                tuple(k.models) if k.models is not None else None,
                k.rpm,
                k.tpm,
                k.admin,
            )
            for k in spec.keys
        )
        return cls(
            spec.host,
            spec.port,
            spec.workers,
            keys,
            spec.redis_url,
            spec.drain_timeout_s,
            spec.max_body_bytes,
            spec.allow_unlisted_models,
            spec.cache_scope,
            spec.ui,
            spec.challenger,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerSettings:
        """Settings stored in an index (validated again: an index is untrusted input too)."""
        keys = [{k: v for k, v in key.items() if v is not None} for key in data["keys"]]
        return cls.from_spec(ServerSpec.model_validate({**data, "keys": keys}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "workers": self.workers,
            "keys": [k.to_dict() for k in self.keys],
            "redis_url": self.redis_url,
            "drain_timeout_s": self.drain_timeout_s,
            "max_body_bytes": self.max_body_bytes,
            "allow_unlisted_models": self.allow_unlisted_models,
            "cache_scope": self.cache_scope,
            "ui": self.ui,
            "challenger": self.challenger,
        }


def env_value(value: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``value``, or the variable's value when it is an os.environ/VAR reference (None: unset
    or empty)."""
    if not value.startswith(ENV_PREFIX):
        return value
    env = os.environ if environ is None else environ
    return env.get(value[len(ENV_PREFIX) :]) or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
