"""The large-index benchmark measures HNSW on queries its index never saw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import _bench

    if not (_bench.DATA / "clinc150" / "test.jsonl").exists():
        pytest.skip(f"benchmark data not found at {_bench.DATA} (set SEMROUTE_DATA)")
    import bench_large

    return bench_large


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def test_large_corpus_holds_no_query_and_no_test_row(bench: Any) -> None:
    from bench_latency import short_queries

    queries = short_queries(1000)
    texts, _ = bench.corpus(100_000, queries)
    keys = {_key(t) for ts in texts.values() for t in ts}
    assert sum(len(ts) for ts in texts.values()) == 100_000
    assert not keys & {_key(q) for q in queries}
    # The head is trained on the corpus: no test split may feed it.
    assert all(split != "test" for _, splits in bench.SOURCES for split in splits)


@pytest.mark.parametrize(
    "script",
    [
        "bench_large.py",
        "bench_choices.py",
        "bench_latency.py",
        "bench_core.py",
        "bench_accuracy.py",
    ],
)
def test_scripts_run_from_anywhere(script: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
