"""Model-folder hashing, which keys every cached export (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from semroute.encoders.cache import tree_hash


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEMROUTE_CACHE", str(tmp_path / "semroute-cache"))
    # Models usually live under a `.cache` folder (the hub's, or semroute's own).
    return tmp_path / ".cache" / "models"


def _model(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_models_under_a_cache_folder_hash_by_content(cache: Path) -> None:
    a = _model(cache / "a", b"weights of a")
    b = _model(cache / "b", b"weights of b")
    c = _model(cache / "c", b"weights of a")
    assert tree_hash(a) != tree_hash(b)
    assert tree_hash(a) == tree_hash(c)


def test_a_changed_weight_file_changes_the_hash(cache: Path) -> None:
    a = _model(cache / "a", b"weights")
    before = tree_hash(a)
    (a / "model.safetensors").write_bytes(b"retrained weights")
    assert tree_hash(a) != before


def test_a_nested_cache_folder_inside_the_model_is_ignored(cache: Path) -> None:
    a = _model(cache / "a", b"weights")
    before = tree_hash(a)
    (a / ".cache").mkdir()
    (a / ".cache" / "lock").write_text("downloader state")
    assert tree_hash(a) == before
