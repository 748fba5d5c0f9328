r"""The `router.pii` block: detectors of personal data and secrets that users add to the built-in
ones.

    router:
      pii:
        detectors:
          employee_id: '\bE\d{6}\b'
          ticket: '\bTCK-[0-9]{5}\b'

Each detector is a name (lower case letters, digits and ``_``, not a built-in kind) and an RE2
pattern (see :mod:`semroute.config.regex`): linear in the text, whatever the pattern. A match is
the whole match; a rule's ``redact: [employee_id]`` replaces it with ``[EMPLOYEE_ID]``. A pattern
that can match the empty string, even only between characters (``\\b``, ``^``), is refused (it
would match everywhere and redact nothing).
The detectors themselves are :mod:`semroute.routing.pii`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from semroute.config.regex import UserPattern, compile_user_pattern

__all__ = [
    "BUILTIN_KINDS",
    "MAX_DETECTORS",
    "PiiSpec",
    "compile_detectors",
    "placeholder",
    "redact_kinds",
]

BUILTIN_KINDS = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "ip_address",
    "api_key",
    "private_key",
)
"""The kinds semroute detects without configuration (see :mod:`semroute.routing.pii`)."""
MAX_DETECTORS = 64
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


class PiiSpec(BaseModel):
    """The `router.pii` mapping of a route file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detectors: dict[str, str] = Field(
        default_factory=dict,
        description="Your own kinds of personal data: a name (e.g. `employee_id`) and an RE2 "
        "regular expression (e.g. `\\bE\\d{6}\\b`). Rules test them in `pii:` and list them in "
        "`redact:` like the built-in kinds.",
    )


def compile_detectors(
    raw: Mapping[str, Any], error: Callable[[str, str], Exception]
) -> dict[str, UserPattern]:
    """``raw`` (name → pattern) compiled; a problem raises ``error(message, name)``."""
    if len(raw) > MAX_DETECTORS:
        raise error(f"at most {MAX_DETECTORS} detectors (got {len(raw)})", "")
    out: dict[str, UserPattern] = {}
    for name, source in raw.items():
        name = str(name)
        if not _NAME.fullmatch(name):
            raise error(
                "a detector's name is lower case letters, digits and _ (e.g. employee_id)", name
            )
        if name in BUILTIN_KINDS:
            raise error(f"{name!r} is a built-in kind; give your detector another name", name)
        if not isinstance(source, str) or not source:
            raise error(f"should be a regular expression in quotes (got {source!r})", name)
        try:
            pattern = compile_user_pattern(source)
        except ValueError as exc:
            raise error(str(exc), name) from None
        if pattern.search("") is not None or any(m.end() == m.start() for m in _probed(pattern)):
            raise error(
                "the pattern matches the empty string; make it match at least one character", name
            )
        out[name] = pattern
    return out


_PROBE = "Ab cd 12.\n-_@ x9 ("
"""Text on which a pattern that can only match between characters (``\\b``, ``^``, ``$``, a
lookahead) finds such a match, though it finds none in the empty string."""


def _probed(pattern: Any) -> Any:
    return pattern.finditer_utf8(_PROBE.encode())


def redact_kinds(
    value: Any, kinds: Collection[str] | None, error: Callable[..., Exception]
) -> tuple[str, ...]:
    """A rule's ``redact:`` list, checked against ``kinds`` (None: not checked); a problem
    raises ``error(message, "redact", ...)``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise error(f"should be a non-empty list of kinds (got {value!r})", "redact")
    for j, kind in enumerate(value):
        if kinds is not None and kind not in kinds:
            raise error(
                f"unknown kind {kind!r} (kinds: {', '.join(kinds)}; add your own under "
                "router.pii.detectors)",
                "redact",
                j,
            )
    return tuple(dict.fromkeys(value))


def placeholder(kind: str) -> str:
    """What a match of ``kind`` is replaced with: ``[EMAIL]``, ``[EMPLOYEE_ID]``."""
    return f"[{kind.upper()}]"
