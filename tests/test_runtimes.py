"""The encoder runtimes: int8-quantised ONNX (the default), exact fp32 ONNX and a static model2vec
model, all derived from the real default model (offline)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from semroute import EncoderError, EncoderMismatchError, Router
from semroute.cli.main import main
from semroute.config.routefile import DEFAULT_RUNTIME
from semroute.config.routes import DEFAULT_ENCODER
from semroute.encoders.export import RUNTIMES, ensure_encoder, ensure_onnx, load_encoder
from semroute.tuning.build import build_index
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.model


def _routes_with_runtime(folder: Path, runtime: str) -> Path:
    """The bundled example routes, with ``encoder_runtime`` set in their router block."""
    shutil.copytree(ROOT / "routes", folder)
    router = folder / "router.yaml"
    router.write_text(router.read_text() + f"  encoder_runtime: {runtime}\n")
    return folder


def _build(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp(runtime)
    out = base / "index"
    build_index(_routes_with_runtime(base / "routes", runtime), out)
    return out


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _in_scope_queries() -> list[tuple[str, str]]:
    spec = yaml.safe_load((DATA / "bundled_queries.yaml").read_text())
    return [(q, route) for route, qs in spec.items() if route != "null" for q in qs]


def _accuracy(router: Router) -> float:
    queries = _in_scope_queries()
    decisions = router.route_batch([q for q, _ in queries])
    return sum(d.route == want for d, (_, want) in zip(decisions, queries, strict=True)) / len(
        queries
    )


@pytest.fixture(scope="module")
def int8_index(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("onnx-int8", tmp_path_factory)


@pytest.fixture(scope="module")
def static_index(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Distilling takes minutes the first time; the result is cached with the ONNX export.
    return _build("static", tmp_path_factory)


# --- onnx-int8 --------------------------------------------------------------------------------


def test_int8_index_records_its_own_encoder(int8_index: Path) -> None:
    manifest = _json(int8_index / "manifest.json")
    fp32 = _json(ensure_onnx(DEFAULT_ENCODER) / "encoder.json")
    int8 = _json(int8_index / "encoder" / "encoder.json")
    assert manifest["settings"]["encoder_runtime"] == "onnx-int8"
    assert (fp32["precision"], int8["precision"]) == ("fp32", "int8")
    assert manifest["encoder"]["fingerprint"] == int8["fingerprint"] != fp32["fingerprint"]
    assert (manifest["encoder"]["dim"], int8["dim"]) == (fp32["dim"], fp32["dim"])


def test_int8_vectors_stay_close_to_fp32(model_cache: Path) -> None:
    rows = (DATA / "clinc150_sample.jsonl").read_text().splitlines()[:50]
    texts = [json.loads(line)["text"] for line in rows]
    exact = load_encoder(DEFAULT_ENCODER, runtime="onnx").encode(texts).vectors
    quantised = load_encoder(DEFAULT_ENCODER, runtime="onnx-int8").encode(texts).vectors
    np.testing.assert_allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(exact * quantised, axis=1)
    assert cosine.mean() >= 0.98
    assert cosine.min() < 0.9999  # really quantised, not the fp32 model under another name


def test_int8_is_the_default_runtime(model_cache: Path, tmp_path: Path) -> None:
    assert DEFAULT_RUNTIME == "onnx-int8"
    build_index(ROOT / "routes", tmp_path / "idx")  # the bundled routes name no runtime
    manifest = _json(tmp_path / "idx" / "manifest.json")
    assert manifest["settings"]["encoder_runtime"] == "onnx-int8"
    assert _json(tmp_path / "idx" / "encoder" / "encoder.json")["precision"] == "int8"
    info = CliRunner().invoke(main, ["info", "--index", str(tmp_path / "idx"), "--json"])
    assert json.loads(info.output)["encoder_runtime"] == "onnx-int8"


@pytest.mark.parametrize("threads", [1, None])
def test_int8_vectors_do_not_depend_on_the_batch(model_cache: Path, threads: int | None) -> None:
    # Dynamic quantisation scales a whole input at once: were texts batched, a text's vector
    # would change with its batch-mates and padding, and index vectors would not match queries.
    rows = (DATA / "clinc150_sample.jsonl").read_text().splitlines()[:40]
    texts = [json.loads(line)["text"] for line in rows]
    encoder = load_encoder(DEFAULT_ENCODER, runtime="onnx-int8", threads=threads)
    alone = np.vstack([encoder.encode([t]).vectors for t in texts])
    batched = encoder.encode(texts).vectors
    with_a_long_one = encoder.encode(["word " * 300, *texts[::-1]]).vectors[1:][::-1]
    np.testing.assert_array_equal(batched, alone)
    np.testing.assert_array_equal(with_a_long_one, alone)


def test_fp32_index_routes_clear_queries(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    index = _build("onnx", tmp_path_factory)
    assert _json(index / "encoder" / "encoder.json")["precision"] == "fp32"
    router = Router.load(index)
    assert router.route("write a python function that parses a date string").route == "code"
    assert router.route("what's the capital of France?").route is None
    assert _accuracy(router) >= 0.9


def test_int8_index_routes_clear_queries(int8_index: Path) -> None:
    router = Router.load(int8_index)  # with the int8 export stored in the index
    d = router.route("write a python function that parses a date string")
    assert (d.route, d.model) == ("code", "mistral/codestral-latest")
    assert router.route("what's the capital of France?").route is None
    assert _accuracy(router) >= 0.9


def test_int8_index_refuses_the_fp32_encoder(int8_index: Path) -> None:
    fp32 = load_encoder(DEFAULT_ENCODER, runtime="onnx", threads=1)
    int8_fingerprint = _json(int8_index / "manifest.json")["encoder"]["fingerprint"]
    with pytest.raises(EncoderMismatchError, match="run `semroute build-index`") as info:
        Router.load(int8_index, encoder=fp32)
    assert (info.value.found, info.value.expected) == (fp32.info.fingerprint, int8_fingerprint)


# --- static (model2vec) -----------------------------------------------------------------------


def test_static_index_routes_most_clear_queries(static_index: Path) -> None:
    manifest = _json(static_index / "manifest.json")
    assert manifest["encoder"]["kind"] == "static"
    assert _json(static_index / "encoder" / "encoder.json")["precision"] == "static"
    assert _accuracy(Router.load(static_index)) >= 0.8


def test_static_encoder_embeds_one_query(static_index: Path) -> None:
    router = Router.load(static_index)
    emb = router.encoder.encode(["how do I reverse a list in python"])
    assert emb.vectors.shape == (1, router.index.encoder_info.dim)
    assert emb.vectors.dtype == np.float32
    assert np.linalg.norm(emb.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert emb.truncated.tolist() == [False]


def test_routing_with_a_static_index_imports_no_torch(static_index: Path) -> None:
    script = (
        "import json, sys\n"
        "from semroute import Router\n"
        f"d = Router.load({str(static_index)!r}).route('translate good night into Spanish')\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "print(json.dumps({'route': d.route, 'heavy': heavy}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"route": "translation", "heavy": []}


# --- runtime names ----------------------------------------------------------------------------


def test_unknown_runtime_names_the_valid_ones() -> None:
    with pytest.raises(EncoderError, match=r"unknown encoder runtime 'bogus'") as info:
        ensure_encoder(DEFAULT_ENCODER, "bogus")
    assert all(runtime in str(info.value) for runtime in RUNTIMES)
