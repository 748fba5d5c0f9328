"""Integration tests with the real default model (all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from semroute import Reason, Router
from semroute.config.routefile import DEFAULT_RUNTIME
from semroute.config.routes import DEFAULT_ENCODER
from semroute.encoders.export import ensure_encoder, ensure_onnx, locate_model
from semroute.encoders.onnx import OnnxEncoder
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.model

SEMROUTE = str(Path(sys.executable).parent / "semroute")


def _sample_texts() -> list[str]:
    rows = [json.loads(line) for line in (DATA / "clinc150_sample.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows] + [
        "a",
        "Ünïcödé, emoji 😀 and 中文 in one query",
        "word " * 600,  # far beyond the 256-token window
    ]


def test_onnx_export_reproduces_sentence_transformers(model_cache: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = _sample_texts()
    reference = SentenceTransformer(str(locate_model(DEFAULT_ENCODER)), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    encoder = OnnxEncoder.load(ensure_onnx(DEFAULT_ENCODER))
    batched = encoder.encode(texts).vectors
    single = np.vstack([encoder.encode([t]).vectors for t in texts[:50]])
    assert np.min(np.sum(batched * reference, axis=1)) >= 0.999
    assert np.min(np.sum(single * reference[:50], axis=1)) >= 0.999


def test_long_queries_are_truncated_to_the_window(model_cache: Path) -> None:
    encoder = OnnxEncoder.load(ensure_onnx(DEFAULT_ENCODER))
    assert encoder.info.max_tokens == 256
    emb = encoder.encode(["short query", "word " * 600])
    assert emb.truncated.tolist() == [False, True]


def _held_out() -> list[tuple[str, str | None]]:
    spec = yaml.safe_load((DATA / "bundled_queries.yaml").read_text())
    return [(q, None if k == "null" else k) for k, qs in spec.items() for q in qs]


@pytest.mark.parametrize(("query", "expected"), _held_out())
def test_bundled_routes_send_clear_queries_where_they_belong(
    bundled_index: Path, query: str, expected: str | None
) -> None:
    d = Router.load(bundled_index).route(query)
    assert d.route == expected, d.scores[:2]
    if expected is None:
        assert d.model == "gpt-4o"
        assert d.reason == Reason.BELOW_THRESHOLD


def test_route_batch_matches_route_with_padding(bundled_index: Path) -> None:
    router = Router.load(bundled_index)
    queries = [q for q, _ in _held_out()]
    for q, d in zip(queries, router.route_batch(queries), strict=True):
        single = router.route(q)
        assert d.route == single.route
        assert d.confidence == pytest.approx(single.confidence, abs=1e-4)


def test_cli_builds_and_routes_like_a_user_would(model_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "indexes" / "default"
    build = subprocess.run(
        [SEMROUTE, "build-index", str(ROOT / "routes"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert "6 routes" in build.stdout
    for query, expected_route, expected_model in [
        ("what's the capital of France?", None, "gpt-4o"),
        ("write a python function that parses a date string", "code", "mistral/codestral-latest"),
    ]:
        proc = subprocess.run(
            [SEMROUTE, "route", query, "--json", "--index", str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        (line,) = proc.stdout.splitlines()
        data = json.loads(line)
        assert (data["route"], data["model"]) == (expected_route, expected_model)
        assert len(data["scores"]) == 6
    # A second build reuses every vector.
    again = subprocess.run(
        [SEMROUTE, "build-index", str(ROOT / "routes"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "(0 embedded," in again.stdout


def test_a_local_model_folder_works_as_encoder(model_cache: Path, tmp_path: Path) -> None:
    folder = locate_model(DEFAULT_ENCODER)  # a plain sentence-transformers folder on disk
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(
        f"router: {{default_model: big, encoder: {str(folder)!r}, threshold: 0.5}}\n"
        "routes:\n"
        "  - name: weather\n"
        "    utterances: [will it rain tomorrow, what's the forecast for the weekend]\n"
    )
    from semroute.tuning.build import build_index

    build_index(routes, tmp_path / "idx")
    router = Router.load(tmp_path / "idx")
    # Exports are keyed by the weights' hash: the same weights under another path share one.
    default = OnnxEncoder.load(ensure_encoder(DEFAULT_ENCODER, DEFAULT_RUNTIME)).info
    assert router.index.encoder_info.fingerprint == default.fingerprint
    assert router.route("is it going to rain on saturday").route == "weather"
