"""The query path: a sentence-transformers model exported to ONNX, run with onnxruntime.

The model's own fast tokenizer, no torch, no ``import sentence_transformers``, one intra-op
thread. Index vectors come from the very same ONNX file, so queries and utterances live in one
space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.encoders.base import (
    ONNX_FILE,
    TOKENIZER_FILE,
    Embeddings,
    EncoderInfo,
    normalise,
    read_export_meta,
)
from semroute.errors import EncoderError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["OnnxEncoder"]


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
        """Load an export written by :func:`semroute.encoders.convert.export_onnx`.

        ``threads`` is how many threads one model run may use: 1 suits routing single queries,
        ``None`` uses every core (building an index). An int8 export always runs a text on one
        thread and spreads many texts over every core instead.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        d = Path(directory)
        meta = read_export_meta(d, onnx=True)
        info = EncoderInfo.of_export("onnx", meta)
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
            return Embeddings(normalise(vec), np.array([bool(enc.overflowing)]))
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
        return Embeddings(normalise(out), truncated)

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
