"""An index on disk under hostile or careless use: what a build may replace, damaged manifests and
files, readers racing builds, the shared export cache, and where exact search turns approximate."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semroute import CorruptIndexError, Router, SemrouteError
from semroute.cli.main import main
from semroute.config.routes import DEFAULT_ENCODER
from semroute.errors import EncoderError
from semroute.index.store import RouteIndex
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import ROUTES_YAML, write_routes

REBUILD = "run `semroute build-index`"


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message
    return message


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


# --- 1. a build replaces only an index -----------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root: files a build must never delete."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "app.py").write_text("print('my app')\n")
    return root


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_build_refuses_a_folder_that_is_not_an_index(routes_dir: Path, project: Path) -> None:
    before = _tree(project)
    siblings = _siblings(project)
    with pytest.raises(SemrouteError, match=r"refusing to build an index at .*proj") as info:
        build_index(routes_dir, project, encoder=FakeEncoder())
    assert "app.py" in _one_line(info.value)
    assert _tree(project) == before
    assert _siblings(project) == siblings  # no lock file, no half-built folder
    with pytest.raises(SemrouteError, match=r"app\.py.*it is a file"):
        build_index(routes_dir, project / "app.py", encoder=FakeEncoder())
    assert _tree(project) == before


def test_build_refuses_to_replace_the_route_files(routes_dir: Path) -> None:
    before = _tree(routes_dir)
    with pytest.raises(SemrouteError, match="holds the route files"):
        build_index(routes_dir, routes_dir, encoder=FakeEncoder())
    with pytest.raises(SemrouteError, match="holds the route files"):
        build_index(routes_dir, routes_dir.parent, encoder=FakeEncoder())
    assert _tree(routes_dir) == before


@pytest.mark.parametrize("out", [".", "/", "proj", "routes"])
def test_cli_build_into_a_non_index_is_one_line_and_changes_nothing(
    routes_dir: Path, project: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    monkeypatch.chdir(project.parent)
    before = _tree(project.parent)
    listing = sorted(os.listdir("/"))
    if out == ".":
        monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["build-index", str(routes_dir), "--out", out])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "refusing to build an index" in line
    assert _tree(project.parent) == before
    assert sorted(os.listdir("/")) == listing


def test_an_empty_or_missing_folder_or_an_index_is_replaced(
    routes_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "idx", tmp_path / "empty"):
        build_index(routes_dir, out, encoder=FakeEncoder())
        assert Router.load(out).route("will it rain").route == "weather"


def test_a_symlinked_out_is_followed_and_stays_a_symlink(routes_dir: Path, tmp_path: Path) -> None:
    real = tmp_path / "store" / "v1"
    build_index(routes_dir, real, encoder=FakeEncoder())
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)
    (routes_dir / "routes.yaml").write_text(ROUTES_YAML + "  - name: new\n    utterances: [x y]\n")
    for _ in range(2):
        build_index(routes_dir, link, encoder=FakeEncoder())
        assert link.is_symlink() and link.resolve() == real.resolve()
        assert [r.name for r in RouteIndex.load(link).routes][-1] == "new"
        assert not (tmp_path / ".current.previous").exists()
        assert not (tmp_path / ".current.previous").is_symlink()
        assert sorted(p.name for p in real.parent.iterdir()) == [".v1.lock", "v1"]


def test_a_symlink_left_where_the_old_index_is_parked_does_not_break_builds(
    fake_index: Path, routes_dir: Path, tmp_path: Path
) -> None:
    # An older semroute moved a symlinked index aside as a symlink and left it there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not ours")
    (fake_index.parent / ".default.previous").symlink_to(elsewhere)
    build_index(routes_dir, fake_index, encoder=FakeEncoder())
    assert not (fake_index.parent / ".default.previous").is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "not ours"
    Router.load(fake_index).route("hello there")


# --- 7. damaged manifests and files ------------------------------------------------------------


def _edit(key_path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = key_path.split(".")

    def apply(manifest: dict[str, Any]) -> None:
        node: Any = manifest
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[int(last) if isinstance(node, list) else last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return apply


_DELETE = object()

DAMAGED_MANIFESTS = {
    "no count": (_edit("index.count", _DELETE), "index.count"),
    "no dim": (_edit("encoder.dim", _DELETE), "encoder.dim"),
    "no route name": (_edit("routes.0.name", _DELETE), "routes.0.name"),
    "empty route name": (_edit("routes.0.name", ""), "routes.0.name"),
    "no default model": (_edit("settings.default_model", _DELETE), "default_model"),
    "text threshold": (_edit("routes.1.threshold", "high"), "routes.1.threshold"),
    "numeric text threshold": (_edit("routes.1.threshold", "0.6"), "routes.1.threshold"),
    "threshold above 1": (_edit("routes.1.threshold", 7), "routes.1.threshold"),
    "span out of range": (_edit("routes.2.vectors", [6, 99]), "vectors"),
    "overlapping spans": (_edit("routes.1.vectors", [2, 6]), "vectors"),
    "negative span": (_edit("routes.0.vectors", [-1, 3]), "routes.0.vectors"),
    "span not a pair": (_edit("routes.0.vectors", [0]), "routes.0.vectors"),
    "unknown scorer": (_edit("scorer", "magic"), "unknown scorer 'magic'"),
    "no routes": (_edit("routes", []), "routes"),
    "routes not a list": (_edit("routes", {"a": 1}), "routes"),
    "duplicate route": (
        lambda m: m["routes"].__setitem__(1, dict(m["routes"][1], name="weather")),
        "same name",
    ),
    "unknown index type": (_edit("index.type", "ivf"), "index.type"),
    "count of the wrong type": (_edit("index.count", "8"), "index.count"),
    "no checksums": (_edit("checksums", _DELETE), "checksums"),
    "checksum for a file outside": (
        lambda m: m["checksums"].__setitem__("../../etc/passwd", "0" * 64),
        "not inside the index",
    ),
    "head for other routes": (_edit("head.classes", ["a", "b", "c"]), "head"),
    "dispatch of the wrong shape": (_edit("dispatch", {"models": [1]}), "dispatch"),
    "manifest a list": (lambda m: m.clear(), "format"),
    "older format": (_edit("format", 1), "older semroute"),
    "unknown key": (_edit("index.shards", 4), "shards"),
}


@pytest.mark.parametrize("damage", list(DAMAGED_MANIFESTS), ids=list(DAMAGED_MANIFESTS))
def test_damaged_manifest_is_one_line_naming_the_field(fake_index: Path, damage: str) -> None:
    edit, expected = DAMAGED_MANIFESTS[damage]
    manifest = json.loads((fake_index / "manifest.json").read_text())
    edit(manifest)
    (fake_index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptIndexError) as info:
        Router.load(fake_index)
    message = _one_line(info.value)
    assert expected in message
    assert message.endswith(REBUILD)


@pytest.mark.parametrize("text", ["[", "NaN", '{"format": 2, "routes": NaN}', "[" * 100_000])
def test_manifest_that_is_not_an_object_is_refused(fake_index: Path, text: str) -> None:
    (fake_index / "manifest.json").write_text(text)
    with pytest.raises(CorruptIndexError) as info:
        Router.load(fake_index)
    assert _one_line(info.value).endswith(REBUILD)


def test_non_finite_threshold_is_refused(fake_index: Path) -> None:
    text = (fake_index / "manifest.json").read_text()
    (fake_index / "manifest.json").write_text(text.replace('"threshold": 0.6', '"threshold": NaN'))
    with pytest.raises(CorruptIndexError, match="threshold"):
        Router.load(fake_index)


def test_index_file_swapped_from_an_index_of_the_same_size_is_refused(
    fake_index: Path, tmp_path: Path
) -> None:
    other_routes = write_routes(
        tmp_path / "other-routes",
        ROUTES_YAML.replace("will it rain today", "is it snowing now").replace(
            "hello there", "hi folks"
        ),
    )
    other = tmp_path / "other"
    build_index(other_routes, other, encoder=FakeEncoder())
    swapped = (other / "index.faiss").read_bytes()
    assert len(swapped) == (fake_index / "index.faiss").stat().st_size
    (fake_index / "index.faiss").write_bytes(swapped)
    with pytest.raises(CorruptIndexError, match=r"index.faiss is damaged.*checksum") as info:
        Router.load(fake_index)
    assert _one_line(info.value).endswith(REBUILD)


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("utterances.json", json.dumps(list(range(8)))),
        ("utterances.json", json.dumps({"a": 1})),
        ("head.npz", None),
    ],
)
def test_damaged_index_files_are_refused(fake_index: Path, file: str, content: str | None) -> None:
    if content is None:
        data = bytearray((fake_index / file).read_bytes())
        data[-40] ^= 0xFF  # one flipped byte deep inside the archive
        (fake_index / file).write_bytes(bytes(data))
    else:
        (fake_index / file).write_text(content)
    with pytest.raises(CorruptIndexError) as info:
        Router.load(fake_index)
    assert _one_line(info.value).endswith(REBUILD)


def test_a_fifo_in_place_of_an_index_file_is_refused_without_blocking(fake_index: Path) -> None:
    (fake_index / "utterances.json").unlink()
    os.mkfifo(fake_index / "utterances.json")
    with pytest.raises(CorruptIndexError, match=r"utterances\.json is not a regular file"):
        Router.load(fake_index)


def test_calibrated_thresholds_keep_the_index_loadable(fake_index: Path) -> None:
    from semroute.index.manifest import Manifest

    manifest = Manifest.read(fake_index)
    n = len(manifest.routes)
    manifest.with_thresholds([0.25] * n, {}, fake_index).write(fake_index)
    assert RouteIndex.load(fake_index).routes[0].threshold == 0.25
    with pytest.raises(CorruptIndexError, match="not a finite number"):
        manifest.with_thresholds([float("nan")] * n, {}, fake_index)
    with pytest.raises(CorruptIndexError, match="threshold"):
        manifest.with_thresholds([2.0] * n, {}, fake_index)
    assert RouteIndex.load(fake_index).routes[0].threshold == 0.25


def test_a_manifest_with_fitted_thresholds_changes_nothing_else(fake_index: Path) -> None:
    from semroute.index.manifest import Manifest

    before = Manifest.read(fake_index)
    n = len(before.routes)
    after = before.with_thresholds([0.125] * n, {"objective": "cost"}, fake_index)
    after.write(fake_index)
    again = Manifest.read(fake_index)
    assert [r.threshold for r in again.routes] == [0.125] * n
    assert again.calibration == {"objective": "cost"}
    expected = before.to_dict()
    for r in expected["routes"]:
        r["threshold"] = 0.125
    assert again.to_dict() == {**expected, "calibration": {"objective": "cost"}}
    with pytest.raises(CorruptIndexError, match="threshold"):
        before.with_thresholds([2.0] * n, {}, fake_index)
    assert RouteIndex.load(fake_index).routes[0].threshold == 0.125


def test_writers_share_one_lock_whichever_path_names_the_index(
    fake_index: Path, routes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semroute.tuning.build import build_lock

    link = tmp_path / "link"
    link.symlink_to(fake_index, target_is_directory=True)
    # How `semroute calibrate --index ...` may name the index it locks.
    for alias, cwd in ((link, tmp_path), (Path("."), fake_index)):
        monkeypatch.chdir(cwd)
        with build_lock(alias):
            monkeypatch.chdir(tmp_path)
            with pytest.raises(SemrouteError, match="another build is writing"):
                build_index(routes_dir, fake_index, encoder=FakeEncoder())


# --- 9. readers never break a build ------------------------------------------------------------


def _load_in_a_loop(path: str, ready: Any, stop: Any, failures: Any) -> None:
    while not stop.is_set():
        try:
            index = RouteIndex.load(path, check_routes=False)
            assert len(index.utterances) == index.manifest.index.count
        except (SemrouteError, AssertionError) as exc:
            failures.put(f"{type(exc).__name__}: {exc}")
            return
        ready.set()


def test_readers_loading_in_a_loop_never_break_builds(routes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(routes_dir, out, encoder=FakeEncoder(dim=16), scorer="nearest")
    variants = [ROUTES_YAML, ROUTES_YAML + "  - name: extra\n    utterances: [one more]\n"]
    context = multiprocessing.get_context("spawn")
    stop, failures = context.Event(), context.Queue()
    readers = []
    for _ in range(2):
        ready = context.Event()
        readers.append(
            context.Process(target=_load_in_a_loop, args=(str(out), ready, stop, failures))
        )
        readers[-1].start()
    builds = 0
    try:
        assert ready.wait(60), "the readers did not start"
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and failures.empty():
            (routes_dir / "routes.yaml").write_text(variants[builds % 2])
            build_index(routes_dir, out, encoder=FakeEncoder(dim=16), scorer="nearest")
            builds += 1
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    assert problems == []
    assert builds > 10
    assert len(RouteIndex.load(out).routes) == 3 + (builds % 2 == 0)
    assert not (tmp_path / ".idx.previous").exists()


def test_a_reader_recovers_a_killed_swap_only_under_the_lock(fake_index: Path) -> None:
    from semroute.index.store import writer_lock

    backup = fake_index.parent / ".default.previous"
    fake_index.rename(backup)
    with writer_lock(fake_index) as locked:
        assert locked  # a live build holds the lock: the reader must not rename
        start = time.monotonic()
        index = RouteIndex.load(fake_index, check_routes=False)
        assert time.monotonic() - start >= 1.0  # it waited for the swap first
        assert backup.is_dir() and not fake_index.exists()
        assert [r.name for r in index.routes] == ["weather", "billing", "greeting"]
    RouteIndex.load(fake_index)  # the lock is free: the killed swap is put back
    assert fake_index.is_dir() and not backup.exists()


# --- 8 and 10. the shared export cache -----------------------------------------------------------


def _sha(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def test_semroute_cache_pointing_at_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semroute.encoders.export import locate_model

    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("SEMROUTE_CACHE", str(not_a_folder))
    with pytest.raises(EncoderError, match=r"SEMROUTE_CACHE=.*cache-file is not a folder") as info:
        locate_model(DEFAULT_ENCODER)
    _one_line(info.value)
    monkeypatch.setenv("SEMROUTE_CACHE", str(not_a_folder / "below"))
    with pytest.raises(EncoderError, match=r"cannot write .* point SEMROUTE_CACHE at") as info:
        locate_model(DEFAULT_ENCODER)
    _one_line(info.value)


def test_a_damaged_cached_model_is_unpacked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semroute.encoders.export import locate_model

    monkeypatch.setenv("SEMROUTE_CACHE", str(tmp_path / "cache"))
    folder = locate_model(DEFAULT_ENCODER)
    good = _sha(folder / "config.json")
    (folder / "config.json").write_text('{"hidden_size": 3}')
    assert locate_model(DEFAULT_ENCODER) == folder
    assert _sha(folder / "config.json") == good


@pytest.fixture
def private_cache(model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the session's model cache that a test may damage."""
    from semroute.encoders.export import ensure_encoder

    ensure_encoder(DEFAULT_ENCODER, "onnx-int8")  # the export exists (and is sound) before copying
    cache = tmp_path / "cache"
    shutil.copytree(model_cache, cache)
    monkeypatch.setenv("SEMROUTE_CACHE", str(cache))
    return cache


@pytest.mark.model
def test_writing_to_an_index_never_writes_into_the_cache(
    private_cache: Path, routes_dir: Path, tmp_path: Path
) -> None:
    from semroute.encoders.export import ensure_encoder

    routes = write_routes(tmp_path / "real-routes", router="router:\n  default_model: big\n")
    out = tmp_path / "idx"
    build_index(routes, out)
    export = ensure_encoder(DEFAULT_ENCODER, "onnx-int8")
    cached = {f.name: _sha(f) for f in export.iterdir() if f.is_file()}
    (out / "encoder" / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
    assert {f.name: _sha(f) for f in export.iterdir() if f.is_file()} == cached
    with pytest.raises(CorruptIndexError, match=r"encoder/tokenizer.json is damaged") as info:
        Router.load(out)
    assert _one_line(info.value).endswith(REBUILD)
    build_index(routes, out)  # the advice works
    assert Router.load(out).route("will it rain today").route == "weather"


@pytest.mark.model
def test_a_damaged_cached_export_is_made_again(private_cache: Path) -> None:
    from semroute.encoders.export import ensure_encoder, load_encoder

    export = ensure_encoder(DEFAULT_ENCODER, "onnx-int8")
    good = _sha(export / "tokenizer.json")
    (export / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
    assert ensure_encoder(DEFAULT_ENCODER, "onnx-int8") == export
    assert _sha(export / "tokenizer.json") == good
    load_encoder(DEFAULT_ENCODER, runtime="onnx-int8").encode(["hello"])


@pytest.mark.model
def test_encoder_json_without_inputs_is_an_encoder_error(
    private_cache: Path, tmp_path: Path
) -> None:
    from semroute.encoders.export import ensure_encoder
    from semroute.encoders.onnx import OnnxEncoder

    copy = tmp_path / "export"
    shutil.copytree(ensure_encoder(DEFAULT_ENCODER, "onnx-int8"), copy)
    meta = json.loads((copy / "encoder.json").read_text())
    del meta["inputs"]
    (copy / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(EncoderError, match="inputs") as info:
        OnnxEncoder.load(copy)
    _one_line(info.value)


# --- 11. where exact search turns approximate --------------------------------------------------


def test_search_turns_approximate_just_past_the_documented_limit(tmp_path: Path) -> None:
    # The README promises exact search "up to 20,000 utterances", and search.FLAT_LIMIT says so.
    from semroute.config.routes import parse_routes

    def routes(n: int) -> Any:
        utterances = [f"u{i} w{i % 97}" for i in range(n)]
        return parse_routes(
            {
                "router": {"default_model": "big", "encoder": "fake", "scorer": "nearest"},
                "routes": [
                    {"name": "a", "utterances": utterances[: n // 2]},
                    {"name": "b", "utterances": utterances[n // 2 :]},
                ],
                # Out-of-scope examples are not searched for routes: they do not count.
                "out_of_scope": ["nothing at all", "none of these"],
            }
        )

    out = tmp_path / "idx"
    encoder = FakeEncoder(dim=8)
    build_index(routes(20_000), out, encoder=encoder)
    assert RouteIndex.load(out).manifest.index.type == "flat"
    build_index(routes(20_001), out, encoder=encoder)
    assert RouteIndex.load(out).manifest.index.type == "hnsw"
