r"""A route file's pydantic validation errors as one-line :class:`RouteConfigError`\ s, naming the
file, line, route or rule and field: the first one raised (saying how many more there are),
every one in its ``problems`` (what `semroute validate` prints).

A number that is not finite (``.inf``, ``-.inf``, ``.nan``, or ``1.0e+400``, which YAML reads as
infinity) is refused wherever a file holds it, found by one walk over the data
(:func:`not_finite`) rather than by each field: the index is JSON, which has none, and no bound
means anything against NaN."""

from __future__ import annotations

import datetime
import difflib
import math
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from semroute.config.yamlsafe import field_path, key_written_at, line_of, written_at
from semroute.errors import RouteConfigError

__all__ = ["NotFiniteError", "config_error", "not_finite", "with_problems"]

NOT_FINITE = "finite_number"
"""The error type of a number that is not finite (pydantic's own name for it)."""
_BOUNDS = frozenset(
    {NOT_FINITE, "greater_than", "greater_than_equal", "less_than", "less_than_equal"}
)
"""Pydantic's errors about a number's value, which a non-finite number's own error replaces."""


class NotFiniteError(ValueError):
    """A validator's complaint that a value holds a number that is not finite somewhere inside:
    left to the error :func:`not_finite` gives for that number, which says where."""


def not_finite(data: Any) -> list[dict[str, Any]]:
    """Every number in ``data`` that is not finite, as an error shaped like pydantic's (type
    ``finite_number``, the location of the number), in the order the file holds them."""
    found: list[dict[str, Any]] = []
    _find_not_finite(data, (), set(), found)
    return found


def _find_not_finite(
    value: Any, loc: tuple[Any, ...], open_ids: set[int], found: list[dict[str, Any]]
) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        found.append({"type": NOT_FINITE, "loc": loc, "msg": "", "input": value})
    elif isinstance(value, dict | list) and id(value) not in open_ids:  # no cycle (in memory)
        open_ids.add(id(value))
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            _find_not_finite(item, (*loc, key), open_ids, found)
        open_ids.discard(id(value))


def config_error(
    errors: Sequence[Any],
    data: dict[str, Any],
    source: str,
    node: yaml.Node | None,
    root: type[BaseModel],
    *,
    non_finite: Sequence[Any] = (),
) -> RouteConfigError:
    """The first problem, saying how many more there are; ``problems`` holds them all.
    ``errors``: pydantic's (``ValidationError.errors()``); ``non_finite``: :func:`not_finite`'s,
    each in place of pydantic's errors about the same number."""
    merged = _merged([_untagged(e) for e in errors], non_finite)
    problems = [_one_error(e, data, source, node, root) for e in _sorted(merged, node)]
    return with_problems(problems, "in this file")


def _merged(errors: list[Any], non_finite: Sequence[Any]) -> list[Any]:
    """Pydantic's errors and the non-finite numbers', one per number: a non-finite number's
    error replaces pydantic's about its value (a bound it fails) or about the free-form field
    holding it (metadata, litellm_params: a validator's `NotFiniteError`; the error then names
    that field, like its other problems, and the key inside it), and gives way to any other at
    its place or above it (an unknown key, a text field, a list where a mapping belongs say
    more)."""
    replaced: set[int] = set()
    numbers: list[Any] = []
    for number in non_finite:
        at = tuple(number["loc"])
        related = [(i, e) for i, e in enumerate(errors) if tuple(e["loc"]) == at[: len(e["loc"])]]
        if any(not _replaceable(e, at) for _, e in related):
            continue
        replaced |= {i for i, _ in related}
        field = max((tuple(e["loc"]) for _, e in related if tuple(e["loc"]) != at), default=None)
        if field is not None:  # ``at``: where the number is, for its line and spelling
            number = {**number, "loc": field, "at": at, "inner": at[len(field) :]}
        numbers.append(number)
    return [e for i, e in enumerate(errors) if i not in replaced] + numbers


def _replaceable(err: Any, at: tuple[Any, ...]) -> bool:
    """Whether pydantic's ``err`` is only about the non-finite number at ``at``."""
    if tuple(err["loc"]) == at:
        return bool(err["type"] in _BOUNDS)
    return isinstance((err.get("ctx") or {}).get("error"), NotFiniteError)


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


def _sorted(errors: list[Any], node: yaml.Node | None) -> list[Any]:
    # A typo shows up twice: the unknown key and the required key it misspells. Report the typo,
    # then whatever comes first in the file.
    return sorted(
        errors, key=lambda e: (e["type"] != "extra_forbidden", line_of(node, _place(e)) or 0)
    )


def _place(err: Any) -> tuple[Any, ...]:
    """Where in the file ``err``'s value is (deeper than its field for a number inside a
    free-form field)."""
    return tuple(err.get("at", err["loc"]))


def _one_error(
    err: Any, data: dict[str, Any], source: str, node: yaml.Node | None, root: type[BaseModel]
) -> RouteConfigError:
    loc = tuple(err["loc"])
    written = written_at(node, _place(err))
    is_key = loc[-1:] == ("[key]",)
    if is_key:  # pydantic names the key by its repr (a date, a number): name it as written
        written = key_written_at(node, loc[:-2], err.get("input"))
        loc = (*loc[:-2], written if written is not None else _shown(err.get("input"), None))
    names: dict[str, str | None] = {"routes": None, "rules": None}
    field: str | None = field_path(loc)
    if len(loc) >= 2 and loc[0] in names and isinstance(loc[1], int):
        names[loc[0]] = _entry_name(data.get(loc[0]), loc[1])
        field = field_path(loc[2:]) or None
    message = _describe(err, loc, root, written)
    return RouteConfigError(
        f"the key {message}" if is_key else message,
        file=source,
        route=names["routes"],
        rule=names["rules"],
        field=field,
        line=line_of(node, _place(err) if not is_key else loc),
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
    if kind == NOT_FINITE:
        inner = field_path(err.get("inner", ()))
        return f"{inner} {_not_finite(given, written)}" if inner else _not_finite(given, written)
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


def _not_finite(given: Any, written: str | None) -> str:
    """Why a number that is not finite is refused: the value as the file spells it (and as YAML
    reads it, when it spells it otherwise, as ``1.0e+400``)."""
    hint = (
        "write a finite number or leave the field out (the index is stored as JSON, and JSON "
        "has no NaN or infinity)"
    )
    if not isinstance(given, float):  # text such as "inf", read as a number by a lax field
        return f"should be a finite number (got {_shown(given, written)}); {hint}"
    canonical = ".nan" if math.isnan(given) else ".inf" if given > 0 else "-.inf"
    shown = canonical
    if written is not None:
        same = written.lower().removeprefix("+") == canonical
        shown = written if same else f"{written}, which YAML reads as {canonical}"
    return f"should be a finite number, not {shown}; {hint}"


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
