"""Turning a sentence-transformers model into the ONNX files the encoders run, through torch.

The export of a model the torch-free graph (:mod:`semroute.encoders.bert_onnx`) does not cover,
and the int8 quantisation of every export. Torch and sentence-transformers (the ``tune`` extra)
are imported here (and by the static runtime's distillation) only, and only when such a model
has no export yet. Every torch export is checked against the model's own embeddings before it
is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semroute.encoders.base import (
    ENCODER_META,
    EXPORT_FORMAT,
    ONNX_FILE,
    TOKENIZER_FILE,
    read_tokenizer,
)
from semroute.encoders.onnx import OnnxEncoder
from semroute.errors import EncoderError
from semroute.files import sha256_file

__all__ = ["export_onnx", "quantize_export"]

# Sentences the export is checked on against sentence-transformers itself.
PROBES = [
    "How do I reverse a linked list in Python?",
    "what's the weather like tomorrow",
    "Résumé: traduire « bonjour » en anglais, s'il vous plaît",
    "x " * 300,
]
INT8_MIN_COSINE = 0.98
"""The int8 export must keep every probe sentence at least this close to the fp32 export
(scripts/bench_choices.py measures how close it stays on real queries)."""


def export_onnx(model_dir: Path, out: Path, *, name: str, source_hash: str) -> None:
    """Export a sentence-transformers model (all its modules) to ``out/model.onnx``.

    The graph maps token ids to the sentence embedding, so pooling, dense layers and
    normalisation match the original exactly; the result is checked against
    sentence-transformers' own embeddings before it is accepted.
    """
    # Checked before loading: from a folder without one, transformers would build a tokenizer
    # out of whatever else is there, which need not split text as the model was trained to.
    read_tokenizer(model_dir, name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        # Tracing emits deprecation and tracer warnings from torch/transformers internals.
        warnings.simplefilter("ignore")
        model = _load_model(model_dir, name)
        tokenizer = model.tokenizer
        tokenizer.save_pretrained(str(out))
        if not (out / TOKENIZER_FILE).is_file():
            raise EncoderError(
                "has no fast tokenizer (tokenizer.json); semroute needs one", model=name
            )
        inputs = [
            n
            for n in tokenizer.model_input_names
            if n in ("input_ids", "attention_mask", "token_type_ids")
        ]
        _trace(model, inputs, out / ONNX_FILE)
        dim = _dimension(model)
        max_tokens = int(model.max_seq_length or tokenizer.model_max_length)
        reference = model.encode(PROBES, normalize_embeddings=True, convert_to_numpy=True)

    meta = {
        "format": EXPORT_FORMAT,
        "name": name,
        "fingerprint": sha256_file(out / ONNX_FILE)[:24],
        "source_hash": source_hash,
        "dim": dim,
        "max_tokens": max_tokens,
        "inputs": inputs,
        "precision": "fp32",
    }
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))
    _check_export(out, reference, name)


def _load_model(model_dir: Path, name: str) -> Any:
    """The SentenceTransformer in ``model_dir`` on the CPU, in inference mode, quietly."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        model = SentenceTransformer(str(model_dir), device="cpu")
    except Exception as exc:  # any load failure of a third-party model is the user's to fix
        raise EncoderError(f"sentence-transformers cannot load it: {exc}", model=name) from exc
    model.eval()
    return model


def _trace(model: Any, inputs: list[str], file: Path) -> None:
    """Write the graph from token tensors to the sentence embedding, batch and length dynamic."""
    import torch

    sample = model.tokenizer(
        ["hello world", "a somewhat longer example"], padding=True, return_tensors="pt"
    )
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in inputs}
    axes["embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            _sentence_embedding_module(model, inputs),
            tuple(sample[n] for n in inputs),
            str(file),
            input_names=inputs,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _check_export(
    out: Path,
    reference: Any,
    name: str,
    *,
    min_cosine: float = 0.999,
    advice: str = "this model architecture is not supported",
) -> None:
    import numpy as np

    got = OnnxEncoder.load(out, threads=None).encode(PROBES).vectors
    cosine = float(np.min(np.sum(got * reference, axis=1)))
    if cosine < min_cosine:
        raise EncoderError(
            f"the ONNX export does not reproduce the model's embeddings (cosine {cosine:.4f}); "
            f"{advice}",
            model=name,
        )


def _dimension(model: Any) -> int:
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())


def _sentence_embedding_module(model: Any, inputs: list[str]) -> Any:
    """Wrap a SentenceTransformer as a torch module taking positional token tensors."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(dict(zip(inputs, tensors, strict=True)))["sentence_embedding"]

    return SentenceEmbedding()


def quantize_export(source: Path, out: Path) -> None:
    """Dynamic int8 quantisation of every MatMul, per output channel (of the variants tried,
    the one that kept the vectors closest to fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs advice through the root logger; it is not for our users.
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(source / ONNX_FILE),
            str(out / ONNX_FILE),
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    shutil.copy2(source / TOKENIZER_FILE, out / TOKENIZER_FILE)
    meta = json.loads((source / ENCODER_META).read_text())
    # The fingerprint covers how texts are run (one at a time, see OnnxEncoder), not only the
    # file: vectors an older semroute embedded in padded batches do not match these.
    mode = f"{sha256_file(out / ONNX_FILE)}|per-text"
    meta.update(
        precision="int8",
        embedding="per-text",
        fingerprint=hashlib.sha256(mode.encode()).hexdigest()[:24],
    )
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))
    _check_export(
        out,
        OnnxEncoder.load(source, threads=None).encode(PROBES).vectors,
        meta["name"],
        min_cosine=INT8_MIN_COSINE,
        advice="int8 quantisation changes this model's embeddings too much; "
        "set `encoder_runtime: onnx` in the router block",
    )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
