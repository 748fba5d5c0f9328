"""Text → L2-normalised float32 vectors.

The query path runs an ONNX export of the sentence-transformers model with onnxruntime and the
model's own fast tokenizer: no torch, no ``import sentence_transformers``, one intra-op thread.
Index vectors come from the very same ONNX file, so queries and utterances live in one space.
Exporting a model (which does need torch) is :mod:`semroute.encoders.export`'s job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
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
    "OnnxEncoder",
    "StaticEncoder",
    "read_export_meta",
]

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


class OnnxEncoder:
    """A sentence-transformers model exported to ONNX, run with onnxruntime and `tokenizers`.

    An int8 export is dynamically quantised: each MatMul scales its input by the largest value
    in the whole input, padding and batch-mates included, so batching would make a text's
    vector depend on the texts it was batched with. Such an export embeds every text on its own,
    one thread per text and several texts at once (one per core) when given many, so a text
    always gets the same vector, whether it is routed alone, in a batch, or embedded into an
    index.
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        info: EncoderInfo,
        inputs: Sequence[str],
        *,
        per_text: bool = False,
        workers: int = 1,
    ):
        self._session = session
        self._tokenizer = tokenizer
        self._info = info
        self._inputs = tuple(inputs)
        self._output = session.get_outputs()[0].name
        self._per_text = per_text
        self._workers = max(1, workers)

    @classmethod
    def load(cls, directory: str | Path, *, threads: int | None = 1) -> OnnxEncoder:
        """Load an export written by :func:`semroute.encoders.export.export_onnx`.

        ``threads`` is how many threads one model run may use: 1 suits routing single queries,
        ``None`` uses every core (building an index). An int8 export always runs a text on one
        thread and spreads many texts over every core instead.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        d = Path(directory)
        meta = read_export_meta(d, onnx=True)
        info = EncoderInfo(
            kind="onnx",
            name=meta["name"],
            fingerprint=meta["fingerprint"],
            dim=meta["dim"],
            max_tokens=meta["max_tokens"],
        )
        try:
            tokenizer = Tokenizer.from_file(str(d / TOKENIZER_FILE))
            per_text = meta.get("precision") == "int8"
            options = ort.SessionOptions()
            if per_text:
                # Parallelism comes from running texts side by side, one thread each.
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
            elif threads is not None:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(
                str(d / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises bare RuntimeError subclasses; map them here
            raise EncoderError(
                f"cannot load the ONNX export in {d} ({type(exc).__name__}: {exc})"
            ) from exc
        # One window for everything; padding is done per batch in numpy so the tokenizer
        # stays stateless and safe to share between threads.
        tokenizer.enable_truncation(info.max_tokens)
        tokenizer.no_padding()
        workers = os.cpu_count() or 1
        return cls(session, tokenizer, info, meta["inputs"], per_text=per_text, workers=workers)

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> Embeddings:
        import numpy as np

        if len(texts) == 1:
            enc = self._tokenizer.encode(texts[0])
            vec = self._run([enc.ids], [enc.type_ids])
            return Embeddings(_normalise(vec), np.array([bool(enc.overflowing)]))
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.empty((len(texts), self._info.dim), dtype=np.float32)
        if self._per_text:
            self._run_each(encodings, out)
        else:
            # Sorting by length keeps padding (wasted compute) small within each batch.
            order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out[chunk] = self._run(
                    [encodings[i].ids for i in chunk], [encodings[i].type_ids for i in chunk]
                )
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        return Embeddings(_normalise(out), truncated)

    def _run_each(self, encodings: Sequence[Any], out: npt.NDArray[np.float32]) -> None:
        """Embed each encoding alone into its row of ``out`` (see the class docstring)."""

        def rows(part: range) -> None:
            for i in part:
                out[i] = self._run([encodings[i].ids], [encodings[i].type_ids])[0]

        n = len(encodings)
        if self._workers == 1 or n < 2 * self._workers:
            rows(range(n))
            return
        # onnxruntime releases the GIL while it runs, so threads embed texts in parallel.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self._workers) as pool:
            list(pool.map(rows, (range(w, n, self._workers) for w in range(self._workers))))

    def _run(self, ids: list[list[int]], type_ids: list[list[int]]) -> npt.NDArray[np.float32]:
        import numpy as np

        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        types = np.zeros((len(ids), width), dtype=np.int64)
        for row, (seq, tt) in enumerate(zip(ids, type_ids, strict=True)):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
            types[row, : len(tt)] = tt
        feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
        result = self._session.run([self._output], {k: feed[k] for k in self._inputs})[0]
        return np.asarray(result, dtype=np.float32)


class StaticEncoder:
    """A model2vec static model: each token has a fixed vector and a text is their mean.

    No transformer runs at query time, so encoding takes tens of microseconds; the price is
    accuracy (docs/benchmarks.md). It is distilled from the same weights by
    :func:`semroute.encoders.export.distill_static`.
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
        info = EncoderInfo(
            kind="static",
            name=meta["name"],
            fingerprint=meta["fingerprint"],
            dim=meta["dim"],
            max_tokens=meta["max_tokens"],
        )
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
        return Embeddings(_normalise(np.asarray(vectors, dtype=np.float32)), truncated)


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


def _normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
