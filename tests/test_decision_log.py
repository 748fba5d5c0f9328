"""The decision log: whole lines under concurrency, a failing disk never breaks a request, stats."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.dispatch.log import DecisionLog, DecisionLogs, summarise


def test_threads_never_interleave_or_lose_lines(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.jsonl")
    padding = "x" * 3000  # lines longer than a pipe buffer's atomic size, to make tearing likely

    def work(thread: int) -> None:
        for i in range(300):
            log.write({"request_id": f"{thread}-{i}", "padding": padding})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 8 * 300
    ids = {json.loads(line)["request_id"] for line in lines}
    assert len(ids) == 8 * 300


def test_processes_appending_to_one_file_keep_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    code = (
        "import sys; from semroute.dispatch.log import DecisionLog; "
        "log = DecisionLog(sys.argv[1]); "
        "[log.write({'request_id': f'{sys.argv[2]}-{i}', 'pad': 'y' * 2000}) for i in range(400)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)]) for n in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["request_id"] for r in records}) == len(records) == 1200


def test_an_unwritable_log_warns_once_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = DecisionLog(blocker / "log.jsonl")
    with pytest.warns(RuntimeWarning, match="cannot write the decision log"):
        log.write({"request_id": "a"})
    log.write({"request_id": "b"})  # no second warning (the filter would make it an error)


def test_semroute_log_wins_over_the_configured_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    logs = DecisionLogs()
    assert logs.open(None) is None
    configured = logs.open(str(tmp_path / "a.jsonl"))
    assert configured is not None and configured.path == tmp_path / "a.jsonl"
    assert logs.open(str(tmp_path / "a.jsonl")) is configured  # one writer (and lock) per file
    monkeypatch.setenv("SEMROUTE_LOG", str(tmp_path / "b.jsonl"))
    env = logs.open(str(tmp_path / "a.jsonl"))
    assert env is not None and env.path == tmp_path / "b.jsonl"
    configured.write({"request_id": "a"})
    logs.close()  # closes every file; the next write reopens it
    configured.write({"request_id": "b"})
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2


def record(i: int, **fields: Any) -> dict[str, Any]:
    base = {
        "request_id": f"r{i}",
        "route": "code",
        "model": "codestral",
        "fallbacks": [],
        "routing_ms": 2.0,
        "model_ms": 100.0,
        "cost_usd": 0.001,
        "error": None,
    }
    return {**base, **fields}


LOG = [
    record(1),
    record(2),
    record(3, model="gpt-4o", fallbacks=["codestral"], cost_usd=0.004, model_ms=300.0),
    record(4, route=None, model="gpt-4o", routing_ms=4.0, cost_usd=None),
    record(5, model=None, fallbacks=["codestral", "gpt-4o"], error="no model answered"),
]


def test_summary_of_a_log() -> None:
    lines = [json.dumps(r) for r in LOG] + ["{not json", "", '["a list"]']
    stats = summarise(lines).to_dict()
    assert stats["requests"] == 5
    assert stats["malformed_lines"] == 2
    assert stats["routes"] == {
        "code": {"requests": 4, "share": 0.8},
        "(no route)": {"requests": 1, "share": 0.2},
    }
    assert stats["models"]["codestral"] == {"requests": 2, "share": 0.4}
    assert stats["models"]["gpt-4o"] == {"requests": 2, "share": 0.4}
    assert stats["models"]["(failed)"] == {"requests": 1, "share": 0.2}
    assert stats["fallback_rate"] == 0.2  # answered by a fallback: request 3 only
    assert stats["error_rate"] == 0.2
    assert stats["avg_cost_usd"] == pytest.approx((0.001 * 3 + 0.004) / 4)
    assert stats["priced_requests"] == 4
    assert stats["latency_ms"]["routing"] == {"p50": 2.0, "p95": 4.0}
    assert stats["latency_ms"]["model"] == {"p50": 100.0, "p95": 300.0}
    assert stats["latency_ms"]["total"] == {"p50": 102.0, "p95": 302.0}


def test_stats_command(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in LOG))
    result = CliRunner().invoke(main, ["stats", str(log), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["log"] == str(log) and data["requests"] == 5
    result = CliRunner().invoke(main, ["stats", str(log)])
    assert result.exit_code == 0, result.output
    for text in ("5 requests", "codestral", "(no route)", "fallback rate: 20.0%", "p95"):
        assert text in result.stdout


def test_stats_of_a_missing_log_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read") and result.stderr.count("\n") == 1


def test_a_rotated_log_is_created_anew(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.jsonl")
    log.write({"request_id": "before"})
    (tmp_path / "log.jsonl").rename(tmp_path / "log.jsonl.1")
    log.write({"request_id": "after-move"})
    (tmp_path / "log.jsonl").unlink()
    log.write({"request_id": "after-delete"})
    assert "before" in (tmp_path / "log.jsonl.1").read_text()
    assert json.loads((tmp_path / "log.jsonl").read_text())["request_id"] == "after-delete"


def test_a_log_replaced_by_a_new_file_is_written_to_the_new_one(tmp_path: Path) -> None:
    # logrotate's `create`: the log is moved and an empty file made in its place before the
    # next line is written; the next line goes to the new file, not the moved one.
    log = DecisionLog(tmp_path / "log.jsonl")
    log.write({"request_id": "before"})
    (tmp_path / "log.jsonl").rename(tmp_path / "log.jsonl.1")
    (tmp_path / "log.jsonl").touch()
    log.write({"request_id": "after"})
    moved = (tmp_path / "log.jsonl.1").read_text().splitlines()
    assert [json.loads(x)["request_id"] for x in moved] == ["before"]
    assert json.loads((tmp_path / "log.jsonl").read_text())["request_id"] == "after"
