"""A hashing encoder: a deterministic stand-in for an embedding model, needing no model files.

Each word is hashed to a signed coordinate, so texts sharing words are similar and unrelated texts
are nearly orthogonal. It satisfies :class:`semroute.encoders.base.Encoder`, so indexes can be
built and routed with it (tests use it as :class:`semroute.testing.FakeEncoder`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from semroute.encoders.base import Embeddings, EncoderInfo

__all__ = ["FakeEncoder"]

_WORD = re.compile(r"\w+")


class FakeEncoder:
    """Bag-of-words feature hashing: fast, deterministic, no model files."""

    def __init__(self, dim: int = 256, max_tokens: int = 64) -> None:
        self._info = EncoderInfo(
            kind="fake",
            name=f"fake-{dim}",
            fingerprint=f"fake-v1-{dim}-{max_tokens}",
            dim=dim,
            max_tokens=max_tokens,
        )
        self.calls = 0
        """How many texts have been encoded (lets tests prove work was or was not redone)."""

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode(self, texts: Sequence[str]) -> Embeddings:
        dim = self._info.dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            if len(words) > self._info.max_tokens:
                words = words[: self._info.max_tokens]
                truncated[row] = True
            for word in words:
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[row, h % dim] += 1.0 if (h >> 32) & 1 else -1.0
        self.calls += len(texts)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.maximum(norms, 1e-12, out=norms)
        return Embeddings(out / norms, truncated)
