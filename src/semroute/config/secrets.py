"""Credentials: telling them apart, masking them in text, refusing them in files.

LiteLLM sends credentials semroute never sees declared: a plain model string such as
``openai/gpt-4o-mini`` takes its key from the provider's own variable (``OPENAI_API_KEY``,
``MISTRAL_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ...), and a caller may pass ``api_key=`` or
``extra_headers=`` per request. LiteLLM reads hundreds of such variables, and new providers add
more, so a variable is a credential by the words in its name (``KEY``, ``TOKEN``, ``SECRET``,
``PASSWORD``, ``CREDENTIALS``, ...), not by a list. Every value that could be sent is masked in
any text a provider sends back; URL userinfo (``user:password@``) and ``Bearer``/``Basic``
authorisations are masked wherever they appear.

In a route file or LiteLLM config, a credential must be an ``os.environ/VAR`` reference:
:func:`literal_secrets` finds the ones that are not, at any depth of a model entry.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Masker",
    "env_references",
    "is_secret_name",
    "literal_secrets",
    "resolve_references",
]

ENV_PREFIX = "os.environ/"
MASK = "***"
# Shorter values are flags, ports and regions ("true", "8080", "us-east-1"), not credentials;
# masking them would garble every error text that happens to contain them.
MIN_ENV_SECRET = 8
MIN_SECRET = 4
MIN_PART = 16

# Words that make an environment variable a credential (matched on `_`-separated parts).
_ENV_WORDS = frozenset(
    {
        "KEY",
        "APIKEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PWD",
        "CREDENTIAL",
        "CREDENTIALS",
        "JWT",
        "DSN",
        "AUTH",
        "AUTHORIZATION",
        "BEARER",
        "COOKIE",
        "HEADERS",
        "WEBHOOK",
    }
)
# Parameter and header names that hold credentials (lower case, `-` read as `_`). A bare `key`
# is not one: LiteLLM's model_info uses it for the model's name.
_PARAM_NAME = re.compile(
    r"(?:^|_)(?:api_?key|\w*apikey|token|secret|password|passwd|credentials?|authorization|"
    r"cookie|jwt|access_key_id)$|\w_key$"
)
# Prices end in `_token` too (`input_cost_per_token`); they are numbers, never credentials.
_NOT_SECRET = re.compile(r"cost")
# A whole value that is an authorisation header's value (not a sentence that starts "Token ...").
_AUTH_VALUE = re.compile(r"^\s*(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}\s*$", re.IGNORECASE)
# In free text: `scheme://user:password@` and `Bearer <token>` / `Basic <token>`.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)[^\s/@]*@")
# "Basic" is also an English word: only its capitalised, credential-shaped form counts.
_AUTH_IN_TEXT = re.compile(r"\b(?P<kind>[Bb]earer|BEARER|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def is_secret_name(name: str) -> bool:
    """True for a parameter or header name that holds a credential (``api_key``,
    ``Authorization``, ``aws_secret_access_key``, ``x-api-key``, ...)."""
    key = name.strip().lower().replace("-", "_")
    return bool(_PARAM_NAME.search(key)) and not _NOT_SECRET.search(key)


def _is_secret_env(name: str) -> bool:
    parts = re.split(r"[^A-Z0-9]+", name.upper())
    return any(p in _ENV_WORDS or p.endswith("APIKEY") for p in parts)


def env_references(value: Any) -> Iterator[str]:
    """The variable names of every ``os.environ/VAR`` string in ``value``, at any depth."""
    for leaf in _leaves(value):
        if isinstance(leaf, str) and leaf.startswith(ENV_PREFIX):
            yield leaf[len(ENV_PREFIX) :]


def resolve_references(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """``value`` with every ``os.environ/VAR`` string below the top level of a mapping replaced
    by the variable's value (None when unset). LiteLLM resolves only top-level parameters, so a
    header written as ``Authorization: os.environ/VAR`` is resolved here."""
    env = os.environ if environ is None else environ

    def resolve(item: Any) -> Any:
        if isinstance(item, str) and item.startswith(ENV_PREFIX):
            return env.get(item[len(ENV_PREFIX) :])
        if isinstance(item, Mapping):
            return {k: resolve(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [resolve(v) for v in item]
        return item

    if not isinstance(value, Mapping):
        return value
    return {k: resolve(v) if isinstance(v, Mapping | list | tuple) else v for k, v in value.items()}


def _leaves(value: Any) -> Iterator[Any]:
    # Iterative, in order: parameters come from the caller and may be nested arbitrarily deep.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(reversed(list(item)))
        else:
            yield item


def _named_values(value: Any) -> Iterator[Any]:
    """Every value held under a credential name, at any depth (numbers included)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for k, v in item.items():
                if isinstance(k, str) and is_secret_name(k):
                    yield from _leaves(v)
                else:
                    stack.append(v)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)


def _password_of(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return parts.password or (parts.username if parts.username and "@" in url else None)


def _variants(secret: str) -> set[str]:
    """A secret as it may come back: whole, line by line (PEM keys), JSON- or URL-escaped, and
    the strings inside a JSON credential (a service account's ``private_key``)."""
    out = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
    parts = [line.strip() for line in secret.splitlines()] if "\n" in secret else []
    if secret.lstrip().startswith("{"):
        try:
            inner = json.loads(secret)
        except ValueError:
            inner = None
        parts += [v for v in _leaves(inner) if isinstance(v, str)]
    # Only the long parts: a JSON credential's short fields ("service_account") are not secret.
    out.update(p for p in parts if len(p) >= MIN_PART)
    return {v for v in out if len(v) >= MIN_SECRET}


class Masker:
    """Masks a set of known secrets, and anything shaped like a credential, in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        found: set[str] = set()
        for s in secrets:
            found |= _variants(s)
        # Longest first, so a key that contains another is masked whole.
        self.secrets = sorted(found, key=len, reverse=True)

    @classmethod
    def collect(
        cls,
        *params: Any,
        environ: Mapping[str, str] | None = None,
    ) -> Masker:
        """Every credential LiteLLM could send for a request with these parameters (deployment
        ``litellm_params``, the caller's keywords): the credential variables of the environment,
        the variables the parameters reference, values under credential names, ``Bearer``
        values and URL passwords."""
        env = os.environ if environ is None else environ
        values: list[str] = [
            v for k, v in env.items() if _is_secret_env(k) and len(v) >= MIN_ENV_SECRET
        ]
        for p in params:
            values += [env.get(var, "") for var in env_references(p)]
            values += [
                str(v)
                for v in _named_values(p)
                if v is not None and not isinstance(v, bool) and not _is_reference(v)
            ]
            for leaf in _leaves(p):
                if isinstance(leaf, str) and (password := _password_of(leaf)):
                    values.append(password)
                if isinstance(leaf, str) and _AUTH_VALUE.match(leaf):
                    values.append(leaf.split(None, 1)[1])
        return cls(v for v in values if len(v) >= MIN_SECRET)

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (before any truncation, so that no
        prefix of one survives)."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
        return _AUTH_IN_TEXT.sub(lambda m: f"{m['kind']} {MASK}", text)


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def literal_secrets(entry: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(field, problem)`` for every credential written out in a model entry instead of an
    ``os.environ/VAR`` reference: a value under a credential name (a number too, or a nested
    mapping), a ``Bearer``/``Basic`` value, a URL with ``user:password@``."""
    stack: list[tuple[str, Any, bool]] = [(path, entry, False)]
    while stack:
        where, item, named = stack.pop()
        if isinstance(item, Mapping):
            for k, v in reversed(list(item.items())):
                sub = f"{where}.{k}" if where else str(k)
                stack.append((sub, v, named or (isinstance(k, str) and is_secret_name(k))))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", v, named) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            if named and item.strip() and not item.startswith(ENV_PREFIX):
                yield where, "holds a literal secret"
            elif _AUTH_VALUE.match(item):
                yield where, "holds a literal authorisation (Bearer/Basic ...)"
            elif "://" in item and _password_of(item):
                yield where, "has a user:password@ in its URL"
        elif named and item is not None and not isinstance(item, bool):
            yield where, f"holds a literal secret (a {type(item).__name__})"
