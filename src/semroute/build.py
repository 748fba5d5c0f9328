"""Building an index: embed the route files' utterances, train the head, write atomically.

A build writes into a fresh sibling folder and renames it into place, so an interrupted build
leaves the previous index untouched; two builds of one index cannot run at once. It only ever
replaces a folder that holds an index (or an empty or missing one): anything else at ``out``
may be the user's own files, and is refused. A symlink at ``out`` is followed, so the folder it
points to is replaced and the link itself stays as it is. The index being
replaced is a cache: its vectors are reused for unchanged utterances, its head warm-starts the
new one, and thresholds fitted by ``semroute calibrate`` are kept for routes whose configured
threshold did not change.
"""

from __future__ import annotations

import contextlib
import errno
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

from semroute.config import SCORERS, RouteSet, file_digest, load_routes, route_files
from semroute.encoders import Encoder, EncoderInfo
from semroute.errors import SemrouteError
from semroute.head import HEAD_FILE, Head, fit_head
from semroute.index import RouteIndex, backup_of, recover, writer_lock
from semroute.manifest import (
    ENCODER_DIR,
    FAISS_FILE,
    FORMAT,
    MANIFEST,
    OUT_OF_SCOPE_CLASS,
    UTTERANCES,
    checksums_of,
    is_index_folder,
    validate,
)
from semroute.search import choose_type, make_index
from semroute.text import printable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BuildReport", "build_index"]

NEEDS_HEAD = {"head", "hybrid"}
INDEX_TYPES = ("auto", "flat", "hnsw")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BuildReport:
    """What a build did."""

    path: Path
    routes: int
    utterances: int
    out_of_scope: int
    embedded: int
    reused: int
    kept_thresholds: int
    """Routes whose calibrated threshold was carried over from the index being replaced."""
    seconds: float


def build_index(
    routes: RouteSet | str | Path,
    out: str | Path,
    *,
    encoder: Encoder | None = None,
    scorer: str | None = None,
    index_type: str = "auto",
    progress: Progress | None = None,
) -> BuildReport:
    """Embed every utterance and write the index to ``out``, replacing what was there atomically.

    ``scorer`` overrides the route files' ``router.scorer``. ``index_type`` is ``flat`` (exact),
    ``hnsw`` (approximate) or ``auto``: exact up to :data:`semroute.search.FLAT_LIMIT` utterances.
    """
    started = time.perf_counter()
    if not isinstance(routes, RouteSet):
        routes = load_routes(routes)
    scorer = scorer or routes.settings.scorer
    if scorer not in SCORERS:
        raise SemrouteError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    if index_type not in INDEX_TYPES:
        raise SemrouteError(
            f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}"
        )
    shown = Path(out)
    out = _prepare_out(shown, routes)
    export_dir: Path | None = None
    if encoder is None:
        from semroute.export import ensure_encoder, load_encoder_dir

        export_dir = ensure_encoder(routes.settings.encoder, routes.settings.encoder_runtime)
        encoder = load_encoder_dir(export_dir, threads=None)
    info = encoder.info

    with build_lock(out):
        writable_out(shown, routes.root)  # again: the folder may have changed while we embedded
        recover(out)
        _remove_leftovers(out)
        previous = _previous_index(out, info)
        table, texts = _route_table(routes)
        n_route_vectors = len(texts)
        texts.extend(routes.out_of_scope)
        vectors, todo = _vectors(texts, previous, encoder, progress)
        faiss_index, index_meta = make_index(
            vectors, _owners(table, len(texts)), choose_type(n_route_vectors, index_type)
        )
        head = None
        if scorer in NEEDS_HEAD:
            head = _train_head(vectors, table, n_route_vectors, previous)
        kept = _keep_calibration(table, previous, scorer)
        manifest = _manifest(routes, info, scorer, table, len(texts), index_meta, out)
        if head is not None:
            manifest["head"] = {
                "file": HEAD_FILE,
                "classes": [r["name"] for r in table]
                + ([OUT_OF_SCOPE_CLASS] if routes.out_of_scope else []),
            }
        if kept:
            manifest["calibration"] = {
                **previous.manifest["calibration"],  # type: ignore[union-attr]
                "carried_over_at": manifest["built_at"],
            }
        _write(out, manifest, faiss_index, texts, head, export_dir, started)

    return BuildReport(
        path=shown,
        routes=len(table),
        utterances=n_route_vectors,
        out_of_scope=len(routes.out_of_scope),
        embedded=len(todo),
        reused=len(texts) - len(todo),
        kept_thresholds=kept,
        seconds=time.perf_counter() - started,
    )


def _vectors(
    texts: list[str], previous: RouteIndex | None, encoder: Encoder, progress: Progress | None
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """Every text's vector, reusing the previous index's; also which texts had to be embedded."""
    import numpy as np

    cached = dict(zip(previous.utterances, previous.vectors, strict=True)) if previous else {}
    vectors = np.zeros((len(texts), encoder.info.dim), dtype=np.float32)
    todo = [i for i, t in enumerate(texts) if t not in cached]
    for i, t in enumerate(texts):
        if t in cached:
            vectors[i] = cached[t]
    _embed_into(vectors, texts, todo, encoder, progress)
    return vectors, todo


def _owners(table: list[dict[str, Any]], count: int) -> npt.NDArray[np.int64]:
    """Each vector's route (-1: an out-of-scope example)."""
    import numpy as np

    owner = np.full(count, -1, dtype=np.int64)
    for i, r in enumerate(table):
        owner[r["vectors"][0] : r["vectors"][1]] = i
    return owner


def _write(
    out: Path,
    manifest: dict[str, Any],
    faiss_index: Any,
    texts: list[str],
    head: Head | None,
    export_dir: Path | None,
    started: float,
) -> None:
    """Write every file of the index and swap it in; the manifest, with the others'
    checksums, comes last."""

    def fill(tmp: Path) -> None:
        _write_faiss(tmp / FAISS_FILE, faiss_index)
        (tmp / UTTERANCES).write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        if head is not None:
            head.save(tmp / HEAD_FILE)
        if export_dir is not None:
            _copy_tree(export_dir, tmp / ENCODER_DIR)
        manifest["checksums"] = checksums_of(tmp)
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False)
        validate(text, out)
        (tmp / MANIFEST).write_text(text, encoding="utf-8")

    try:
        _replace_dir(out, fill)
    except OSError as exc:
        raise SemrouteError(f"cannot write the index at {out}: {exc.strerror or exc}") from exc


def _prepare_out(out: Path, routes: RouteSet) -> Path:
    real = writable_out(out, routes.root)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SemrouteError(f"cannot create {real.parent}: {exc.strerror or exc}") from exc
    return real


def _manifest(
    routes: RouteSet,
    info: EncoderInfo,
    scorer: str,
    table: list[dict[str, Any]],
    count: int,
    index_meta: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """Everything the manifest says but the head, the calibration and the checksums."""
    n_route_vectors = table[-1]["vectors"][1] if table else 0
    return {
        "format": FORMAT,
        "semroute_version": _version(),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoder": info.to_dict(),
        "scorer": scorer,
        "routes_digest": routes.digest(),
        "sources": _sources(routes, out),
        "settings": {
            "default_model": routes.settings.default_model,
            "encoder": routes.settings.encoder,
            "encoder_runtime": routes.settings.encoder_runtime,
            "threshold": routes.settings.threshold,
            "min_margin": routes.settings.min_margin,
        },
        "routes": table,
        "out_of_scope": {"vectors": [n_route_vectors, count]},
        "dispatch": routes.dispatch_config().to_dict(),
        "index": {"file": FAISS_FILE, **index_meta, "count": count},
        "utterances_file": UTTERANCES,
    }


def _route_table(routes: RouteSet) -> tuple[list[dict[str, Any]], list[str]]:
    texts: list[str] = []
    table: list[dict[str, Any]] = []
    for route in routes.routes:
        threshold = routes.threshold_for(route)
        table.append(
            {
                "name": route.name,
                "model": routes.model_for(route),
                "threshold": threshold,
                "configured_threshold": threshold,
                "description": route.description,
                "metadata": dict(route.metadata),
                "vectors": [len(texts), len(texts) + len(route.utterances)],
            }
        )
        texts.extend(route.utterances)
    return table, texts


def _train_head(
    vectors: npt.NDArray[np.float32],
    table: list[dict[str, Any]],
    n_route_vectors: int,
    previous: RouteIndex | None,
) -> Head:
    import numpy as np

    labels = np.full(len(vectors), len(table), dtype=np.int64)  # out-of-scope by default
    for i, r in enumerate(table):
        labels[r["vectors"][0] : r["vectors"][1]] = i
    n_classes = len(table) + (1 if len(vectors) > n_route_vectors else 0)
    classes = [r["name"] for r in table] + [OUT_OF_SCOPE_CLASS][: n_classes - len(table)]
    start = None
    if previous is not None and previous.head is not None:
        old_classes = previous.manifest["head"]["classes"]
        if set(old_classes) & set(classes):
            start = previous.head.rows_for(old_classes, classes)
    return fit_head(vectors, labels, n_classes, len(table), start=start)


def _keep_calibration(table: list[dict[str, Any]], previous: RouteIndex | None, scorer: str) -> int:
    """Carry calibrated thresholds over for routes whose configured threshold is unchanged."""
    if previous is None or "calibration" not in previous.manifest or previous.scorer != scorer:
        return 0
    old = {r["name"]: r for r in previous.manifest["routes"]}
    kept = 0
    for r in table:
        before = old.get(r["name"])
        if before and before.get("configured_threshold") == r["configured_threshold"]:
            r["threshold"] = before["threshold"]
            kept += 1
    return kept


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


def _previous_index(out: Path, info: EncoderInfo) -> RouteIndex | None:
    """The index being replaced, if it was built with the same encoder (else it is no cache)."""
    try:
        old = RouteIndex.load(out, check_routes=False)
    except SemrouteError:
        return None
    return old if old.encoder_info == info else None


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


def _write_faiss(file: Path, index: Any) -> None:
    import faiss

    faiss.write_index(index, str(file))


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy an export into the index. A copy, never a hard link: writing to a linked file
    would write into the shared cache, and every later build would use the damaged export."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name.startswith("."):
            continue  # the cache's own bookkeeping (its checksums), not part of the export
        if f.is_dir():
            _copy_tree(f, dst / f.name)
        elif f.is_file():
            _copy_file(f, dst / f.name)


_FICLONE = 0x40049409
"""ioctl that makes ``dst`` share ``src``'s blocks copy-on-write (btrfs, XFS): a copy that takes
no disk or time until either file changes."""


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return
        except OSError as exc:
            # Filesystems without reflinks (ext4, tmpfs) say so with one of these.
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                raise
        shutil.copyfileobj(fin, fout, 1 << 20)


def _replace_dir(out: Path, fill: Callable[[Path], None]) -> None:
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        fill(tmp)
        backup = backup_of(out)
        _remove(backup)
        if out.exists():
            os.replace(out, backup)
        # A kill between these two renames leaves only the backup; recover() restores it.
        os.replace(tmp, out)
        _remove(backup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove(path: Path) -> None:
    """Delete a folder we made, or whatever else stands at its name (an older semroute could
    leave a symlink there), without following links."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _remove_leftovers(out: Path) -> None:
    """Delete half-written folders of builds that were killed (we hold the lock: none is live)."""
    for leftover in out.parent.glob(f".{out.name}.building-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def writable_out(out: Path, routes_root: Path | None = None) -> Path:
    """The folder a build of ``out`` replaces, with symlinks followed; refuses any that is not
    an index, so no user file can be lost. ``routes_root``: where the route files are."""
    real = Path(os.path.realpath(out))
    where = f"{out}" + (f" (-> {real})" if real != out.absolute() else "")
    advice = "choose a new or empty folder for the index, such as indexes/default"
    if real.parent == real:
        raise SemrouteError(f"refusing to build an index at {where}: it is the root; {advice}")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise SemrouteError(
            f"refusing to build an index at {where}: it is or holds the current folder, which "
            f"a build would replace whole; {advice}"
        )
    if routes_root is not None:
        root = routes_root.resolve()
        if real == root or real in root.parents:
            raise SemrouteError(
                f"refusing to build an index at {where}: it holds the route files, which a "
                f"build would delete; {advice}"
            )
    if not real.exists():
        return real
    if not real.is_dir():
        raise SemrouteError(f"refusing to build an index at {where}: it is a file; {advice}")
    if not is_index_folder(real):
        names = sorted(p.name for p in real.iterdir())
        shown = ", ".join(printable(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        raise SemrouteError(
            f"refusing to build an index at {where}: it holds files that are not an index "
            f"({len(names)}: {shown}), which a build would delete; {advice}"
        )
    return real


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold the lock that keeps two writers (builds, calibrations) off one index."""
    with contextlib.ExitStack() as stack:
        try:
            locked = stack.enter_context(writer_lock(Path(os.path.realpath(out))))
        except OSError as exc:
            raise SemrouteError(f"cannot lock {out} for writing: {exc.strerror or exc}") from exc
        if not locked:
            raise SemrouteError(f"another build is writing {out}; wait for it to finish")
        yield


def _version() -> str:
    from semroute import __version__

    return __version__
