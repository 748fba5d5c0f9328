"""The README stays true: its route-file example validates, its Python parses and imports what
it names, every `semroute` command, module, name and file it mentions exists, and its layout
lists every module of the package."""

from __future__ import annotations

import ast
import importlib
import re
from typing import Any

import pytest
import yaml

from semroute.cli.main import main
from semroute.config.routes import parse_routes
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
PACKAGE = ROOT / "src" / "semroute"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_route_file_example_validates() -> None:
    example = _blocks("yaml")[0]
    route_set = parse_routes(yaml.safe_load(example), source="README.md")
    assert route_set.routes[0].name == "billing_support"


def test_python_examples_parse() -> None:
    for block in _blocks("python"):
        compile(block, "README.md", "exec")


def test_every_command_named_exists() -> None:
    named = set(re.findall(r"`semroute ([a-z][a-z-]*)", README))
    assert named, "the README names no commands"
    assert named <= set(main.commands), sorted(named - set(main.commands))


@pytest.mark.parametrize("block", _blocks("python"))
def test_python_examples_import_what_they_use(block: str) -> None:
    # Imports only: the examples themselves need a built index and provider keys. Warnings are
    # errors, so an example still using a deprecated import path fails here.
    imports = [
        node for node in ast.parse(block).body if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})


def _resolve(dotted: str) -> Any:
    head, *parts = dotted.split(".")
    value: Any = importlib.import_module(head)
    for i, part in enumerate(parts, start=1):
        if not hasattr(value, part):
            value = importlib.import_module(".".join([head, *parts[:i]]))
        else:
            value = getattr(value, part)
    return value


@pytest.mark.parametrize(
    "dotted", sorted(set(re.findall(r"\bsemroute(?:\.[A-Za-z_]\w*)+", README)))
)
def test_every_semroute_name_mentioned_resolves(dotted: str) -> None:
    assert _resolve(dotted) is not None


@pytest.mark.parametrize(
    "path", sorted(set(re.findall(r"`((?:src|scripts|docs|routes|tests|\.ci)/[\w./-]*)`", README)))
)
def test_every_file_mentioned_exists(path: str) -> None:
    assert (ROOT / path).exists(), path


def test_layout_lists_every_module() -> None:
    layout = README.split("`src/semroute/` has", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(\w+(?:/|\.py))`", layout))
    modules = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    modules |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert modules <= named, sorted(modules - named)
    for name in named:
        assert list(PACKAGE.rglob(name.rstrip("/"))), f"README names {name}, which is not in src/"
