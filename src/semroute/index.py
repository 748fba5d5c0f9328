"""The route index on disk: a FAISS inner-product index, the utterances and a JSON manifest.

    indexes/default/
    ├── manifest.json     format, versions, encoder, routes digest, thresholds, vector → route ranges,
    │                     declared models and fallback chains (secrets as `os.environ/VAR` only)
    ├── index.faiss       L2-normalised utterance vectors (inner product = cosine)
    ├── utterances.json   the utterance texts, in vector order (routes', then out-of-scope examples)
    ├── head.npz          the learned head's arrays (see semroute.head), when the scorer uses one
    └── encoder/          the ONNX export the vectors came from (queries must use the same one)

Loading never re-embeds anything and refuses an index that is corrupt or older than the route
files it was built from. Writing one is :mod:`semroute.build`'s job.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.config import file_digest, load_routes, route_files
from semroute.encoders import EncoderInfo
from semroute.errors import (
    CorruptIndexError,
    EncoderMismatchError,
    IndexNotFoundError,
    RouteConfigError,
    StaleIndexError,
)
from semroute.head import Head
from semroute.search import vectors_of

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["IndexedRoute", "RouteIndex", "read_manifest", "write_manifest"]

FORMAT = 1
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
UTTERANCES = "utterances.json"
ENCODER_DIR = "encoder"
REBUILD = "run `semroute build-index`"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexedRoute:
    """A route as recorded in the manifest, with the slice of vectors that belong to it."""

    name: str
    model: str
    threshold: float
    start: int
    stop: int
    description: str | None = None
    metadata: dict[str, Any] | None = None


class RouteIndex:
    """A loaded index: vectors, the route table and the manifest they came with."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        vectors: npt.NDArray[np.float32],
        utterances: list[str],
        head: Head | None = None,
        faiss_index: Any = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.vectors = vectors
        """Every stored vector: the routes' examples, then the out-of-scope examples."""
        self.utterances = utterances
        self.head = head
        self.faiss = faiss_index
        """The FAISS index (also owns the memory ``vectors`` views)."""
        self.routes = tuple(
            IndexedRoute(
                name=r["name"],
                model=r["model"],
                threshold=float(r["threshold"]),
                start=int(r["vectors"][0]),
                stop=int(r["vectors"][1]),
                description=r.get("description"),
                metadata=r.get("metadata") or {},
            )
            for r in manifest["routes"]
        )

    @property
    def encoder_info(self) -> EncoderInfo:
        return EncoderInfo(**self.manifest["encoder"])

    @property
    def scorer(self) -> str:
        return str(self.manifest["scorer"])

    @property
    def approximate(self) -> bool:
        """True when queries search an approximate (HNSW) index instead of every example."""
        return bool(self.manifest["index"].get("type") == "hnsw")

    @property
    def route_vectors(self) -> npt.NDArray[np.float32]:
        """The routes' example vectors (out-of-scope examples excluded)."""
        return self.vectors[: self.routes[-1].stop]

    @property
    def out_of_scope(self) -> list[str]:
        return self.utterances[self.routes[-1].stop :]

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest["settings"])

    @classmethod
    def load(cls, path: str | Path, *, check_routes: bool = True) -> RouteIndex:
        """Read an index; with ``check_routes`` refuse it if its route files have changed."""

        p = Path(path)
        recover(p)
        manifest = read_manifest(p)
        for name in (FAISS_FILE, UTTERANCES):
            if not (p / name).is_file():
                raise CorruptIndexError(f"{name} is missing; {REBUILD}", path=p)
        try:
            utterances = json.loads((p / UTTERANCES).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptIndexError(f"{UTTERANCES} is unreadable; {REBUILD}", path=p) from exc
        faiss_index, vectors = _read_faiss(p / FAISS_FILE, p)
        count = int(manifest["index"]["count"])
        dim = int(manifest["encoder"]["dim"])
        if vectors.shape != (count, dim) or len(utterances) != count:
            raise CorruptIndexError(
                f"holds {vectors.shape[0]} vectors of dimension {vectors.shape[1]} and "
                f"{len(utterances)} utterances, the manifest says {count} of {dim}; {REBUILD}",
                path=p,
            )
        head = None
        if manifest.get("head"):
            try:
                head = Head.load(p / manifest["head"]["file"])
            except (OSError, KeyError, ValueError) as exc:
                raise CorruptIndexError(
                    f"the learned head is unreadable; {REBUILD}", path=p
                ) from exc
            if head.coef.shape[1] != dim or head.n_routes != len(manifest["routes"]):
                raise CorruptIndexError(
                    f"the learned head does not fit its routes; {REBUILD}", path=p
                )
        index = cls(p, manifest, vectors, utterances, head, faiss_index)
        if check_routes:
            index.check_fresh()
        return index

    def staleness(self) -> str | None:
        """Why this index no longer matches its route files, or None if it does (or they are gone)."""
        src = self.manifest.get("sources") or {}
        folder = _find_sources(self.path, src)
        if folder is None:
            return None
        try:
            current = {f.name: file_digest(f) for f in route_files(folder)}
        except RouteConfigError:
            return f"its route files in {folder} are gone"
        if current == src.get("files") and _unchanged(src.get("model_files") or {}):
            return None
        try:
            digest = load_routes(folder).digest()
        except RouteConfigError as exc:
            return f"its route files changed and no longer validate ({exc})"
        if digest != self.manifest["routes_digest"]:
            return f"it was built from other routes than those now in {folder}"
        return None

    def check_fresh(self) -> None:
        reason = self.staleness()
        if reason:
            raise StaleIndexError(f"{reason}; {REBUILD}", path=self.path)

    def check_encoder(self, info: EncoderInfo) -> None:
        built = self.encoder_info
        if (built.kind, built.fingerprint, built.dim) != (info.kind, info.fingerprint, info.dim):
            raise EncoderMismatchError(
                f"was built with encoder {built.name!r} ({built.fingerprint}), not "
                f"{info.name!r} ({info.fingerprint}); {REBUILD} with the encoder you want",
                path=self.path,
                expected=built.fingerprint,
                found=info.fingerprint,
            )


def read_manifest(path: Path) -> dict[str, Any]:
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        if not path.exists():
            raise IndexNotFoundError(f"nothing has been built here; {REBUILD}", path=path)
        raise CorruptIndexError(f"{MANIFEST} is missing; {REBUILD}", path=path)
    try:
        manifest: dict[str, Any] = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{MANIFEST} is not valid JSON; {REBUILD}", path=path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise CorruptIndexError(
            f"manifest format {found!r} is not the supported {FORMAT}; {REBUILD}", path=path
        )
    missing = {
        "encoder",
        "routes",
        "settings",
        "index",
        "routes_digest",
        "scorer",
    } - manifest.keys()
    if missing:
        raise CorruptIndexError(f"manifest lacks {sorted(missing)}; {REBUILD}", path=path)
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace an index's manifest atomically (used by tools that refit thresholds)."""
    tmp = path / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path / MANIFEST)


def _read_faiss(file: Path, index_path: Path) -> tuple[Any, npt.NDArray[np.float32]]:
    import faiss

    try:
        index = faiss.read_index(str(file))
        return index, vectors_of(index)
    except RuntimeError as exc:
        raise CorruptIndexError(f"{FAISS_FILE} is unreadable; {REBUILD}", path=index_path) from exc


def _unchanged(files: dict[str, str]) -> bool:
    """Whether the LiteLLM configs the models came from still have these digests."""
    try:
        return all(file_digest(Path(f)) == digest for f, digest in files.items())
    except OSError:
        return False


def _find_sources(index_path: Path, src: dict[str, Any]) -> Path | None:
    for candidate in (src.get("relative"), src.get("absolute")):
        if candidate is None:
            continue
        folder = (index_path / candidate) if not Path(candidate).is_absolute() else Path(candidate)
        if folder.exists():
            return folder
    return None


def backup_of(out: Path) -> Path:
    """Where a build parks the index it replaces, for the instant between two renames."""
    return out.parent / f".{out.name}.previous"


def recover(out: Path) -> None:
    """Put back an index whose replacement was interrupted between its two renames."""
    backup = backup_of(out)
    if not out.exists() and backup.is_dir():
        with contextlib.suppress(OSError):
            os.replace(backup, out)


def encoder_path(index: RouteIndex) -> Path:
    return index.path / ENCODER_DIR
