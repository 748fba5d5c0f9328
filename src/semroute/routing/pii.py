r"""Personal data and secrets in a request: the ``pii`` signal (the kinds found) and redaction
(each match replaced by its kind's placeholder, ``[EMAIL]``, ``[CREDIT_CARD]``).

    detectors = Detectors(user={"employee_id": compile_user_pattern(r"\bE\d{6}\b")})
    detectors.kinds(["mail me at ana@example.com"])              # ("email",)
    detectors.redact("card 4111 1111 1111 1111", {"credit_card"})  # ("card [CREDIT_CARD]", {...})

Every pattern runs on RE2 (:mod:`semroute.config.regex`): linear in the text, whatever it holds.
A candidate match is then checked where a check exists, so that look-alikes are not reported:

- ``email``: a local part, ``@``, a domain with a dot and a letters-only top-level domain;
- ``phone``: ``+`` and a country code with 8-15 digits in all, or a North American number
  written with separators (``(415) 555-0132``, ``415-555-0132``); a run of digits alone is not
  a phone number (too many order numbers look like one);
- ``credit_card``: 13-19 digits (spaces or hyphens allowed between groups) passing the Luhn
  check, with a card network's prefix and length;
- ``iban``: a country code, two check digits and up to 30 letters or digits (in groups of four
  or not) passing the ISO 13616 mod-97 check;
- ``ip_address``: IPv4 (four numbers up to 255) or IPv6 (parsed by :mod:`ipaddress`, holding a
  digit, so that ``Foo::Bar`` is not one);
- ``api_key``: OpenAI (``sk-``, ``sk-proj-``), Anthropic (``sk-ant-``), AWS access key ids
  (``AKIA``...), GitHub (``ghp_``..., ``github_pat_``), Slack (``xox?-``), Google (``AIza``),
  Stripe (``sk_live_``...), JSON Web Tokens and the token of ``Bearer TOKEN``;
- ``private_key``: a PEM ``-----BEGIN ... PRIVATE KEY-----`` block.

An address followed by ``:`` and more (``git@github.com:owner/repo``) is an SSH target, not an
email. A match must stand apart from its neighbours (not glued to a letter, digit, ``_``, or to a
``-``/``.`` run of digits), so ``v1.2.3.4``, ``build-415-555-0132-7`` and ``order #10023456``
are not found. Where matches overlap, the earlier (then the longer) wins, and only it counts.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semroute.config.pii import BUILTIN_KINDS, placeholder
from semroute.config.regex import UserPattern, compile_user_pattern
from semroute.errors import InvalidQueryError
from semroute.text import clean

__all__ = ["Detectors", "Found", "Redacted", "redact_messages"]

Check = Callable[[str], bool]
Redacted = tuple[list[dict[str, Any]], Counter[str]]
"""Messages with their matches replaced, and how many of each kind were."""


@dataclass(frozen=True, slots=True)
class Found:
    """One match: its kind and where it is (character offsets)."""

    kind: str
    start: int
    end: int


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


# (prefixes as [low, high] over the first digits, lengths) of the card networks.
_NETWORKS: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (6011, 6011, (16, 17, 18, 19)),  # Discover
    (644, 649, (16, 17, 18, 19)),
    (65, 65, (16, 17, 18, 19)),
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (300, 305, (14, 15, 16, 17, 18, 19)),  # Diners Club
    (36, 36, (14, 15, 16, 17, 18, 19)),
    (38, 39, (16, 17, 18, 19)),
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (50, 50, (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 59, (12, 13, 14, 15, 16, 17, 18, 19)),
    (67, 67, (12, 13, 14, 15, 16, 17, 18, 19)),
)


def _card(match: str) -> bool:
    separators = {c for c in match if not c.isdigit()}
    if len(separators) > 1:  # 4111-1111 1111 1111: not written as one number
        return False
    digits = "".join(c for c in match if c.isdigit())
    for low, high, lengths in _NETWORKS:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return _luhn(digits)
    return False


def _iban(match: str) -> bool:
    text = match.replace(" ", "")
    if not 15 <= len(text) <= 34:
        return False
    moved = text[4:] + text[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _phone(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 8 <= digits <= 15 if match.startswith("+") else digits == 10


def _ipv6(match: str) -> bool:
    if not any(c.isdigit() for c in match):
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_KEYS = "|".join(
    (
        r"\bsk-ant-[A-Za-z0-9_-]{20,}",
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        r"\bAIza[0-9A-Za-z_-]{35}",
        r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    )
)
# (kind, pattern, check, group): ``group`` 1 when only the first group is the secret.
_BUILTIN: tuple[tuple[str, str, Check | None, int], ...] = (
    (
        "private_key",
        r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----[\s\S]*?-----END [A-Z ]{0,20}PRIVATE KEY-----",
        None,
        0,
    ),
    ("api_key", _KEYS, None, 0),
    ("api_key", r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{20,}=*)", None, 1),
    ("email", rf"\b[A-Za-z0-9._%+-]+@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,24}}\b", None, 0),
    ("credit_card", r"\b[0-9](?:[ -]?[0-9]){11,18}\b", _card, 0),
    ("iban", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", _iban, 0),
    ("ip_address", rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b", None, 0),
    ("ip_address", r"(?:\b[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}", _ipv6, 0),
    (
        "phone",
        r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){1,5}[ .-]?[0-9]{2,4}\b"
        r"|(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}\b",
        _phone,
        0,
    ),
)
assert {k for k, *_ in _BUILTIN} == set(BUILTIN_KINDS)


@dataclass(frozen=True)
class _Detector:
    kind: str
    pattern: UserPattern
    check: Check | None = None
    group: int = 0


class Detectors:
    """The built-in detectors and ``user``'s (name → compiled pattern), in that order."""

    def __init__(self, user: Mapping[str, UserPattern] | None = None) -> None:
        self._all = (
            *(_Detector(k, _compiled(p), c, g) for k, p, c, g in _BUILTIN),
            *(_Detector(k, p) for k, p in (user or {}).items()),
        )
        self.kinds_known: tuple[str, ...] = tuple(dict.fromkeys(d.kind for d in self._all))

    def find(self, text: str, kinds: Collection[str] | None = None) -> list[Found]:
        """The matches of ``kinds`` (default: all) in ``text``, left to right, none
        overlapping (the earlier wins, then the longer, then the detector listed first);
        offsets are characters of ``text``."""
        data = clean(text).encode("utf-8")
        return _in_characters(data, self._find(data, kinds))

    def _find(self, data: bytes, kinds: Collection[str] | None) -> list[Found]:
        """:meth:`find` on UTF-8 ``data``, with byte offsets (the patterns run on bytes: a
        ``str`` would be encoded again for each pattern, and its offsets mapped back)."""
        found: list[tuple[int, int, int, Found]] = []
        for rank, detector in enumerate(self._all):
            if kinds is not None and detector.kind not in kinds:
                continue
            for match in detector.pattern.finditer_utf8(data):
                start, end = match.span(detector.group)
                end = _checked(detector, data, start, end)
                if end > start:
                    found.append((start, start - end, rank, Found(detector.kind, start, end)))
        found.sort(key=lambda f: f[:3])
        kept: list[Found] = []
        for *_, f in found:
            if not kept or f.start >= kept[-1].end:
                kept.append(f)
        return kept

    def kinds(self, texts: Iterable[str]) -> tuple[str, ...]:
        """The kinds found in ``texts``, in :attr:`kinds_known` order."""
        seen = {f.kind for text in texts for f in self._find(clean(text).encode(), None)}
        return tuple(k for k in self.kinds_known if k in seen)

    def redact(self, text: str, kinds: Collection[str]) -> tuple[str, Counter[str]]:
        """``text`` with every match of ``kinds`` replaced by its placeholder, and how many of
        each kind were replaced."""
        counts: Counter[str] = Counter()
        data = clean(text).encode("utf-8")
        parts: list[bytes] = []
        at = 0
        for f in self._find(data, kinds):
            parts += [data[at : f.start], placeholder(f.kind).encode()]
            counts[f.kind] += 1
            at = f.end
        if not counts:
            return text, counts
        parts.append(data[at:])
        return b"".join(parts).decode("utf-8"), counts


def _in_characters(data: bytes, found: list[Found]) -> list[Found]:
    """``found`` (byte offsets into ``data``, in order) with character offsets, in one pass."""
    out: list[Found] = []
    chars = at = 0
    for f in found:
        chars += len(data[at : f.start].decode("utf-8"))
        length = len(data[f.start : f.end].decode("utf-8"))
        out.append(Found(f.kind, chars, chars + length))
        chars, at = chars + length, f.end
    return out


def _compiled(source: str) -> UserPattern:
    return compile_user_pattern(source)


MAX_SHRINK = 8
"""How many shorter prefixes of a candidate that fails its check are tried (cut where a
space or hyphen is: an IBAN or card number followed by a short group of other digits)."""


def _checked(detector: _Detector, data: bytes, start: int, end: int) -> int:
    """Where the match at ``start`` ends once checked: ``end``, a shorter end (see
    :data:`MAX_SHRINK`), or ``start`` when it is no match."""
    if start < 0:
        return start
    if detector.kind == "email" and data[end : end + 1] == b":" and data[end + 1 : end + 2].strip():
        return start  # git@github.com:owner/repo is an SSH target, not an address
    for _ in range(MAX_SHRINK + 1):
        if _apart(data, start, end) and (
            detector.check is None or detector.check(data[start:end].decode("utf-8"))
        ):
            return end
        if detector.check is None:
            return start
        cut = max(data.rfind(b" ", start, end), data.rfind(b"-", start, end))
        if cut <= start:
            return start
        end = cut
    return start


_GLUE = b"-."
_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_WORD = _ALNUM | {ord("_")}


def _apart(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` stands apart: not glued to an ASCII letter, digit or ``_``
    before or after, nor to one through a ``-`` or ``.`` (``1.2.3.4.5``, ``A-415-555-0132``).
    Other characters (spaces, punctuation, any non-ASCII letter, as RE2's ``\\b`` has it)
    separate."""
    before = data[start - 1] if start > 0 else 32
    after = data[end] if end < len(data) else 32
    if before in _WORD or after in _WORD:
        return False
    if before in _GLUE and start > 1 and data[start - 2] in _ALNUM:
        return False
    return not (after in _GLUE and end + 1 < len(data) and data[end + 1] in _ALNUM)


# --- messages -----------------------------------------------------------------------------------


def message_texts(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every text of ``messages`` that goes to a model: contents, text parts, tool-call
    arguments."""
    texts: list[str] = []
    for message in messages:
        _walk(message, texts.append)
    return texts


def redact_messages(
    messages: Sequence[Mapping[str, Any]], kinds: Collection[str], detectors: Detectors
) -> Redacted:
    """Copies of ``messages`` with every match of ``kinds`` replaced (see
    :meth:`Detectors.redact`), and the counts per kind; the originals are left as they were.
    Raises :class:`InvalidQueryError` for a kind ``detectors`` does not know."""
    counts: Counter[str] = Counter()
    if not kinds:
        return [m if isinstance(m, dict) else dict(m) for m in messages], counts
    unknown = sorted(set(kinds) - set(detectors.kinds_known))
    if unknown:
        raise InvalidQueryError(
            f"no detector for kind {unknown[0]!r} to redact; build the dispatcher with "
            "Dispatcher.for_index, which knows the index's router.pii detectors"
        )

    def replace(text: str) -> str:
        out, found = detectors.redact(text, kinds)
        counts.update(found)
        return out

    return [_walk(m, replace) for m in messages], counts


def _walk(message: Mapping[str, Any], visit: Callable[[str], Any]) -> dict[str, Any]:
    """``message`` rebuilt with ``visit`` applied to each of its texts (its return value kept
    where it is a string)."""

    def text(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out = visit(value)
        return out if isinstance(out, str) else value

    out = dict(message)
    content = out.get("content")
    if isinstance(content, str):
        out["content"] = text(content)
    elif isinstance(content, list):
        out["content"] = [
            {**p, "text": text(p["text"])} if isinstance(p, dict) and "text" in p else p
            for p in content
        ]
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_call(c, text) for c in calls]
    return out


def _call(call: Any, text: Callable[[Any], Any]) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or "arguments" not in function:
        return call
    return {**call, "function": {**function, "arguments": text(function["arguments"])}}
