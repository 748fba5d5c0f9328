"""A cascade's acceptance checks on one answer, cheapest first: ``regex``, ``json`` /
``json_schema``, ``min_logprob`` (the judge, which costs a model call, is asked by
:mod:`semroute.dispatch.cascade` only once these pass). Pure: no I/O."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from semroute.config.quality import MAX_CHECKED_CHARS, Acceptance
from semroute.config.regex import UserPattern, compile_user_pattern

__all__ = ["Verdict", "local_verdict", "mean_logprob"]


@dataclass(frozen=True)
class Verdict:
    """What a check made of an answer: ``verdict`` as in :class:`CascadeStep`."""

    verdict: str
    check: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"


@lru_cache(maxsize=256)
def _pattern(regex: str) -> UserPattern:
    # Validated when the file was loaded; RE2 answers in time linear in the answer.
    return compile_user_pattern(regex)


def local_verdict(accept: Acceptance, text: str | None, response: Any) -> Verdict | None:
    """The first failed check among regex, JSON and logprobs (None: they all pass)."""
    if accept.regex is not None or accept.valid_json or accept.json_schema is not None:
        if text is None:
            return Verdict(
                "rejected", "regex" if accept.regex else "json", "the answer has no text"
            )
        if len(text) > MAX_CHECKED_CHARS:
            check = "regex" if accept.regex else "json"
            return Verdict("rejected", check, f"answer over {MAX_CHECKED_CHARS} characters")
    if accept.regex is not None and _pattern(accept.regex).search(text or "") is None:
        return Verdict("rejected", "regex", f"no match of {accept.regex!r}")
    if accept.valid_json or accept.json_schema is not None:
        found = _json_problem(text or "", accept)
        if found is not None:
            return found
    if accept.min_logprob is not None:
        mean = mean_logprob(response)
        if mean is None:
            return Verdict("no_logprobs", "min_logprob", "the provider sent no logprobs")
        if mean < accept.min_logprob:
            return Verdict(
                "rejected", "min_logprob", f"mean logprob {mean:.3f} < {accept.min_logprob}"
            )
    return None


def _json_problem(text: str, accept: Acceptance) -> Verdict | None:
    try:
        value = json.loads(_unfenced(text))
    except (ValueError, RecursionError) as exc:
        return Verdict("rejected", "json", f"not valid JSON ({str(exc)[:100]})")
    if accept.json_schema is None:
        return None
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for

    schema = dict(accept.json_schema)
    try:
        validator_for(schema)(schema).validate(value)
    except ValidationError as exc:
        return Verdict("rejected", "json_schema", exc.message[:200])
    return None


def _unfenced(text: str) -> str:
    """The text, or the inside of the one Markdown code block it is (```json ... ```), which
    models often wrap JSON in."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and stripped.count("```") == 2:
        inner = stripped[3:-3]
        first, _, rest = inner.partition("\n")
        return rest if first.strip().isalpha() or not first.strip() else inner
    return stripped


def mean_logprob(response: Any) -> float | None:
    """The mean log-probability of the first choice's tokens (None when the provider sent
    none)."""
    try:
        logprobs = response.choices[0].logprobs
    except (AttributeError, IndexError, TypeError):
        return None
    content = (
        logprobs.get("content")
        if isinstance(logprobs, dict)
        else getattr(logprobs, "content", None)
    )
    if not isinstance(content, list) or not content:
        return None
    values = []
    for token in content:
        value = token.get("logprob") if isinstance(token, dict) else getattr(token, "logprob", None)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    return sum(values) / len(values) if values else None
