"""What the route-file loader makes of input a user can give it by accident: a file reached twice
through a symlink, a YAML scalar that is not text where text belongs, an encoder path that is not
there, a path that is neither a file nor a folder. Each gives the one line a user would read."""

from __future__ import annotations

import datetime
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from semroute.cli.main import main
from semroute.config.routes import load_routes, parse_routes
from semroute.errors import RouteConfigError
from tests.conftest import ROUTER_YAML, ROUTES_YAML, one_error_line


def _validate(path: Path) -> Result:
    return CliRunner().invoke(main, ["validate", str(path)])


def _ok(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "error" not in result.stderr, result.stderr


# --- 1. a file reached twice through a symlink is read once ----------------------------------

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")


@needs_symlinks
def test_a_symlink_beside_its_target_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "r.yaml").write_text(ROUTER_YAML + ROUTES_YAML, encoding="utf-8")
    (folder / "link.yaml").symlink_to("r.yaml")  # sorts first, yet the real name is kept
    _ok(_validate(folder))
    routes = load_routes(folder)
    assert routes.sources == (folder / "r.yaml",)
    assert [r.name for r in routes.routes] == ["weather", "billing", "greeting"]


@needs_symlinks
def test_links_to_a_file_outside_the_folder_are_read_once_under_the_first_link(
    tmp_path: Path,
) -> None:
    # Linking a shared file in is a user's choice: it is read as a file of this folder.
    shared = tmp_path / "shared" / "extra.yaml"
    shared.parent.mkdir()
    shared.write_text("routes:\n  - name: farewell\n    utterances: [goodbye]\n")
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "router.yaml").write_text(ROUTER_YAML + ROUTES_YAML, encoding="utf-8")
    (folder / "a.yaml").symlink_to(shared)
    (folder / "b.yml").symlink_to(Path("..") / "shared" / "extra.yaml")
    _ok(_validate(folder))
    routes = load_routes(folder)
    assert routes.sources == (folder / "a.yaml", folder / "router.yaml")
    assert [r.name for r in routes.routes] == ["farewell", "weather", "billing", "greeting"]


@needs_symlinks
def test_two_different_files_are_still_both_read(tmp_path: Path) -> None:
    # Only the same file reached twice is read once: a real copy is still a second `router:`.
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "a.yaml").write_text(ROUTER_YAML + ROUTES_YAML, encoding="utf-8")
    (folder / "b.yaml").write_text(ROUTER_YAML, encoding="utf-8")
    (folder / "c.yaml").symlink_to("b.yaml")
    line = one_error_line(_validate(folder))
    assert line == (
        f"error: {folder / 'b.yaml'}:1: field 'router': a second `router:` block "
        f"(the first is in {folder / 'a.yaml'}); keep one"
    )


# --- 2. a YAML scalar that is not text where text belongs ------------------------------------


def _file(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "r.yaml"
    file.write_text(textwrap.dedent(text), encoding="utf-8")
    return file


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("2024-01-01", "should be text, not the date 2024-01-01; put it in quotes"),
        (
            "2024-01-01T10:00:00",
            "should be text, not the date and time 2024-01-01T10:00:00; put it in quotes",
        ),
        (
            "yes",
            "should be text, not True (YAML reads an unquoted yes as true or false); put it in "
            "quotes",
        ),
        (
            "off",
            "should be text, not False (YAML reads an unquoted off as true or false); put it in "
            "quotes",
        ),
        ("1.50", "should be text, not 1.50; put it in quotes"),
        ("0x2A", "should be text, not 0x2A; put it in quotes"),
        ("42", "should be text, not 42; put it in quotes"),
        (
            "null",
            "should be text, not null (YAML's word for no value); write a value, or put null "
            "in quotes",
        ),
        (
            "~",
            "should be text, not ~ (YAML's word for no value); write a value, or put ~ in quotes",
        ),
    ],
)
def test_an_utterance_yaml_reads_as_no_text_is_named_as_written(
    tmp_path: Path, written: str, said: str
) -> None:
    file = _file(
        tmp_path,
        f"""\
        router:
          default_model: big
          encoder: fake
        routes:
          - name: greet
            utterances: [hi, {written}]
        """,
    )
    line = one_error_line(_validate(file))
    assert line == f"error: {file}:6: route 'greet': field 'utterances[1]': {said}"


def test_every_text_field_names_a_date_as_written(tmp_path: Path) -> None:
    file = _file(
        tmp_path,
        """\
        router:
          default_model: 2024-01-01
          encoder: 2024-01-02
        routes:
          - name: 2024-01-03
            model: 2024-01-04
            utterances: [hi]
        out_of_scope: [2024-01-05]
        models:
          - model_name: 2024-01-06
            litellm_params: {model: openai/gpt-4o}
        """,
    )
    result = _validate(file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    date = "should be text, not the date 2024-01-0{}; put it in quotes"
    assert result.stderr.splitlines() == [
        f"error: {file}:2: field 'router.default_model': {date.format(1)}",
        f"error: {file}:3: field 'router.encoder': {date.format(2)}",
        f"error: {file}:5: route '#1': field 'name': {date.format(3)}",
        f"error: {file}:6: route '#1': field 'model': {date.format(4)}",
        f"error: {file}:8: field 'out_of_scope[0]': {date.format(5)}",
        f"error: {file}:10: field 'models[0].model_name': {date.format(6)}",
        f"{file}: 6 problems in 1 file",
    ]
    assert "datetime" not in result.stderr


def test_a_date_as_a_key_is_named_as_written(tmp_path: Path) -> None:
    file = _file(
        tmp_path,
        """\
        router:
          default_model: big
          encoder: fake
          tiers:
            2024-01-01: [small, big]
        routes:
          - name: greet
            utterances: [hi]
        """,
    )
    line = one_error_line(_validate(file))
    assert line == (
        f"error: {file}:5: field 'router.tiers.2024-01-01': the key should be text, not the "
        "date 2024-01-01; put it in quotes"
    )


def test_a_date_where_a_number_belongs_is_named_as_written(tmp_path: Path) -> None:
    file = _file(
        tmp_path,
        """\
        router:
          default_model: big
          encoder: fake
          threshold: 2024-01-01
        routes:
          - name: greet
            utterances: [hi]
        """,
    )
    line = one_error_line(_validate(file))
    assert line == (
        f"error: {file}:4: field 'router.threshold': input should be a valid number "
        "(got 2024-01-01)"
    )


def test_data_given_in_memory_names_a_date_in_yaml_terms() -> None:
    data = {
        "router": {"default_model": "big", "encoder": "fake"},
        "routes": [{"name": "greet", "utterances": ["hi", datetime.date(2024, 1, 1)]}],
    }
    with pytest.raises(RouteConfigError) as caught:
        parse_routes(data)
    assert str(caught.value) == (
        "<routes>: route 'greet': field 'utterances[1]': should be text, not the date "
        "2024-01-01; put it in quotes"
    )


# --- 3. a local encoder path found in neither place ------------------------------------------


def _with_encoder(tmp_path: Path, encoder: str) -> Path:
    folder = tmp_path / "project" / "routes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r.yaml").write_text(
        f"router:\n  default_model: big\n  encoder: '{encoder}'\n" + ROUTES_YAML, encoding="utf-8"
    )
    return folder


@pytest.mark.parametrize("written", ["./encoders/tuned", "../encoders/tuned", "encoders/a/b"])
def test_a_relative_encoder_path_found_nowhere_names_both_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    folder = _with_encoder(tmp_path, written)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    beside = os.path.normpath(folder / written)
    here = os.path.normpath(elsewhere / written)
    expected = (
        f"error: {folder / 'r.yaml'}:3: field 'router.encoder': encoder folder {written!r} is "
        f"not at {beside} (beside the route file) nor at {here} (from the current folder); "
        "write the path relative to the route file"
    )
    assert one_error_line(_validate(folder)) == expected
    # build-index refuses it the same way, before any model is looked for.
    result = CliRunner().invoke(main, ["build-index", str(folder), "--out", str(tmp_path / "i")])
    assert one_error_line(result) == expected
    assert not (tmp_path / "i").exists()


def test_an_absolute_or_home_encoder_path_that_is_not_there_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = _with_encoder(tmp_path, "~/models/tuned")
    assert one_error_line(_validate(folder)) == (
        f"error: {folder / 'r.yaml'}:3: field 'router.encoder': encoder folder "
        f"'~/models/tuned' does not exist ({tmp_path / 'home' / 'models' / 'tuned'}); write "
        "the path relative to the route file"
    )
    absolute = str(tmp_path / "no" / "encoder")
    folder = _with_encoder(tmp_path, absolute)
    with pytest.raises(RouteConfigError) as caught:
        load_routes(folder)
    assert caught.value.message == (
        f"encoder folder {absolute!r} does not exist; write the path relative to the route file"
    )
    assert caught.value.field == "router.encoder"


def test_a_local_encoder_path_is_still_found_beside_the_file_or_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _with_encoder(tmp_path, "./encoders/tuned")
    (folder / "encoders" / "tuned").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    _ok(_validate(folder))
    assert load_routes(folder).settings.encoder == str(folder / "encoders" / "tuned")
    # Not beside the file but there from the current folder: kept as written, as documented.
    folder = _with_encoder(tmp_path, "./cwd-encoder")
    (tmp_path / "cwd-encoder").mkdir()
    _ok(_validate(folder))
    assert load_routes(folder).settings.encoder == "./cwd-encoder"


@pytest.mark.parametrize(
    "name",
    ["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "fake", "my-org/tuned.v2"],
)
def test_hub_names_are_left_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    folder = _with_encoder(tmp_path, name)
    monkeypatch.chdir(tmp_path)
    _ok(_validate(folder))
    assert load_routes(folder).settings.encoder == name


# --- 4. a path that is neither a route file nor a folder -------------------------------------


def test_a_device_is_not_a_route_file(tmp_path: Path) -> None:
    if not Path(os.devnull).exists() or Path(os.devnull).is_file():
        pytest.skip("no device file here")
    assert one_error_line(_validate(Path(os.devnull))) == (
        f"error: {os.devnull}: is not a route file or a folder of them; pass a *.yaml file or "
        "the folder that holds your route files (default: routes/)"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_named_pipe_is_not_a_route_file_and_is_not_opened(tmp_path: Path) -> None:
    pipe = tmp_path / "routes.yaml"
    os.mkfifo(pipe)  # opening it would block: the check must not
    result = CliRunner().invoke(main, ["build-index", str(pipe), "--out", str(tmp_path / "i")])
    assert one_error_line(result) == (
        f"error: {pipe}: is not a route file or a folder of them; pass a *.yaml file or the "
        "folder that holds your route files (default: routes/)"
    )


def test_a_missing_path_still_says_there_is_no_such_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert one_error_line(_validate(missing)) == (
        f"error: {missing}: no such file or folder; pass the folder that holds your route "
        "files (default: routes/)"
    )
