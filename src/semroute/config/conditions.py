r"""Conditions: a rule's ``when:`` compiled into a frozen :class:`Condition` of :class:`Test`\ s,
each checked once here (see :mod:`semroute.config.policy` for the syntax). A problem is a
one-line :class:`RouteConfigError` naming the file, line, rule and field; so is a signal's tests
that can never hold together: a bound outside the signal's range (:data:`RANGES`, such as
``confidence: {gt: 1}``) or an empty range (``{gt: 10, lt: 5}``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from semroute.config.regex import UserPattern, compile_user_pattern
from semroute.config.yamlsafe import line_of, written_at
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
RANGES: Mapping[str, tuple[float, float]] = {
    "confidence": (0.0, 1.0),
    "difficulty": (0.0, 1.0),
    "input_tokens": (0.0, math.inf),
    "system_prompt_tokens": (0.0, math.inf),
}
"""The values a number signal can take (both ends included); a test outside them never holds."""
_WORDS = {"gt": "above", "gte": "at least", "lt": "below", "lte": "at most"}
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
    check_ranges: bool = True
    """Whether a test that can never hold is refused (not for a policy stored in an index, which
    its route files were checked for when it was built)."""

    def error(self, message: str, *path: Any) -> RouteConfigError:
        loc = (*self.loc, *path)
        field = ".".join(str(p) for p in loc[2:]) or None
        return RouteConfigError(
            message, file=self.source, rule=self.rule, field=field, line=line_of(self.node, loc)
        )

    def shown(self, value: Any, *path: Any) -> str:
        """``value``, found at ``path``, as the file spells it (``0.0000001``, not ``1e-07``)."""
        written = written_at(self.node, (*self.loc, *path))
        return written if written is not None else repr(value)


def compile_condition(
    when: Any,
    where: Where,
    loc: tuple[Any, ...],
    routes: Collection[str] | None,
    *,
    negated: bool = False,
) -> Condition:
    """``when`` checked and compiled; ``negated``: it is under a ``not:`` (where a test that can
    never hold makes the ``not:`` always hold: a waste, not a rule that can never match)."""
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
                tuple(
                    compile_condition(v, where, (*at, j), routes, negated=negated)
                    for j, v in enumerate(value)
                )
            )
        elif key == "not":
            none_of.append(compile_condition(value, where, at, routes, negated=not negated))
        elif key == "text_matches":
            tests.append(_regex(value, where, at))
        else:
            found = _tests(str(key), value, where, at, routes)
            if where.check_ranges and not negated:
                _check_can_hold(str(key), found, where, at)
            tests.extend(found)
    return Condition(tuple(tests), tuple(any_of), tuple(none_of))


def _check_can_hold(signal: str, tests: Sequence[Test], where: Where, at: tuple[Any, ...]) -> None:
    """Refuse one signal's tests (all of which must hold) that never can: a value or bound
    outside the signal's range, or bounds that leave no number between them."""
    low, high = RANGES.get(signal, (-math.inf, math.inf))
    span = f"it lies in [{low:g}, {high:g}]" if high < math.inf else f"it is {low:g} or more"
    lower: Test | None = None  # the tightest bound from below, and from above
    upper: Test | None = None
    for t in tests:
        if t.negate:  # `not:` a test: holds whenever the test does not
            continue
        if t.op in ("eq", "in") and signal in RANGES:
            values = t.value if t.op == "in" else (t.value,)
            if not any(is_number(v) and low <= v <= high for v in values):
                field = (*at, "in") if t.op == "in" else at
                each = [(*field, j) for j in range(len(values))] if t.op == "in" else [field]
                shown = " or ".join(where.shown(v, *f) for v, f in zip(values, each, strict=True))
                raise where.error(f"can never match: {signal} is never {shown} ({span})", *field)
        if t.op not in COMPARISONS:
            continue
        if t.op in ("gt", "gte"):
            outside = t.value > high or (t.op == "gt" and t.value == high)
            lower = t if lower is None or _tighter(t, lower) else lower
        else:
            outside = t.value < low or (t.op == "lt" and t.value == low)
            upper = t if upper is None or _tighter(t, upper) else upper
        if outside:
            raise where.error(
                f"can never match: {signal} is never {_WORDS[t.op]} "
                f"{where.shown(t.value, *at, t.op)} ({span})",
                *at,
                t.op,
            )
    if lower is not None and upper is not None:
        strict = lower.op == "gt" or upper.op == "lt"
        if lower.value > upper.value or (lower.value == upper.value and strict):
            raise where.error(
                f"can never match: no {signal} is {_WORDS[lower.op]} "
                f"{where.shown(lower.value, *at, lower.op)} and {_WORDS[upper.op]} "
                f"{where.shown(upper.value, *at, upper.op)}; fix the bounds",
                *at,
            )


def _tighter(t: Test, than: Test) -> bool:
    """Whether bound ``t`` leaves fewer values than ``than`` (both from below, or from above)."""
    if t.value == than.value:
        return t.op in ("gt", "lt")
    return bool(t.value > than.value) == (t.op in ("gt", "gte"))


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
