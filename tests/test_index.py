from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from semroute import (
    CorruptIndexError,
    EncoderMismatchError,
    IndexNotFoundError,
    Router,
    SemrouteError,
    StaleIndexError,
)
from semroute.config.routes import load_routes
from semroute.index.store import RouteIndex
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import ROOT, ROUTES_YAML


def test_manifest_records_what_the_index_was_built_from(fake_index: Path) -> None:
    manifest = json.loads((fake_index / "manifest.json").read_text())
    assert manifest["format"] == 2
    assert set(manifest["checksums"]) == {"index.faiss", "utterances.json", "head.npz"}
    assert manifest["semroute_version"]
    assert manifest["built_at"].endswith("+00:00")
    assert manifest["encoder"] == {
        "kind": "fake",
        "name": "fake-256",
        "fingerprint": "fake-v1-256-64",
        "dim": 256,
        "max_tokens": 64,
    }
    assert manifest["settings"]["default_model"] == "frontier-model"
    assert [(r["name"], r["threshold"], r["vectors"]) for r in manifest["routes"]] == [
        ("weather", 0.5, [0, 3]),
        ("billing", 0.6, [3, 6]),
        ("greeting", 0.5, [6, 8]),
    ]
    assert manifest["scorer"] == "hybrid"
    assert manifest["head"] == {"file": "head.npz", "classes": ["weather", "billing", "greeting"]}
    assert manifest["out_of_scope"] == {"vectors": [8, 8]}
    assert manifest["index"]["count"] == 8
    assert len(manifest["routes_digest"]) == 64
    assert set(manifest["sources"]["files"]) == {"router.yaml", "routes.yaml"}
    # Plain JSON, FAISS and the encoder: nothing that unpickles.
    assert sorted(p.name for p in fake_index.iterdir()) == [
        "head.npz",
        "index.faiss",
        "manifest.json",
        "utterances.json",
    ]
    with np.load(fake_index / "head.npz", allow_pickle=False) as head:
        assert head["coef"].shape == (3, 256)


def test_index_vectors_are_the_encoders_normalised_output(fake_index: Path) -> None:
    index = RouteIndex.load(fake_index)
    expected = FakeEncoder().encode(index.utterances).vectors
    np.testing.assert_allclose(index.vectors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)


def test_rebuild_after_editing_one_route_embeds_only_the_new_text(
    routes_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    first = build_index(routes_dir, out, encoder=FakeEncoder())
    assert (first.embedded, first.reused) == (8, 0)
    text = (routes_dir / "routes.yaml").read_text()
    (routes_dir / "routes.yaml").write_text(
        text.replace("      - download my invoice\n", "      - email me my receipt\n")
    )
    encoder = FakeEncoder()
    second = build_index(routes_dir, out, encoder=encoder)
    assert (second.embedded, second.reused, encoder.calls) == (1, 7, 1)
    assert Router.load(out).route("email me my receipt").route == "billing"


def test_another_encoder_re_embeds_everything(routes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(routes_dir, out, encoder=FakeEncoder(dim=256))
    report = build_index(routes_dir, out, encoder=FakeEncoder(dim=128))
    assert report.embedded == 8


def test_load_refuses_an_index_whose_routes_changed(fake_index: Path, routes_dir: Path) -> None:
    Router.load(fake_index)
    # A comment or reformatting is not a change in routing.
    (routes_dir / "routes.yaml").write_text("# edited\n" + ROUTES_YAML)
    Router.load(fake_index)
    (routes_dir / "routes.yaml").write_text(ROUTES_YAML.replace("threshold: 0.6", "threshold: 0.7"))
    with pytest.raises(StaleIndexError, match=r"other routes.*run `semroute build-index`"):
        Router.load(fake_index)
    Router.load(fake_index, check_routes=False)  # an explicit opt-out still works


def test_a_new_route_file_makes_the_index_stale(fake_index: Path, routes_dir: Path) -> None:
    (routes_dir / "more.yaml").write_text("routes:\n  - name: extra\n    utterances: [hi]\n")
    with pytest.raises(StaleIndexError):
        Router.load(fake_index)


def test_index_without_its_route_files_still_loads(fake_index: Path, routes_dir: Path) -> None:
    for f in routes_dir.iterdir():
        f.unlink()
    routes_dir.rmdir()
    assert Router.load(fake_index).route("will it rain").route == "weather"


def test_missing_index_says_to_build(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match=r"nothing has been built.*build-index"):
        Router.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "index.faiss").write_bytes(b"\0" * 100), "index.faiss is damaged"),
        (
            lambda p: (p / "index.faiss").write_bytes((p / "index.faiss").read_bytes()[:500]),
            "index.faiss is damaged",
        ),
        (lambda p: (p / "utterances.json").unlink(), "utterances.json is missing"),
        (lambda p: (p / "utterances.json").write_text('["one"]'), "utterances.json is damaged"),
        (
            lambda p: (p / "manifest.json").write_text(
                (p / "manifest.json").read_text().replace('"format": 2', '"format": 99')
            ),
            "format 99",
        ),
    ],
)
def test_corrupt_index_is_refused_clearly(fake_index: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    damage(fake_index)
    with pytest.raises(CorruptIndexError, match=message) as info:
        Router.load(fake_index)
    assert "run `semroute build-index`" in str(info.value)
    assert "\n" not in str(info.value)


def test_index_built_for_another_encoder_is_refused(fake_index: Path) -> None:
    with pytest.raises(EncoderMismatchError, match="was built with encoder 'fake-256'"):
        Router.load(fake_index, encoder=FakeEncoder(dim=128))


class _FailingEncoder(FakeEncoder):
    def encode(self, texts):  # type: ignore[no-untyped-def]
        raise RuntimeError("encoder crashed half-way")


def test_failed_build_leaves_the_previous_index_intact(fake_index: Path, routes_dir: Path) -> None:
    before = (fake_index / "manifest.json").read_bytes()
    (routes_dir / "routes.yaml").write_text(ROUTES_YAML + "  - name: new\n    utterances: [x y]\n")
    with pytest.raises(RuntimeError, match="half-way"):
        build_index(routes_dir, fake_index, encoder=_FailingEncoder())
    assert (fake_index / "manifest.json").read_bytes() == before
    Router.load(fake_index, check_routes=False).route("will it rain")
    assert [p.name for p in fake_index.parent.iterdir() if p.name.startswith(".default.b")] == []


def test_killed_build_leaves_the_previous_index_loadable(
    fake_index: Path, routes_dir: Path
) -> None:
    many = "\n".join(f"      - utterance number {i} about topic {i % 7}" for i in range(3000))
    (routes_dir / "routes.yaml").write_text(
        ROUTES_YAML + f"  - name: bulk\n    utterances:\n{many}\n"
    )
    started = fake_index.parent / "started"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from semroute.tuning.build import build_index
        from semroute.testing import FakeEncoder

        class Slow(FakeEncoder):
            def encode(self, texts):
                Path({str(started)!r}).touch()
                time.sleep(0.05)
                return super().encode(texts)

        build_index({str(routes_dir)!r}, {str(fake_index)!r}, encoder=Slow())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, "the build finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    index = RouteIndex.load(fake_index, check_routes=False)
    assert [r.name for r in index.routes] == ["weather", "billing", "greeting"]
    # The next build clears the killed build's leftovers and succeeds.
    report = build_index(routes_dir, fake_index, encoder=FakeEncoder())
    assert report.reused == 8
    assert not list(fake_index.parent.glob(".default.building-*"))


def test_interrupted_swap_is_recovered(fake_index: Path) -> None:
    # Simulate a kill between "move old index aside" and "move new index in".
    backup = fake_index.parent / ".default.previous"
    fake_index.rename(backup)
    assert Router.load(fake_index).route("hello there").route == "greeting"
    assert fake_index.is_dir() and not backup.exists()


def test_concurrent_build_is_refused(routes_dir: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "idx"
    out.parent.mkdir(exist_ok=True)
    with open(tmp_path / ".idx.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SemrouteError, match="another build is writing"):
            build_index(routes_dir, out, encoder=FakeEncoder())


def test_build_from_a_route_set_in_memory(tmp_path: Path, routes_dir: Path) -> None:
    route_set = load_routes(routes_dir)
    build_index(route_set, tmp_path / "idx", encoder=FakeEncoder())
    assert Router.load(tmp_path / "idx").route("will it rain").route == "weather"
