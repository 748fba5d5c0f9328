"""An index's ``manifest.json``: the one place that knows its keys, and the checks it must pass.

An index folder is untrusted input like any other: a manifest is validated against a schema
before anything reads a field from it, and it records a SHA-256 checksum of every file of the
index (``index.faiss``, ``utterances.json``, ``head.npz``, the encoder's files), checked on load.
A damaged, truncated or swapped file is refused with one line that names it, never a traceback
and never an index that quietly routes wrong.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from semroute.config.policy import Policy
from semroute.config.routes import SCORERS
from semroute.config.server import ServerSettings
from semroute.errors import REBUILD_HINT as REBUILD
from semroute.errors import CorruptIndexError, IndexNotFoundError
from semroute.files import atomic_write
from semroute.index.checksums import MANIFEST, checksums_of
from semroute.index.difficulty import DIFFICULTY_DIR, MODEL_FILE
from semroute.index.head import HEAD_FILE
from semroute.index.manifest_entries import (
    ENCODER_DIR,
    FAISS_FILE,
    FORMAT,
    OUT_OF_SCOPE_CLASS,
    UTTERANCES,
    DifficultyEntry,
    DriftEntry,
    EncoderEntry,
    HeadEntry,
    IndexEntry,
    RouteEntry,
    SettingsEntry,
    SourcesEntry,
    SpanEntry,
)
from semroute.index.manifest_entries import Part as _Part
from semroute.index.manifest_entries import short as _short
from semroute.index.manifest_parts import Carried, Contents, Provenance, manifest_data
from semroute.index.manifest_sections import (
    check_dispatch,
    check_format,
    first_problem,
    policy_of,
    server_of,
)
from semroute.text import printable

# MANIFEST and checksums_of live in semroute.index.checksums, the file names and sections in
# semroute.index.manifest_entries, create's parameters in semroute.index.manifest_parts;
# all importable from here as before.
__all__ = [
    "ENCODER_DIR",
    "FAISS_FILE",
    "FORMAT",
    "MANIFEST",
    "OUT_OF_SCOPE_CLASS",
    "UTTERANCES",
    "Carried",
    "Contents",
    "DifficultyEntry",
    "EncoderEntry",
    "HeadEntry",
    "IndexEntry",
    "Manifest",
    "Provenance",
    "RouteEntry",
    "SettingsEntry",
    "SourcesEntry",
    "SpanEntry",
    "checksums_of",
    "is_index_folder",
    "parse_manifest",
]

MAX_MANIFEST_BYTES = 64 << 20
"""Far above any real manifest (a 150-route index's is about 60 kB); a bigger one is refused
before it is read, so a hostile file cannot make loading take unbounded memory."""
INDEX_ENTRIES = frozenset(
    {MANIFEST, FAISS_FILE, UTTERANCES, HEAD_FILE, ENCODER_DIR, DIFFICULTY_DIR}
)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class Manifest(_Part):
    """What ``manifest.json`` holds (see :mod:`semroute.index.store` for the folder around it).

    Obtained validated from :meth:`read` or :meth:`create`; changed by :meth:`with_thresholds`
    into a new value; written by :meth:`write`. The JSON is kept as it was read, so writing a
    manifest back changes nothing but what was changed.
    """

    format: Literal[2]
    semroute_version: str
    built_at: str
    build_seconds: float | None = None
    encoder: EncoderEntry
    scorer: str
    routes_digest: str
    sources: SourcesEntry
    settings: SettingsEntry
    routes: Annotated[list[RouteEntry], Field(min_length=1)]
    out_of_scope: SpanEntry
    dispatch: dict[str, Any]
    index: IndexEntry
    utterances_file: Literal["utterances.json"]
    head: HeadEntry | None = None
    calibration: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    """Rules and tiers (absent when the route files have none)."""
    server: dict[str, Any] | None = None
    """The `server:` settings of `semroute serve` (absent when no route file has them)."""
    difficulty: DifficultyEntry | None = None
    drift: DriftEntry | None = None
    """The calibration data's confidence distribution (see :mod:`semroute.index.drift`)."""
    checksums: dict[str, str]

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, value: str) -> str:
        if value not in SCORERS:
            raise ValueError(f"unknown scorer {_short(value)}; this semroute knows {SCORERS}")
        return value

    @field_validator("checksums")
    @classmethod
    def _safe_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            parts = PurePosixPath(name).parts
            if not parts or name.startswith("/") or ".." in parts or "\\" in name:
                raise ValueError(f"file name {_short(name)} is not inside the index")
            if not _SHA256.fullmatch(digest):
                raise ValueError(f"{_short(name)} has no SHA-256 checksum")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("two routes have the same name")
        # Each route owns the next slice of vectors, then the out-of-scope examples end them.
        stop = 0
        for route in self.routes:
            start, end = route.vectors
            if start != stop or end <= start:
                raise ValueError(f"route {_short(route.name)} has vectors {[start, end]}")
            stop = end
        if list(self.out_of_scope.vectors) != [stop, self.index.count]:
            raise ValueError(
                f"out-of-scope vectors {list(self.out_of_scope.vectors)} do not end the "
                f"{self.index.count} vectors"
            )
        if self.head is not None:
            oos = [OUT_OF_SCOPE_CLASS] if self.index.count > stop else []
            if self.head.classes != names + oos:
                raise ValueError("the head's classes are not the routes'")
        required = {FAISS_FILE, UTTERANCES} | ({HEAD_FILE} if self.head else set())
        if self.encoder.kind in ("onnx", "static"):
            required.add(f"{ENCODER_DIR}/encoder.json")
        if self.difficulty is not None:
            required.add(f"{DIFFICULTY_DIR}/{MODEL_FILE}")
            if self.difficulty.fingerprint != self.encoder.fingerprint:
                raise ValueError("the difficulty model was trained for another encoder")
        if self.drift is not None:
            required.add(self.drift.file)
        missing = sorted(required - self.checksums.keys())
        if missing:
            raise ValueError(f"no checksum for {', '.join(missing)}")
        return self

    _json: dict[str, Any] = PrivateAttr(default_factory=dict)

    # --- reading, creating, changing, writing ---

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest of the index at ``path``, validated; raises :class:`CorruptIndexError`
        (or :class:`IndexNotFoundError` when nothing is there)."""
        return _read(path)

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        provenance: Provenance,
        contents: Contents,
        carried: Carried,
        checksums: Mapping[str, str],
    ) -> Manifest:
        """A new index's manifest, validated (``path``: the index, for messages)."""
        return _from_dict(manifest_data(provenance, contents, carried, checksums), path)

    def with_thresholds(
        self, thresholds: Sequence[float], calibration: Mapping[str, Any], path: Path
    ) -> Manifest:
        """This manifest with one threshold per route (in route order) and a record of the
        calibration that fitted them; validated (``path``: the index, for messages)."""
        data = self.to_dict()
        data["routes"] = [
            # Full precision: a fitted threshold sits exactly on an observed confidence, and
            # rounding it up would send that row to the default model.
            dict(r, threshold=float(t))
            for r, t in zip(data["routes"], thresholds, strict=True)
        ]
        data["calibration"] = dict(calibration)
        return _from_dict(data, path)

    def with_drift(self, entry: Mapping[str, Any], digest: str, path: Path) -> Manifest:
        """This manifest with the drift reference ``entry`` (its file's SHA-256 ``digest``)."""
        data = self.to_dict()
        data["drift"] = dict(entry)
        data["checksums"] = {**data["checksums"], entry["file"]: digest}
        return _from_dict(data, path)

    def write(self, path: Path) -> None:
        """Replace the manifest of the index at ``path`` atomically."""
        atomic_write(path / MANIFEST, _dump(self._json, path))

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON data (a copy)."""
        return copy.deepcopy(self._json)

    # --- what the rest of semroute asks ---

    def server_settings(self, path: Path) -> ServerSettings | None:
        """The `server:` settings, validated (None when there are none; ``path``: for messages)."""
        return server_of(self.server, path)

    def rules(self, path: Path) -> Policy:
        """The rules and tiers, validated (empty when there are none; ``path``: for messages)."""
        return policy_of(self.policy, path)

    @property
    def approximate(self) -> bool:
        """True when queries search an approximate (HNSW) index instead of every example."""
        return self.index.type == "hnsw"


def _read(path: Path) -> Manifest:
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        if not path.exists():
            raise IndexNotFoundError(f"nothing has been built here; {REBUILD}", path=path)
        raise CorruptIndexError(f"{MANIFEST} is missing; {REBUILD}", path=path)
    try:
        fd = os.open(manifest_file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CorruptIndexError(f"{MANIFEST} is unreadable; {REBUILD}", path=path) from exc
    try:
        return parse_manifest(fd, path)
    finally:
        os.close(fd)


def parse_manifest(fd: int, path: Path) -> Manifest:
    """The manifest read from the open file ``fd``, validated (``path``: for messages)."""
    try:
        if os.fstat(fd).st_size > MAX_MANIFEST_BYTES:
            raise CorruptIndexError(
                f"{MANIFEST} is too large to be a manifest; {REBUILD}", path=path
            )
        raw = _read_all(fd)
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        raise CorruptIndexError(f"{MANIFEST} is not valid JSON; {REBUILD}", path=path) from exc
    if not isinstance(data, dict):
        raise CorruptIndexError(f"{MANIFEST} is not a JSON object; {REBUILD}", path=path)
    check_format(data.get("format"), path)
    manifest = validate(raw, path)
    manifest._json = data
    return manifest


def validate(raw: bytes | str, path: Path) -> Manifest:
    """Parse manifest JSON against the schema, mapping any problem to one line."""
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptIndexError(f"{MANIFEST}: {first_problem(exc)}; {REBUILD}", path=path) from exc
    check_dispatch(manifest.dispatch, path)
    server_of(manifest.server, path)
    rule = policy_of(manifest.policy, path).uses("difficulty")
    if rule is not None and manifest.difficulty is None:
        raise CorruptIndexError(
            f"rule {printable(repr(rule.name))} tests `difficulty` and the index holds no "
            f"difficulty model; {REBUILD}",
            path=path,
        )
    return manifest


def _dump(data: dict[str, Any], path: Path) -> str:
    try:
        return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise CorruptIndexError(
            f"refusing to write a manifest holding a value that is not a finite number ({exc})",
            path=path,
        ) from exc


def _from_dict(data: dict[str, Any], path: Path) -> Manifest:
    """``data`` validated as a manifest, exactly as it would be read back once written."""
    text = _dump(data, path)
    manifest = validate(text, path)
    manifest._json = json.loads(text)
    return manifest


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def is_index_folder(folder: Path) -> bool:
    """Whether a build may replace ``folder``: it is empty, or holds a semroute manifest, or
    holds nothing but what is left of an index. Anything else may be the user's own files."""
    try:
        entries = {e.name for e in os.scandir(folder)}
    except OSError:
        return False
    if not entries:
        return True
    try:
        manifest_file = folder / MANIFEST
        if manifest_file.is_file() and manifest_file.stat().st_size <= MAX_MANIFEST_BYTES:
            data = json.loads(manifest_file.read_bytes())
            if isinstance(data, dict) and {"format", "routes_digest"} <= data.keys():
                return True
    except (OSError, ValueError, RecursionError):
        pass
    leftovers = {e for e in entries if not e.startswith(f".{MANIFEST}.")}
    return leftovers <= INDEX_ENTRIES and bool(leftovers & {FAISS_FILE, UTTERANCES})
