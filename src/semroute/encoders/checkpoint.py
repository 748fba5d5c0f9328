"""A sentence-transformers checkpoint folder read for the torch-free ONNX exporter
(:mod:`semroute.encoders.bert_onnx`): ``config.json``, ``modules.json`` and the window files,
every field it reads checked (type, range, agreement with ``model.safetensors``' header) so that
a damaged or foreign folder is one line naming the file and the field, not a traceback or a
graph that embeds wrongly. A checkpoint the graph does not cover is
:class:`UnsupportedCheckpoint` (the torch exporter may take it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semroute.encoders.base import require_tokenizer
from semroute.errors import EncoderError

__all__ = ["WEIGHTS_FILE", "Checkpoint", "UnsupportedCheckpoint", "read_checkpoint"]

WEIGHTS_FILE = "model.safetensors"
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_MODULE = "sentence_transformers.models."
_LIMITS = {
    "hidden_size": 1 << 16,
    "num_attention_heads": 1 << 10,
    "num_hidden_layers": 1 << 10,
    "max_position_embeddings": 1 << 20,
}
"""Bounds on config.json's sizes, far past any checkpoint the graph covers."""


class UnsupportedCheckpoint(EncoderError):
    """The checkpoint is not one the direct export covers (the torch exporter may)."""

    def __init__(self, reason: str, *, model: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason, model=model)


@dataclass(frozen=True)
class Checkpoint:
    """What the graph needs to know about a checkpoint folder, read and checked."""

    folder: Path
    layers: int
    hidden: int
    heads: int
    eps: float
    activation: str
    pooling: str  # "mean" or "cls"
    normalize: bool
    max_tokens: int


def read_checkpoint(folder: Path, name: str) -> Checkpoint:
    """Read ``folder``'s configuration; :class:`UnsupportedCheckpoint` if the graph can't hold it,
    :class:`EncoderError` naming the file and field if a file is damaged."""
    file = folder / "config.json"
    config = _json(file, name)
    kind = _text(config, file, "model_type", name)
    if kind != "bert":
        raise UnsupportedCheckpoint(f"model_type {kind!r} is not BERT", model=name)
    positional = _text(config, file, "position_embedding_type", name, default="absolute")
    if positional != "absolute":
        raise UnsupportedCheckpoint(
            f"position embeddings {positional!r} are not covered", model=name
        )
    activation = _text(config, file, "hidden_act", name, default="gelu")
    if activation not in _ACTIVATIONS:
        raise UnsupportedCheckpoint(f"activation {activation!r} is not covered", model=name)
    if not (folder / WEIGHTS_FILE).is_file():
        raise UnsupportedCheckpoint(f"the folder has no {WEIGHTS_FILE}", model=name)
    require_tokenizer(folder, name)
    hidden = _whole(config, file, "hidden_size", name)
    heads = _whole(config, file, "num_attention_heads", name)
    if hidden % heads:
        raise EncoderError(
            f"{file}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}; "
            f"{_restore(file)}",
            model=name,
        )
    layers = _whole(config, file, "num_hidden_layers", name)
    positions = _whole(config, file, "max_position_embeddings", name, default=512)
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise EncoderError(
            f"{file} has layer_norm_eps {_shown(eps)}, not a number between 0 and 1; "
            f"{_restore(file)}",
            model=name,
        )
    _match_weights(folder, file, name, hidden=hidden, positions=positions, layers=layers)
    pooling, normalize = _modules(folder, name)
    return Checkpoint(
        folder=folder,
        layers=layers,
        hidden=hidden,
        heads=heads,
        eps=float(eps),
        activation=activation,
        pooling=pooling,
        normalize=normalize,
        max_tokens=_max_tokens(folder, positions),
    )


def _text(
    config: dict[str, Any], file: Path, key: str, name: str, *, default: str | None = None
) -> str:
    if key not in config and default is not None:
        return default
    value = config.get(key)
    if not isinstance(value, str):
        problem = f"has no {key}" if key not in config else f"has {key} {_shown(value)}, not text"
        raise EncoderError(f"{file} {problem}; {_restore(file)}", model=name)
    return value


def _whole(
    config: dict[str, Any], file: Path, key: str, name: str, *, default: int | None = None
) -> int:
    """A size from ``config.json``, bounded so that a damaged one fails here rather than as a
    huge allocation or a graph that cannot run."""
    if key not in config:
        if default is not None:
            return default
        raise EncoderError(f"{file} has no {key}; {_restore(file)}", model=name)
    value, limit = config[key], _LIMITS[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
        raise EncoderError(
            f"{file} has {key} {_shown(value)}, not a whole number from 1 to {limit}; "
            f"{_restore(file)}",
            model=name,
        )
    return value


def _match_weights(
    folder: Path, file: Path, name: str, *, hidden: int, positions: int, layers: int
) -> None:
    """config.json's sizes are the weights' own (read from the weights file's header only): a
    graph built on others would not run, or would embed with layers left out."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="np") as weights:
            shapes = {
                k.removeprefix("bert."): weights.get_slice(k).get_shape()
                for k in list(weights.keys())
            }
    except (SafetensorError, OSError) as exc:
        raise EncoderError(f"cannot read {WEIGHTS_FILE}: {exc}", model=name) from exc
    # A tensor missing altogether is reported where the weights are read (_weights).
    word = shapes.get("embeddings.word_embeddings.weight")
    table = shapes.get("embeddings.position_embeddings.weight")
    found = {}
    if word:
        found["hidden_size"] = (hidden, word[-1])
    if table:
        found["max_position_embeddings"] = (positions, table[0])
    for key, (said, real) in found.items():
        if said != real:
            raise EncoderError(
                f"{file} has {key} {said}, but {WEIGHTS_FILE} has {real}; {_restore(file)}",
                model=name,
            )
    stacked = {int(k.split(".")[2]) for k in shapes if re.fullmatch(r"encoder\.layer\.\d+\..+", k)}
    if stacked and layers != max(stacked) + 1:
        raise EncoderError(
            f"{file} has num_hidden_layers {layers}, but {WEIGHTS_FILE} has {max(stacked) + 1}; "
            f"{_restore(file)}",
            model=name,
        )


def _restore(file: Path) -> str:
    return f"copy {file.name} again from where the model came from"


def _shown(value: object) -> str:
    """A value from a JSON file as JSON writes it, cut short (a damaged file may hold anything)."""
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "an object"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read(file: Path, name: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UnsupportedCheckpoint(f"the folder has no {file.name}", model=name) from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise EncoderError(
            f"{file} is unreadable ({type(exc).__name__}); {_restore(file)}", model=name
        ) from exc


def _json(file: Path, name: str) -> dict[str, Any]:
    data = _read(file, name)
    if not isinstance(data, dict):
        raise EncoderError(f"{file} is not a JSON object; {_restore(file)}", model=name)
    return data


def _modules(folder: Path, name: str) -> tuple[str, bool]:
    """Pooling and normalisation as ``modules.json`` lists them (mean pooling when it is absent,
    as sentence-transformers does for a plain transformer checkpoint)."""
    file = folder / "modules.json"
    if not file.is_file():
        return "mean", False
    modules = _read(file, name)
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules
    ):
        raise EncoderError(
            f"{file} is not a list of modules, each with a text type; {_restore(file)}", model=name
        )
    pooling, normalize = "mean", False
    for module in modules:
        kind = module["type"].removeprefix(_MODULE)
        if kind == "Transformer":
            continue
        if kind == "Normalize":
            normalize = True
        elif kind == "Pooling":
            path = module.get("path")
            if not isinstance(path, str):
                raise EncoderError(
                    f"{file}: the Pooling module has no text path; {_restore(file)}", model=name
                )
            pooling = _pooling(_json(folder / path / "config.json", name), name)
        else:
            raise UnsupportedCheckpoint(f"module {kind!r} is not covered", model=name)
    return pooling, normalize


def _pooling(config: dict[str, Any], name: str) -> str:
    modes = [
        k.removeprefix("pooling_mode_")
        for k, v in config.items()
        if k.startswith("pooling_mode_") and v
    ]
    modes = [m.removesuffix("_token").removesuffix("_tokens") for m in modes]
    if modes in (["mean"], ["cls"]):
        return modes[0]
    raise UnsupportedCheckpoint(f"pooling {'+'.join(modes) or 'none'} is not covered", model=name)


def _max_tokens(folder: Path, positions: int) -> int:
    """The window sentence-transformers uses: its own setting, else the tokenizer's, never past
    the position table."""
    for file, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        try:
            data = json.loads((folder / file).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, positions)
    return positions
