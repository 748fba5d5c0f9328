"""`semroute validate` lists every problem of every file, one line each, and exits 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.config.routes import check_routes, load_routes
from semroute.errors import RouteConfigError

ROUTER = """\
router:
  default_model: big
  treshold: 0.4
routes:
  - name: weather
    utterances: [will it rain?]
    threshold: 2
  - name: code
    utterances: []
"""
CLASHES = """\
routes:
  - name: greet
    utterances: [hello, hi]
  - name: greet
    utterances: [hey]
  - name: other
    utterances: [hello]
out_of_scope: [hi]
"""
TYPO = """\
routes:
  - name: x
    utterancez: [a]
"""


def _write(folder: Path, **files: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def test_every_problem_of_every_file_is_one_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "routes", a=ROUTER, b=CLASHES, c=TYPO)
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    expected = [
        "a.yaml:3: field 'router.treshold': unknown field; did you mean 'threshold'?",
        "a.yaml:7: route 'weather': field 'threshold': input should be less than or equal to 1",
        "a.yaml:9: route 'code': field 'utterances': needs at least one utterance",
        "b.yaml:4: route 'greet': field 'name': route name already used at",
        "b.yaml:7: route 'other': field 'utterances[0]': 'hello' is also an utterance of route",
        "b.yaml:8: field 'out_of_scope[0]': 'hi' is also an utterance of route 'greet'",
        "c.yaml:3: route 'x': field 'utterancez': unknown field; did you mean 'utterances'?",
        "c.yaml:2: route 'x': field 'utterances': is required",
    ]
    assert len(lines) == len(expected) + 1, result.stderr
    for line, part in zip(lines, expected, strict=False):
        assert line.startswith(f"error: {folder}/") and part in line, (line, part)
    assert lines[-1] == f"{folder}: 8 problems in 3 files"


def test_problems_between_files_are_all_found_once_the_files_are_valid(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "routes",
        a="router: {default_model: big}\nroutes: [{name: greet, utterances: [hello]}]\n",
        b="routes: [{name: greet, utterances: [hey]}, {name: other, utterances: [hello]}]\n",
        c="router: {default_model: small}\nroutes: [{name: more, utterances: [bye]}]\n",
    )
    routes, problems = check_routes(folder)
    assert routes is None
    assert [(Path(p.file or "").name, p.field) for p in problems] == [
        ("b.yaml", "name"),
        ("b.yaml", "utterances[0]"),
        ("c.yaml", "router"),
    ]
    # Everything else still raises one error: the first, saying how many more there are.
    with pytest.raises(RouteConfigError) as info:
        load_routes(folder)
    assert "(2 more problems in these files)" in str(info.value)
    assert len(info.value.problems) == 3


def test_a_valid_folder_is_ok_and_a_single_problem_is_one_line(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "ok", a="router: {default_model: m}\nroutes: [{name: r, utterances: [q]}]\n"
    )
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 0 and result.stdout.endswith(": ok\n")
    bad = _write(
        tmp_path / "bad", a="router: {default_model: m}\nroutes: [{name: r, utterances: []}]\n"
    )
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
