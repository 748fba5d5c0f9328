"""What `semroute stats`, `replay` and `suggest` make of the log they read and the files they
write: one reader and one shape for every tool, timings that are absent or impossible, an index
that does not match the log, an --out that cannot be written. Through the real CLI, with
indexes built with the FakeEncoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.testing import FakeProvider
from tests.quality_kit import CHAT, EXTRACT, build, lines, spec


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def stats(log: Path) -> dict[str, Any]:
    result = cli("stats", str(log), "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def logged(
    request_id: str, query: str, *, route: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A request logged with its content (`log_content: true`)."""
    return {
        "time": "2026-05-01T10:00:00.000+00:00",
        "request_id": request_id,
        "route": route,
        "reason": "matched" if route else "below_threshold",
        "confidence": 0.3,
        "margin": 0.2,
        "top_scores": [{"route": route or "weather", "confidence": 0.3}],
        "model": "frontier-model",
        "routing_ms": 2.0,
        "model_ms": 100.0,
        "messages": [{"role": "user", "content": query}],
        **fields,
    }


# --- defect 1: an --out that cannot be written --------------------------------------------------


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("missing/dir/p.yaml", "the folder {tmp}/missing/dir does not exist; create it first"),
        ("a-file/p.yaml", "{tmp}/a-file is a file, not a folder"),
        ("a-file/deeper/p.yaml", "{tmp}/a-file is a file, not a folder"),
    ],
)
def test_suggest_out_in_a_missing_folder_is_one_line_and_exit_1(
    tmp_path: Path, fake_index: Path, out: str, says: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    log = write(tmp_path / "log.jsonl", [logged("a", "will it rain today")])
    target = tmp_path / out
    result = cli(
        "suggest", str(log), "--index", str(fake_index), "--min-size", "3", "--out", str(target)
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: --out {target}: {says.format(tmp=tmp_path)}"
        + ("" if "is a file" in says else " or choose another --out")
        + ("; choose another --out" if "is a file" in says else "")
        + "\n"
    )
    assert "Traceback" not in result.output and not target.exists()


def test_suggest_out_that_cannot_be_written_is_one_line(tmp_path: Path, fake_index: Path) -> None:
    log = write(tmp_path / "log.jsonl", [logged("a", "will it rain today")])
    target = tmp_path / ("x" * 300 + ".yaml")  # a name longer than the file system takes
    result = cli("suggest", str(log), "--index", str(fake_index), "--out", str(target))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: --out {target}: cannot write it (")
    assert result.stderr.endswith("; choose another --out\n") and result.stderr.count("\n") == 1
    assert list(tmp_path.glob(".x*")) == []  # no temporary file left behind


# --- defect 2: timings that are absent or impossible -----------------------------------------


def test_a_request_without_timings_adds_nothing_to_the_latency(tmp_path: Path) -> None:
    data = stats(write(tmp_path / "log.jsonl", [{"request_id": "o", "route": "x"}]))
    assert data["requests"] == 1
    for kind in ("routing", "model", "total"):
        assert data["latency_ms"][kind] == {"p50": None, "p95": None}
    table = cli("stats", str(tmp_path / "log.jsonl"))
    assert table.exit_code == 0
    rows = [line.split("│") for line in table.stdout.splitlines() if "│ routing" in line]
    assert [cell.strip() for cell in rows[0][2:4]] == ["-", "-"]
    # Timed and untimed requests: only the timed ones count; total needs both timings
    mixed = [
        {"request_id": "a", "routing_ms": 2.0, "model_ms": 100.0},
        {"request_id": "b", "routing_ms": 4.0},
        {"request_id": "c"},
    ]
    data = stats(write(tmp_path / "mixed.jsonl", mixed))
    assert data["latency_ms"]["routing"] == {"p50": 2.0, "p95": 4.0}
    assert data["latency_ms"]["model"] == {"p50": 100.0, "p95": 100.0}
    assert data["latency_ms"]["total"] == {"p50": 102.0, "p95": 102.0}


@pytest.mark.parametrize(
    "bad",
    [
        '{"request_id": "d", "routing_ms": -5, "model_ms": -100}',
        '{"request_id": "d", "model_ms": -0.001}',
        '{"request_id": "d", "routing_ms": Infinity}',
        '{"request_id": "d", "routing_ms": NaN}',
        '{"request_id": "d", "attempts": [{"model": "m", "latency_ms": -3}]}',
    ],
)
def test_a_negative_or_infinite_duration_makes_the_line_malformed(tmp_path: Path, bad: str) -> None:
    good = {"request_id": "g", "routing_ms": 1.0, "model_ms": 10.0}
    data = stats(write(tmp_path / "log.jsonl", [good, bad]))
    assert (data["requests"], data["malformed_lines"]) == (1, 1)
    assert data["latency_ms"]["total"] == {"p50": 11.0, "p95": 11.0}


# --- defect 3: nested fields of the wrong shape --------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"request_id": "r", "skipped": [{"model": "a", "reason": 5}]},
        {"request_id": "r", "skipped": [{"model": "a"}]},
        {"request_id": "r", "skipped": ["unhealthy"]},
        {"request_id": "o", "route": "x", "cascade": {"escalated": "yes", "steps": 5}},
        {"request_id": "o", "cascade": {"escalated": True, "steps": [{"verdict": 1}]}},
        {"request_id": "o", "cascade": "escalated"},
        {"request_id": "f", "attempts": "x"},
        {"request_id": "f", "attempts": [{"model": "m", "status": "503"}]},
        {"request_id": "f", "fallbacks": [None]},
        {"request_id": "s", "signals": {"pii": 5}},
        {"request_id": "s", "signals": [1]},
        {"request_id": "s", "redacted": "x"},
        {"request_id": "s", "redacted": {"email": -1}},
        {"request_id": "c", "challenger": {"route": 3}},
        {"request_id": "c", "challenger": "billing"},
        {"request_id": "t", "top_scores": [{"route": "a"}]},
        {"request_id": "t", "confidence": "high"},
        {"request_id": "t", "prompt_tokens": 1.5},
        {"request_id": "m", "messages": [{"content": "no role"}]},
        {"request_id": "m", "messages": "hello"},
    ],
    ids=lambda bad: json.dumps(bad)[:60],
)
def test_a_nested_field_of_the_wrong_shape_makes_the_line_malformed(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    good = {
        "request_id": "g",
        "route": "x",
        "skipped": [{"model": "a", "reason": "unhealthy", "detail": "open circuit"}],
        "cascade": {"escalated": True, "steps": [{"model": "a", "verdict": "rejected"}]},
        "attempts": [{"model": "a", "status": 503, "error": "boom", "latency_ms": 4.0}],
        "signals": {"pii": ["email"], "metadata": {"team": "x"}, "has_tools": False},
        "redacted": {"email": 2},
        "challenger": {"route": None, "model": "m", "reason": "below_threshold"},
    }
    data = stats(write(tmp_path / "log.jsonl", [good, bad]))
    assert (data["requests"], data["malformed_lines"]) == (1, 1)
    assert data["skip_reasons"]["unhealthy"]["skips"] == 1
    routes = data["quality"]["routes"]["x"]
    assert (routes["cascade_requests"], routes["escalated"]) == (1, 1)
    assert data["challenger"]["requests"] == 1


@pytest.mark.usefixtures("provider_key")
def test_the_lines_the_dispatcher_writes_are_not_malformed(
    tmp_path: Path, provider: FakeProvider
) -> None:
    """Every nested field the dispatcher logs (a cascade's steps, attempts, signals, redaction
    counts, messages) fits the shape the readers check."""
    provider.script("cheap", ["not json"])  # the cascade escalates to strong
    data = spec(
        provider,
        tmp_path,
        extract={"cascade": ["cheap", "strong"], "accept": {"json": True}},
        router={
            "dispatch": {
                "timeout": 10.0,
                "log": str(tmp_path / "decisions.jsonl"),
                "log_content": True,
            }
        },
        rules=[{"name": "scrub", "when": {"pii": "email"}, "redact": ["email"]}],
    )
    router, dispatcher = build(tmp_path, data)
    with dispatcher:
        dispatcher.complete(EXTRACT, router=router)
        dispatcher.complete(f"{CHAT}, write to ana@example.com", router=router)
    written = lines(tmp_path)
    assert written[0]["cascade"]["steps"] and written[0]["attempts"]
    assert written[1]["redacted"] == {"email": 1} and written[1]["signals"]["pii"] == ["email"]
    counted = stats(tmp_path / "decisions.jsonl")
    assert (counted["requests"], counted["malformed_lines"]) == (2, 0)
    assert counted["quality"]["routes"]["extract"]["escalated"] == 1


# --- defect 4: replay reads the log as stats does ------------------------------------------------


def test_replay_counts_requests_only_and_reports_malformed_lines(
    tmp_path: Path, fake_index: Path
) -> None:
    lines: list[Any] = [logged("a", "will it rain today"), logged("b", "hello there")]
    lines += [{"request_id": "x", "model": 5, "messages": [{"role": "user", "content": "hi"}]}]
    lines += [logged("y", "hi", routing_ms=-1), "not json", '{"request_id": "cut", "rou']
    log = write(tmp_path / "log.jsonl", lines)
    counted = stats(log)
    assert (counted["requests"], counted["malformed_lines"]) == (2, 4)
    result = cli("replay", str(log), "--index", str(fake_index), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n"], report["replayed"], report["malformed_lines"]) == (2, 2, 4)
    text = cli("replay", str(log), "--index", str(fake_index))
    assert text.exit_code == 0
    assert "2 of 2 requests replayed" in text.stdout
    assert "4 malformed lines skipped" in text.stdout


def test_replay_of_a_truncated_log_says_the_line_was_malformed(
    tmp_path: Path, fake_index: Path
) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(logged("a", "will it rain today"))[:40])  # cut off mid-line
    result = cli("replay", str(log), "--index", str(fake_index))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "nothing to replay (0 requests)",
        "1 malformed lines skipped",
    ]
    report = json.loads(cli("replay", str(log), "--index", str(fake_index), "--json").stdout)
    assert (report["n"], report["replayed"], report["malformed_lines"]) == (0, 0, 1)


def test_suggest_reports_malformed_lines(tmp_path: Path, fake_index: Path) -> None:
    log = write(tmp_path / "log.jsonl", [logged("a", "will it rain today"), "{"])
    result = cli("suggest", str(log), "--index", str(fake_index), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["requests"], report["malformed_lines"]) == (1, 1)


# --- defect 5: an index that does not match the log ------------------------------------------


def test_replay_warns_when_the_logged_routes_are_not_in_the_index(
    tmp_path: Path, fake_index: Path
) -> None:
    lines = [
        logged("a", "will it rain today", route="forecast"),
        logged("b", "extract the dates from this", route="extract"),
        logged("c", "extract the names", route="extract"),
        logged("d", "hello there"),  # not routed: not counted either way
    ]
    log = write(tmp_path / "log.jsonl", lines)
    result = cli("replay", str(log), "--index", str(fake_index), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["routes_not_in_index"] == [
        {"route": "extract", "n": 2},
        {"route": "forecast", "n": 1},
    ]
    warning = (
        "none of the 3 replayed requests the log sent to a route went to a route of this index "
        "(not in it: extract, forecast); is --index a candidate for the router that wrote "
        "this log?"
    )
    assert report["warning"] == warning
    assert result.stderr == f"warning: {warning}\n"
    text = cli("replay", str(log), "--index", str(fake_index))
    assert text.exit_code == 0 and text.stderr == f"warning: {warning}\n"


def test_replay_warns_only_when_under_half_the_routed_requests_are_known(
    tmp_path: Path, fake_index: Path
) -> None:
    half = [
        logged("a", "will it rain today", route="weather"),
        logged("b", "extract the dates", route="extract"),
    ]
    report = json.loads(
        cli(
            "replay", str(write(tmp_path / "h.jsonl", half)), "--index", str(fake_index), "--json"
        ).stdout
    )
    assert report["warning"] is None
    assert report["routes_not_in_index"] == [{"route": "extract", "n": 1}]
    few = [*half, logged("c", "extract names", route="extract")]
    result = cli("replay", str(write(tmp_path / "f.jsonl", few)), "--index", str(fake_index))
    assert result.exit_code == 0
    assert result.stderr.startswith(
        "warning: only 1 of the 3 replayed requests the log sent to a route went to a route "
        "of this index (not in it: extract);"
    )


WEATHER = [
    "will it rain today",
    "will it rain tomorrow",
    "will it rain this weekend",
    "will it rain in paris today",
]


def test_suggest_says_when_a_cluster_already_goes_to_a_route_of_the_index(
    tmp_path: Path, fake_index: Path
) -> None:
    # Logged below threshold by an older router; this index has a weather route now.
    log = write(tmp_path / "log.jsonl", [logged(f"w{i}", q) for i, q in enumerate(WEATHER)])
    out = tmp_path / "patch.yaml"
    args = ["suggest", str(log), "--index", str(fake_index), "--min-size", "3"]
    result = cli(*args, "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    [cluster] = json.loads(result.stdout)["clusters"]
    assert (cluster["existing_route"], cluster["existing_share"]) == ("weather", 1.0)
    note = "# new-route-1: 100% of its queries already go to route 'weather'; add its utterances"
    assert note in out.read_text()
    text = cli(*args)
    assert text.exit_code == 0
    assert "100% of its queries already go to route 'weather' with this index" in text.stdout


def test_suggest_leaves_a_cluster_no_route_takes_unmarked(tmp_path: Path, fake_index: Path) -> None:
    queries = [
        "how do i reset my account password",
        "reset the password of my account",
        "i forgot my account password",
        "help me reset my account password",
    ]
    log = write(tmp_path / "log.jsonl", [logged(f"p{i}", q) for i, q in enumerate(queries)])
    result = cli("suggest", str(log), "--index", str(fake_index), "--min-size", "3", "--json")
    assert result.exit_code == 0, result.output
    [cluster] = json.loads(result.stdout)["clusters"]
    assert (cluster["existing_route"], cluster["existing_share"]) == (None, None)
