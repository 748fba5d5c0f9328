"""Building an index: embed the route files' utterances, train the head, write atomically.

The index being replaced is a cache: its vectors are reused for unchanged utterances, its head
warm-starts the new one, and thresholds fitted by ``semroute calibrate`` are kept for routes
whose configured threshold did not change. How the folder is written and swapped in, and which
folders a build refuses to replace, is :mod:`semroute.tuning.publish`'s part.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from semroute.config.routefile import ScorerName
from semroute.config.routes import SCORERS, RouteSet, file_digest, load_routes, route_files
from semroute.encoders.base import Encoder, EncoderInfo
from semroute.errors import SemrouteError
from semroute.index.checksums import checksums_of
from semroute.index.difficulty import DIFFICULTY_DIR, MODEL_FILE, DifficultyModel, read_model
from semroute.index.head import HEAD_FILE, Head, fit_head
from semroute.index.manifest import (
    ENCODER_DIR,
    FAISS_FILE,
    OUT_OF_SCOPE_CLASS,
    UTTERANCES,
    Carried,
    Contents,
    Manifest,
    Provenance,
)
from semroute.index.store import RouteIndex, recover
from semroute.index.vectors import FaissStore, build_store, choose_type
from semroute.routing.scoring import scorer_for
from semroute.tuning.publish import (
    build_lock,
    copy_tree,
    make_parent,
    remove_leftovers,
    replace_dir,
    writable_out,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BuildReport", "IndexType", "build_index"]

IndexType = Literal["auto", "flat", "hnsw"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)

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
    scorer: ScorerName | None = None,
    index_type: IndexType = "auto",
    progress: Progress | None = None,
    encoder_name: str | None = None,
) -> BuildReport:
    """Embed every utterance and write the index to ``out``, replacing what was there atomically.

    ``scorer`` overrides the route files' ``router.scorer``, ``encoder_name`` their
    ``router.encoder`` (a model name or encoder folder, such as ``semroute tune`` writes). ``index_type`` is ``flat`` (exact),
    ``hnsw`` (approximate) or ``auto``: exact up to :data:`semroute.index.vectors.FLAT_LIMIT` utterances.
    """
    started = time.perf_counter()
    if not isinstance(routes, RouteSet):
        routes = load_routes(routes)
    chosen = _check_choices(scorer or routes.settings.scorer, index_type)
    shown = Path(out)
    out = _prepare_out(shown, routes)
    if encoder_name is not None:  # the route files' digest stays theirs: the index is not stale
        settings = replace(routes.settings, encoder=encoder_name)
        encoder, export_dir = _encoder(replace(routes, settings=settings), encoder)
    else:
        encoder, export_dir = _encoder(routes, encoder)
    difficulty = _difficulty_model(routes, encoder.info)

    with build_lock(out):
        writable_out(shown, routes.root)  # again: the folder may have changed while we embedded
        recover(out)
        remove_leftovers(out)
        previous = _previous_index(out, encoder.info)
        table, texts = _route_table(routes)
        n_route_vectors = len(texts)
        texts.extend(routes.out_of_scope)
        vectors, todo = _vectors(texts, previous, encoder, progress)
        store, index_meta = build_store(
            vectors, _owners(table, len(texts)), choose_type(n_route_vectors, index_type)
        )
        head = None
        if scorer_for(chosen).needs_head:
            head = _train_head(vectors, table, n_route_vectors, previous)
        kept = _keep_calibration(table, previous, chosen)
        parts = _manifest_parts(routes, encoder.info, chosen, table, len(texts), index_meta, out)
        parts = _completed(parts, routes, table, head, previous if kept else None, difficulty)
        _write(out, parts, store, texts, head, export_dir, started, difficulty)

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


def _check_choices(scorer: str, index_type: str) -> str:
    if scorer not in SCORERS:
        raise SemrouteError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    if index_type not in INDEX_TYPES:
        raise SemrouteError(
            f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}"
        )
    return scorer


def _encoder(routes: RouteSet, encoder: Encoder | None) -> tuple[Encoder, Path | None]:
    """The encoder to embed with, and the export folder to copy into the index (None for an
    encoder passed in, which has none)."""
    if encoder is not None:
        return encoder, None
    from semroute.encoders.export import ensure_encoder, load_encoder_dir

    export_dir = ensure_encoder(routes.settings.encoder, routes.settings.encoder_runtime)
    return load_encoder_dir(export_dir, threads=None), export_dir


def _difficulty_model(routes: RouteSet, info: EncoderInfo) -> DifficultyModel | None:
    """The route files' difficulty model, checked whole and refused if it was trained on
    another encoder's embeddings than the index's (its scores would mean nothing)."""
    if routes.difficulty is None:
        return None
    model = read_model(routes.difficulty)
    model.check_encoder(info)
    return model


def _difficulty_entry(model: DifficultyModel | None) -> dict[str, Any] | None:
    """The manifest's record of the difficulty model copied into the index."""
    if model is None:
        return None
    return {
        "dir": DIFFICULTY_DIR,
        "fingerprint": model.encoder_info.fingerprint,
        "trained_at": model.spec.trained_at,
    }


def _completed(
    parts: tuple[Provenance, Contents, Carried],
    routes: RouteSet,
    table: list[dict[str, Any]],
    head: Head | None,
    calibrated: RouteIndex | None,
    difficulty: DifficultyModel | None,
) -> tuple[Provenance, Contents, Carried]:
    """``parts`` with the head's classes, the calibration whose thresholds were carried over
    and the difficulty model."""
    provenance, contents, carried = parts
    classes = None
    if head is not None:
        classes = [r["name"] for r in table] + ([OUT_OF_SCOPE_CLASS] if routes.out_of_scope else [])
    calibration = None
    if calibrated is not None and calibrated.manifest.calibration is not None:
        calibration = {
            **calibrated.manifest.calibration,
            "carried_over_at": provenance.built_at,
        }
    return (
        provenance,
        replace(contents, head_classes=classes),
        replace(carried, calibration=calibration, difficulty=_difficulty_entry(difficulty)),
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
    parts: tuple[Provenance, Contents, Carried],
    store: FaissStore,
    texts: list[str],
    head: Head | None,
    export_dir: Path | None,
    started: float,
    difficulty: DifficultyModel | None = None,
) -> None:
    """Write every file of the index and swap it in; the manifest, with the others'
    checksums, comes last."""

    def fill(tmp: Path) -> None:
        if difficulty is not None:  # only the model's own files, not whatever else is there
            (tmp / DIFFICULTY_DIR).mkdir()
            for name in (MODEL_FILE, *difficulty.spec.checksums):
                shutil.copyfile(difficulty.path / name, tmp / DIFFICULTY_DIR / name)
        store.write(tmp / FAISS_FILE)
        (tmp / UTTERANCES).write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        if head is not None:
            head.save(tmp / HEAD_FILE)
        if export_dir is not None:
            copy_tree(export_dir, tmp / ENCODER_DIR)
        build_seconds = round(time.perf_counter() - started, 3)
        provenance, contents, carried = parts
        manifest = Manifest.create(
            out,
            provenance=replace(provenance, build_seconds=build_seconds),
            contents=contents,
            carried=carried,
            checksums=checksums_of(tmp),
        )
        manifest.write(tmp)

    try:
        replace_dir(out, fill)
    except OSError as exc:
        raise SemrouteError(f"cannot write the index at {out}: {exc.strerror or exc}") from exc


def _prepare_out(out: Path, routes: RouteSet) -> Path:
    real = writable_out(out, routes.root)
    make_parent(real)
    return real


def _manifest_parts(
    routes: RouteSet,
    info: EncoderInfo,
    scorer: str,
    table: list[dict[str, Any]],
    count: int,
    index_meta: dict[str, Any],
    out: Path,
) -> tuple[Provenance, Contents, Carried]:
    """What :meth:`Manifest.create` needs but the head, the calibration and the checksums."""
    provenance = Provenance(
        semroute_version=_version(),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        routes_digest=routes.digest(),
        sources=_sources(routes, out),
    )
    settings = {
        "default_model": routes.settings.default_model,
        "encoder": routes.settings.encoder,
        "encoder_runtime": routes.settings.encoder_runtime,
        "threshold": routes.settings.threshold,
        "min_margin": routes.settings.min_margin,
    }
    contents = Contents(
        encoder=info.to_dict(),
        scorer=scorer,
        settings=settings,
        routes=table,
        count=count,
        index=index_meta,
    )
    carried = Carried(
        dispatch=routes.dispatch_config().to_dict(),
        policy=routes.policy.to_dict() if routes.policy else None,
        server=routes.server.to_dict() if routes.server else None,
    )
    return provenance, contents, carried


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
        old_classes = previous.manifest.head.classes if previous.manifest.head else []
        if set(old_classes) & set(classes):
            start = previous.head.rows_for(old_classes, classes)
    return fit_head(vectors, labels, n_classes, len(table), start=start)


def _keep_calibration(table: list[dict[str, Any]], previous: RouteIndex | None, scorer: str) -> int:
    """Carry calibrated thresholds over for routes whose configured threshold is unchanged."""
    if previous is None or previous.manifest.calibration is None or previous.scorer != scorer:
        return 0
    old = {r.name: r for r in previous.manifest.routes}
    kept = 0
    for r in table:
        before = old.get(r["name"])
        if before and before.configured_threshold == r["configured_threshold"]:
            r["threshold"] = before.threshold
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
        "model_files": {str(f.resolve()): file_digest(f) for f in _tracked(routes)},
    }


def _tracked(routes: RouteSet) -> list[Path]:
    """Files besides the route files whose change makes the index stale."""
    extra = [routes.difficulty / MODEL_FILE] if routes.difficulty is not None else []
    return [*routes.model_files, *extra]


def _version() -> str:
    from semroute.version import __version__

    return __version__
