"""The route index on disk: a FAISS inner-product index, the utterances and a JSON manifest.

    indexes/default/
    ├── manifest.json     format, versions, encoder, routes digest, thresholds, vector → route ranges,
    │                     declared models and fallback chains (secrets as `os.environ/VAR` only),
    │                     the SHA-256 of every other file (see :mod:`semroute.index.manifest`)
    ├── index.faiss       L2-normalised utterance vectors (inner product = cosine)
    ├── utterances.json   the utterance texts, in vector order (routes', then out-of-scope examples)
    ├── head.npz          the learned head's arrays (see semroute.index.head), when the scorer uses one
    ├── difficulty/       the difficulty model, when the route files set router.difficulty
    └── encoder/          a copy of the ONNX export the vectors came from (queries must use it)

Loading never re-embeds anything and refuses an index that is corrupt (the manifest is checked
against a schema and every file against its checksum, see :mod:`semroute.index.manifest`) or older
than the route files it was built from. Writing one is :mod:`semroute.tuning.build`'s job.

A build swaps a new index in with two renames, under a lock that every writer holds. Readers
never rename anything without that lock: a reader that finds only the parked old index waits
for the live build to finish, or recovers a killed build's index under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.config.routes import file_digest, load_routes, route_files
from semroute.encoders.base import EncoderInfo
from semroute.errors import REBUILD_HINT as REBUILD
from semroute.errors import (
    CorruptIndexError,
    DifficultyModelError,
    EncoderMismatchError,
    IndexLoadError,
    IndexNotFoundError,
    RouteConfigError,
    StaleIndexError,
)
from semroute.index.checksums import open_files, verify_checksums
from semroute.index.difficulty import DIFFICULTY_DIR, DifficultyModel, read_model
from semroute.index.head import Head
from semroute.index.manifest import (
    ENCODER_DIR,
    FAISS_FILE,
    MANIFEST,
    UTTERANCES,
    Manifest,
    parse_manifest,
)
from semroute.index.vectors import VectorStore, read_store

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["IndexedRoute", "RouteIndex"]

SWAP_WAIT = 2.0
"""Seconds a reader waits for a live build to finish swapping the index in (two renames)."""
LOAD_ATTEMPTS = 3


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
    """A loaded index: the vector store, the route table and the manifest they came with."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        store: VectorStore,
        utterances: list[str],
        head: Head | None = None,
        difficulty: DifficultyModel | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.store = store
        """Every example vector: the routes', then the out-of-scope examples'."""
        self.utterances = utterances
        self.head = head
        self.difficulty = difficulty
        """The difficulty model (``router.difficulty``), or None."""
        self.routes = tuple(
            IndexedRoute(
                name=r.name,
                model=r.model,
                threshold=float(r.threshold),
                start=int(r.vectors[0]),
                stop=int(r.vectors[1]),
                description=r.description,
                metadata=r.metadata or {},
            )
            for r in manifest.routes
        )

    @property
    def encoder_info(self) -> EncoderInfo:
        return EncoderInfo(**self.manifest.encoder.model_dump())

    @property
    def scorer(self) -> str:
        return self.manifest.scorer

    @property
    def approximate(self) -> bool:
        """True when queries search an approximate (HNSW) index instead of every example."""
        return self.manifest.approximate

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        """Every stored vector: the routes' examples, then the out-of-scope examples."""
        return self.store.vectors()

    @property
    def route_vectors(self) -> npt.NDArray[np.float32]:
        """The routes' example vectors (out-of-scope examples excluded)."""
        return self.vectors[: self.routes[-1].stop]

    @property
    def out_of_scope(self) -> list[str]:
        return self.utterances[self.routes[-1].stop :]

    @property
    def settings(self) -> dict[str, Any]:
        return self.manifest.settings.model_dump()

    @classmethod
    def load(cls, path: str | Path, *, check_routes: bool = True) -> RouteIndex:
        """Read an index; with ``check_routes`` refuse it if its route files have changed.

        A build may swap a new index in while this reads (see :func:`recover`): a read that
        the swap crossed is retried, so the result is wholly the old index or wholly the new.
        """
        p = Path(path)
        for attempt in range(LOAD_ATTEMPTS):
            where = _settle(p)
            before = _identity(where)
            try:
                index = cls._read(p, where)
            except IndexLoadError:
                # Retried when a swap crossed the read: the folder changed, or was missing as
                # the read began (a swap caught between its two renames, after the settle).
                crossed = before is None or _identity(where) != before
                if attempt + 1 < LOAD_ATTEMPTS and crossed:
                    continue
                raise
            if _identity(where) == before:
                break
        if check_routes:
            index.check_fresh()
        return index

    @classmethod
    def _read(cls, p: Path, where: Path) -> RouteIndex:
        # Every file is opened through one handle on the folder before any is read: a build
        # that renames folders meanwhile cannot mix the files of two indexes.
        try:
            dir_fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as exc:
            raise IndexNotFoundError(f"nothing has been built here; {REBUILD}", path=p) from exc
        except OSError as exc:
            raise CorruptIndexError(
                f"is not a readable folder ({exc.strerror or exc}); {REBUILD}", path=p
            ) from exc
        fds: dict[str, int] = {}
        try:
            manifest = _open_manifest(dir_fd, where)
            fds = open_files(dir_fd, manifest.checksums, p)
            return cls._read_files(p, where, manifest, fds)
        finally:
            for fd in (dir_fd, *fds.values()):
                os.close(fd)

    @classmethod
    def _read_files(
        cls, p: Path, where: Path, manifest: Manifest, fds: dict[str, int]
    ) -> RouteIndex:
        # First: FAISS and numpy trust the files they parse (a damaged header can ask FAISS for a
        # terabyte), so nothing is parsed until it is known to be what the build wrote.
        verify_checksums(p, manifest.checksums, fds)
        try:
            with open(fds[UTTERANCES], encoding="utf-8", closefd=False) as f:
                utterances = json.load(f)
        except (OSError, ValueError, RecursionError) as exc:
            raise CorruptIndexError(f"{UTTERANCES} is unreadable; {REBUILD}", path=p) from exc
        if not isinstance(utterances, list) or not all(isinstance(u, str) for u in utterances):
            raise CorruptIndexError(f"{UTTERANCES} is not a list of texts; {REBUILD}", path=p)
        store = _read_store(_fd_path(fds[FAISS_FILE]), p)
        count = manifest.index.count
        dim = manifest.encoder.dim
        if (store.count, store.dim) != (count, dim) or len(utterances) != count:
            raise CorruptIndexError(
                f"holds {store.count} vectors of dimension {store.dim} and "
                f"{len(utterances)} utterances, the manifest says {count} of {dim}; {REBUILD}",
                path=p,
            )
        head = None
        if manifest.head:
            head = _read_head(_fd_path(fds[manifest.head.file]), manifest, p)
        difficulty = _read_difficulty(fds, manifest, where, p) if manifest.difficulty else None
        return cls(where, manifest, store, utterances, head, difficulty)

    def staleness(self) -> str | None:
        """Why this index no longer matches its route files, or None if it does (or they are gone)."""
        src = self.manifest.sources
        folder = _find_sources(self.path, src.relative, src.absolute)
        if folder is None:
            return None
        try:
            current = {f.name: file_digest(f) for f in route_files(folder)}
        except RouteConfigError:
            return f"its route files in {folder} are gone"
        if current == src.files and _unchanged(src.model_files):
            return None
        try:
            digest = load_routes(folder).digest()
        except RouteConfigError as exc:
            return f"its route files changed and no longer validate ({exc})"
        if digest != self.manifest.routes_digest:
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


def _read_store(file: Path, index_path: Path) -> VectorStore:
    try:
        return read_store(file)
    except RuntimeError as exc:
        raise CorruptIndexError(f"{FAISS_FILE} is unreadable; {REBUILD}", path=index_path) from exc


def _open_manifest(dir_fd: int, where: Path) -> Manifest:
    try:
        fd = os.open(MANIFEST, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return Manifest.read(where)  # names what is missing or wrong
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptIndexError(f"{MANIFEST} is not a regular file; {REBUILD}", path=where)
        return parse_manifest(fd, where)
    finally:
        os.close(fd)


def _fd_path(fd: int) -> Path:
    """A name for an open file that libraries wanting a path (FAISS, numpy) can open."""
    return Path(f"/dev/fd/{fd}")


def _read_head(file: Path, manifest: Manifest, p: Path) -> Head:
    try:
        head = Head.load(file)
    except (OSError, KeyError, ValueError) as exc:
        raise CorruptIndexError(f"the learned head is unreadable; {REBUILD}", path=p) from exc
    assert manifest.head is not None
    classes = len(manifest.head.classes)
    if (
        head.coef.shape != (classes, manifest.encoder.dim)
        or head.intercept.shape != (classes,)
        or head.n_routes != len(manifest.routes)
    ):
        raise CorruptIndexError(f"the learned head does not fit its routes; {REBUILD}", path=p)
    return head


def _read_difficulty(
    fds: dict[str, int], manifest: Manifest, where: Path, p: Path
) -> DifficultyModel:
    prefix = f"{DIFFICULTY_DIR}/"
    files = {n[len(prefix) :]: _fd_path(fd) for n, fd in fds.items() if n.startswith(prefix)}
    try:
        model = read_model(where / DIFFICULTY_DIR, files)
    except DifficultyModelError as exc:
        raise CorruptIndexError(
            f"its difficulty model is unusable ({exc}); {REBUILD}", path=p
        ) from exc
    if model.encoder_info.fingerprint != manifest.encoder.fingerprint:
        raise CorruptIndexError(
            f"its difficulty model was trained for another encoder; {REBUILD}", path=p
        )
    return model


def _unchanged(files: dict[str, str]) -> bool:
    """Whether the LiteLLM configs the models came from still have these digests."""
    try:
        return all(file_digest(Path(f)) == digest for f, digest in files.items())
    except OSError:
        return False


def _find_sources(index_path: Path, relative: str | None, absolute: str | None) -> Path | None:
    for candidate in (relative, absolute):
        if candidate is None:
            continue
        folder = (index_path / candidate) if not Path(candidate).is_absolute() else Path(candidate)
        if folder.exists():
            return folder
    return None


def backup_of(out: Path) -> Path:
    """Where a build parks the index it replaces, for the instant between two renames."""
    return out.parent / f".{out.name}.previous"


def lock_file(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def writer_lock(out: Path) -> Iterator[bool]:
    """Hold the lock that keeps writers (builds, calibrations, recovery) off the index at
    ``out`` (a real path: symlinks resolved). Yields False, without waiting, when another
    holds it. Raises OSError when the lock file cannot be created (a read-only folder)."""
    with open(lock_file(out), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recover(out: Path) -> None:
    """Put back an index whose replacement was interrupted between its two renames.

    Only a holder of :func:`writer_lock` may call this: a build between its two renames also
    leaves only the backup, and putting it back then would make the build fail.
    """
    backup = backup_of(out)
    if not out.exists() and not out.is_symlink() and backup.is_dir():
        with contextlib.suppress(OSError):
            os.replace(backup, out)


def _settle(p: Path) -> Path:
    """Where to read the index at ``p``: ``p`` itself, unless a build was caught between its
    two renames. A live build finishes the swap within moments, so a reader waits for it; a
    killed one is recovered under the writers' lock; where no lock can be taken (a read-only
    folder), the parked index is read where it lies. Readers never rename without the lock."""
    real = Path(os.path.realpath(p))  # builds lock and park the folder a symlink points to
    backup = backup_of(real)
    deadline = time.monotonic() + SWAP_WAIT
    while not real.exists() and backup.is_dir():
        try:
            with writer_lock(real) as locked:
                if locked:
                    recover(real)
                    return p
        except OSError:
            return backup
        if time.monotonic() > deadline:
            return backup
        time.sleep(0.002)
    return p


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def encoder_path(index: RouteIndex) -> Path:
    return index.path / ENCODER_DIR
