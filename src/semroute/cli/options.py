"""Options and output helpers shared by the ``semroute`` commands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from semroute.text import printable

__all__ = [
    "DATA_OPTION",
    "INDEX_OPTION",
    "JSON_OPTION",
    "OOS_OPTION",
    "FiniteRange",
    "counted",
    "error",
    "warn",
]

INDEX_OPTION = click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Index folder [default: $SEMROUTE_INDEX or indexes/default].",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
DATA_OPTION = click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help='JSON lines of {"text": ..., "label": ...}.',
)
OOS_OPTION = click.option(
    "--oos-label", default="oos", show_default=True, help="Label of out-of-scope rows."
)


class FiniteRange(click.FloatRange):
    """click's ``FloatRange`` that also refuses ``nan`` and ``inf``: ``nan`` compares false with
    every bound, so the range alone lets it through, and ``inf`` passes an open upper bound."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 route", "3 routes"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def warn(message: object) -> None:
    click.secho(f"warning: {_line(message)}", fg="yellow", err=True)


def error(message: object) -> None:
    """``error: MESSAGE`` in red on stderr, on one line."""
    click.secho(f"error: {_line(message)}", fg="red", err=True)


def _line(message: object) -> str:
    # Messages quote user input (queries, labels, file names): escaped for the terminal.
    return printable(" ".join(str(message).split()))
