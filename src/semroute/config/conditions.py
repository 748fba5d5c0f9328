r"""Conditions: a rule's ``when:`` compiled into a frozen :class:`Condition` of :class:`Test`\ s,
each checked once here (see :mod:`semroute.config.policy` for the syntax). A problem is a
one-line :class:`RouteConfigError` naming the file, line, rule and field.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from semroute.config.regex import UserPattern, compile_user_pattern
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = [
    "SIGNALS",
    "Condition",
    "Test",
    "Where",
    "compile_condition",
    "is_number",
    "tests_signal",
]


NUMBER, BOOL, TEXT, LIST = "number", "bool", "text", "list"
SIGNALS: Mapping[str, str] = {
    "input_tokens": NUMBER,
    "max_tokens": NUMBER,
    "system_prompt_tokens": NUMBER,
    "max_cost_usd": NUMBER,
    "confidence": NUMBER,
    "difficulty": NUMBER,
    "has_tools": BOOL,
    "has_images": BOOL,
    "json_mode": BOOL,
    "task": TEXT,
    "user_tier": TEXT,
    "route": TEXT,
    "reason": TEXT,
    "pii": LIST,
}
"""Every signal a rule can test, with its type (plus ``text_matches`` and ``metadata.KEY``)."""
COMPARISONS = ("gt", "gte", "lt", "lte")
REASONS = ("matched", "below_threshold", "ambiguous", "empty_query", "sticky")

LIST_OPS = ("any", "all")
"""Tests of a list signal (``pii``): holds when any (all) of the values is in the list; a
plain value holds when it is in the list."""

Op = Literal["eq", "in", "gt", "gte", "lt", "lte", "regex", "any", "all"]


@dataclass(frozen=True)
class Test:
    """One test of one signal: ``op`` applied to ``value``, negated when ``negate``."""

    signal: str
    op: Op
    value: Any
    negate: bool = False
    pattern: UserPattern | None = None


@dataclass(frozen=True)
class Condition:
    """All of ``tests`` and of ``all_of`` hold, one of each ``any_of`` group does, and none of
    ``none_of`` holds. Empty: always holds."""

    tests: tuple[Test, ...] = ()
    any_of: tuple[tuple[Condition, ...], ...] = ()
    none_of: tuple[Condition, ...] = ()

    @property
    def always(self) -> bool:
        return not (self.tests or self.any_of or self.none_of)


@dataclass
class Where:
    source: str
    node: yaml.Node | None
    rule: str
    loc: tuple[Any, ...]
    pii_kinds: Collection[str] | None = None
    """The kinds ``pii`` may test (None: not checked)."""

    def error(self, message: str, *path: Any) -> RouteConfigError:
        loc = (*self.loc, *path)
        field = ".".join(str(p) for p in loc[2:]) or None
        return RouteConfigError(
            message, file=self.source, rule=self.rule, field=field, line=line_of(self.node, loc)
        )


def compile_condition(
    when: Any, where: Where, loc: tuple[Any, ...], routes: Collection[str] | None
) -> Condition:
    if not isinstance(when, dict):
        raise where.error(f"should be a mapping of signals to tests (got {when!r})", *loc)
    tests: list[Test] = []
    any_of: list[tuple[Condition, ...]] = []
    none_of: list[Condition] = []
    for key, value in when.items():
        at = (*loc, key)
        if key == "any":
            if not isinstance(value, list) or not value:
                raise where.error("should be a non-empty list of conditions", *at)
            any_of.append(
                tuple(compile_condition(v, where, (*at, j), routes) for j, v in enumerate(value))
            )
        elif key == "not":
            none_of.append(compile_condition(value, where, at, routes))
        elif key == "text_matches":
            tests.append(_regex(value, where, at))
        else:
            tests.extend(_tests(str(key), value, where, at, routes))
    return Condition(tuple(tests), tuple(any_of), tuple(none_of))


def _regex(value: Any, where: Where, at: tuple[Any, ...]) -> Test:
    if not isinstance(value, str) or not value:
        raise where.error(f"should be a regular expression in quotes (got {value!r})", *at)
    try:
        pattern = compile_user_pattern(value)
    except ValueError as exc:
        raise where.error(str(exc), *at) from None
    return Test("text", "regex", value, pattern=pattern)


def _tests(
    signal: str, value: Any, where: Where, at: tuple[Any, ...], routes: Collection[str] | None
) -> list[Test]:
    kind = SIGNALS.get(signal)
    if kind is None and not (signal.startswith("metadata.") and len(signal) > len("metadata.")):
        import difflib

        names = [*SIGNALS, "text_matches", "any", "not", "metadata.KEY"]
        close = difflib.get_close_matches(signal, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"signals: {', '.join(names)}"
        raise where.error(f"unknown signal {signal!r}; {hint}", *at)
    if not isinstance(value, dict):
        return [_test(signal, kind, "eq", value, where, at, routes)]
    if not value:
        raise where.error("empty test; write a value, or in/gt/gte/lt/lte/not", *at)
    out: list[Test] = []
    for op, operand in value.items():
        if op == "not":
            inner = _tests(signal, operand, where, (*at, "not"), routes)
            if len(inner) != 1:
                raise where.error("`not` takes one test; split it into two rules", *at, "not")
            out.append(Test(signal, inner[0].op, inner[0].value, not inner[0].negate))
        elif kind == LIST and op in LIST_OPS:
            out.append(_list_test(signal, op, operand, where, (*at, op)))
        elif op in ("in", *COMPARISONS) and kind != LIST:
            out.append(_test(signal, kind, op, operand, where, (*at, op), routes))
        else:
            ops = "any, all or not" if kind == LIST else "in, gt, gte, lt, lte or not"
            raise where.error(f"unknown test {op!r}; use {ops}", *at, op)
    return out


def _list_test(signal: str, op: Op, value: Any, where: Where, at: tuple[Any, ...]) -> Test:
    if not isinstance(value, list) or not value:
        raise where.error(f"`{op}` needs a non-empty list (got {value!r})", *at)
    for v in value:
        _check_type(signal, LIST, v, where, at, None)
    return Test(signal, op, tuple(value))


def _test(
    signal: str,
    kind: str | None,
    op: Op,
    value: Any,
    where: Where,
    at: tuple[Any, ...],
    routes: Collection[str] | None,
) -> Test:
    if op in COMPARISONS:
        if kind not in (NUMBER, None) or not is_number(value):
            what = "a number" if kind in (NUMBER, None) else f"a number signal, not {kind}"
            raise where.error(f"`{op}` needs {what} (got {value!r})", *at)
        return Test(signal, op, value)
    values = value if op == "in" else [value]
    if op == "in" and (not isinstance(value, list) or not value):
        raise where.error(f"`in` needs a non-empty list (got {value!r})", *at)
    for v in values:
        _check_type(signal, kind, v, where, at, routes)
    return Test(signal, op, tuple(values) if op == "in" else value)


def _check_type(
    signal: str,
    kind: str | None,
    value: Any,
    where: Where,
    at: tuple[Any, ...],
    routes: Collection[str] | None,
) -> None:
    ok = {
        NUMBER: is_number(value),
        BOOL: isinstance(value, bool),
        TEXT: isinstance(value, str)
        or (value is None and signal in ("route", "task", "user_tier")),
        LIST: isinstance(value, str),
        None: value is None or isinstance(value, str | int | float | bool),
    }[kind]
    if not ok:
        want = {
            NUMBER: "a number",
            BOOL: "true or false",
            TEXT: "text",
            LIST: "a kind's name",
            None: "a plain value",
        }
        raise where.error(f"{signal} should be {want[kind]} (got {value!r})", *at)
    if signal == "route" and routes is not None and value is not None and value not in routes:
        raise where.error(f"unknown route {value!r} (routes: {', '.join(sorted(routes))})", *at)
    kinds = where.pii_kinds
    if signal == "pii" and kinds is not None and value not in kinds:
        raise where.error(
            f"unknown kind {value!r} (kinds: {', '.join(kinds)}; add your own under "
            "router.pii.detectors)",
            *at,
        )
    if signal == "reason" and value not in REASONS:
        raise where.error(f"unknown reason {value!r} (one of {', '.join(REASONS)})", *at)


def tests_signal(condition: Condition, signal: str) -> bool:
    """Whether ``condition`` tests ``signal`` anywhere (in ``any`` and ``not`` too)."""
    return (
        any(t.signal == signal for t in condition.tests)
        or any(tests_signal(c, signal) for group in condition.any_of for c in group)
        or any(tests_signal(c, signal) for c in condition.none_of)
    )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
