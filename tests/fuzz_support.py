"""What the fuzz suite (tests/test_fuzz.py) is made of: hostile values, time and memory bounds,
and the one property every untrusted surface must keep.

The property: a call returns a value or raises a :class:`~semroute.errors.SemrouteError` whose
message is one line a terminal can print; never another exception, never a hang, never memory
without bound. Hypothesis runs derandomized and without an example database, so CI sees the same
examples on every run.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from semroute.encoders.base import Embeddings, EncoderInfo
from semroute.errors import SemrouteError
from semroute.testing import FakeEncoder

T = TypeVar("T")

CALL_SECONDS = 20
"""How long one call may take before it counts as a hang (generous: CI shares 2 cores)."""


def fuzz(examples: int) -> settings:
    """Hypothesis settings for a fuzz property: reproducible, no deadline, no database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )


# --- the property -------------------------------------------------------------------------------


class Hung(AssertionError):
    """A call ran past its time bound. An AssertionError, so no handler in semroute eats it."""


@contextlib.contextmanager
def time_bound(seconds: float = CALL_SECONDS) -> Iterator[None]:
    """Fail the block with :class:`Hung` after ``seconds`` (a blocking system call included).

    SIGALRM only reaches the main thread, which is where pytest runs tests.
    """

    def expire(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_message(exc: SemrouteError) -> str:
    """The error's message, after checking it is one printable line."""
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} with an empty message"
    for bad, what in (("\n", "a newline"), ("\r", "a carriage return"), ("\x1b", "an escape")):
        assert bad not in message, f"{type(exc).__name__} message holds {what}: {message[:500]!r}"
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise AssertionError(
            f"{type(exc).__name__} message cannot be printed as UTF-8: {message[:500]!r}"
        ) from None
    return message


@dataclass
class Outcome:
    value: Any = None
    error: SemrouteError | None = None


def attempt(call: Callable[..., T], *args: Any, **kwargs: Any) -> Outcome:
    """Run ``call`` under the time bound: a value, or a SemrouteError with a one-line message.

    Any other exception propagates unchanged, so Hypothesis shows it with the falsifying example.
    """
    with time_bound():
        try:
            return Outcome(value=call(*args, **kwargs))
        except SemrouteError as exc:
            check_message(exc)
            return Outcome(error=exc)


def check_cli(result: Any, *, stream: str = "stderr", each_problem: bool = False) -> None:
    """A CliRunner result: exit 0, or exit 1 with one `error:` line and no traceback (with
    ``each_problem``, as `validate` does: one `error:` line per problem, then their count)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 1), f"exit code {result.exit_code}: {result.output[-800:]!r}"
    if result.exit_code == 1:
        err = result.stderr
        assert err.startswith("error: "), f"not an `error:` line: {err[:500]!r}"
        lines = err.splitlines()
        if each_problem and len(lines) > 1:
            assert all(x.startswith("error: ") for x in lines[:-1]), f"{err[:800]!r}"
            assert f"{len(lines) - 1} problems in " in lines[-1], f"{err[:800]!r}"
        else:
            assert err.count("\n") == 1, f"error is not one line: {err[:800]!r}"
    for text in (result.stdout, result.stderr):
        assert "\x1b" not in text, f"raw escape sequence printed: {text[:800]!r}"


# --- hostile values -----------------------------------------------------------------------------

LONE_SURROGATES = ("\ud800", "\udfff", "\udc80", "\ud83d")
INVISIBLE = (
    "\u200b",  # zero-width space
    "\u200c",
    "\u200d",
    "\u2060",  # word joiner
    "\ufeff",  # byte-order mark
    "\u00ad",  # soft hyphen
    "\u202e",  # right-to-left override
    "\U000e0001",  # language tag
    "\x00",
    "\x07",
    "\x85",
    "\u2028",
    "\u2029",
    "\u3000",
    "\xa0",
    " ",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x0c",
)
ESCAPES = (
    "\x1b[2J",  # clear the screen
    "\x1b[1A\x1b[2K",  # rewrite the previous line
    "\x1b]0;owned\x07",  # set the window title
    "\x1b[31m",
    "\x9b31m",  # the one-byte CSI
    "\x08\x08\x08",
    "\r",
)
MARKUP = ("[/]", "[bold]", "[/bold]", "[link=file:///etc/passwd]x[/link]", "[red", "\\[", "%s{0}")
WORDS = ("weather", "rain", "tomorrow", "billing", "invoice", "hello", "morning", "cancel")

surrogates = st.sampled_from(LONE_SURROGATES)
invisible_only = st.lists(st.sampled_from(INVISIBLE), min_size=1, max_size=12).map("".join)

_piece = st.one_of(
    st.text(max_size=12),
    st.sampled_from(WORDS),
    surrogates,
    st.sampled_from(INVISIBLE),
    st.sampled_from(ESCAPES),
    st.sampled_from(MARKUP),
    st.characters(codec=None),
)
hostile_text = st.lists(_piece, max_size=10).map("".join)
"""Text an attacker or a careless user could send: surrogates, invisible and control
characters, terminal escapes, rich markup, real route words among them."""

huge_text = st.builds(lambda piece, n: piece * n, _piece.filter(bool), st.integers(2_000, 60_000))


class Deep(list[Any]):
    """A list nested ``depth`` deep; Hypothesis prints it by name (printing it in full would
    exhaust the printer's own recursion), everything else sees a plain list."""

    depth = 0

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"deep_list({self.depth})")


def deep_list(depth: int) -> Deep:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    deep = Deep([value])
    deep.depth = depth
    return deep


def deep_json(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


_finite_or_not = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([10**400, -(10**400), 0, -1, 1, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    _finite_or_not,
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(hostile_text, st.sampled_from(WORDS)), inner, max_size=4),
    ),
    max_leaves=8,
)
"""Anything ``json.loads`` can return: wrong types, NaN and infinities, huge integers."""


def dumps(value: Any) -> str:
    """JSON text as a hostile writer makes it: NaN/Infinity tokens, surrogates as escapes."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


def strict_json(text: str) -> Any:
    """Parse JSON that other tools accept: no NaN or Infinity tokens."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-standard JSON token {token} in {text[:400]!r}")

    return json.loads(text, parse_constant=refuse)


# --- an encoder as strict as a real tokenizer ---------------------------------------------------


class StrictEncoder:
    """FakeEncoder's vectors, with a real tokenizer's contract on input.

    The Hugging Face tokenizer behind the real encoders raises TypeError on text that UTF-8
    cannot hold (a lone surrogate), and a real encoder is never meant to see anything but
    strings; FakeEncoder alone would tolerate both, and hide what the router passes on.
    """

    def __init__(self, inner: FakeEncoder | None = None) -> None:
        self.inner = inner or FakeEncoder()

    @property
    def info(self) -> EncoderInfo:
        return self.inner.info

    def encode(self, texts: Sequence[str]) -> Embeddings:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"TextEncodeInput must be a str, not {type(text).__name__}")
            text.encode("utf-8")  # what the tokenizer's conversion to Rust does
        return self.inner.encode(texts)


# --- memory-bounded runs in a child process -----------------------------------------------------

CHILD_MEMORY = 1_500_000_000
"""Address space a child may use: numpy, FAISS and pydantic need some 700 MB of it; an alias
bomb expanded in memory needs many times more."""

_CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from semroute.errors import SemrouteError
    {setup}
    try:
        {call}
    except SemrouteError as exc:
        print("SEMROUTE-ERROR " + ascii(str(exc)))
    else:
        print("VALUE")
    """
)


def run_bounded(setup: str, call: str, *, seconds: float = 90) -> str:
    """Run ``call`` in a child limited to :data:`CHILD_MEMORY`; return "VALUE" or the error line.

    A traceback (a MemoryError included), a crash or a hang fails with the child's output.
    """
    code = _CHILD.format(limit=CHILD_MEMORY, setup=setup.strip(), call=call.strip())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=seconds,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Hung(f"`{call.strip()}` still running after {seconds} s") from exc
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"`{call.strip()}` exited {proc.returncode}, memory limited to {CHILD_MEMORY:,} bytes:\n"
        f"{proc.stderr[-3000:]}"
    )
    last = lines[-1]
    if last.startswith("SEMROUTE-ERROR "):
        message = str(ast.literal_eval(last.removeprefix("SEMROUTE-ERROR ")))
        assert "\n" not in message, f"error is not one line: {message!r}"
        return message
    assert last == "VALUE", proc.stdout[-2000:]
    return last


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """YAML whose aliases expand to ``width ** levels`` leaves (a billion with the defaults)."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines)


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy of an index folder (plain files only)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst
