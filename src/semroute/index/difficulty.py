"""A difficulty model on disk: plain ``.npy`` arrays and a ``difficulty.json`` that checks them.

    models/difficulty/
    ├── difficulty.json   format, encoder (name, runtime, fingerprint), components and their
    │                     weights, the score → difficulty mapping, the calibrated threshold, the
    │                     target, training metrics, and the SHA-256 of every array file
    └── *.npy             the components' arrays (numpy's own format, read with allow_pickle=False)

A model folder is untrusted input: ``difficulty.json`` is validated against a schema, and each
array file is read into memory, checked against its checksum and only then parsed, with its
shape and dtype checked against what the components need. Nothing is unpickled. Training writes
one (:mod:`semroute.tuning.difficulty`); :mod:`semroute.routing.difficulty` scores queries with
it; ``semroute build-index`` copies it into an index (``difficulty/``).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from semroute.config.routefile import DIFFICULTY_MODEL_FILE
from semroute.encoders.base import EncoderInfo
from semroute.errors import DifficultyModelError
from semroute.text import printable

__all__ = [
    "DIFFICULTY_DIR",
    "MODEL_FILE",
    "Component",
    "DifficultyModel",
    "DifficultySpec",
    "read_model",
    "write_model",
]

FORMAT = 1
MODEL_FILE = DIFFICULTY_MODEL_FILE
DIFFICULTY_DIR = "difficulty"
"""Where an index keeps its copy of the model."""
MAX_FILE_BYTES = 512 << 20
"""Far above any real model (the default one is a few MB); a bigger file is refused unread."""

ComponentType = Literal["softmax", "knn"]
ARRAYS: Mapping[str, tuple[str, ...]] = {
    "softmax": ("coef", "intercept", "values"),
    "knn": ("projection", "offset", "keys", "values"),
}
"""The arrays each kind of component reads (see :mod:`semroute.routing.difficulty`)."""

Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class EncoderEntry(_Part):
    kind: str
    name: str
    fingerprint: str
    dim: Annotated[int, Field(gt=0)]
    max_tokens: Annotated[int, Field(gt=0)]
    runtime: str


class ComponentEntry(_Part):
    type: ComponentType
    weight: Finite
    center: Finite = 0.0
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    k: Annotated[int, Field(gt=0)] | None = None
    arrays: dict[str, str]


class MappingEntry(_Part):
    raw: Annotated[list[Finite], Field(min_length=2)]
    difficulty: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2)]


class DifficultySpec(_Part):
    """What ``difficulty.json`` holds."""

    format: Literal[1]
    semroute_version: str
    trained_at: str
    encoder: EncoderEntry
    components: Annotated[list[ComponentEntry], Field(min_length=1)]
    mapping: MappingEntry
    threshold: Finite
    """The raw score above which a query goes to the strong model (difficulty 0.5)."""
    target: dict[str, float]
    training: dict[str, Any]
    checksums: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> DifficultySpec:
        raw, mapped = self.mapping.raw, self.mapping.difficulty
        if len(raw) != len(mapped):
            raise ValueError("mapping.raw and mapping.difficulty differ in length")
        if any(b <= a for a, b in itertools.pairwise(raw)):
            raise ValueError("mapping.raw is not increasing")
        if any(b < a for a, b in itertools.pairwise(mapped)):
            raise ValueError("mapping.difficulty is decreasing")
        for i, c in enumerate(self.components):
            if set(c.arrays) != set(ARRAYS[c.type]):
                raise ValueError(f"component {i} ({c.type}) needs arrays {ARRAYS[c.type]}")
            if c.type == "knn" and c.k is None:
                raise ValueError(f"component {i} (knn) has no k")
            for file in c.arrays.values():
                if file not in self.checksums:
                    raise ValueError(f"no checksum for {file}")
        for file in self.checksums:
            if "/" in file or "\\" in file or not file.endswith(".npy") or file.startswith("."):
                raise ValueError(f"array file {printable(repr(file))} is not a plain .npy name")
        return self

    @property
    def encoder_info(self) -> EncoderInfo:
        e = self.encoder
        return EncoderInfo(e.kind, e.name, e.fingerprint, e.dim, e.max_tokens)


@dataclass(frozen=True, eq=False)
class Component:
    """One scorer of the model, its output standardised: ``(score - center) / scale``."""

    type: str
    weight: float
    center: float
    scale: float
    k: int | None
    arrays: Mapping[str, npt.NDArray[np.float32]]


@dataclass(frozen=True, eq=False)
class DifficultyModel:
    """A loaded difficulty model: its components and the score → difficulty mapping."""

    spec: DifficultySpec
    components: tuple[Component, ...]
    knots_raw: npt.NDArray[np.float64]
    knots_difficulty: npt.NDArray[np.float64]
    path: Path

    @property
    def encoder_info(self) -> EncoderInfo:
        return self.spec.encoder_info

    def check_encoder(self, info: EncoderInfo) -> None:
        """Refuse to score embeddings of another encoder than the one this model learned on:
        its scores would mean nothing."""
        built = self.encoder_info
        if (built.kind, built.fingerprint, built.dim) != (info.kind, info.fingerprint, info.dim):
            raise DifficultyModelError(
                f"was trained with encoder {built.name!r} ({built.fingerprint}), and "
                f"{info.name!r} ({info.fingerprint}) embeds here; train it again with that "
                "encoder (`semroute train-difficulty DATA --index INDEX`)",
                path=self.path,
            )


def write_model(
    folder: Path, spec: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> DifficultySpec:
    """Write ``arrays`` (by file name) and ``difficulty.json`` (``spec`` plus their checksums)
    into ``folder``, which must exist; the spec is validated first."""
    checksums = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        data = buffer.getvalue()
        (folder / name).write_bytes(data)
        checksums[name] = hashlib.sha256(data).hexdigest()
    full = {**spec, "format": FORMAT, "checksums": checksums}
    try:
        checked = DifficultySpec.model_validate_json(json.dumps(full, allow_nan=False))
    except (ValidationError, ValueError) as exc:
        raise DifficultyModelError(
            f"refusing to write an invalid model ({exc})", path=folder
        ) from exc
    (folder / MODEL_FILE).write_text(json.dumps(full, indent=1) + "\n", encoding="utf-8")
    return checked


def read_model(folder: Path, files: Mapping[str, Path] | None = None) -> DifficultyModel:
    """The model in ``folder``, every file checked before it is parsed. ``files`` maps the
    folder's file names to where to read them (an index passes its open files); by default
    they are read from ``folder``."""

    def where(name: str) -> Path:
        return files[name] if files is not None and name in files else folder / name

    spec = _read_spec(where(MODEL_FILE), folder)
    components = []
    for c in spec.components:
        arrays = {
            key: _read_array(where(file), file, spec.checksums[file], folder)
            for key, file in c.arrays.items()
        }
        _check_shapes(c, arrays, spec.encoder.dim, folder)
        components.append(Component(c.type, c.weight, c.center, c.scale, c.k, arrays))
    return DifficultyModel(
        spec=spec,
        components=tuple(components),
        knots_raw=np.array(spec.mapping.raw, dtype=np.float64),
        knots_difficulty=np.array(spec.mapping.difficulty, dtype=np.float64),
        path=folder,
    )


def _read_bytes(file: Path, name: str, folder: Path) -> bytes:
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise DifficultyModelError(f"{name} is missing", path=folder) from exc
    except OSError as exc:
        raise DifficultyModelError(f"{name} is unreadable ({exc.strerror})", path=folder) from exc
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):  # a FIFO or device would block or never end
            raise DifficultyModelError(f"{name} is not a regular file", path=folder)
        if st.st_size > MAX_FILE_BYTES:
            raise DifficultyModelError(f"{name} is too large to be part of a model", path=folder)
        chunks, offset = [], 0
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
            if offset > MAX_FILE_BYTES:
                raise DifficultyModelError(f"{name} is too large", path=folder)
        return b"".join(chunks)
    except OSError as exc:
        raise DifficultyModelError(f"{name} is unreadable ({exc.strerror})", path=folder) from exc
    finally:
        os.close(fd)


def _read_spec(file: Path, folder: Path) -> DifficultySpec:
    raw = _read_bytes(file, MODEL_FILE, folder)
    try:
        return DifficultySpec.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        at = ".".join(str(p) for p in error["loc"]) or "the file"
        message = error["msg"].removeprefix("Value error, ")
        raise DifficultyModelError(
            printable(
                f"{MODEL_FILE}: {at}: {message}; train it again with `semroute train-difficulty`"
            ),
            path=folder,
        ) from exc


def _read_array(file: Path, name: str, digest: str, folder: Path) -> npt.NDArray[np.float32]:
    data = _read_bytes(file, name, folder)
    if hashlib.sha256(data).hexdigest() != digest:
        raise DifficultyModelError(
            f"{name} is damaged or not the file this model was trained with (its checksum "
            "differs); train it again with `semroute train-difficulty`",
            path=folder,
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DifficultyModelError(f"{name} is not a numpy array file", path=folder) from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise DifficultyModelError(f"{name} does not hold floating-point numbers", path=folder)
    out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DifficultyModelError(f"{name} holds a value that is not a finite number", path=folder)
    return out


def _check_shapes(
    c: ComponentEntry, arrays: Mapping[str, npt.NDArray[np.float32]], dim: int, folder: Path
) -> None:
    if c.type == "softmax":
        coef, intercept, values = arrays["coef"], arrays["intercept"], arrays["values"]
        ok = coef.ndim == 2 and coef.shape[1] == dim
        ok = ok and intercept.shape == (coef.shape[0],) == values.shape
    else:
        projection, offset = arrays["projection"], arrays["offset"]
        keys, values = arrays["keys"], arrays["values"]
        ok = projection.ndim == 2 and projection.shape[1] == dim and offset.shape == (dim,)
        ok = ok and keys.ndim == 2 and keys.shape[1] == projection.shape[0]
        ok = ok and values.shape == (keys.shape[0],)
        ok = ok and c.k is not None and c.k <= keys.shape[0]
    if not ok:
        raise DifficultyModelError(
            f"the arrays of its {c.type} component do not fit the encoder's dimension {dim} or "
            "each other; train it again with `semroute train-difficulty`",
            path=folder,
        )
