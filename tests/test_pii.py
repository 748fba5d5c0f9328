"""The PII detectors, the `pii` signal in rules and `redact:`: each kind found in the formats it
claims and not in its look-alikes (checks at their boundaries: Luhn, mod-97, octets), overlaps
resolved, linear time on hostile text, rules' `any`/`all`, redact-only rules that let the next
rule decide, the policy kept in the manifest, and the labelled sample rebuilt by its script."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from semroute.config.policy import Policy, compile_policy
from semroute.config.regex import compile_user_pattern
from semroute.decision import Decision, Reason
from semroute.errors import InvalidQueryError
from semroute.routing.pii import Detectors, redact_messages
from semroute.routing.policy import apply
from semroute.routing.signals import Signals

REPO = Path(__file__).resolve().parents[1]
DETECTORS = Detectors({"employee_id": compile_user_pattern(r"\bE\d{6}\b")})


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to ana.lopez+x@mail.example.co.uk.", "email", "ana.lopez+x@mail.example.co.uk"),
        ("call +44 20 7946 0958 today", "phone", "+44 20 7946 0958"),
        ("call (415) 555-0132 today", "phone", "(415) 555-0132"),
        ("call 415.555.0132 today", "phone", "415.555.0132"),
        ("card 4111 1111 1111 1111 42", "credit_card", "4111 1111 1111 1111"),
        ("card 3782-822463-10005.", "credit_card", "3782-822463-10005"),
        ("card 5555555555554444", "credit_card", "5555555555554444"),
        ("iban DE89 3704 0044 0532 0130 00 AND more", "iban", "DE89 3704 0044 0532 0130 00"),
        ("iban GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
        ("host 192.168.1.255:8080", "ip_address", "192.168.1.255"),
        ("host 2001:db8::8a2e:370:7334 up", "ip_address", "2001:db8::8a2e:370:7334"),
        (
            "key sk-proj-Zq8XbN2mV7pL4kR9tY6wA1sD3fG5hJ0c",
            "api_key",
            "sk-proj-Zq8XbN2mV7pL4kR9tY6wA1sD3fG5hJ0c",
        ),
        (
            "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "api_key",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE", "api_key", "AKIAIOSFODNN7EXAMPLE"),
        ("gh ghp_" + "a1" * 18, "api_key", "ghp_" + "a1" * 18),
        ("slack xoxb-123456789012-abcdefghij", "api_key", "xoxb-123456789012-abcdefghij"),
        ("maps AIza" + "B" * 35, "api_key", "AIza" + "B" * 35),
        (
            "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123",
            "api_key",
            "abcdefghijklmnopqrstuvwxyz0123",
        ),
        ("badge E123456 lost", "employee_id", "E123456"),
    ],
)
def test_each_kind_is_found_in_the_formats_it_claims(text: str, kind: str, value: str) -> None:
    found = DETECTORS.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in found] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails by one
        "order 1234567890123456",  # passes no network's prefix and length
        "card 4111-1111 1111-1111",  # two kinds of separator
        "iban DE88 3704 0044 0532 0130 00",  # mod-97 fails by one
        "ip 256.1.1.1 and 1.2.3.4.5 and v1.2.3.4",
        "code Foo::Bar and abc::def, time 12:30:45, mac 00:1A:2B:3C:4D:5E",
        "date 2024-01-15, build-415-555-0132-7, ten digits 4155550132",
        "uuid 123e4567-e89b-12d3-a456-426614174000, git@github.com:owner/repo.git",
        "pip install sk-learn; badge E1234567",
        "offset std::0 and tag+44 20 7946 0958",  # glued to a word
    ],
)
def test_look_alikes_are_not_found(text: str) -> None:
    assert DETECTORS.find(text) == []


def test_overlaps_keep_the_earlier_then_the_longer_match() -> None:
    text = "DE89 3704 0044 0532 0130 00"  # its digits are no card, and the IBAN starts first
    assert [f.kind for f in DETECTORS.find(text)] == ["iban"]
    user = {
        "short": compile_user_pattern(r"\bAB\d{2}"),
        "long": compile_user_pattern(r"\bAB\d{2} \d{4}\b"),
        "same": compile_user_pattern(r"\bAB\d{2} \d{4}\b"),
    }
    found = Detectors(user).find("ref AB12 3456 and AB99")
    assert [(f.kind, f.start, f.end) for f in found] == [("long", 4, 13), ("short", 18, 22)]


def test_offsets_are_characters_around_non_ascii_text() -> None:
    text = "café \u2013 ünïcode ana@example.com 邮件 E123456"
    found = DETECTORS.find(text)
    assert [text[f.start : f.end] for f in found] == ["ana@example.com", "E123456"]
    out, counts = DETECTORS.redact(text, {"email"})
    assert out == "café \u2013 ünïcode [EMAIL] 邮件 E123456" and counts == {"email": 1}


def test_a_scan_stays_linear_on_hostile_text() -> None:
    hostile = ("1 " * 200_000) + ("a@" * 100_000) + ("::" * 100_000)  # ~1 MB of near-matches
    started = time.perf_counter()
    DETECTORS.find(hostile)
    assert time.perf_counter() - started < 30  # quadratic would take hours; generous bound


def test_redacting_messages_covers_every_text_and_leaves_the_originals() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "user ana@example.com"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "mail bo@example.com"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "1",
                    "type": "function",
                    "function": {"name": "send", "arguments": '{"to": "cy@example.com"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": "sent to cy@example.com"},
    ]
    out, counts = redact_messages(messages, ("email",), DETECTORS)
    assert counts == {"email": 4}
    assert "@" not in str(out)
    assert out[2]["tool_calls"][0]["function"]["arguments"] == '{"to": "[EMAIL]"}'
    assert messages[0]["content"] == "user ana@example.com"
    with pytest.raises(InvalidQueryError, match="no detector for kind 'employee_id'"):
        redact_messages(messages, ("employee_id",), Detectors())


RULES: list[dict[str, Any]] = [
    {"name": "scrub-mail", "when": {"pii": "email"}, "redact": ["email"]},
    {"name": "scrub-all", "redact": ["phone"]},
    {"name": "both", "when": {"pii": {"all": ["email", "credit_card"]}}, "model": "strong"},
    {"name": "keys", "when": {"pii": {"any": ["api_key", "private_key"]}}, "action": "block"},
    {
        "name": "cards",
        "when": {"pii": {"any": ["credit_card"]}},
        "model": "cheap",
        "redact": ["credit_card"],
    },
    {
        "name": "no-pii",
        "when": {"not": {"pii": {"any": ["email", "credit_card", "api_key"]}}},
        "model": "cheap",
    },
]


def policy() -> Policy:
    return compile_policy(RULES, {}, source="t.yaml", node=None, models=None, routes=None)


def decide(pii: tuple[str, ...]) -> Decision:
    semantic = Decision(
        route="r", model="routed", confidence=0.9, margin=0.5, reason=Reason.MATCHED, latency_ms=0.0
    )
    return apply(policy(), Signals(pii=pii), semantic)


@pytest.mark.parametrize(
    ("pii", "model", "rule", "redact"),
    [
        (("email",), "routed", None, ("email", "phone")),  # redact-only rules, then the route
        (("email", "credit_card"), "strong", "both", ("email", "phone")),
        (("credit_card",), "cheap", "cards", ("phone", "credit_card")),
        ((), "cheap", "no-pii", ("phone",)),
        (("api_key", "email"), None, "keys", ()),
    ],
)
def test_rules_test_pii_and_redact_only_rules_let_the_next_decide(
    pii: tuple[str, ...], model: str | None, rule: str | None, redact: tuple[str, ...]
) -> None:
    decision = decide(pii)
    assert decision.rule == rule
    assert decision.redact == redact
    if model is None:
        assert decision.blocked
    else:
        assert decision.model == model


def test_the_policy_keeps_its_detectors_and_redactions_through_the_manifest() -> None:
    raw = compile_policy(
        RULES,
        {},
        source="t.yaml",
        node=None,
        models=None,
        routes=None,
        pii={"badge": r"\bB\d{4}\b"},
    )
    again = Policy.from_dict(raw.to_dict(), "manifest.json")
    assert again.to_dict() == raw.to_dict()
    assert again.pii["badge"].source == r"\bB\d{4}\b"
    assert again.rules[1].redacts_only and again.rules[4].redact == ("credit_card",)


def test_the_sample_is_what_its_script_writes(tmp_path: Path) -> None:
    sample = REPO / "tests" / "data" / "pii_sample.jsonl"
    again = tmp_path / "sample.jsonl"
    script = REPO / "scripts" / "make_pii_sample.py"
    subprocess.run([sys.executable, str(script), str(again)], check=True, capture_output=True)
    assert again.read_bytes() == sample.read_bytes()


@pytest.mark.parametrize("pattern", ["a*", "x|", r"\b", "^", "$", r"\B", r"(?m)^"])
def test_a_detector_that_can_match_an_empty_stretch_is_refused(pattern: str) -> None:
    from semroute.config.pii import compile_detectors

    def error(message: str, name: str) -> Exception:
        return ValueError(f"{name}: {message}")

    with pytest.raises(ValueError, match="emp: the pattern matches the empty string"):
        compile_detectors({"emp": pattern}, error)


@pytest.mark.parametrize("pattern", [r"\bE\d{6}\b", r"(?m)^\d{4}$", r"EMP-\d+"])
def test_a_detector_anchored_at_word_edges_is_kept(pattern: str) -> None:
    from semroute.config.pii import compile_detectors

    assert list(compile_detectors({"emp": pattern}, lambda m, n: ValueError(m))) == ["emp"]
