"""Every YAML (and JSON) file semroute reads is bounded: its size, how deep it nests and how much
it expands to, aliases included. Past a bound it is one error line naming the file, found by
`semroute validate` as well as by `build-index` and `import`, never a traceback, a crash or
gigabytes of memory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from semroute import RouteConfigError, load_routes
from semroute.cli.main import main
from semroute.errors import DataError
from semroute.tuning.importers import import_file

ROUTER = """\
router:
  default_model: gpt-4o
routes:
  - name: code
    model: gpt-4o
    utterances: [fix this TypeError]
"""


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Top-level keys whose aliases expand to ``width ** levels`` entries (a billion)."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", str(path)])
    return result.exit_code, result.stderr


def one_line(stderr: str) -> bool:
    return stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr


# --- the LiteLLM config named by `models:` ------------------------------------------------------


def test_an_alias_bomb_in_the_litellm_config_is_refused_by_validate_and_build(
    tmp_path: Path,
) -> None:
    config = tmp_path / "litellm.yaml"
    config.write_text(
        alias_bomb()
        + "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o}\n"
        + "    model_info: {tags: *a9}\n"
    )
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "router.yaml").write_text(ROUTER + "models: ../litellm.yaml\n")
    with pytest.raises(RouteConfigError, match="aliases expand this file") as caught:
        load_routes(routes)
    assert caught.value.file == str(routes / "../litellm.yaml")
    code, err = validate(routes)
    assert code == 1 and one_line(err) and "litellm.yaml" in err
    build = CliRunner().invoke(main, ["build-index", str(routes), "--out", str(tmp_path / "index")])
    assert build.exit_code == 1 and one_line(build.stderr) and "aliases expand" in build.stderr
    assert not (tmp_path / "index").exists()


def test_a_litellm_config_that_is_not_yaml_or_too_deep_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "litellm.yaml"
    (tmp_path / "router.yaml").write_text(ROUTER + "models: litellm.yaml\n")
    config.write_text("model_list: [" + "[" * 500 + "]" * 500 + "]\n")
    code, err = validate(tmp_path / "router.yaml")
    assert code == 1 and one_line(err) and "litellm.yaml:1" in err and "nested more than" in err


# --- route files -------------------------------------------------------------------------------


def test_a_route_file_nested_past_the_limit_is_refused(tmp_path: Path) -> None:
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(ROUTER + "    metadata: {deep: " + "[" * 100 + "]" * 100 + "}\n")
    with pytest.raises(RouteConfigError, match="nested more than 64 levels") as caught:
        load_routes(route_file)
    assert caught.value.line == 7


def test_a_route_file_nested_100000_deep_is_one_line_not_a_crash(tmp_path: Path) -> None:
    # Composing it recursed until the interpreter died (SIGSEGV): run it in a child process.
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(ROUTER + "    metadata: {deep: " + "[" * 100_000 + "]" * 100_000 + "}\n")
    semroute = Path(sys.executable).parent / "semroute"
    proc = subprocess.run(
        [str(semroute), "validate", str(route_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert one_line(proc.stderr) and "nested more than" in proc.stderr


def test_a_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    route_file = tmp_path / "routes.yaml"
    with route_file.open("wb") as f:  # sparse: no disk space, and nothing to read
        f.truncate(33 * 2**20)
    code, err = validate(route_file)
    assert code == 1 and one_line(err)
    assert f"{route_file}: file is larger than 32 MB" in err


def test_merge_keys_count_what_they_copy(tmp_path: Path) -> None:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 22)]
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(ROUTER + "    metadata:\n" + textwrap.indent("\n".join(lines), " " * 6))
    code, err = validate(route_file)
    assert code == 1 and one_line(err) and "aliases expand this file" in err


def test_a_large_ordinary_route_file_still_reads(tmp_path: Path) -> None:
    utterances = "\n".join(f"      - request {i} about topic {i % 97}" for i in range(20_000))
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(
        ROUTER.replace("    utterances: [fix this TypeError]\n", "")
        + "    utterances:\n"
        + utterances
        + "\n"
    )
    (route,) = load_routes(route_file).routes
    assert len(route.utterances) == 20_000


@pytest.mark.parametrize(
    ("value", "problem"),
    [(".nan", "JSON has no NaN"), ("-.inf", "JSON has no NaN"), ("2024-01-01", "a date")],
)
def test_yaml_values_the_index_cannot_hold_are_refused_by_validate(
    tmp_path: Path, value: str, problem: str
) -> None:
    # YAML reads them into floats and dates the index's JSON manifest cannot store.
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(ROUTER + f"    metadata: {{since: {value}}}\n")
    code, err = validate(route_file)
    assert code == 1 and one_line(err) and problem in err
    assert "routes.yaml:7: route 'code': field 'metadata'" in err


# --- `semroute import` of a router config --------------------------------------------------------


def test_importing_an_alias_bomb_router_config_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "router.yaml"
    source.write_text(
        alias_bomb() + "routes:\n  - name: r\n    utterances: [hi]\n    metadata: {x: *a9}\n"
    )
    out = tmp_path / "routes.yaml"
    with pytest.raises(DataError, match="aliases expand this file"):
        import_file(source, out)
    assert not out.exists()


@pytest.mark.parametrize("depth", [100, 100_000])
def test_importing_a_deeply_nested_json_config_is_one_line(tmp_path: Path, depth: int) -> None:
    source = tmp_path / "router.json"
    nested = "[" * depth + "]" * depth
    source.write_text(
        f'{{"routes": [{{"name": "r", "utterances": ["hi"], "metadata": {{"x": {nested}}}}}]}}'
    )
    out = tmp_path / "routes.yaml"
    result = CliRunner().invoke(main, ["import", str(source), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert one_line(result.stderr) and "router.json" in result.stderr
    assert "nested" in result.stderr and not out.exists()
