"""The torch-free ONNX export against torch's, so the direct graph can never drift from it.

Runs where torch and sentence-transformers are installed (the dev environment); the torch
export is made once into the test model cache. scripts/bench_export.py makes the same comparison
on all of CLINC150's test split.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from semroute.config.routes import DEFAULT_ENCODER
from semroute.encoders.base import ENCODER_META, Embeddings
from semroute.encoders.bert_onnx import UnsupportedCheckpoint, read_checkpoint
from semroute.encoders.cache import cache_dir, cached, publish, tree_hash
from semroute.encoders.convert import export_onnx, quantize_export
from semroute.encoders.export import ensure_encoder, ensure_onnx, locate_model
from semroute.encoders.onnx import OnnxEncoder
from semroute.errors import EncoderError
from tests.conftest import DATA

pytestmark = [
    pytest.mark.model,
    # Looked up, not imported: importing sentence-transformers takes seconds.
    pytest.mark.skipif(
        importlib.util.find_spec("sentence_transformers") is None,
        reason="the reference export needs torch and sentence-transformers",
    ),
]

EVAL = DATA / "clinc150_eval"


def _texts() -> list[str]:
    rows = [json.loads(line) for line in (DATA / "clinc150_sample.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows[:80]] + [
        "a",
        "",
        "Ünïcödé, emoji 😀 and 中文 in one query",
        "word " * 600,  # past the 256-token window: the cut must match too
    ]


def _torch_exports() -> tuple[Path, Path]:
    """The torch export (fp32, int8) of the default model, made once into the model cache."""
    model = locate_model(DEFAULT_ENCODER)
    digest = tree_hash(model)
    fp32 = cache_dir() / "reference" / f"{digest[:20]}-torch-fp32"
    int8 = fp32.with_name(f"{digest[:20]}-torch-int8")
    if not cached(fp32, ENCODER_META):
        publish(
            fp32,
            lambda tmp: export_onnx(model, tmp, name=DEFAULT_ENCODER, source_hash=digest),
            marker=ENCODER_META,
        )
    if not cached(int8, ENCODER_META):
        publish(int8, lambda tmp: quantize_export(fp32, tmp), marker=ENCODER_META)
    return fp32, int8


@pytest.fixture(scope="module")
def torch_exports(model_cache: Path) -> tuple[OnnxEncoder, OnnxEncoder]:
    fp32, int8 = _torch_exports()
    return OnnxEncoder.load(fp32, threads=None), OnnxEncoder.load(int8)


@pytest.fixture(scope="module")
def direct_exports(model_cache: Path) -> tuple[OnnxEncoder, OnnxEncoder]:
    fp32 = ensure_onnx(DEFAULT_ENCODER)
    assert json.loads((fp32 / ENCODER_META).read_text())["exporter"] == "direct"
    return OnnxEncoder.load(fp32, threads=None), OnnxEncoder.load(
        ensure_encoder(DEFAULT_ENCODER, "onnx-int8")
    )


@pytest.fixture(scope="module")
def vectors(
    direct_exports: tuple[OnnxEncoder, OnnxEncoder],
    torch_exports: tuple[OnnxEncoder, OnnxEncoder],
) -> dict[str, npt.NDArray[np.float32]]:
    """The sample embedded by each export, once for all the tests below."""
    texts = _texts()
    encoders = {
        "direct fp32": direct_exports[0],
        "direct int8": direct_exports[1],
        "torch fp32": torch_exports[0],
        "torch int8": torch_exports[1],
    }
    return {name: encoder.encode(texts).vectors for name, encoder in encoders.items()}


def test_fp32_matches_the_torch_export_sentence_by_sentence(
    direct_exports: tuple[OnnxEncoder, OnnxEncoder],
    torch_exports: tuple[OnnxEncoder, OnnxEncoder],
    vectors: dict[str, npt.NDArray[np.float32]],
) -> None:
    direct, reference = direct_exports[0], torch_exports[0]
    texts = _texts()
    # Batched: padding and the attention mask matter; one at a time: they do not.
    batched = np.sum(vectors["direct fp32"] * vectors["torch fp32"], axis=1)
    assert float(batched.min()) >= 0.9999, texts[int(batched.argmin())][:80]
    few = texts[:20] + texts[-4:]
    single = [float(direct.encode([t]).vectors[0] @ reference.encode([t]).vectors[0]) for t in few]
    assert min(single) >= 0.9999
    assert direct.encode(texts[-1:]).truncated.tolist() == [True]
    assert (direct.info.dim, direct.info.max_tokens) == (
        reference.info.dim,
        reference.info.max_tokens,
    )


def test_int8_stays_as_close_as_the_torch_int8(
    vectors: dict[str, npt.NDArray[np.float32]],
) -> None:
    direct = vectors["direct int8"]
    reference_fp32, reference_int8 = vectors["torch fp32"], vectors["torch int8"]
    assert float(np.mean(np.sum(direct * reference_fp32, axis=1))) >= 0.99
    assert float(np.mean(np.sum(direct * reference_int8, axis=1))) >= 0.99


def test_eval_on_a_clinc150_sample_matches_the_torch_export(
    direct_exports: tuple[OnnxEncoder, OnnxEncoder],
    torch_exports: tuple[OnnxEncoder, OnnxEncoder],
    tmp_path: Path,
) -> None:
    from semroute.routing.router import Router
    from semroute.tuning.build import build_index
    from semroute.tuning.evaluate import evaluate, load_labelled

    data = load_labelled(EVAL / "test.jsonl")
    accuracy = {}
    for label, export in (("direct", direct_exports[1]), ("torch", torch_exports[1])):
        encoder = _Passed(export)
        build_index(EVAL, tmp_path / label, encoder=encoder)
        router = Router.load(tmp_path / label, encoder=encoder)
        report, _, _ = evaluate(router, data, latency_sample=1)
        accuracy[label] = report.accuracy
    assert accuracy["direct"] is not None and accuracy["torch"] is not None
    assert accuracy["direct"] > 0.6  # the routes work at all
    # At most two of the 850 queries routed differently (int8 arithmetic may differ a little
    # between CPUs); scripts/bench_export.py holds all of CLINC150's test split to 0.1 point.
    differing = abs(accuracy["direct"] - accuracy["torch"]) * len(data.texts)
    assert round(differing) <= 2, accuracy


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: _edit(d / "config.json", model_type="roberta"), "model_type 'roberta'"),
        (lambda d: _edit(d / "config.json", hidden_act="silu"), "activation 'silu'"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
        (
            lambda d: _edit(d / "1_Pooling" / "config.json", pooling_mode_max_tokens=True),
            r"pooling mean\+max",
        ),
    ],
)
def test_checkpoints_the_graph_cannot_hold_are_refused(
    model_cache: Path, tmp_path: Path, change: object, reason: str
) -> None:
    folder = _copy_model(tmp_path / "model")
    change(folder)  # type: ignore[operator]
    with pytest.raises(UnsupportedCheckpoint, match=reason):
        read_checkpoint(folder, "m")


def test_cls_pooling_is_read_from_the_pooling_module(model_cache: Path, tmp_path: Path) -> None:
    folder = _copy_model(tmp_path / "model")
    _edit(folder / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False)
    _edit(folder / "1_Pooling" / "config.json", pooling_mode_cls_token=True)
    assert read_checkpoint(folder, "m").pooling == "cls"


def test_an_unsupported_checkpoint_without_torch_names_the_extra(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import semroute.encoders.export as export

    folder = _copy_model(tmp_path / "model")
    _edit(folder / "config.json", model_type="roberta")
    monkeypatch.setattr(export, "_torch_exporter_installed", lambda: False)
    with pytest.raises(EncoderError, match=r"pip install 'semroute\[tune\]'"):
        ensure_onnx(str(folder))


class _Passed:
    """An export handed to build_index as an encoder of its own kind (an index records such an
    encoder without copying an export folder into itself)."""

    def __init__(self, encoder: OnnxEncoder) -> None:
        self._encoder = encoder
        self.info = dataclasses.replace(encoder.info, kind="reference")

    def encode(self, texts: Sequence[str]) -> Embeddings:
        return self._encoder.encode(texts)


def _copy_model(folder: Path) -> Path:
    """The default model's folder, its configuration copied and its weights linked."""
    source = locate_model(DEFAULT_ENCODER)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    return folder


def _edit(file: Path, **values: object) -> None:
    data = json.loads(file.read_text())
    data.update(values)
    file.write_text(json.dumps(data))


def test_the_default_export_imports_no_torch(model_cache: Path, tmp_path: Path) -> None:
    """Even where torch is installed, exporting (into an empty cache) never loads it."""
    folder = _copy_model(tmp_path / "model")
    script = (
        "import json, sys\n"
        "from semroute.encoders.export import load_encoder\n"
        f"load_encoder({str(folder)!r}, runtime='onnx-int8').encode(['hello'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "print(json.dumps(heavy))\n"
    )
    env = {**os.environ, "SEMROUTE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    assert list((tmp_path / "cache" / "onnx").glob("*-int8-direct-*"))
