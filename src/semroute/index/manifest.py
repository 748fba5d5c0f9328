"""An index's ``manifest.json``: the one place that knows its keys, and the checks it must pass.

An index folder is untrusted input like any other: a manifest is validated against a schema
before anything reads a field from it, and it records a SHA-256 checksum of every file of the
index (``index.faiss``, ``utterances.json``, ``head.npz``, the encoder's files), checked on load.
A damaged, truncated or swapped file is refused with one line that names it, never a traceback
and never an index that quietly routes wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from semroute.config.deployments import DispatchConfig
from semroute.config.routes import SCORERS
from semroute.errors import CorruptIndexError, IndexNotFoundError
from semroute.index.head import HEAD_FILE
from semroute.text import printable

__all__ = [
    "FORMAT",
    "Manifest",
    "checksums_of",
    "is_index_folder",
    "open_files",
    "parse_manifest",
    "read_manifest",
    "verify_checksums",
    "write_manifest",
]

FORMAT = 2
"""2: every file of the index has a checksum in the manifest."""
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
UTTERANCES = "utterances.json"
ENCODER_DIR = "encoder"
REBUILD = "run `semroute build-index`"
OUT_OF_SCOPE_CLASS = "(out of scope)"
MAX_MANIFEST_BYTES = 64 << 20
"""Far above any real manifest (a 150-route index's is about 60 kB); a bigger one is refused
before it is read, so a hostile file cannot make loading take unbounded memory."""
INDEX_ENTRIES = frozenset({MANIFEST, FAISS_FILE, UTTERANCES, HEAD_FILE, ENCODER_DIR})

_SHA256 = re.compile(r"[0-9a-f]{64}")

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1)]
Span = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class _Part(BaseModel):
    # JSON types exactly as written (no "0.5" for 0.5, no NaN), and no key we did not write.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class EncoderEntry(_Part):
    kind: Name
    name: str
    fingerprint: str
    dim: Annotated[int, Field(gt=0)]
    max_tokens: Annotated[int, Field(gt=0)]


class SettingsEntry(_Part):
    default_model: Name
    encoder: str
    encoder_runtime: str
    threshold: Probability
    min_margin: Probability = 0.0


class RouteEntry(_Part):
    name: Name
    model: Name
    threshold: Probability
    configured_threshold: Probability
    description: str | None = None
    metadata: dict[str, Any] | None = None
    vectors: Span


class SpanEntry(_Part):
    vectors: Span


class IndexEntry(_Part):
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


class HeadEntry(_Part):
    file: Literal["head.npz"]
    classes: list[Name]


class SourcesEntry(_Part):
    absolute: str | None = None
    relative: str | None = None
    files: dict[str, str] = {}
    model_files: dict[str, str] = {}


class Manifest(_Part):
    """What ``manifest.json`` holds (see :mod:`semroute.index.store` for the folder around it)."""

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
        missing = sorted(required - self.checksums.keys())
        if missing:
            raise ValueError(f"no checksum for {', '.join(missing)}")
        return self


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index at ``path``, validated; raises :class:`CorruptIndexError`."""
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


def parse_manifest(fd: int, path: Path) -> dict[str, Any]:
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
    _check_format(data.get("format"), path)
    validate(raw, path)
    return data


def validate(raw: bytes | str, path: Path) -> Manifest:
    """Parse manifest JSON against the schema, mapping any problem to one line."""
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptIndexError(f"{MANIFEST}: {_first_problem(exc)}; {REBUILD}", path=path) from exc
    _check_dispatch(manifest.dispatch, path)
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace an index's manifest atomically (used by tools that refit thresholds).

    The new manifest is validated first: a tool cannot leave behind an index that will not load.
    """
    try:
        text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise CorruptIndexError(
            f"refusing to write a manifest holding a value that is not a finite number ({exc})",
            path=path,
        ) from exc
    validate(text, path)
    tmp = path / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path / MANIFEST)


def checksum(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksums_of(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (except the manifest), by relative POSIX path."""
    return {
        f.relative_to(folder).as_posix(): checksum(f)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }


def open_files(dir_fd: int, manifest: dict[str, Any], path: Path) -> dict[str, int]:
    """Open every file the manifest lists, relative to the open folder ``dir_fd``. Refuses a
    missing file, and anything but a regular file (a FIFO or a device in its place would block
    or never end when read). The caller closes the descriptors."""
    fds: dict[str, int] = {}
    try:
        for name in manifest["checksums"]:
            try:
                fds[name] = os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
                regular = stat.S_ISREG(os.fstat(fds[name]).st_mode)
            except FileNotFoundError as exc:
                raise CorruptIndexError(f"{name} is missing; {REBUILD}", path=path) from exc
            except OSError as exc:
                raise CorruptIndexError(
                    f"{name} is unreadable ({exc.strerror or exc}); {REBUILD}", path=path
                ) from exc
            if not regular:
                raise CorruptIndexError(f"{name} is not a regular file; {REBUILD}", path=path)
    except CorruptIndexError:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def verify_checksums(path: Path, manifest: dict[str, Any], fds: dict[str, int]) -> None:
    """Refuse the index if any of its files (open as ``fds``, see :func:`open_files`) differs
    from what the build wrote. Files are hashed side by side: hashlib releases the GIL, and
    loading a 15,000-utterance index hashes about 45 MB."""
    from concurrent.futures import ThreadPoolExecutor

    expected: dict[str, str] = manifest["checksums"]
    names = sorted(expected, key=lambda n: -os.fstat(fds[n]).st_size)  # the biggest first
    with ThreadPoolExecutor(max(1, min(len(names), os.cpu_count() or 1))) as pool:
        found = dict(zip(names, pool.map(lambda n: _checksum_fd(fds[n]), names), strict=True))
    for name in names:
        if found[name] is None:
            raise CorruptIndexError(f"{name} is unreadable; {REBUILD}", path=path)
        if found[name] != expected[name]:
            raise CorruptIndexError(
                f"{name} is damaged or not the file this index was built with (its checksum "
                f"differs); {REBUILD}",
                path=path,
            )


def _checksum_fd(fd: int) -> str | None:
    # pread: the hash neither moves nor depends on the descriptor's offset.
    h = hashlib.sha256()
    offset = 0
    try:
        while block := os.pread(fd, 1 << 20, offset):
            h.update(block)
            offset += len(block)
    except OSError:
        return None
    return h.hexdigest()


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


def _check_format(found: object, path: Path) -> None:
    if found == FORMAT:
        return
    if isinstance(found, int) and not isinstance(found, bool) and 0 < found < FORMAT:
        why = f"was built by an older semroute (manifest format {found}, this one reads {FORMAT})"
    else:
        why = f"manifest format {_short(found)} is not the supported {FORMAT}"
    raise CorruptIndexError(f"{why}; {REBUILD}", path=path)


def _check_dispatch(dispatch: dict[str, Any], path: Path) -> None:
    try:
        DispatchConfig.from_dict(dispatch)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptIndexError(
            f"{MANIFEST}: dispatch settings are malformed ({type(exc).__name__}); {REBUILD}",
            path=path,
        ) from exc


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the manifest"
    message = error["msg"].removeprefix("Value error, ")
    problems = exc.error_count()
    more = f" (and {problems - 1} more problems)" if problems > 1 else ""
    return printable(f"{where}: {message}{more}")


def _short(value: object) -> str:
    text = repr(value)
    return printable(text if len(text) <= 60 else text[:57] + "...")
