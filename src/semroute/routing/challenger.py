"""A challenger beside the serving router: two routers that route the same query in the same
thread, sharing its embedding when their encoders are the same.

The serving router encodes a query; the challenger, asked for the same texts next by the same
thread, gets that encoding again instead of running the encoder twice (see
:class:`LastEncoded`). With different encoders each encodes its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from semroute.encoders.base import Embeddings, Encoder, EncoderInfo

__all__ = ["LastEncoded", "shared_encoder"]


class LastEncoded:
    """An encoder that gives a thread its last result again when asked for the same texts."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._last = threading.local()

    @property
    def info(self) -> EncoderInfo:
        return self.encoder.info

    def encode(self, texts: Sequence[str]) -> Embeddings:
        key = tuple(texts)
        last: tuple[tuple[str, ...], Embeddings] | None = getattr(self._last, "value", None)
        if last is not None and last[0] == key:
            return last[1]
        out = self.encoder.encode(texts)
        self._last.value = (key, out)
        return out


def shared_encoder(first: Encoder, second: Encoder) -> Encoder | None:
    """One :class:`LastEncoded` for both when they embed alike (same fingerprint), else None."""
    if first.info.fingerprint != second.info.fingerprint:
        return None
    inner = first.encoder if isinstance(first, LastEncoded) else first
    return LastEncoded(inner)
