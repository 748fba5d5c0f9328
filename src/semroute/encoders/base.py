"""Text → L2-normalised float32 vectors: what an encoder is, and what an export on disk holds.

Encoders: :class:`semroute.encoders.onnx.OnnxEncoder` (the sentence-transformers model exported
to ONNX), :class:`semroute.encoders.static.StaticEncoder` (a distilled model2vec model) and
:class:`semroute.encoders.hashing.FakeEncoder` (no model at all). Preparing an export is
:mod:`semroute.encoders.export`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from semroute.errors import EncoderError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "Embeddings",
    "Encoder",
    "EncoderInfo",
    "normalise",
    "read_export_meta",
    "read_tokenizer",
    "require_tokenizer",
]

EXPORT_FORMAT = 1
"""Version of the layout of an export folder (part of its cache key)."""
ENCODER_META = "encoder.json"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
STATIC_DIR = "model2vec"
STATIC_MAX_TOKENS = 512
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class EncoderInfo:
    """What identifies an encoder: vectors from two encoders are comparable only if these match."""

    kind: str
    name: str
    fingerprint: str
    dim: int
    max_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def of_export(cls, kind: str, meta: Mapping[str, Any]) -> EncoderInfo:
        """The info of an export whose ``encoder.json`` (checked by :func:`read_export_meta`)
        is ``meta``."""
        return cls(
            kind=kind,
            name=meta["name"],
            fingerprint=meta["fingerprint"],
            dim=meta["dim"],
            max_tokens=meta["max_tokens"],
        )


@dataclass(frozen=True)
class Embeddings:
    """Unit-length float32 rows, plus which inputs were cut to fit the encoder's window."""

    vectors: npt.NDArray[np.float32]
    truncated: npt.NDArray[np.bool_]


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into normalised vectors (see :class:`semroute.testing.FakeEncoder`)."""

    @property
    def info(self) -> EncoderInfo: ...

    def encode(self, texts: Sequence[str]) -> Embeddings: ...


def read_export_meta(directory: Path, *, onnx: bool) -> dict[str, Any]:
    """An export's ``encoder.json``, checked: every field the encoders read, of the right type."""
    file = directory / ENCODER_META
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise EncoderError(f"{file} is unreadable ({type(exc).__name__})") from exc
    if not isinstance(meta, dict):
        raise EncoderError(f"{file} is not a JSON object")
    for key in ("name", "fingerprint"):
        if not isinstance(meta.get(key), str):
            raise EncoderError(f"{file} has no text {key!r}")
    for key in ("dim", "max_tokens"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise EncoderError(f"{file} has no positive whole {key!r}")
    if not isinstance(meta.get("kind", "onnx"), str):
        raise EncoderError(f"{file} has a {'kind'!r} that is not text")
    inputs = meta.get("inputs")
    if onnx and (
        not isinstance(inputs, list)
        or not inputs
        or not all(isinstance(n, str) and n in ONNX_INPUTS for n in inputs)
    ):
        raise EncoderError(f"{file} has no {'inputs'!r} list naming some of {ONNX_INPUTS}")
    return meta


def require_tokenizer(folder: Path, name: str) -> None:
    """Refuse a model folder without ``tokenizer.json``: the encoders run that fast tokenizer,
    and one rebuilt from whatever else the folder holds need not split text as the model did."""
    if not (folder / TOKENIZER_FILE).is_file():
        raise EncoderError(
            f"{folder} has no {TOKENIZER_FILE} (the model's fast tokenizer, which semroute "
            f"needs); copy the model's {TOKENIZER_FILE} into it from where the model came from "
            "(its hub repository, or the folder it was saved from)",
            model=name,
        )


def read_tokenizer(folder: Path, name: str) -> dict[str, Any]:
    """A model folder's ``tokenizer.json``, checked to be one the tokenizers library loads."""
    from tokenizers import Tokenizer

    require_tokenizer(folder, name)
    file = folder / TOKENIZER_FILE
    advice = f"copy {TOKENIZER_FILE} again from where the model came from"
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError, RecursionError) as exc:
        raise EncoderError(
            f"{file} is unreadable ({type(exc).__name__}); {advice}", model=name
        ) from exc
    if not isinstance(data, dict):
        raise EncoderError(f"{file} is not a JSON object; {advice}", model=name)
    try:
        Tokenizer.from_str(text)
    except Exception as exc:  # the tokenizers library raises bare Exceptions; map them here
        reason = " ".join(str(exc).split())[:120]
        raise EncoderError(
            f"{file} is not a tokenizer the tokenizers library reads ({reason}); {advice}",
            model=name,
        ) from exc
    return data


def normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
