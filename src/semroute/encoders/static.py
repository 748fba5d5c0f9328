"""The static runtime: a model2vec model distilled from the transformer's own weights."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semroute.encoders.base import (
    ENCODER_META,
    EXPORT_FORMAT,
    STATIC_DIR,
    STATIC_MAX_TOKENS,
    Embeddings,
    EncoderInfo,
    normalise,
    read_export_meta,
)
from semroute.errors import EncoderError
from semroute.files import sha256_file

__all__ = ["StaticEncoder", "distill_static"]


class StaticEncoder:
    """A model2vec static model: each token has a fixed vector and a text is their mean.

    No transformer runs at query time, so encoding is far faster than the ONNX runtime; the
    price is accuracy (docs/benchmarks.md measures both). It is distilled from the same weights by
    :func:`distill_static`.
    """

    def __init__(self, model: Any, info: EncoderInfo) -> None:
        self._model = model
        self._info = info

    @classmethod
    def load(cls, directory: str | Path) -> StaticEncoder:
        d = Path(directory)
        meta = read_export_meta(d, onnx=False)
        try:
            from model2vec import StaticModel

            model = StaticModel.from_pretrained(str(d / STATIC_DIR))
        except Exception as exc:  # model2vec and safetensors raise assorted types; map them here
            raise EncoderError(
                f"cannot load the static model in {d} ({type(exc).__name__}: {exc})"
            ) from exc
        info = EncoderInfo.of_export("static", meta)
        return cls(model, info)

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode(self, texts: Sequence[str]) -> Embeddings:
        import numpy as np

        texts = list(texts)
        vectors = self._model.encode(
            texts, max_length=self._info.max_tokens, use_multiprocessing=False
        )
        lengths = [len(e.ids) for e in self._model.tokenizer.encode_batch(texts)]
        truncated = np.array([n > self._info.max_tokens for n in lengths], dtype=bool)
        return Embeddings(normalise(np.asarray(vectors, dtype=np.float32)), truncated)


def distill_static(model_dir: Path, out: Path, *, name: str, source_hash: str) -> None:
    """Distil a static (token-embedding lookup) model from the transformer with model2vec."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from model2vec.distill import distill
    except ImportError as exc:
        raise EncoderError(
            "the static runtime needs model2vec's distillation tools: pip install 'semroute[static]'",
            model=name,
        ) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = distill(model_name=str(model_dir), pca_dims=256, device="cpu")
    model.save_pretrained(str(out / STATIC_DIR))
    meta = {
        "format": EXPORT_FORMAT,
        "kind": "static",
        "name": name,
        "fingerprint": sha256_file(out / STATIC_DIR / "model.safetensors")[:24],
        "source_hash": source_hash,
        "dim": int(model.dim),
        "max_tokens": STATIC_MAX_TOKENS,
        "precision": "static",
    }
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))
