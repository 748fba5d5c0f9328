"""Preparing a query for the encoder: cut cheaply to its window, and a cache of recent scores."""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["CHARS_PER_TOKEN", "READ_WINDOWS", "QueryCache", "fit"]

CHARS_PER_TOKEN = 128
"""Characters a query may hold per token of the encoder's window before it is cut.

A WordPiece tokenizer (BERT's, which sentence-transformers models use) reads a word of up to
``max_input_chars_per_word`` (100) characters as at least one token, so with its separator a
token covers at most 101 characters; SentencePiece and BPE pieces are shorter still. A cut text
of ``max_tokens * CHARS_PER_TOKEN`` characters, with whitespace runs and invisible characters
squeezed out, therefore still fills the window when it is cut at a space, and the encoder sees
exactly the tokens it would have seen in the whole text. Only words longer than 100 characters,
which WordPiece reads as one unknown token, can defeat the bound: such a query is routed on its
start and says it was truncated."""

READ_WINDOWS = 16
"""How many windows' worth of characters a long query is read for words before it is cut: a
query padded with more than that much whitespace or invisible characters is routed on its start
(and says it was truncated), so padding cannot make routing slow."""

# What BERT's normaliser drops (C0/C1 controls, zero-width, bidi and invisible format characters,
# the byte-order mark) and whitespace runs, which its pre-tokeniser reads as one separator.
# Squeezing them out of a long query lets padding neither push words past the cut nor cost time.
_DROPPED = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff]+"
)
_ASCII_DROPPED = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_SPACES = re.compile(r"\s{2,}|[^\S ]")

Scored = tuple[
    "npt.NDArray[np.float32]",
    "npt.NDArray[np.int64]",
    bool,
    float | None,
    "npt.NDArray[np.float32]",
]
"""One query's per-route confidences, closest examples, whether the encoder cut it, its
difficulty (None when no rule tests it) and its embedding (read-only)."""


def fit(text: str, window: int) -> tuple[str, bool]:
    """``text`` cut to at most ``window`` characters, and whether anything visible was cut.

    A longer text first loses what BERT's normaliser and pre-tokeniser would ignore anyway
    (:data:`_DROPPED`, whitespace runs), chunk by chunk and only as far as the cut needs (at most
    :data:`READ_WINDOWS` chunks), then is cut at the last space before ``window`` so no word is
    split.
    """
    if len(text) <= window:
        return text, False
    kept: list[str] = []
    size = pos = 0
    after_space = True  # a leading space is kept only once, as a separator would be
    while pos < len(text) and size <= window + 1 and pos < READ_WINDOWS * window:
        part = _squeeze(text[pos : pos + window])
        pos += window
        if after_space and part.startswith(" "):
            part = part[1:]  # the rest of a whitespace run that straddled two chunks
        if part:
            kept.append(part)
            size += len(part)
            after_space = part.endswith(" ")
    squeezed = "".join(kept).rstrip(" ")
    if len(squeezed) <= window:
        # All read; or the read limit was hit, and what is left may hold words.
        rest = text[pos:]
        return squeezed, bool(rest) and not rest.isspace()
    space = squeezed.rfind(" ", window // 2, window + 1)
    return squeezed[: space if space > 0 else window], True


def _squeeze(text: str) -> str:
    if text.isascii():  # the common case, at C speed: a regex class tests every character
        text = text.encode("ascii").translate(None, _ASCII_DROPPED).decode("ascii")
    else:
        text = _DROPPED.sub("", text)
    return _SPACES.sub(" ", text)


class QueryCache:
    """The scores of recent queries, least recently used first out.

    Keyed by a digest of the text the encoder saw, so an entry is a few hundred bytes (one
    float and one int per route) plus its embedding (4 bytes a dimension) however long the
    query was. Thread-safe; two threads missing
    the same query at once both compute it, as with :func:`functools.lru_cache`.
    """

    def __init__(self, maxsize: int, compute: Callable[[str], Scored]) -> None:
        self._maxsize = maxsize
        self._compute = compute
        self._entries: OrderedDict[bytes, Scored] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def __call__(self, text: str) -> Scored:
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return found
            self._misses += 1
        value = self._compute(text)
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return value

    def info(self) -> functools._CacheInfo:
        with self._lock:
            return functools._CacheInfo(self._hits, self._misses, self._maxsize, len(self._entries))
