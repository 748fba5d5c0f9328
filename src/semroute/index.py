"""The route index on disk: a FAISS inner-product index, the utterances and a JSON manifest.

    indexes/default/
    ├── manifest.json     format, versions, encoder, routes digest, thresholds, vector → route ranges,
    │                     declared models and fallback chains (secrets as `os.environ/VAR` only)
    ├── index.faiss       L2-normalised utterance vectors (inner product = cosine)
    ├── utterances.json   the utterance texts, in vector order
    └── encoder/          the ONNX export the vectors came from (queries must use the same one)

A build writes into a fresh sibling folder and renames it into place, so an interrupted build
leaves the previous index untouched. Loading never re-embeds anything and refuses an index that
is corrupt or older than the route files it was built from.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.config import RouteSet, file_digest, load_routes, route_files
from semroute.encoders import Encoder, EncoderInfo
from semroute.errors import (
    CorruptIndexError,
    EncoderMismatchError,
    IndexNotFoundError,
    RouteConfigError,
    SemrouteError,
    StaleIndexError,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BuildReport", "RouteIndex", "build_index"]

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


@dataclass(frozen=True)
class BuildReport:
    """What a build did."""

    path: Path
    routes: int
    utterances: int
    embedded: int
    reused: int
    seconds: float


class RouteIndex:
    """A loaded index: vectors, the route table and the manifest they came with."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        vectors: npt.NDArray[np.float32],
        utterances: list[str],
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.vectors = vectors
        self.utterances = utterances
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
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest["settings"])

    @classmethod
    def load(cls, path: str | Path, *, check_routes: bool = True) -> RouteIndex:
        """Read an index; with ``check_routes`` refuse it if its route files have changed."""
        import numpy as np

        p = Path(path)
        _recover(p)
        manifest = read_manifest(p)
        for name in (FAISS_FILE, UTTERANCES):
            if not (p / name).is_file():
                raise CorruptIndexError(f"{name} is missing; {REBUILD}", path=p)
        try:
            utterances = json.loads((p / UTTERANCES).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptIndexError(f"{UTTERANCES} is unreadable; {REBUILD}", path=p) from exc
        vectors = _read_vectors(p / FAISS_FILE, p)
        count = int(manifest["index"]["count"])
        dim = int(manifest["encoder"]["dim"])
        if vectors.shape != (count, dim) or len(utterances) != count:
            raise CorruptIndexError(
                f"holds {vectors.shape[0]} vectors of dimension {vectors.shape[1]} and "
                f"{len(utterances)} utterances, the manifest says {count} of {dim}; {REBUILD}",
                path=p,
            )
        index = cls(p, manifest, np.ascontiguousarray(vectors), utterances)
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
    missing = {"encoder", "routes", "settings", "index", "routes_digest"} - manifest.keys()
    if missing:
        raise CorruptIndexError(f"manifest lacks {sorted(missing)}; {REBUILD}", path=path)
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace an index's manifest atomically (used by tools that refit thresholds)."""
    tmp = path / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path / MANIFEST)


def _read_vectors(file: Path, index_path: Path) -> npt.NDArray[np.float32]:
    import faiss

    try:
        index = faiss.read_index(str(file))
        return index.reconstruct_n(0, index.ntotal)  # type: ignore[no-any-return]
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


# --- building ----------------------------------------------------------------------------------


def build_index(
    routes: RouteSet | str | Path,
    out: str | Path,
    *,
    encoder: Encoder | None = None,
    progress: Progress | None = None,
) -> BuildReport:
    """Embed every utterance and write the index to ``out``, replacing what was there atomically.

    Utterances already embedded by the previous index at ``out`` with the same encoder are
    reused, so editing one route re-embeds only that route's new text.
    """
    import numpy as np

    started = time.perf_counter()
    if not isinstance(routes, RouteSet):
        routes = load_routes(routes)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_dir: Path | None = None
    if encoder is None:
        from semroute.export import ensure_onnx

        export_dir = ensure_onnx(routes.settings.encoder)
        from semroute.encoders import OnnxEncoder

        encoder = OnnxEncoder.load(export_dir, threads=None)
    info = encoder.info

    with _build_lock(out):
        _recover(out)
        _remove_leftovers(out)
        texts: list[str] = []
        table: list[dict[str, Any]] = []
        for route in routes.routes:
            table.append(
                {
                    "name": route.name,
                    "model": routes.model_for(route),
                    "threshold": routes.threshold_for(route),
                    "description": route.description,
                    "metadata": dict(route.metadata),
                    "vectors": [len(texts), len(texts) + len(route.utterances)],
                }
            )
            texts.extend(route.utterances)

        previous = _previous_vectors(out, info)
        vectors = np.zeros((len(texts), info.dim), dtype=np.float32)
        todo = [i for i, t in enumerate(texts) if t not in previous]
        for i, t in enumerate(texts):
            if t in previous:
                vectors[i] = previous[t]
        _embed_into(vectors, texts, todo, encoder, progress)

        manifest = {
            "format": FORMAT,
            "semroute_version": _version(),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "encoder": info.to_dict(),
            "routes_digest": routes.digest(),
            "sources": _sources(routes, out),
            "settings": {
                "default_model": routes.settings.default_model,
                "encoder": routes.settings.encoder,
                "threshold": routes.settings.threshold,
                "min_margin": routes.settings.min_margin,
            },
            "routes": table,
            "dispatch": routes.dispatch_config().to_dict(),
            "index": {
                "file": FAISS_FILE,
                "type": "flat",
                "metric": "inner_product",
                "count": len(texts),
            },
            "utterances_file": UTTERANCES,
        }

        def fill(tmp: Path) -> None:
            _write_faiss(tmp / FAISS_FILE, vectors)
            (tmp / UTTERANCES).write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
            if export_dir is not None:
                _link_tree(export_dir, tmp / ENCODER_DIR)
            manifest["build_seconds"] = round(time.perf_counter() - started, 3)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))

        _replace_dir(out, fill)

    return BuildReport(
        path=out,
        routes=len(table),
        utterances=len(texts),
        embedded=len(todo),
        reused=len(texts) - len(todo),
        seconds=time.perf_counter() - started,
    )


def _embed_into(
    vectors: npt.NDArray[np.float32],
    texts: list[str],
    todo: list[int],
    encoder: Encoder,
    progress: Progress | None,
) -> None:
    step = 256
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        vectors[chunk] = encoder.encode([texts[i] for i in chunk]).vectors
        if progress:
            progress(min(start + step, len(todo)), len(todo))


def _previous_vectors(out: Path, info: EncoderInfo) -> dict[str, npt.NDArray[np.float32]]:
    """Vectors of the index being replaced, by text, if it was built with the same encoder."""
    try:
        old = RouteIndex.load(out, check_routes=False)
    except SemrouteError:
        return {}
    if old.encoder_info != info:
        return {}
    return dict(zip(old.utterances, old.vectors, strict=True))


def _sources(routes: RouteSet, out: Path) -> dict[str, Any]:
    if routes.root is None:
        return {}
    folder = routes.root.resolve()
    return {
        "absolute": str(folder),
        "relative": os.path.relpath(folder, out.resolve()),
        "files": {f.name: file_digest(f) for f in route_files(folder)},
        "model_files": {str(f.resolve()): file_digest(f) for f in routes.model_files},
    }


def _write_faiss(file: Path, vectors: npt.NDArray[np.float32]) -> None:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(file))


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link an export into the index (no extra disk), copying where links are impossible."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


def _backup_of(out: Path) -> Path:
    return out.parent / f".{out.name}.previous"


def _replace_dir(out: Path, fill: Callable[[Path], None]) -> None:
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        fill(tmp)
        backup = _backup_of(out)
        shutil.rmtree(backup, ignore_errors=True)
        if out.exists():
            os.replace(out, backup)
        # A kill between these two renames leaves only the backup; _recover() restores it.
        os.replace(tmp, out)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _recover(out: Path) -> None:
    backup = _backup_of(out)
    if not out.exists() and backup.is_dir():
        with contextlib.suppress(OSError):
            os.replace(backup, out)


def _remove_leftovers(out: Path) -> None:
    """Delete half-written folders of builds that were killed (we hold the lock: none is live)."""
    for leftover in out.parent.glob(f".{out.name}.building-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SemrouteError(f"another build is writing {out}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version() -> str:
    from semroute import __version__

    return __version__


def encoder_path(index: RouteIndex) -> Path:
    return index.path / ENCODER_DIR
