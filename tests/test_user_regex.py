"""Route files' regular expressions (a rule's ``text_matches``, a cascade's ``accept.regex``) run on
RE2: a pattern that backtracks exponentially in Python's ``re`` cannot freeze the gateway, and a
pattern RE2 cannot run is refused when the files load."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from semroute.config.regex import compile_user_pattern
from semroute.testing import FakeProvider
from tests.gateway_kit import build, serve_process

CATASTROPHIC = r"^(\w+\s?)*$"
"""22 s on a 29-character input with Python's ``re``; exponential in the input's length."""


def test_a_catastrophic_pattern_answers_at_once_on_10k_characters() -> None:
    pattern = compile_user_pattern(CATASTROPHIC)
    started = time.monotonic()
    assert pattern.search("word " * 2000 + "!") is None
    assert pattern.search("word " * 2000) is not None
    assert time.monotonic() - started < 2  # Python's re would take longer than the universe


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        (r"(?i)\bpassword\b", "My PASSWORD is", True),
        (r"(?i)\bpassword\b", "passwords", False),
        (r"(?i)é", "CAFÉ", True),
        (r"^\{", '{"total": 1}', True),
        (r'"currency":\s*"[A-Z]{3}"', '{"currency": "EUR"}', True),
        (r"\pL+", "日本語", True),
        (r"x", "\ud800x", True),  # a lone surrogate cannot be UTF-8; it is searched as U+FFFD
        (r"\x{fffd}", "\udfff", True),
    ],
)
def test_patterns_search_like_re(pattern: str, text: str, found: bool) -> None:
    assert (compile_user_pattern(pattern).search(text) is not None) is found


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(?<!not )password", "invalid perl operator: (?<!"),
        (r"(?=secret)", "invalid perl operator: (?="),
        (r"(a)\1", "invalid escape sequence: \\1"),
        (r"a*+", "bad repetition operator: *+"),
        (r"end\Z", "invalid escape sequence: \\Z"),
        ("(unclosed", "missing ): (unclosed"),
        ("x" * 1001, "pattern longer than 1000 characters"),
    ],
)
def test_a_pattern_re2_cannot_run_is_one_line_saying_why(pattern: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_user_pattern(pattern)
    message = str(info.value)
    assert why in message and "\n" not in message


@pytest.mark.usefixtures("provider_key")
def test_a_catastrophic_rule_neither_freezes_requests_nor_healthz(
    tmp_path: Path, provider: FakeProvider
) -> None:
    rules = [{"name": "words-only", "when": {"text_matches": CATASTROPHIC}, "action": "block"}]
    index = build(tmp_path, provider, rules=rules)
    long_text = "word " * 2000 + "!"  # no match: Python's re backtracks for ever on it
    body = {"model": "auto", "messages": [{"role": "user", "content": long_text}]}
    with serve_process(index) as (_, url), ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=20)
        health = [httpx.get(url + "/healthz", timeout=10).status_code for _ in range(3)]
        answer = pending.result()
        blocked = httpx.post(
            url + "/v1/chat/completions",
            json={**body, "messages": [{"role": "user", "content": "just words here"}]},
            timeout=20,
        )
    assert health == [200, 200, 200]
    assert answer.status_code == 200, answer.text
    assert blocked.status_code == 403  # the rule is in force: a text it matches is refused
