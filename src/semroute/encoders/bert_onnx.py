"""A BERT-family sentence-transformers checkpoint written as an ONNX graph, without torch.

The graph is built operator by operator with the ``onnx`` package from the checkpoint's
``model.safetensors`` (read as numpy arrays), ``config.json`` and ``tokenizer.json``:
embeddings (word + position + token type, LayerNorm), the encoder layers (self-attention under
the attention mask, a GELU feed-forward block, LayerNorms), then the pooling and normalisation
that the checkpoint's ``modules.json`` lists. It covers the small encoders sentence-transformers
ships (MiniLM, BGE-small, E5-small); anything else is refused with
:class:`UnsupportedCheckpoint`, and the torch exporter (:mod:`semroute.encoders.convert`,
``pip install 'semroute[tune]'``) takes over where it is installed.

Each block is written with the operators, operand order and float32 constants that
``torch.onnx.export`` writes for the same module (bias first in each Add, q and k each scaled
before their product, shapes read at run time), so onnxruntime fuses both graphs alike and the
two exports embed bit for bit alike, in fp32 and after int8 quantisation.
tests/test_bert_onnx.py keeps it so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.encoders.base import (
    ENCODER_META,
    EXPORT_FORMAT,
    ONNX_FILE,
    TOKENIZER_FILE,
    read_tokenizer,
)
from semroute.encoders.checkpoint import (
    WEIGHTS_FILE,
    Checkpoint,
    UnsupportedCheckpoint,
    read_checkpoint,
)
from semroute.errors import EncoderError
from semroute.files import sha256_file

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["UnsupportedCheckpoint", "export_bert_onnx", "read_checkpoint"]

OPSET = 17
IR_VERSION = 8
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def export_bert_onnx(ckpt: Checkpoint, out: Path, *, name: str, source_hash: str) -> None:
    """Write ``out/model.onnx``, ``out/tokenizer.json`` and ``out/encoder.json`` for ``ckpt``."""
    import onnx

    tokenizer = read_tokenizer(ckpt.folder, name)
    weights = _weights(ckpt, name)
    model = _Graph(ckpt, weights).model()
    onnx.checker.check_model(model)
    onnx.save(model, str(out / ONNX_FILE))
    # The encoder sets its own window and pads in numpy; a checkpoint's settings would only mislead.
    tokenizer["truncation"] = tokenizer["padding"] = None
    (out / TOKENIZER_FILE).write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    meta = {
        "format": EXPORT_FORMAT,
        "name": name,
        "fingerprint": sha256_file(out / ONNX_FILE)[:24],
        "source_hash": source_hash,
        "dim": ckpt.hidden,
        "max_tokens": ckpt.max_tokens,
        "inputs": INPUTS,
        "precision": "fp32",
        "exporter": "direct",
    }
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))
    _check_runs(out, name)


def _check_runs(out: Path, name: str) -> None:
    """The export loads and gives finite vectors (tests/test_bert_onnx.py checks their values
    against the torch export)."""
    import numpy as np

    from semroute.encoders.onnx import OnnxEncoder

    vectors = OnnxEncoder.load(out, threads=None).encode(["hello world", "a b " * 300]).vectors
    if not bool(np.all(np.isfinite(vectors))):
        raise EncoderError("the ONNX export gives no usable vectors", model=name)


def _weights(ckpt: Checkpoint, name: str) -> dict[str, npt.NDArray[Any]]:
    """The checkpoint's tensors by BERT name (without a ``bert.`` prefix), in float32."""
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        raw = load_file(str(ckpt.folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise EncoderError(f"cannot read {WEIGHTS_FILE}: {exc}", model=name) from exc
    weights = {k.removeprefix("bert."): v for k, v in raw.items()}
    missing = [k for k in _names(ckpt) if k not in weights]
    if missing:
        raise UnsupportedCheckpoint(
            f"{WEIGHTS_FILE} lacks {missing[0]} ({len(missing)} tensors missing)", model=name
        )
    return {k: np.asarray(weights[k], dtype=np.float32) for k in _names(ckpt)}


def _names(ckpt: Checkpoint) -> list[str]:
    names = [
        f"embeddings.{p}.weight"
        for p in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    names += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for i in range(ckpt.layers):
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            names += [f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"]
    return names


class _Graph:
    """Collects nodes and initialisers; each method adds one block and returns its output."""

    def __init__(self, ckpt: Checkpoint, weights: dict[str, npt.NDArray[Any]]):
        self.ckpt = ckpt
        self.weights = weights
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def model(self) -> Any:
        from onnx import TensorProto, helper

        hidden = self.embeddings()
        mask = self.attention_bias()
        for i in range(self.ckpt.layers):
            hidden = self.layer(i, hidden, mask)
        out = self.pool(hidden)
        if self.ckpt.normalize:
            norm = self.op("ReduceL2", out, axes_keepdims=True)
            out = self.op("Div", out, self.op("Clip", norm, self.const(1e-12)))
        self.nodes.append(helper.make_node("Identity", [out], ["embedding"]))
        inputs = [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in INPUTS
        ]
        output = helper.make_tensor_value_info(
            "embedding", TensorProto.FLOAT, ["batch", self.ckpt.hidden]
        )
        graph = helper.make_graph(self.nodes, "sentence_embedding", inputs, [output], self.inits)
        return helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="semroute",
            # The IR version of opset 17, which any onnxruntime that runs opset 17 reads (a newer
            # onnx package would otherwise stamp its own, newer than some onnxruntime accept).
            ir_version=IR_VERSION,
        )

    # -- primitives ------------------------------------------------------------------------

    def op(self, kind: str, *inputs: str, axes_keepdims: bool = False, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = f"{kind.lower()}_{self._count}"
        if axes_keepdims:  # ReduceL2 over the last axis, kept (opset 17 takes axes as attribute)
            attrs.update(axes=[-1], keepdims=1)
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def const(self, value: Any, dtype: str = "float32") -> str:
        import numpy as np

        return self.tensor(np.asarray(value, dtype=dtype))

    def tensor(self, array: npt.NDArray[Any], name: str | None = None) -> str:
        from onnx import numpy_helper

        self._count += 1
        key = name or f"const_{self._count}"
        self.inits.append(numpy_helper.from_array(array, key))
        return key

    def weight(self, key: str, *, transpose: bool = False) -> str:
        array = self.weights[key]
        return self.tensor(array.T.copy() if transpose else array, key)

    def linear(self, x: str, prefix: str) -> str:
        """``b + x @ W.T``: a MatMul the int8 quantiser turns into an integer one, and the bias
        added first-operand, as torch's export writes it (onnxruntime's fusions match on it)."""
        product = self.op("MatMul", x, self.weight(f"{prefix}.weight", transpose=True))
        return self.op("Add", self.weight(f"{prefix}.bias"), product)

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.weight(f"{prefix}.weight"),
            self.weight(f"{prefix}.bias"),
            axis=-1,
            epsilon=self.ckpt.eps,
        )

    # -- blocks ----------------------------------------------------------------------------

    def embeddings(self) -> str:
        shape = self.op("Shape", "input_ids")
        length = self.op("Gather", shape, self.const(1, "int64"), axis=0)
        positions = self.op("Range", self.const(0, "int64"), length, self.const(1, "int64"))
        total = self.op(
            "Add",
            self.op("Gather", self.weight("embeddings.word_embeddings.weight"), "input_ids"),
            self.op(
                "Gather", self.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"
            ),
        )
        pos = self.op("Gather", self.weight("embeddings.position_embeddings.weight"), positions)
        return self.layer_norm(self.op("Add", total, pos), "embeddings.LayerNorm")

    def attention_bias(self) -> str:
        """0 where a token may be attended to, -inf where it is padding, shaped
        [batch, 1, 1, tokens] (what torch's export adds to the attention scores)."""
        shaped = self.op(
            "Unsqueeze", self.op("Cast", "attention_mask", to=9), self.const([1, 2], "int64")
        )
        return self.op("Where", shaped, self.const([0.0]), self.const([-math.inf]))

    def layer(self, i: int, x: str, bias: str) -> str:
        p = f"encoder.layer.{i}"
        attended = self.linear(
            self.attention(x, bias, f"{p}.attention.self"), f"{p}.attention.output.dense"
        )
        x = self.layer_norm(self.op("Add", attended, x), f"{p}.attention.output.LayerNorm")
        inner = self.activation(self.linear(x, f"{p}.intermediate.dense"))
        out = self.linear(inner, f"{p}.output.dense")
        return self.layer_norm(self.op("Add", out, x), f"{p}.output.LayerNorm")

    def attention(self, x: str, bias: str, prefix: str) -> str:
        """Self-attention as torch exports scaled_dot_product_attention: q and k each scaled by
        the square root of 1/sqrt(head size) before their product, softmax under the mask, a
        fully masked row set to 0."""
        import numpy as np

        size = self.ckpt.hidden // self.ckpt.heads
        batch, tokens = self.dims(x)
        split = self.op(
            "Concat", batch, tokens, self.const([-1], "int64"), self.const([size], "int64"), axis=0
        )

        def project(part: str, perm: list[int]) -> str:
            shaped = self.op("Reshape", self.linear(x, f"{prefix}.{part}"), split)
            return self.op("Transpose", shaped, perm=perm)

        q = project("query", [0, 2, 1, 3])
        k = project("key", [0, 2, 3, 1])
        v = project("value", [0, 2, 1, 3])
        # In float32 as torch folds it: sqrt(float32(size ** -0.5)).
        root = self.const(np.sqrt(np.float32(size**-0.5)))
        scores = self.op("MatMul", self.op("Mul", q, root), self.op("Mul", k, root))
        probs = self.op("Softmax", self.op("Add", scores, bias), axis=-1)
        probs = self.op("Where", self.op("IsNaN", probs), self.const([0.0]), probs)
        context = self.op("Transpose", self.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        merged = self.op("Concat", batch, tokens, self.const([-1], "int64"), axis=0)
        return self.op("Reshape", context, merged)

    def dims(self, x: str) -> tuple[str, str]:
        """``x``'s batch and token counts, each as a 1-element tensor, read at run time as
        torch's trace records them: with constant shapes onnxruntime would fuse other nodes
        than in torch's export (an Add into a SkipLayerNormalization), and its int8 arithmetic
        would no longer be the reference's bit for bit."""
        shape = self.op("Shape", x)

        def size(axis: int) -> str:
            picked = self.op("Gather", shape, self.const(axis, "int64"), axis=0)
            return self.op("Unsqueeze", picked, self.const([0], "int64"))

        return size(0), size(1)

    def activation(self, x: str) -> str:
        """The activation in torch's own operator order (onnxruntime fuses exact GELU written
        this way into one Gelu)."""
        kind = self.ckpt.activation
        if kind == "relu":
            return self.op("Relu", x)
        if kind == "gelu":  # exact: x * (1 + erf(x / sqrt 2)) / 2
            inner = self.op("Erf", self.op("Div", x, self.const(math.sqrt(2.0))))
            return self.op(
                "Mul", self.op("Mul", x, self.op("Add", inner, self.const(1.0))), self.const(0.5)
            )
        if kind == "gelu_pytorch_tanh":  # torch's own tanh GELU, as its exporter spells it
            cube = self.op("Mul", x, self.op("Mul", x, x))
            inner = self.op("Add", x, self.op("Mul", self.const(0.044715), cube))
            scaled = self.op("Tanh", self.op("Mul", self.const(math.sqrt(2.0 / math.pi)), inner))
            shifted = self.op("Mul", x, self.op("Add", self.const(1.0), scaled))
            return self.op("Mul", self.const(0.5), shifted)
        # gelu_new, transformers' tanh approximation: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
        half_x = self.op("Mul", x, self.const(0.5))
        cube = self.op("Mul", self.op("Pow", x, self.const(3.0)), self.const(0.044715))
        scaled = self.op("Mul", self.op("Add", x, cube), self.const(math.sqrt(2.0 / math.pi)))
        return self.op("Mul", half_x, self.op("Add", self.op("Tanh", scaled), self.const(1.0)))

    def pool(self, x: str) -> str:
        if self.ckpt.pooling == "cls":
            return self.op("Gather", x, self.const(0, "int64"), axis=1)
        mask = self.op(
            "Cast", self.op("Unsqueeze", "attention_mask", self.const([-1], "int64")), to=1
        )
        axis = self.const([1], "int64")
        total = self.op("ReduceSum", self.op("Mul", x, mask), axis, keepdims=0)
        count = self.op("Clip", self.op("ReduceSum", mask, axis, keepdims=0), self.const(1e-9))
        return self.op("Div", total, count)
