from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.testing.fake_provider import FakeProvider
from tests.conftest import ROUTES_YAML
from tests.provider_kit import KEY, KEY_ENV, build

SEMROUTE = str(Path(sys.executable).parent / "semroute")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_route_json_prints_one_object_listing_every_route(fake_index: Path) -> None:
    code, out, _ = run("route", "will it rain tomorrow", "--index", str(fake_index), "--json")
    assert code == 0
    (line,) = out.strip().splitlines()
    data = json.loads(line)
    assert data["route"] == "weather"
    assert data["model"] == "weather-model"
    assert data["reason"] == "matched"
    assert isinstance(data["confidence"], float)
    assert next(s["route"] for s in data["scores"]) == "weather"
    assert sorted(s["route"] for s in data["scores"]) == ["billing", "greeting", "weather"]
    for score in data["scores"]:
        assert set(score) >= {"route", "confidence", "threshold", "utterance"}
        assert isinstance(score["utterance"], str)


def test_route_json_with_several_queries_prints_one_line_each(fake_index: Path) -> None:
    code, out, _ = run(
        "route", "hello there", "quantum physics", "--index", str(fake_index), "--json"
    )
    assert code == 0
    decisions = [json.loads(line) for line in out.strip().splitlines()]
    assert [(d["route"], d["model"]) for d in decisions] == [
        ("greeting", "frontier-model"),
        (None, "frontier-model"),
    ]


def test_route_table_shows_every_route_and_the_decision(fake_index: Path) -> None:
    code, out, _ = run("route", "download my invoice", "--index", str(fake_index))
    assert code == 0
    for name in ("weather", "billing", "greeting"):
        assert name in out
    assert "route billing → model billing-model (matched" in out


def test_info_reports_routes_and_staleness(fake_index: Path, routes_dir: Path) -> None:
    code, out, _ = run("info", "--index", str(fake_index), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["stale"] is False
    assert [(r["name"], r["utterances"]) for r in info["routes"]] == [
        ("weather", 3),
        ("billing", 3),
        ("greeting", 2),
    ]
    assert info["encoder"]["name"] == "fake-256"
    assert info["encoder_runtime"] == "fake"
    (routes_dir / "routes.yaml").write_text(ROUTES_YAML.replace("hello there", "hi there"))
    code, out, _ = run("info", "--index", str(fake_index))
    assert code == 0
    assert "stale" in out and "build-index" in out


def test_missing_index_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, _out, err = run("route", "hello", "--index", str(tmp_path / "none"))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: index at ")
    assert "run `semroute build-index`" in err


def test_stale_index_is_refused_by_route(fake_index: Path, routes_dir: Path) -> None:
    (routes_dir / "routes.yaml").write_text(ROUTES_YAML.replace("hello there", "hi there"))
    code, _, err = run("route", "hello", "--index", str(fake_index))
    assert code == 1 and "build-index" in err


def test_usage_errors_exit_2() -> None:
    assert run("route")[0] == 2
    assert run("no-such-command")[0] == 2
    assert run("route", "x", "--no-such-flag")[0] == 2


def test_every_command_has_an_example_in_its_help() -> None:
    for name in main.commands:
        code, out, _ = run(name, "--help")
        assert code == 0
        assert "semroute " + name in out, f"`semroute {name} --help` shows no example"


def test_user_errors_never_show_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [\n")
    for args in (["validate", str(bad)], ["build-index", str(bad), "--out", str(tmp_path / "o")]):
        proc = subprocess.run([SEMROUTE, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"error: {bad}:")
        assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_chat_prints_the_answer_and_the_decision(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    provider.error("weather-model", status=500)
    build(tmp_path, provider)
    index = str(tmp_path / "index")
    code, out, _ = run("chat", "will it rain today", "--index", index)
    assert code == 0
    assert out.startswith("Hello from backup.\n")
    assert "route weather → model weather-model (matched" in out
    assert "weather-model: failed: InternalServerError" in out
    assert "backup: answered" in out
    code, out, _ = run("chat", "hello", "--index", index, "--json", "--model", "last-resort")
    assert code == 0
    data = json.loads(out)
    assert (data["text"], data["model"]) == ("Hello from last-resort.", "last-resort")
    assert data["decision"]["reason"] == "pinned"
    assert data["usage"]["completion_tokens"] == 3 and data["cost_usd"] > 0


def test_chat_when_every_model_fails_is_one_line_and_exit_1(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    for name in ("frontier", "backup"):
        provider.error(name, status=503)
    build(tmp_path, provider)
    code, out, err = run("chat", "explain quantum physics", "--index", str(tmp_path / "index"))
    assert code == 1 and out == ""
    assert err.startswith("error: no model answered") and err.count("\n") == 1
    assert "frontier: ServiceUnavailableError" in err and KEY not in err


@pytest.mark.parametrize(
    ("args", "says", "help_of"),
    [
        (["route", "hi", "--max-cost", "nan"], "Invalid value for '--max-cost'", "semroute route"),
        (["route"], "give a QUERY, or --request", "semroute route"),
        (
            ["eval", "--data", "no-such.jsonl"],
            "Invalid value for '--data': File 'no-such.jsonl' does not exist",
            "semroute eval",
        ),
        (
            ["route", "hi", "--no-such-option"],
            "No such option '--no-such-option'",
            "semroute route",
        ),
        (["no-such-command"], "No such command 'no-such-command'", "semroute"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], says: str, help_of: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="semroute")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Usage:" not in result.stderr
    assert result.stderr.startswith(f"error: {says}")
    assert result.stderr.endswith(f"; see `{help_of} --help`\n")
