"""The encoder of a stored index, loaded for its router."""

from __future__ import annotations

from semroute.encoders.base import Encoder
from semroute.errors import REBUILD_HINT, CorruptIndexError
from semroute.index.store import RouteIndex, encoder_path

__all__ = ["encoder_for"]


def encoder_for(index: RouteIndex) -> Encoder:
    """The encoder an index was built with, loaded from its folder (its kind imported only
    when used); :class:`~semroute.errors.CorruptIndexError` when its files are unusable."""
    info = index.encoder_info
    if info.kind in ("onnx", "static"):
        from semroute.encoders.onnx import OnnxEncoder
        from semroute.encoders.static import StaticEncoder
        from semroute.errors import EncoderError

        try:
            if info.kind == "static":
                return StaticEncoder.load(encoder_path(index))
            return OnnxEncoder.load(encoder_path(index), threads=1)
        except EncoderError as exc:
            raise CorruptIndexError(
                f"its encoder files are unusable ({exc}); {REBUILD_HINT}",
                path=index.path,
            ) from exc
    if info.kind == "fake":
        from semroute.encoders.hashing import FakeEncoder

        return FakeEncoder(dim=info.dim, max_tokens=info.max_tokens)
    raise CorruptIndexError(f"unknown encoder kind {info.kind!r}", path=index.path)
