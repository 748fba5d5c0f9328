"""The README stays true: its route-file example validates, its Python parses, and every
`semroute` command it names exists."""

from __future__ import annotations

import re

import yaml

from semroute.cli.main import main
from semroute.config.routes import parse_routes
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


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
