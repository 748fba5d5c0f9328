r"""A route file's pydantic validation errors as one-line :class:`RouteConfigError`\ s, naming the
file, line, route or rule and field: the first one raised (saying how many more there are),
every one in its ``problems`` (what `semroute validate` prints)."""

from __future__ import annotations

import datetime
import difflib
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from semroute.config.yamlsafe import key_written_at, line_of, written_at
from semroute.errors import RouteConfigError

__all__ = ["config_error", "with_problems"]


def config_error(
    exc: ValidationError,
    data: dict[str, Any],
    source: str,
    node: yaml.Node | None,
    root: type[BaseModel],
) -> RouteConfigError:
    """The first problem, saying how many more there are; ``problems`` holds them all."""
    problems = [_one_error(e, data, source, node, root) for e in _sorted(exc, node)]
    return with_problems(problems, "in this file")


def with_problems(problems: Sequence[RouteConfigError], where: str) -> RouteConfigError:
    """The first problem, saying how many more there are (``where``: "in this file"), holding
    them all in ``problems``."""
    first, more = problems[0], len(problems) - 1
    if more:
        first = RouteConfigError(
            f"{first.message} ({more} more problem{'s' if more > 1 else ''} {where})",
            file=first.file,
            route=first.route,
            rule=first.rule,
            field=first.field,
            line=first.line,
        )
    first.problems = tuple(problems)
    return first


def _sorted(exc: ValidationError, node: yaml.Node | None) -> list[Any]:
    # A typo shows up twice: the unknown key and the required key it misspells. Report the typo,
    # then whatever comes first in the file.
    return sorted(
        (_untagged(e) for e in exc.errors()),
        key=lambda e: (e["type"] != "extra_forbidden", line_of(node, e["loc"]) or 0),
    )


def _one_error(
    err: Any, data: dict[str, Any], source: str, node: yaml.Node | None, root: type[BaseModel]
) -> RouteConfigError:
    loc = tuple(err["loc"])
    written = written_at(node, loc)
    is_key = loc[-1:] == ("[key]",)
    if is_key:  # pydantic names the key by its repr (a date, a number): name it as written
        written = key_written_at(node, loc[:-2], err.get("input"))
        loc = (*loc[:-2], written if written is not None else _shown(err.get("input"), None))
    names: dict[str, str | None] = {"routes": None, "rules": None}
    field_path: str | None = _field_path(loc)
    if len(loc) >= 2 and loc[0] in names and isinstance(loc[1], int):
        names[loc[0]] = _entry_name(data.get(loc[0]), loc[1])
        field_path = _field_path(loc[2:]) or None
    message = _describe(err, loc, root, written)
    return RouteConfigError(
        f"the key {message}" if is_key else message,
        file=source,
        route=names["routes"],
        rule=names["rules"],
        field=field_path,
        line=line_of(node, loc),
    )


def _describe(err: Any, loc: tuple[Any, ...], root: type[BaseModel], written: str | None) -> str:
    """One error's message; ``written``: the unquoted YAML scalar at ``loc`` as the file has it."""
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = [f.alias or k for k, f in _spec_at(root, loc[:-1]).model_fields.items()]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        return f"unknown field; {hint}"
    if kind == "missing":
        return "is required"
    if kind == "too_short" and loc[-1] == "utterances":
        return "needs at least one utterance"
    given = err.get("input")
    if kind in ("model_type", "dict_type"):
        return f"should be a mapping of keys to values (got {_shown(given, written)})"
    if kind == "string_type" and not isinstance(given, dict | list):
        return _not_text(given, written)
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error",) and not isinstance(given, dict | list):
        msg += f" (got {_shown(given, written)})"
    return msg[0].lower() + msg[1:]


def _not_text(given: Any, written: str | None) -> str:
    """Why a YAML scalar where text belongs is not text: the value as the file spells it, what
    YAML made of it, and to quote it."""
    as_written = written if written is not None else _shown(given, None)
    if given is None and not written:
        return "is empty; write a value or delete the entry"
    if given is None:
        return (
            f"should be text, not {written} (YAML's word for no value); write a value, or put "
            f"{written} in quotes"
        )
    if isinstance(given, bool):  # True/False: as YAML also spells them
        return (
            f"should be text, not {given} (YAML reads an unquoted {as_written} as true "
            "or false); put it in quotes"
        )
    if isinstance(given, int | float):
        return f"should be text, not {as_written}; put it in quotes"
    if isinstance(given, datetime.datetime):
        return f"should be text, not the date and time {as_written}; put it in quotes"
    if isinstance(given, datetime.date):
        return f"should be text, not the date {as_written}; put it in quotes"
    return f"should be text (got {as_written}); put it in quotes"


def _shown(given: Any, written: str | None) -> str:
    """``given`` as a message shows it: a date as the file spells it (not as Python's repr),
    anything else as before."""
    if isinstance(given, datetime.date):
        return written if written is not None else given.isoformat()
    if isinstance(given, bytes):
        return "binary data (a !!binary value)"
    return repr(given)


def _untagged(err: Any) -> Any:
    loc = tuple(err["loc"])
    if loc[:1] == ("models",) and loc[1:2] in (("list",), ("path",)):
        return {**err, "loc": ("models", *loc[2:])}
    if loc[:2] == ("router", "tiers") and loc[3:4] in (("list",), ("mapping",)):
        return {**err, "loc": (*loc[:3], *loc[4:])}
    if loc[:2] == ("server", "keys") and loc[3:4] in (("reference",), ("mapping",)):
        return {**err, "loc": (*loc[:3], *loc[4:])}
    in_list = loc[:1] in (("routes",), ("rules",))
    if in_list and loc[2:3] == ("cache",) and loc[3:4] in (("switch",), ("mapping",)):
        return {**err, "loc": (*loc[:3], *loc[4:])}
    return err


def _spec_at(root: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel]:
    """The pydantic model a (parent) error location points into, e.g. RouterSpec for `router`."""
    model: type[BaseModel] = root
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            continue  # a list index or a union member's tag
        inner = _spec_in(info.annotation)
        if inner is None:
            break
        model = inner
    return model


def _spec_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _spec_in(arg)
        if found is not None:
            return found
    return None


def _entry_name(items: object, index: int) -> str:
    """The name of entry ``index`` of a `routes:` or `rules:` list, or ``#N`` if it has none."""
    entry = items[index] if isinstance(items, list) and index < len(items) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) else f"#{index + 1}"


def _field_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
