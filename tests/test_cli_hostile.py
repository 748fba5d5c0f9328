"""The command line fed hostile input: terminal escape sequences and rich markup in queries, names
and answers, lone surrogates and deep nesting in labelled data, logs of the wrong shape, data
that cannot support a calibration. Each gives a value or one error line, never a traceback, and
nothing reaches the terminal that could drive it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.testing.fake_provider import FakeProvider
from tests.provider_kit import KEY, KEY_ENV, build

ESC = "\x1b"
# Clears the screen, sets the window title, recolours; then rich markup that would restyle the
# rest of the line or, unbalanced, make rich raise.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b[31mwill it rain today\x1b[0m [/bold] [red]"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def jsonl(path: Path, rows: list[Any]) -> Path:
    """JSON lines written as json.dumps writes them (lone surrogates become \\ud800 escapes)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def one_error_line(code: int, err: str) -> None:
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert ESC not in err


# --- what reaches the terminal ----------------------------------------------------------------


def test_escape_sequences_and_markup_in_a_query_are_shown_not_obeyed(fake_index: Path) -> None:
    code, out, _ = run("route", HOSTILE, "--index", str(fake_index))
    assert code == 0
    assert ESC not in out and "\x07" not in out
    assert "\\x1b[2J" in out  # shown, escaped, so the user sees what was sent
    assert "[/bold]" in out


def test_escape_sequences_in_utterances_are_shown_not_obeyed(tmp_path: Path) -> None:
    from semroute.testing import FakeEncoder
    from semroute.tuning.build import build_index
    from tests.conftest import write_routes

    routes = write_routes(
        tmp_path / "routes",
        routes='routes:\n  - name: weather\n    utterances: ["will it rain \\e[2J\\e[31m[/] today"]\n',
    )
    build_index(routes, tmp_path / "idx", encoder=FakeEncoder())
    code, out, _ = run("route", "will it rain today", "--index", str(tmp_path / "idx"))
    assert code == 0
    assert ESC not in out and "\\x1b[2J" in out


def test_an_error_quoting_user_input_is_one_escaped_line(tmp_path: Path) -> None:
    code, _, err = run("stats", str(tmp_path / f"{ESC}[2Jlog\nfile.jsonl"))
    one_error_line(code, err)
    assert "\\x1b[2J" in err


def test_chat_shows_an_answer_with_escape_sequences_escaped(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    provider.answer("weather-model", text=f"{ESC}]0;owned\x07{ESC}[2Jsunny\nall [/] day")
    build(tmp_path, provider, dispatch={"timeout": 30})  # patient on a loaded machine
    code, out, _ = run("chat", "will it rain today", "--index", str(tmp_path / "index"))
    assert code == 0
    assert ESC not in out and "\x07" not in out
    assert out.startswith("\\x1b]0;owned\\x07\\x1b[2Jsunny\nall [/] day\n")
    code, out, _ = run("chat", "will it rain today", "--index", str(tmp_path / "index"), "--json")
    assert json.loads(out)["text"].startswith(f"{ESC}]0;owned")  # JSON keeps the exact text


# --- semroute stats ---------------------------------------------------------------------------


def record(i: int, **fields: Any) -> dict[str, Any]:
    base = {"request_id": f"r{i}", "route": "code", "model": "codestral", "fallbacks": []}
    return {**base, "routing_ms": 2.0, "model_ms": 100.0, "cost_usd": 0.001, **fields}


def test_stats_skips_and_counts_lines_of_the_wrong_shape(tmp_path: Path) -> None:
    log = jsonl(
        tmp_path / "log.jsonl",
        [
            record(1),
            record(2, routing_ms="fast"),
            record(3, route=["a", "list"]),
            "[" * 50_000 + "]" * 50_000,
            json.dumps(record(4)).replace("0.001", "NaN"),
            json.dumps(record(5)).replace("100.0", "Infinity"),
            record(6, route=f"{ESC}[2Jweather [/]", model=f"{ESC}]0;x\x07"),
        ],
    )
    code, out, _ = run("stats", str(log), "--json")
    assert code == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in `semroute stats --json`")

    data = json.loads(out, parse_constant=refuse)
    assert (data["requests"], data["malformed_lines"]) == (2, 5)
    code, out, _ = run("stats", str(log))
    assert code == 0
    assert "5 malformed lines skipped" in out
    assert ESC not in out and "\\x1b[2Jweather" in out


def test_stats_help_says_what_a_malformed_line_is() -> None:
    code, out, _ = run("stats", "--help")
    assert code == 0 and "malformed" in out and "request_id" in out


# --- labelled data ----------------------------------------------------------------------------

ROWS = [
    {"text": "will it rain tomorrow", "label": "weather"},
    {"text": "what is the weather \ud800 forecast", "label": "weather"},
    {"text": "cancel my subscription \udfff", "label": "billing"},
    {"text": "download my invoice please", "label": "billing"},
    {"text": "hello there", "label": "greeting"},
    {"text": "good morning \ud83d", "label": "greeting"},
    {"text": "explain quantum entanglement", "label": "oos"},
    {"text": "write a sonnet \u2028about autumn", "label": "oos"},
]


def test_eval_calibrate_and_import_read_lone_surrogates_as_replacement_characters(
    fake_index: Path, tmp_path: Path
) -> None:
    data = jsonl(tmp_path / "data.jsonl", ROWS)
    assert "\\ud800" in data.read_text()
    code, out, _ = run("eval", "--data", str(data), "--index", str(fake_index), "--json")
    assert code == 0
    assert json.loads(out)["n"] == len(ROWS)
    code, out, _ = run("calibrate", "--data", str(data), "--index", str(fake_index), "--json")
    assert code == 0
    assert json.loads(out)["rows"] == len(ROWS)
    routes = tmp_path / "imported.yaml"
    code, out, _ = run("import", str(data), "--out", str(routes), "--default-model", "gpt-4o")
    assert code == 0, out
    assert "what is the weather \ufffd forecast" in routes.read_text(encoding="utf-8")


def test_line_separators_inside_a_json_string_do_not_split_the_row(
    fake_index: Path, tmp_path: Path
) -> None:
    # JSON allows U+2028, U+2029 and U+0085 unescaped; only a newline ends a row.
    rows = [dict(r, text=r["text"] + " \u2028\u2029\x85 end") for r in ROWS]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (rows[0], rows[3])))
    code, out, err = run("eval", "--data", str(data), "--index", str(fake_index), "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 2


@pytest.mark.parametrize("command", ["eval", "calibrate", "import"])
def test_deeply_nested_labelled_data_is_one_error_line_naming_the_line(
    command: str, fake_index: Path, tmp_path: Path
) -> None:
    data = jsonl(tmp_path / "data.jsonl", [ROWS[0], "[" * 100_000 + "]" * 100_000])
    args = {
        "eval": ["eval", "--data", str(data), "--index", str(fake_index)],
        "calibrate": ["calibrate", "--data", str(data), "--index", str(fake_index)],
        "import": ["import", str(data), "--out", str(tmp_path / "out.yaml")],
    }[command]
    code, _, err = run(*args)
    one_error_line(code, err)
    assert f"{data}:2: nested too deeply" in err


# --- calibrate on data that cannot support a fit ----------------------------------------------


def thresholds(index: Path) -> list[float]:
    manifest = json.loads((index / "manifest.json").read_text())
    return [r["threshold"] for r in manifest["routes"]]


def test_calibrate_refuses_data_without_in_scope_rows(fake_index: Path, tmp_path: Path) -> None:
    before = thresholds(fake_index)
    data = jsonl(
        tmp_path / "oos.jsonl",
        [
            {"text": "explain quantum physics", "label": "oos"},
            {"text": "bake bread", "label": "oos"},
        ],
    )
    code, _, err = run("calibrate", "--data", str(data), "--index", str(fake_index))
    one_error_line(code, err)
    assert "all 2 rows are labelled 'oos'" in err and "add rows labelled with route names" in err
    assert thresholds(fake_index) == before


def test_calibrate_warns_when_the_data_is_too_thin_to_trust(
    fake_index: Path, tmp_path: Path
) -> None:
    data = jsonl(tmp_path / "thin.jsonl", [{"text": "will it rain tomorrow", "label": "weather"}])
    code, out, err = run("calibrate", "--data", str(data), "--index", str(fake_index))
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, err
    assert "only 1 row:" in warnings[0]
    assert "2 of 3 routes have no rows ('billing', 'greeting')" in warnings[1]
    assert "no out-of-scope rows ('oos')" in warnings[2]
    code, out, err = run(
        "calibrate", "--data", str(data), "--index", str(fake_index), "--json", "--dry-run"
    )
    assert code == 0 and len(json.loads(out)["warnings"]) == 3
