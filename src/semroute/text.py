"""Untrusted text made safe to tokenise, log and print.

One policy everywhere text enters semroute (queries, message lists, labelled data, answers):
- a lone surrogate (``"\\ud800"``, which ordinary JSON escapes produce) cannot be encoded as
  UTF-8; it is replaced with U+FFFD, the replacement character, and the rest of the text counts;
- text made only of whitespace, control and format characters (zero-width spaces, byte-order
  marks, NUL) says nothing, and routes as an empty query;
- text shown on a terminal has its control characters escaped, so a query cannot move the
  cursor, recolour the screen or rewrite what was printed before it.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean", "is_blank", "printable"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Unicode categories that show nothing: separators, controls, format characters, unassigned.
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cn", "Co", "Cs"})
# The invisible characters text actually carries (whitespace, controls, zero-width and bidi marks,
# byte-order marks), skipped at C speed before the per-character check looks at what is left.
_COMMON_INVISIBLE = re.compile(
    "[\\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]+"
)


def clean(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (unchanged, and fast, if it has none)."""
    return _SURROGATE.sub("\ufffd", text)


def is_blank(text: str) -> bool:
    """True when ``text`` holds no visible character."""
    rest = _COMMON_INVISIBLE.sub("", text)
    return all(unicodedata.category(c) in _INVISIBLE for c in rest)


def printable(text: str) -> str:
    """``text`` for a terminal: control characters (escape sequences included) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", clean(text))
