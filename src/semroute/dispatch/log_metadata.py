"""What of a caller's ``metadata`` the decision log keeps: a client decides its size, the log
line must not (a 100 kB ``metadata`` made a 100 kB line, with ``log_content`` off too).

The rule, applied to the ``signals.metadata`` of a log line (rules still see the whole of it):

- the first :data:`MAX_KEYS` keys, in the caller's order, are kept; the rest are dropped;
- a key longer than :data:`MAX_KEY_CHARS` characters, or not text, is dropped;
- a text value is cut to :data:`MAX_VALUE_CHARS` characters (the last one an ellipsis);
- ``true``, ``false``, ``null``, finite numbers and integers within 64 bits are kept;
- anything else is replaced by a short summary: ``"<object of 3 keys>"``, ``"<list of 12
  items>"``, ``"<int of 900 bits>"``, ``"<Decimal>"``.

When anything was dropped, cut or summarised, the signals say ``"metadata_truncated": true``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_KEYS", "MAX_KEY_CHARS", "MAX_VALUE_CHARS", "bounded_metadata", "logged_signals"]

MAX_KEYS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 256


def logged_signals(signals: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``signals`` for a log line: its ``metadata`` bounded (see the module docstring)."""
    if signals is None:
        return None
    out = dict(signals)
    metadata = out.get("metadata")
    if isinstance(metadata, Mapping):
        out["metadata"], truncated = bounded_metadata(metadata)
        if truncated:
            out["metadata_truncated"] = True
    return out


def bounded_metadata(metadata: Mapping[Any, Any]) -> tuple[dict[str, Any], bool]:
    """The kept part of ``metadata``, and whether anything was left out or changed."""
    kept: dict[str, Any] = {}
    truncated = False
    for key, value in metadata.items():
        if len(kept) == MAX_KEYS:
            return kept, True
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            truncated = True
            continue
        kept[key], changed = _bounded(value)
        truncated = truncated or changed
    return kept, truncated


def _bounded(value: Any) -> tuple[Any, bool]:
    if value is None or isinstance(value, bool):
        return value, False
    if isinstance(value, str):
        if len(value) <= MAX_VALUE_CHARS:
            return value, False
        return value[: MAX_VALUE_CHARS - 1] + "\u2026", True
    if isinstance(value, float) and math.isfinite(value):
        return value, False
    if isinstance(value, int) and value.bit_length() < 64:
        return value, False
    return _summary(value), True


def _summary(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"<object of {len(value)} keys>"
    if isinstance(value, list | tuple | set | frozenset):
        return f"<list of {len(value)} items>"
    if isinstance(value, int):
        return f"<int of {value.bit_length()} bits>"
    return f"<{type(value).__name__}>"
