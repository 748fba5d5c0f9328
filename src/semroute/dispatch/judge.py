"""Asking a judge model: whether one answer is acceptable (a cascade's ``accept: {judge: M}``),
and which of two answers is better (shadow evaluation).

The judge is told to answer with one word, and its answer is read strictly: after surrounding
spaces, quotes, backticks and a final full stop are stripped, it must be exactly one of the
words asked for (any case). Anything else is no verdict, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "MAX_SHOWN_CHARS",
    "Preference",
    "acceptance_messages",
    "pairwise_messages",
    "parse_acceptance",
    "parse_preference",
    "preference_of",
]

MAX_SHOWN_CHARS = 8000
"""Characters of the request (its end) and of each answer (its start) the judge is shown."""

Preference = Literal["first", "second", "tie"]

_ACCEPT_SYSTEM = (
    "You review an assistant's answer to a user's request. Reply ACCEPT if the answer is "
    "correct, complete and follows the request's instructions; otherwise reply REJECT. Reply "
    "with that one word and nothing else."
)
_PAIR_SYSTEM = (
    "You compare two assistants' answers to the same user request. Reply A if answer A is "
    "better, B if answer B is better, or TIE if they are equally good. Judge correctness, "
    "completeness and how well each follows the request, not length or style. Reply with that "
    "one word and nothing else."
)


def _request_text(messages: Sequence[dict[str, Any]]) -> str:
    lines = [f"{m.get('role', 'user')}: {_content(m.get('content'))}" for m in messages]
    return "\n".join(lines)[-MAX_SHOWN_CHARS:]


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only the text is shown
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def acceptance_messages(messages: Sequence[dict[str, Any]], answer: str) -> list[dict[str, str]]:
    """The judge's prompt for whether ``answer`` answers ``messages`` acceptably."""
    user = (
        f"Request:\n<<<\n{_request_text(messages)}\n>>>\n\n"
        f"Answer:\n<<<\n{answer[:MAX_SHOWN_CHARS]}\n>>>\n\nACCEPT or REJECT?"
    )
    return [{"role": "system", "content": _ACCEPT_SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(
    messages: Sequence[dict[str, Any]], first: str, second: str
) -> list[dict[str, str]]:
    """The judge's prompt comparing ``first`` (shown as A) with ``second`` (shown as B)."""
    user = (
        f"Request:\n<<<\n{_request_text(messages)}\n>>>\n\n"
        f"Answer A:\n<<<\n{first[:MAX_SHOWN_CHARS]}\n>>>\n\n"
        f"Answer B:\n<<<\n{second[:MAX_SHOWN_CHARS]}\n>>>\n\nA, B or TIE?"
    )
    return [{"role": "system", "content": _PAIR_SYSTEM}, {"role": "user", "content": user}]


def _word(text: str | None) -> str | None:
    if text is None:
        return None
    word = text.strip().strip("`'\"*").strip().removesuffix(".").strip()
    return word.upper() if word and len(word) <= 10 else None


def parse_acceptance(text: str | None) -> bool | None:
    """True for ACCEPT, False for REJECT, None for anything else."""
    return {"ACCEPT": True, "REJECT": False}.get(_word(text) or "")


def parse_preference(text: str | None) -> Preference | None:
    """``first`` for A, ``second`` for B, ``tie`` for TIE, None for anything else."""
    found = {"A": "first", "B": "second", "TIE": "tie"}.get(_word(text) or "")
    return found  # type: ignore[return-value]


def preference_of(as_first: Preference, as_second: Preference) -> Literal["win", "tie", "loss"]:
    """The verdict on an answer the judge saw once as A (``as_first``) and once as B
    (``as_second``): each order counts +1 when the answer is preferred, -1 when the reference
    is; a positive sum is a win, a negative one a loss, zero a tie. A judge that prefers
    whichever answer comes first (position bias) so scores a tie."""
    score = {"first": 1, "second": -1, "tie": 0}[as_first]
    score += {"first": -1, "second": 1, "tie": 0}[as_second]
    return "win" if score > 0 else "loss" if score < 0 else "tie"
