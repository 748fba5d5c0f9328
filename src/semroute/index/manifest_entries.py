"""The typed sections of ``manifest.json`` (the encoder, the settings, each route's vectors, the
FAISS index, the head, the difficulty model, the route files it was built from) and the names
of the files an index folder holds. :class:`~semroute.index.manifest.Manifest` composes them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from semroute.text import printable

__all__ = [
    "ENCODER_DIR",
    "FAISS_FILE",
    "FORMAT",
    "OUT_OF_SCOPE_CLASS",
    "UTTERANCES",
    "DifficultyEntry",
    "DriftEntry",
    "EncoderEntry",
    "HeadEntry",
    "IndexEntry",
    "Part",
    "RouteEntry",
    "SettingsEntry",
    "SourcesEntry",
    "SpanEntry",
    "short",
]

FORMAT = 2
"""2: every file of the index has a checksum in the manifest."""
FAISS_FILE = "index.faiss"
UTTERANCES = "utterances.json"
ENCODER_DIR = "encoder"
OUT_OF_SCOPE_CLASS = "(out of scope)"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1)]
Span = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class Part(BaseModel):
    # JSON types exactly as written (no "0.5" for 0.5, no NaN), and no key we did not write.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class EncoderEntry(Part):
    kind: Name
    name: str
    fingerprint: str
    dim: Annotated[int, Field(gt=0)]
    max_tokens: Annotated[int, Field(gt=0)]


class SettingsEntry(Part):
    default_model: Name
    encoder: str
    encoder_runtime: str
    threshold: Probability
    min_margin: Probability = 0.0


class RouteEntry(Part):
    name: Name
    model: Name
    threshold: Probability
    configured_threshold: Probability
    description: str | None = None
    metadata: dict[str, Any] | None = None
    vectors: Span


class SpanEntry(Part):
    vectors: Span


class IndexEntry(Part):
    file: Literal["index.faiss"]
    type: Literal["flat", "hnsw"]
    metric: Literal["inner_product"]
    count: Annotated[int, Field(ge=0)]
    m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None
    neighbours: int | None = None
    recall_at_10: float | None = None
    nearest_route_agreement: float | None = None
    agreement_sample: int | None = None


class HeadEntry(Part):
    file: Literal["head.npz"]
    classes: list[Name]


class DifficultyEntry(Part):
    """The difficulty model copied into the index (``difficulty/``)."""

    dir: Literal["difficulty"]
    fingerprint: str
    """The encoder fingerprint the model was trained on: the index's own."""
    trained_at: str


class DriftEntry(Part):
    """The drift reference `semroute calibrate` wrote (``drift.json``; see
    :mod:`semroute.index.drift`)."""

    file: Literal["drift.json"]
    rows: Annotated[int, Field(ge=0)]
    calibrated_at: str


class SourcesEntry(Part):
    absolute: str | None = None
    relative: str | None = None
    files: dict[str, str] = {}
    model_files: dict[str, str] = {}


def short(value: object) -> str:
    """``value``'s repr, printable and cut to 60 characters, for a message."""
    text = repr(value)
    return printable(text if len(text) <= 60 else text[:57] + "...")
