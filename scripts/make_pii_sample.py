"""Write tests/data/pii_sample.jsonl: a labelled sample for the PII detectors, synthetic and
reproducible (seeded), so that its provenance is this script.

    .venv/bin/python scripts/make_pii_sample.py [OUT]   # default tests/data/pii_sample.jsonl

Each line is ``{"text", "spans": [{"kind", "start", "end"}], "group"}``: sentences of the kind a
user sends a model, holding values of every built-in kind in the formats people write them
(cards grouped or not, IBANs spaced or not, phones international and North American, IPv4 and
IPv6, each API-key format, JWTs, bearer tokens, PEM private keys), some in formats the detectors
do not claim to find (a phone number written as ten bare digits, a national number without its
country code, a lower-case IBAN), and hard negatives: look-alikes a detector must not report
(order and tracking numbers, card numbers and IBANs with a wrong check digit, dates, times,
version strings, UUIDs, git hashes, MAC addresses, prices, ISBNs, ``Foo::Bar``, ``sk-learn``).
Every value is generated here: none is a real person's, and every key is random text in the
shape of one (the card numbers use the networks' test ranges' shapes, made to pass Luhn).
"""

from __future__ import annotations

import json
import random
import string
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "pii_sample.jsonl"
SEED = 23
PER_KIND = 60
NEGATIVES = 400

rng = random.Random(SEED)
NAMES = ["ana", "li.wei", "j.okafor", "maria_g", "tom+news", "s.kowalski", "priya", "o.haddad"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "uni.example.ac.uk", "example.io"]
LEAD = [
    "Please update my record: {}.",
    "Can you check this for me? {}",
    "The customer wrote in with {} and wants a refund.",
    "{} is what the form says; is it valid?",
    "Summarise the ticket. Details: {} (sent yesterday).",
    "Draft a reply to the email that mentions {}.",
]


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = body + check
        total = 0
        for i, c in enumerate(reversed(digits)):
            d = int(c) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError


def card(valid: bool = True) -> str:
    prefix, length = rng.choice(
        [
            ("4", 16),
            ("51", 16),
            ("55", 16),
            ("2221", 16),
            ("34", 15),
            ("37", 15),
            ("6011", 16),
            ("3530", 16),
            ("4", 13),
        ]
    )
    number = luhn_complete(prefix, length)
    if not valid:  # a wrong check digit
        number = number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain" or length not in (15, 16):
        return number
    sep = " " if style == "space" else "-"
    groups = (
        [number[:4], number[4:10], number[10:]]
        if length == 15
        else [number[i : i + 4] for i in range(0, 16, 4)]
    )
    return sep.join(groups)


IBAN_LENGTHS = {
    "DE": 22,
    "GB": 22,
    "FR": 27,
    "ES": 24,
    "NL": 18,
    "BE": 16,
    "IT": 27,
    "CH": 21,
    "NO": 15,
    "PL": 28,
}


def iban(valid: bool = True, spaced: bool | None = None) -> str:
    country = rng.choice(list(IBAN_LENGTHS))
    n = IBAN_LENGTHS[country] - 4
    if country in ("GB", "NL"):
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            rng.choice(string.digits) for _ in range(n - 4)
        )
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(n))
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - number % 97
    if not valid:
        check = (check + rng.randint(1, 96)) % 97 or 1
    text = f"{country}{check:02d}{bban}"
    if spaced if spaced is not None else rng.random() < 0.5:
        text = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    return text


def phone() -> tuple[str, bool]:
    """A phone number, and whether it is in a format the detector claims."""
    area, mid, last = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    choices = [
        (f"+1 ({area}) {mid}-{last:04d}", True),
        (f"+1-{area}-{mid}-{last:04d}", True),
        (f"({area}) {mid}-{last:04d}", True),
        (f"{area}-{mid}-{last:04d}", True),
        (f"{area}.{mid}.{last:04d}", True),
        (f"+44 20 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}", True),
        (f"+49 30 {rng.randint(100000, 999999)}{rng.randint(10, 99)}", True),
        (
            f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
            True,
        ),
        (f"+91 {rng.randint(70000, 99999)} {rng.randint(10000, 99999)}", True),
        (f"{area}{mid}{last:04d}", False),  # ten bare digits
        (f"020 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}", False),  # national, no +
    ]
    return rng.choice(choices)


def email() -> str:
    return f"{rng.choice(NAMES)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def ipv4() -> str:
    return ".".join(
        str(rng.choice([rng.randint(1, 255), rng.randint(0, 9), rng.randint(10, 99)]))
        for _ in range(4)
    )


def ipv6() -> str:
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    groups[0] = rng.choice(["2001", "fe80", "2a00", "fd12"])
    form = rng.random()
    if form < 0.4:
        return ":".join(groups)
    if form < 0.8:
        return ":".join(groups[:3]) + "::" + ":".join(groups[6:])
    return "::1"


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def api_key() -> str:
    return rng.choice(
        [
            lambda: "sk-" + rand(ALNUM, 48),
            lambda: "sk-proj-" + rand(B64URL, 64),
            lambda: "sk-ant-api03-" + rand(B64URL, 93) + "AA",
            lambda: "AKIA" + rand(string.ascii_uppercase + string.digits, 16),
            lambda: "ghp_" + rand(ALNUM, 36),
            lambda: "github_pat_" + rand(ALNUM + "_", 82),
            lambda: (
                "xoxb-"
                + rand(string.digits, 12)
                + "-"
                + rand(string.digits, 13)
                + "-"
                + rand(ALNUM, 24)
            ),
            lambda: "AIza" + rand(B64URL, 35),
            lambda: "sk_live_" + rand(ALNUM, 24),
            lambda: "eyJhbGciOiJIUzI1NiJ9.eyJ" + rand(B64URL, 40) + "." + rand(B64URL, 43),
        ]
    )()


def private_key() -> str:
    body = "\n".join(rand(ALNUM + "+/", 64) for _ in range(rng.randint(3, 8)))
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"


def positive(kind: str) -> tuple[str, list[dict[str, Any]], str]:
    if kind == "phone":
        value, claimed = phone()
        group = "phone" if claimed else "phone (format not claimed)"
    elif kind == "iban" and rng.random() < 0.1:
        value, group = iban().lower(), "iban (lower case, not claimed)"
    else:
        value = {
            "email": email,
            "credit_card": card,
            "iban": iban,
            "api_key": api_key,
            "private_key": private_key,
        }.get(kind, lambda: ipv4() if rng.random() < 0.6 else ipv6())()
        group = kind
    if kind == "api_key" and rng.random() < 0.2:
        text = f"curl -H 'Authorization: Bearer {value}' https://api.example.com/v1/items"
        start = text.index(value)
    else:
        text = rng.choice(LEAD).format(value)
        start = text.index(value)
    return text, [{"kind": kind, "start": start, "end": start + len(value)}], group


def negative() -> tuple[str, str]:
    """A text holding a look-alike, and what it is."""
    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    makers = [
        ("order number", lambda: f"Order #{rng.randint(10**15, 10**16 - 1)} has not shipped."),
        ("card, wrong check digit", lambda: f"Is {card(valid=False)} a typo?"),
        ("IBAN, wrong check digits", lambda: f"Transfer refused for {iban(valid=False)}."),
        ("date", lambda: f"The meeting moved to {year}-{month:02d}-{day:02d} at 10:30."),
        ("date", lambda: f"Born {day:02d}/{month:02d}/{year}, registered {month}.{day}.{year}."),
        (
            "time",
            lambda: f"Logs from 12:{rng.randint(10, 59)}:{rng.randint(10, 59)} show the error.",
        ),
        (
            "version",
            lambda: (
                f"Upgrade from v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)} to version {rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}."
            ),
        ),
        (
            "version, four parts",
            lambda: (
                f"Build {rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 999)} crashed on start."
            ),
        ),
        (
            "uuid",
            lambda: (
                f"Request id {rand('0123456789abcdef', 8)}-{rand('0123456789abcdef', 4)}-4{rand('0123456789abcdef', 3)}-a{rand('0123456789abcdef', 3)}-{rand('0123456789abcdef', 12)} failed."
            ),
        ),
        ("git hash", lambda: f"Revert commit {rand('0123456789abcdef', 40)} please."),
        (
            "mac address",
            lambda: (
                "The device MAC is " + ":".join(rand("0123456789ABCDEF", 2) for _ in range(6)) + "."
            ),
        ),
        (
            "price",
            lambda: (
                f"It costs ${rng.randint(1, 999)},{rng.randint(100, 999)}.{rng.randint(10, 99)} per year."
            ),
        ),
        (
            "isbn",
            lambda: (
                f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}"
            ),
        ),
        (
            "tracking number",
            lambda: f"Tracking: 1Z{rand(string.ascii_uppercase + string.digits, 16)}",
        ),
        (
            "invalid ip",
            lambda: (
                f"Ping {rng.randint(256, 999)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)} timed out."
            ),
        ),
        (
            "code",
            lambda: rng.choice(
                [
                    "Use std::vector<int> here.",
                    "Call Foo::Bar::baz().",
                    "ratio 16:9 and 4:3",
                    "a = b ? c : d",
                ]
            ),
        ),
        (
            "library name",
            lambda: rng.choice(
                [
                    "pip install sk-learn-extras",
                    "see sk-video docs",
                    "the xox-game repo",
                    "task-force-2024-alpha",
                ]
            ),
        ),
        (
            "at sign",
            lambda: rng.choice(
                [
                    "git@github.com:owner/repo.git",
                    "ping me @ 5pm",
                    "npm i left-pad@1.3.0",
                    "user@localhost",
                ]
            ),
        ),
        (
            "phone-like",
            lambda: (
                f"Room {rng.randint(100, 999)}-{rng.randint(10, 99)}, ext. {rng.randint(1000, 9999)}, zip {rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}"
            ),
        ),
        (
            "long id",
            lambda: (
                f"Account {rng.randint(10**11, 10**12 - 1)}, invoice INV-{rng.randint(10**7, 10**8 - 1)}."
            ),
        ),
        (
            "iban-like",
            lambda: (
                f"Part number DE{rng.randint(10, 99)}{rand(string.ascii_uppercase, 3)}{rng.randint(1000, 9999)} is out of stock."
            ),
        ),
    ]
    group, make = rng.choice(makers)
    return make(), group


def main() -> None:
    kinds = ["email", "phone", "credit_card", "iban", "ip_address", "api_key", "private_key"]
    lines = []
    for kind in kinds:
        for _ in range(PER_KIND if kind != "private_key" else PER_KIND // 3):
            text, spans, group = positive(kind)
            lines.append({"text": text, "spans": spans, "group": group})
    for _ in range(NEGATIVES):
        text, group = negative()
        lines.append({"text": text, "spans": [], "group": f"negative: {group}"})
    rng.shuffle(lines)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    print(f"wrote {len(lines)} texts to {out}")


if __name__ == "__main__":
    main()
