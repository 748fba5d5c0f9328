"""API keys: read from the environment once, compared in constant time, never logged.

A client sends its key as ``Authorization: Bearer KEY`` (or in an ``api-key`` or ``x-api-key``
header; the same key in several, as Anthropic's clients may send it, is one key). A request
carrying two different keys is refused (401) whichever of them is valid: which one counted
would depend on the order the headers are read in, here and in any proxy before the gateway.
The key is compared with every configured key, each with :func:`hmac.compare_digest` and
without stopping at a match, so the time taken says nothing about which key, or how much of
one, matched. What a key carries (its ``user_tier``, its daily budget, the ``models`` it may
pin) goes with the request;
the key is known afterwards only by the name of its variable.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers

from semroute.config.server import KeyRef
from semroute.errors import ServeError
from semroute.server.errors import ApiError
from semroute.server.spend import key_id

__all__ = ["Client", "Keys"]


@dataclass(frozen=True)
class Client:
    """Who sent a request: its key's variable name (None when no keys are configured)."""

    key: str | None = None
    user_tier: str | None = None
    budget_usd_per_day: float | None = None
    spend_id: str | None = None
    """The key's name in the spend store (a hash of it; see :func:`key_id`)."""
    models: tuple[str, ...] | None = None
    """The model and tier names the key may pin besides its tier's (None: no list of its own)."""
    rpm: int | None = None
    """Requests per minute (None: no limit; see :mod:`semroute.server.ratelimit`)."""
    tpm: int | None = None
    """Estimated tokens per minute (None: no limit)."""
    admin: bool = False
    """Whether the key may sign in to the console."""


ANONYMOUS = Client()


class Keys:
    """The configured keys, resolved from the environment (a missing variable is a
    :class:`ServeError` at start, never a request that cannot be checked)."""

    def __init__(self, refs: Sequence[KeyRef], environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._keys: list[tuple[bytes, Client]] = []
        for i, ref in enumerate(refs):
            value = env.get(ref.env, "")
            if not value.strip():
                raise ServeError(
                    f"environment variable {ref.env} is not set (or is empty); export the key "
                    "as it, or remove it from `server.keys`",
                    setting=f"keys[{i}]",
                )
            client = Client(
                ref.env,
                ref.user_tier,
                ref.budget_usd_per_day,
                key_id(value),
                ref.models,
                ref.rpm,
                ref.tpm,
                ref.admin,
            )
            self._keys.append((value.encode("utf-8"), client))

    @property
    def required(self) -> bool:
        """Whether a request must carry a key."""
        return bool(self._keys)

    def check(self, headers: Mapping[str, str]) -> Client:
        """The client a request's key belongs to; :class:`ApiError` 401 for a missing or wrong
        key, or for two different keys."""
        if not self._keys:
            return ANONYMOUS
        presented = _presented(headers)
        if presented is None:
            raise ApiError(
                401,
                "no API key: send it as `Authorization: Bearer KEY` (or `x-api-key: KEY`)",
                code="invalid_api_key",
                type="authentication_error",
            )
        found = self.find(presented.encode("latin-1", "replace"))
        if found is None:
            raise ApiError(
                401, "invalid API key", code="invalid_api_key", type="authentication_error"
            )
        return found

    def find(self, given: bytes) -> Client | None:
        """The client whose key is ``given`` (None: no such key), compared with every key."""
        found = None
        for key, client in self._keys:
            if hmac.compare_digest(given, key) and found is None:
                found = client
        return found

    def secret(self, env: str) -> tuple[Client, bytes] | None:
        """The client and key value named by its variable ``env`` (the console signs its
        session cookies with the key, so a changed or removed key ends its sessions)."""
        for key, client in self._keys:
            if client.key == env:
                return client, key
        return None


_SPELLED = ("Authorization", "api-key", "x-api-key")
KEY_HEADERS = tuple(name.lower() for name in _SPELLED)


def _presented(headers: Mapping[str, str]) -> str | None:
    """The key the request carries (None: none, or an ``Authorization`` header that is not
    ``Bearer KEY``); :class:`ApiError` 401 when its headers carry two different keys."""
    given: dict[str, list[str]] = {}  # key -> the headers it came in
    for name in KEY_HEADERS:
        for value in _values(headers, name):
            key = value.strip()
            if not key:
                continue
            if name == "authorization":
                scheme, _, key = key.partition(" ")
                key = key.strip()
                if scheme.lower() != "bearer" or not key:
                    return None
            given.setdefault(key, []).append(name)
    if len(given) > 1:
        names = [n for n in _SPELLED if any(n.lower() in found for found in given.values())]
        how_many = "two" if len(given) == 2 else str(len(given))
        raise ApiError(
            401,
            f"the request carries {how_many} different API keys (in its {' and '.join(names)} "
            "headers); send one key, as `Authorization: Bearer KEY` or `x-api-key: KEY` (the "
            "same key in both is fine)",
            code="invalid_api_key",
            type="authentication_error",
        )
    return next(iter(given), None)


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name`` (a request may repeat a header)."""
    if isinstance(headers, Headers):
        return headers.getlist(name)
    value = headers.get(name)
    return [] if value is None else [value]
