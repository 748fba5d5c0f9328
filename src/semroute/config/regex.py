r"""Regular expressions from route files (a rule's ``text_matches``, a cascade's
``accept: {regex: ...}``), compiled and run by RE2 (the ``google-re2`` binding).

RE2 matches in time linear in the text, whatever the pattern: ``^(\w+\s?)*$``, which takes
Python's ``re`` 22 seconds on 29 characters (holding the GIL, so the whole server waits), is
answered at once on megabytes. The price is the features that need backtracking: lookarounds
(``(?=``, ``(?!``, ``(?<=``, ``(?<!``), backreferences (``\1``, ``(?P=name)``), possessive and
atomic groups, ``(?x)`` and ``\Z`` (write ``\z``). A pattern using one is refused when the file
is loaded, in one line naming the file, the rule and the field. Other differences from ``re``:
``\w``, ``\d``, ``\s`` and ``\b`` are ASCII (write ``\pL``, ``\p{N}`` for any letter or digit);
``(?i)`` folds case across Unicode; ``$`` without ``(?m)`` matches only at the very end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import re2

import semroute.text as text

__all__ = ["MAX_PATTERN", "UserPattern", "compile_user_pattern"]

MAX_PATTERN = 1000
"""The longest pattern a route file may hold, in characters."""

_OPTIONS = re2.Options()
# A refused pattern is reported as our one-line error; RE2 must not also print it to stderr.
_OPTIONS.log_errors = False


@dataclass(frozen=True)
class UserPattern:
    """A compiled user pattern; equal to another when their sources are."""

    source: str
    _compiled: Any = field(repr=False, compare=False)
    _utf8: Any = field(default=None, repr=False, compare=False)

    def search(self, subject: str) -> Any:
        """The first match of the pattern anywhere in ``subject`` (None: no match), as
        ``re.Pattern.search``. Lone surrogates, which UTF-8 cannot hold, match as U+FFFD."""
        return self._compiled.search(text.clean(subject))

    def finditer_utf8(self, subject: bytes) -> Iterator[Any]:
        """Every match in ``subject`` (UTF-8), left to right, as ``re.Pattern.finditer``, with
        byte offsets: many times faster than matching a ``str``, whose every call encodes it
        and maps offsets back to characters."""
        if self._utf8 is None:
            object.__setattr__(self, "_utf8", re2.compile(self.source.encode(), options=_OPTIONS))
        return self._utf8.finditer(subject)  # type: ignore[no-any-return]


def compile_user_pattern(source: str) -> UserPattern:
    """Compile ``source`` with RE2; a pattern RE2 cannot run raises ``ValueError`` with a
    message to show the user."""
    if len(source) > MAX_PATTERN:
        raise ValueError(f"pattern longer than {MAX_PATTERN} characters")
    try:
        compiled = re2.compile(source, options=_OPTIONS)
    except re2.error as exc:
        raise ValueError(_message(exc)) from None
    return UserPattern(source, compiled)


def _message(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else exc
    reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    hint = ""
    if any(p in reason for p in ("perl operator", "escape sequence", "repetition operator")):
        hint = " (RE2 syntax: no lookarounds, backreferences, atomic groups or (?x); \\Z is \\z)"
    return f"invalid regular expression: {reason}{hint}"
