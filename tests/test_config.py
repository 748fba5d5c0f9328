"""Route-file validation: table-driven bad cases, good folders, the bundled example, the schema.

Every entry of ``tests/data/bad_routes/`` is one case: a ``*.yaml`` file, or a folder of them for
cross-file rules. The first line of the case's file (for a folder: of the one file the error must
name) is ``# expect: <substring> | <substring> | ...``; each substring must appear in the one-line
error message. The first substring of the form ``name.yaml:7`` (the named file) or ``:7`` also
pins ``err.line`` to 7 (later ones may point at the other place of a clash). Optional
``# xfail: <reason>`` / ``# xfail-cli: <reason>`` lines mark a known bug for the API / CLI test.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from semroute.cli.main import main
from semroute.config.routes import RouteSet, load_routes, parse_routes, route_file_schema
from semroute.errors import RouteConfigError

REPO = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"
BAD = DATA / "bad_routes"
GOOD = DATA / "good_routes"

EXPECT = "# expect:"
LINE_TOKEN = re.compile(r"^(?P<file>[^\s:|]*):(?P<line>\d+)$")


# --- the bad-case table ------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCase:
    id: str
    path: Path  # what is passed to load_routes / `semroute validate`
    named: str  # the file name the error must name
    expect: tuple[str, ...]
    xfail: str | None = None
    xfail_cli: str | None = None


def _header(file: Path) -> list[str]:
    """The leading comment lines of a case file (read as bytes: one case is not UTF-8)."""
    lines = []
    for raw in file.read_bytes().splitlines():
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def _case(entry: Path) -> BadCase:
    files = sorted(f for f in entry.iterdir() if f.is_file()) if entry.is_dir() else [entry]
    marked = [f for f in files if _header(f)[:1] and _header(f)[0].startswith(EXPECT)]
    assert len(marked) == 1, f"{entry}: exactly one file must start with {EXPECT!r}"
    named = marked[0]
    header = _header(named)
    expect = tuple(s.strip() for s in header[0][len(EXPECT) :].split("|") if s.strip())
    assert expect, f"{named}: empty {EXPECT} line"
    notes = {
        key: line.split(":", 1)[1].strip()
        for line in header[1:]
        for key in ("xfail", "xfail-cli")
        if line.startswith(f"# {key}:")
    }
    return BadCase(
        id=entry.name,
        path=entry,
        named=named.name,
        expect=expect,
        xfail=notes.get("xfail"),
        xfail_cli=notes.get("xfail-cli"),
    )


BAD_CASES = [_case(e) for e in sorted(BAD.iterdir()) if e.is_dir() or e.suffix in (".yaml", ".yml")]


def _params(cli: bool) -> list[Any]:
    out = []
    for case in BAD_CASES:
        reason = case.xfail_cli if cli else case.xfail
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def test_bad_routes_table_is_complete() -> None:
    ids = {c.id for c in BAD_CASES}
    # The cases the route-file format must give a clear error for; a renamed case must not vanish.
    required = {
        "route_unknown_key_utterence.yaml",
        "top_level_unknown_key.yaml",
        "router_unknown_key.yaml",
        "route_utterances_empty.yaml",
        "route_utterances_missing.yaml",
        "utterance_blank.yaml",
        "utterance_number.yaml",
        "utterance_mapping.yaml",
        "threshold_above_one.yaml",
        "threshold_negative.yaml",
        "threshold_string.yaml",
        "name_missing.yaml",
        "name_leading_space.yaml",
        "name_empty.yaml",
        "name_duplicate_in_file.yaml",
        "name_duplicate_across_files",
        "utterance_in_two_routes.yaml",
        "utterance_in_two_routes_case_space.yaml",
        "router_block_twice",
        "no_router_block.yaml",
        "router_without_default_model.yaml",
        "yaml_unclosed_bracket.yaml",
        "yaml_unclosed_quote.yaml",
        "top_level_list.yaml",
        "empty_file.yaml",
        "duplicate_key_utterances.yaml",
        "routes_not_a_list.yaml",
        "not_utf8.yaml",
        "threshold_yaml_bool.yaml",
        "yaml_alias_cycle.yaml",
        "yaml_alias_bomb.yaml",
        "name_with_newline.yaml",
    }
    assert required <= ids, f"missing cases: {sorted(required - ids)}"


def test_not_utf8_case_really_is_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        (BAD / "not_utf8.yaml").read_bytes().decode("utf-8")


def _check_error(err: RouteConfigError, case: BadCase) -> None:
    message = str(err)
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    for part in case.expect:
        assert part in message, f"{part!r} not in {message!r}"
    lines = [m for m in map(LINE_TOKEN.match, case.expect) if m and m["file"] in ("", case.named)]
    if lines:
        assert err.line == int(lines[0]["line"]), message
    assert err.file is not None, message
    # A rule about a whole folder (no `router:` block anywhere) names the folder and its files.
    names_folder = case.path.is_dir() and err.file == str(case.path) and case.named in message
    assert err.file.endswith(case.named) or names_folder, (
        f"error names {err.file!r}, expected {case.named!r}"
    )


@pytest.mark.parametrize("case", _params(cli=False))
def test_bad_routes_raise_one_line_error(case: BadCase) -> None:
    with pytest.raises(RouteConfigError) as info:
        load_routes(case.path)
    _check_error(info.value, case)


def _assert_cli_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # `validate` lists every problem, one line each, then how many there were.
    if len(lines) > 1:
        assert all(x.startswith("error: ") for x in lines[:-1]), result.stderr
        assert lines[-1].endswith(f" problems in {lines[-1].rsplit(' in ', 1)[1]}")
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("case", _params(cli=True))
def test_bad_routes_through_cli(case: BadCase) -> None:
    result = CliRunner().invoke(main, ["validate", str(case.path)])
    line = _assert_cli_error(result)
    assert case.named in line


# Cases that need no committed file.


def _no_yaml_folder(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "README.md").write_text("route files go here\n")
    (folder / "routes.yaml~").write_text("routes: []\n")  # an editor backup is not a route file
    return folder, "no route files"


def _missing_path(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "no-such-routes", "no such file or folder"


def _zero_byte_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    return path, "file is empty"


def _utf16_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "utf16.yaml"
    path.write_text("router:\n  default_model: gpt-4o\n", encoding="utf-16")
    return path, "UTF-8"


def _empty_file_among_good_ones(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "routes"
    shutil.copytree(GOOD / "split", folder)
    (folder / "zz_empty.yaml").write_text("# nothing yet\n")
    return folder / "zz_empty.yaml", "file is empty"


TMP_CASES = [_no_yaml_folder, _missing_path, _zero_byte_file, _utf16_file]


@pytest.mark.parametrize("make", TMP_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_paths_raise_one_line_error(make: Any, tmp_path: Path) -> None:
    path, words = make(tmp_path)
    with pytest.raises(RouteConfigError) as info:
        load_routes(path)
    message = str(info.value)
    assert "\n" not in message
    assert words in message
    assert info.value.file == str(path)


@pytest.mark.parametrize("make", TMP_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_paths_through_cli(make: Any, tmp_path: Path) -> None:
    path, words = make(tmp_path)
    line = _assert_cli_error(CliRunner().invoke(main, ["validate", str(path)]))
    assert words in line
    assert str(path) in line


def test_error_names_the_bad_file_in_a_folder(tmp_path: Path) -> None:
    path, _ = _empty_file_among_good_ones(tmp_path)
    with pytest.raises(RouteConfigError, match="file is empty") as info:
        load_routes(path.parent)
    assert info.value.file == str(path)


def _semroute_script() -> Path | None:
    found = shutil.which("semroute")
    candidates = [Path(found)] if found else []
    candidates.append(Path(sys.executable).parent / "semroute")
    return next((c for c in candidates if c.is_file()), None)


def test_console_script_prints_one_error_line() -> None:
    script = _semroute_script()
    if script is None:
        pytest.skip("the `semroute` console script is not installed")
    bad = BAD / "threshold_above_one.yaml"
    proc = subprocess.run(
        [str(script), "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert f"{bad}:6: route 'code': field 'threshold'" in lines[0]


# --- good route folders ------------------------------------------------------------------------


@pytest.fixture
def split() -> RouteSet:
    return load_routes(GOOD / "split")


def _by_name(route_set: RouteSet) -> dict[str, Any]:
    return {r.name: r for r in route_set.routes}


def test_routes_split_across_files(split: RouteSet) -> None:
    folder = GOOD / "split"
    assert split.root == folder
    # Only *.yaml / *.yml files, in name order; notes.txt is not a route file.
    assert split.sources == (
        folder / "engineering.yaml",
        folder / "router.yaml",
        folder / "talk.yml",
    )
    assert [r.name for r in split.routes] == ["code", "math", "small_talk"]
    assert split.settings.default_model == "gpt-4o"
    assert split.settings.threshold == 0.4
    assert split.settings.min_margin == 0.05
    assert split.settings.encoder == "sentence-transformers/all-MiniLM-L6-v2"


def test_defaults_come_from_the_router_block(split: RouteSet) -> None:
    routes = _by_name(split)
    code, math, talk = routes["code"], routes["math"], routes["small_talk"]
    assert code.threshold is None
    assert split.threshold_for(code) == 0.4
    assert split.model_for(code) == "mistral/codestral-latest"
    assert split.threshold_for(math) == 0.7
    assert math.model is None
    assert split.model_for(math) == "gpt-4o"
    # An explicit 0.0 is a threshold, not "unset".
    assert split.threshold_for(talk) == 0.0


def test_duplicate_utterance_within_a_route_is_dropped_with_a_warning(split: RouteSet) -> None:
    talk = _by_name(split)["small_talk"]
    assert talk.utterances == ("hello there", "how are you today", "tell me a joke")
    assert len(split.warnings) == 1
    warning = split.warnings[0]
    assert "talk.yml" in warning
    assert "route 'small_talk'" in warning
    assert "'Hello   THERE'" in warning
    assert "listed twice" in warning


def test_utterances_are_stripped_and_metadata_kept(split: RouteSet) -> None:
    routes = _by_name(split)
    assert routes["small_talk"].utterances[0] == "hello there"
    assert all(u == u.strip() for r in split.routes for u in r.utterances)
    assert dict(routes["small_talk"].metadata) == {
        "owner": "support-team",
        "tags": ["chit-chat", "cheap"],
        "priority": 3,
    }
    assert dict(routes["code"].metadata) == {}
    assert routes["code"].description == "Writing and debugging source code."


def test_single_file_path(split: RouteSet) -> None:
    path = GOOD / "single" / "routes.yaml"
    one = load_routes(path)
    assert one.root == path
    assert one.sources == (path,)
    assert _by_name(one) == _by_name(split)
    assert one.settings == split.settings


def test_cli_validate_good_folder() -> None:
    result = CliRunner().invoke(main, ["validate", str(GOOD / "split")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(": ok")
    assert "3 routes, 7 utterances, default model gpt-4o" in result.stdout
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: ")
    assert "listed twice" in warnings[0]


BASE: dict[str, Any] = {
    "router": {"default_model": "gpt-4o", "threshold": 0.4},
    "routes": [
        {
            "name": "code",
            "model": "mistral/codestral-latest",
            "utterances": ["fix this TypeError", " explain this stack trace "],
        },
        {
            "name": "math",
            "threshold": 0.7,
            "utterances": ["what is 2 + 2"],
            "metadata": {"owner": "maths"},
        },
    ],
}


def test_parse_routes_in_memory() -> None:
    data = copy.deepcopy(BASE)
    route_set = parse_routes(data)
    assert data == BASE  # the input is not modified
    assert route_set.root is None
    assert route_set.sources == ()
    assert route_set.warnings == ()
    code, math = route_set.routes
    assert code.utterances == ("fix this TypeError", "explain this stack trace")
    assert route_set.model_for(math) == "gpt-4o"
    assert route_set.threshold_for(code) == 0.4
    assert dict(math.metadata) == {"owner": "maths"}


def test_parse_routes_reports_the_source_name() -> None:
    data = copy.deepcopy(BASE)
    data["routes"][1]["threshold"] = 2
    with pytest.raises(RouteConfigError) as info:
        parse_routes(data, source="<settings.toml>")
    err = info.value
    assert str(err) == (
        "<settings.toml>: route 'math': field 'threshold': "
        "input should be less than or equal to 1 (got 2)"
    )
    assert err.line is None
    assert (err.route, err.field) == ("math", "threshold")


# --- digest ------------------------------------------------------------------------------------


def test_digest_ignores_file_layout_route_order_and_comments(split: RouteSet) -> None:
    single = load_routes(GOOD / "single")
    assert split.digest() == single.digest()
    assert split.digest() == split.digest()
    reordered = copy.deepcopy(BASE)
    reordered["routes"].reverse()
    assert parse_routes(reordered).digest() == parse_routes(BASE).digest()


def test_digest_ignores_where_settings_and_routes_live(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(json.dumps({"routes": BASE["routes"][:1]}))
    (tmp_path / "b.yaml").write_text(json.dumps({"router": BASE["router"]}))
    (tmp_path / "c.yaml").write_text("# a comment\n" + json.dumps({"routes": BASE["routes"][1:]}))
    assert load_routes(tmp_path).digest() == parse_routes(BASE).digest()


def _change_utterance(d: dict[str, Any]) -> None:
    d["routes"][0]["utterances"][0] = "fix this TypeError please"


def _add_utterance(d: dict[str, Any]) -> None:
    d["routes"][1]["utterances"].append("what is 3 + 3")


def _route_threshold(d: dict[str, Any]) -> None:
    d["routes"][1]["threshold"] = 0.71


def _router_threshold(d: dict[str, Any]) -> None:
    d["router"]["threshold"] = 0.41


def _route_model(d: dict[str, Any]) -> None:
    d["routes"][0]["model"] = "gpt-4o-mini"


def _default_model(d: dict[str, Any]) -> None:
    d["router"]["default_model"] = "claude-3-5-sonnet"


def _encoder(d: dict[str, Any]) -> None:
    d["router"]["encoder"] = "BAAI/bge-small-en-v1.5"


def _min_margin(d: dict[str, Any]) -> None:
    d["router"]["min_margin"] = 0.1


def _route_name(d: dict[str, Any]) -> None:
    d["routes"][1]["name"] = "maths"


@pytest.mark.parametrize(
    "change",
    [
        _change_utterance,
        _add_utterance,
        _route_threshold,
        _router_threshold,
        _route_model,
        _default_model,
        _encoder,
        _min_margin,
        _route_name,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_digest_changes_with_what_shapes_routing(change: Any) -> None:
    changed = copy.deepcopy(BASE)
    change(changed)
    assert parse_routes(changed).digest() != parse_routes(BASE).digest()


# --- the bundled example and the schema --------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> RouteSet:
    return load_routes(REPO / "routes")


def test_bundled_routes_load(bundled: RouteSet) -> None:
    assert len(bundled.routes) >= 6
    assert bundled.warnings == ()
    counts = {r.name: len(r.utterances) for r in bundled.routes}
    assert all(15 <= n <= 30 for n in counts.values()), counts


def test_bundled_routes_load_relative_to_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert load_routes("routes").digest() == load_routes(REPO / "routes").digest()


def test_committed_schema_is_current() -> None:
    committed = REPO / "docs" / "route-file.schema.json"
    if not committed.is_file():
        pytest.skip(f"{committed.relative_to(REPO)} is not committed")
    assert json.loads(committed.read_text(encoding="utf-8")) == route_file_schema()


def test_cli_schema_is_strict_json() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema == route_file_schema()
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["RouteSpec"]["additionalProperties"] is False
    assert schema["$defs"]["RouterSpec"]["additionalProperties"] is False
    assert schema["$defs"]["RouteSpec"]["required"] == ["name", "utterances"]
