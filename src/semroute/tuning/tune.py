"""``semroute tune``: fine-tune the routes' encoder and publish it as an encoder folder.

The folder is an encoder like the default one: the int8 ONNX export (written by the same
torch-free exporter and quantiser, checked the same way), its tokenizer, and ``encoder.json``
with a ``tuned`` section (base model, data fingerprint, recipe, the validation figures before
and after). It is filled next to its destination and renamed into place under the writers'
lock, as ``build-index`` writes an index, so an interrupted tune leaves no half folder; its
files' checksums are written last, and every use checks them (a damaged folder is refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semroute.config.routes import load_routes
from semroute.config.routeset import RouteSet
from semroute.encoders.base import ENCODER_META, ONNX_FILE, TOKENIZER_FILE
from semroute.encoders.cache import CHECKSUMS
from semroute.errors import DataError, SemrouteError
from semroute.files import sha256_file
from semroute.tuning.evaluate import Labelled, load_labelled
from semroute.tuning.finetune import (
    MAX_SEED,
    Progress,
    Recipe,
    TrainingSet,
    require_torch,
    train,
)
from semroute.tuning.publish import build_lock, make_parent, remove_leftovers, replace_dir
from semroute.tuning.tune_measure import measure, verdict

__all__ = ["TuneRequest", "tune_encoder"]

TUNED_FORMAT = 1


@dataclass(frozen=True)
class TuneRequest:
    """What ``semroute tune`` was asked to do."""

    routes: Path
    out: Path
    data: tuple[Path, ...] = ()
    val: Path | None = None
    epochs: int | None = None
    oos_label: str = "oos"
    base: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise SemrouteError(f"seed {self.seed} is out of range; give one from 0 to {MAX_SEED}")


def tune_encoder(request: TuneRequest, *, progress: Progress | None = None) -> dict[str, Any]:
    """Tune, measure and publish; returns what ``semroute tune --json`` prints."""
    started = time.perf_counter()
    routes = load_routes(request.routes)
    data = training_set(routes, [load_labelled(f) for f in request.data], request.oos_label)
    val = load_labelled(request.val) if request.val is not None else None
    if val is not None:
        _check_val(val, routes, request.oos_label)
    require_torch()
    from semroute.encoders.export import ensure_encoder

    base = request.base or _untuned(routes.settings.encoder)
    job = _Job(
        request,
        routes,
        data,
        val,
        base,
        _base_checkpoint(base, "--base" if request.base else "the routes' router.encoder"),
        ensure_encoder(base, "onnx-int8"),
        Recipe(epochs=request.epochs, seed=request.seed),
        progress,
    )
    out = _writable(request.out)
    with build_lock(out):
        remove_leftovers(out)
        try:
            replace_dir(out, job.fill)
        except OSError as exc:
            raise SemrouteError(
                f"cannot write the encoder at {out}: {exc.strerror or exc}"
            ) from exc
    return {
        "encoder": str(request.out),
        **job.record,
        "seconds": round(time.perf_counter() - started, 1),
    }


@dataclass
class _Job:
    """One tune: what it reads, and what it writes into the folder being filled."""

    request: TuneRequest
    routes: RouteSet
    data: TrainingSet
    val: Labelled | None
    base: str
    base_dir: Path
    stock: Path
    recipe: Recipe
    progress: Progress | None
    record: dict[str, Any] = field(default_factory=dict)

    def fill(self, tmp: Path) -> None:
        """Train, export and measure in ``tmp/.work``, then leave only the encoder in ``tmp``."""
        work = tmp / ".work"
        work.mkdir()
        oos = self.request.oos_label
        val_set = _val_set(self.val, self.routes, oos) if self.val is not None else None
        result = train(
            self.base_dir,
            self.data,
            work / "checkpoint",
            self.recipe,
            val=val_set,
            progress=self.progress,
        )
        int8 = work / "int8"
        _export(work / "checkpoint", work / "fp32", int8, name=f"{self.base} tuned")
        self.record.update(
            base=self.base,
            data_fingerprint=_fingerprint(self.data),
            rows=self.data.rows,
            routes=len(self.data.routes),
            out_of_scope=len(self.data.out_of_scope),
            recipe={**self.recipe.to_dict(), "epochs": self.recipe.epochs_for(self.data.rows)},
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            val_scores=result.val_scores,
            validation=str(self.request.val) if self.request.val is not None else None,
            **_leak(self.val, self.data),
            train_seconds=round(result.seconds, 1),
        )
        _write_manifest(int8, self.record)
        before = after = None
        if self.val is not None:
            before = measure(self.routes, self.stock, self.val, work, oos_label=oos)
            after = measure(self.routes, int8, self.val, work, oos_label=oos)
        self.record.update(before=before, after=after, helped=verdict(before, after))
        for f in (ONNX_FILE, TOKENIZER_FILE, ENCODER_META):
            shutil.copyfile(int8 / f, tmp / f)
        shutil.rmtree(work)
        _write_manifest(tmp, self.record)


def _leak(val: Labelled | None, data: TrainingSet) -> dict[str, int]:
    """How many validation rows there are, and how many of them are also training texts (the
    figures on those are optimistic, and early stopping watches them)."""
    if val is None:
        return {}
    trained = (*(t for texts in data.routes.values() for t in texts), *data.out_of_scope)
    return {"validation_rows": len(val.texts), "validation_in_training": val.among(trained)}


def _check_val(val: Labelled, routes: RouteSet, oos_label: str) -> None:
    """Refuse validation rows that name no route, or that hold no in-scope row (nothing would
    say whether a route got better, or when to stop), before any training."""
    truth = val.truth([r.name for r in routes.routes], oos_label, **_OF_ROUTE_FILES)
    if not (truth >= 0).any():
        raise DataError(
            f"all {len(truth)} rows are labelled {oos_label!r} (out of scope), so they cannot "
            "show whether tuning routes queries better; add rows labelled with route names",
            file=val.source,
        )


_OF_ROUTE_FILES = {"of": "the route files", "add": "add those routes to the route files"}
"""How a label naming no route is refused here (tuning reads route files, not an index)."""


def training_set(routes: RouteSet, extra: list[Labelled], oos_label: str) -> TrainingSet:
    """The route files' utterances and out-of-scope examples plus the labelled rows; refuses
    labels that name no route, and data too thin to learn from."""
    texts: dict[str, list[str]] = {r.name: list(r.utterances) for r in routes.routes}
    oos = list(routes.out_of_scope)
    names = list(texts)
    for rows in extra:
        for t, label in zip(
            rows.texts, rows.truth(names, oos_label, **_OF_ROUTE_FILES), strict=True
        ):
            (oos.append(t) if label < 0 else texts[names[label]].append(t))
    texts = {k: list(dict.fromkeys(v)) for k, v in texts.items()}
    learnable = [k for k, v in texts.items() if len(v) >= 2]
    if len(learnable) < 2:
        raise DataError(
            f"only {len(learnable)} route{'s' if len(learnable) != 1 else ''} with two or more "
            "utterances: tuning learns from pairs of one route's utterances against other "
            "routes', so give at least two routes two utterances each (in the route files or "
            "with --data)",
            file=routes.root or "routes",
        )
    return TrainingSet(texts, list(dict.fromkeys(oos)))


def _val_set(val: Labelled, routes: RouteSet, oos_label: str) -> TrainingSet:
    names = [r.name for r in routes.routes]
    by_route: dict[str, list[str]] = {n: [] for n in names}
    oos: list[str] = []
    for t, label in zip(val.texts, val.truth(names, oos_label), strict=True):
        (oos.append(t) if label < 0 else by_route[names[label]].append(t))
    return TrainingSet(by_route, oos)


def _untuned(name: str) -> str:
    """The model to start from when the routes already use a tuned folder: its own base
    (tuning again starts from the stock weights, not from the last tune's int8 export)."""
    try:
        meta = json.loads((Path(name).expanduser() / ENCODER_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return name
    tuned = meta.get("tuned") if isinstance(meta, dict) else None
    base = tuned.get("base") if isinstance(tuned, dict) else None
    return base if isinstance(base, str) and base else name


def _base_checkpoint(name: str, where: str) -> Path:
    """A checkpoint to train from; a prepared (exported) encoder folder, such as a tuned one,
    holds none (refused, naming the model it came from when it records one)."""
    from semroute.encoders.export import locate_model

    folder = Path(name).expanduser()
    if (folder / ENCODER_META).is_file() and not (folder / "config.json").is_file():
        came_from = _untuned(name)
        hint = f" ({came_from} for this one)" if came_from != name else ""
        raise SemrouteError(
            f"{where} {name} is a prepared encoder folder (ONNX, no weights to train); pass "
            f"--base the sentence-transformers model it came from{hint}"
        )
    return locate_model(name)


def _export(checkpoint: Path, fp32: Path, out: Path, *, name: str) -> None:
    """The checkpoint through the very exporter and quantiser the default encoder goes
    through (the torch exporter for an architecture the direct one does not cover)."""
    from semroute.encoders.bert_onnx import UnsupportedCheckpoint, export_bert_onnx, read_checkpoint
    from semroute.encoders.cache import tree_hash
    from semroute.encoders.convert import export_onnx, quantize_export

    fp32.mkdir()
    digest = tree_hash(checkpoint)
    try:
        export_bert_onnx(read_checkpoint(checkpoint, name), fp32, name=name, source_hash=digest)
    except UnsupportedCheckpoint:
        export_onnx(checkpoint, fp32, name=name, source_hash=digest)
    out.mkdir()
    quantize_export(fp32, out)


def _fingerprint(data: TrainingSet) -> str:
    h = hashlib.sha256()
    for name, texts in data.routes.items():
        for t in sorted(texts):
            h.update(f"{name}\0{t}\n".encode())
    for t in sorted(data.out_of_scope):
        h.update(f"\0oos\0{t}\n".encode())
    return h.hexdigest()[:24]


def _write_manifest(folder: Path, record: dict[str, Any]) -> None:
    """``encoder.json`` with the ``tuned`` section, then the checksums of every file."""
    meta = json.loads((folder / ENCODER_META).read_text())
    meta.pop("tuned", None)
    meta["name"] = f"{record['base']} tuned {record['data_fingerprint'][:12]}"
    meta["tuned"] = {"format": TUNED_FORMAT, **record}
    (folder / ENCODER_META).write_text(json.dumps(meta, indent=2))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    sums = {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1))


def _writable(out: Path) -> Path:
    """The folder tune may replace: missing, empty, or an encoder folder (never a user's
    other files); symlinks followed."""
    real = Path(os.path.realpath(out))
    advice = "choose a new or empty folder, such as encoders/tuned"
    if real.exists():
        if not real.is_dir():
            raise SemrouteError(f"refusing to write the encoder at {out}: it is a file; {advice}")
        entries = [p.name for p in real.iterdir()]
        if entries and ENCODER_META not in entries:
            n = len(entries)
            raise SemrouteError(
                f"refusing to write the encoder at {out}: it holds {n} file{'s' if n != 1 else ''} "
                f"that {'is' if n == 1 else 'are'} not an encoder, which tune would delete; {advice}"
            )
    make_parent(real)
    return real
