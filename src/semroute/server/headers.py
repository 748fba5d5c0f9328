"""The ``x-semroute-*`` response headers: where a request went and why, before its body; and
the text hint headers a request may send (``X-Task-Type``, ``X-User-Tier``, see :func:`hint`).

Header values come from route, rule and model names and from error texts, so each is made safe
for HTTP: no control characters (a CR or LF would start a new header), latin-1 only (what HTTP
headers carry; anything else becomes ``?``), and at most :data:`MAX_VALUE` characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from semroute.server.errors import ApiError

if TYPE_CHECKING:
    from semroute.decision import Decision, Skip
    from semroute.records import Attempt

__all__ = ["MAX_HINT", "MAX_VALUE", "PREFIX", "decision_headers", "hint", "safe", "served_headers"]

PREFIX = "x-semroute-"
MAX_VALUE = 1024
MAX_HINT = 200
"""The most characters a text hint header may hold."""
_CONTROL = re.compile("[\x00-\x1f\x7f]+")
_NOT_PRINTABLE_ASCII = re.compile("[^\x20-\x7e]")


def hint(headers: Mapping[str, str], name: str) -> str | None:
    """The value of the text hint header ``name`` (``X-Task-Type``), stripped; None when it is
    absent or blank. :class:`ApiError` 400 naming the rule it breaks: printable ASCII (a header
    is bytes: UTF-8 text would read as other characters and match no rule) and at most
    :data:`MAX_HINT` characters."""
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    bad = _NOT_PRINTABLE_ASCII.search(value)
    if bad is not None:
        problem = (
            f"should be printable ASCII text (letters, digits, punctuation, spaces); byte "
            f"{bad.start() + 1} is 0x{ord(bad.group()):02x}"
        )
    elif len(value) > MAX_HINT:
        problem = f"should be at most {MAX_HINT} characters, not {len(value)}"
    else:
        return value.strip()
    raise ApiError(400, f"header {name}: {problem}", code="invalid_request")


def safe(value: object) -> str:
    """``value`` as a header value: one line, latin-1, bounded."""
    text = _CONTROL.sub(" ", str(value)).strip()
    text = text.encode("latin-1", "replace").decode("latin-1")
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def decision_headers(request_id: str, decision: Decision | None) -> dict[str, str]:
    """The request id and what routing decided (all that is known before a model is called);
    the model is empty when no model may be called (blocked, over budget)."""
    out = {PREFIX + "request-id": safe(request_id)}
    if decision is None:
        return out
    out[PREFIX + "route"] = safe(decision.route or "")
    # A blocked or over-budget request calls no model: naming one would say it was called.
    out[PREFIX + "model"] = "" if decision.blocked or decision.over_budget else safe(decision.model)
    out[PREFIX + "reason"] = safe(decision.reason.value)
    out[PREFIX + "rule"] = safe(decision.rule or "")
    out[PREFIX + "confidence"] = f"{decision.confidence:.4f}"
    out[PREFIX + "skipped"] = _skips(decision.skipped)
    if decision.challenger is not None:  # `server.challenger`: what it would have chosen
        out[PREFIX + "challenger-route"] = safe(decision.challenger.route or "")
    return out


def served_headers(
    request_id: str,
    decision: Decision,
    model: str,
    attempts: Iterable[Attempt],
    skipped: Iterable[Skip],
    cost_usd: float | None,
) -> dict[str, str]:
    """The headers of an answer: the model that answered, the ones that failed first, every
    model passed over with why, and the cost when it is known."""
    out = decision_headers(request_id, decision)
    out[PREFIX + "model"] = safe(model)
    out[PREFIX + "fallbacks"] = safe(",".join(a.model for a in attempts if a.error is not None))
    out[PREFIX + "skipped"] = _skips(skipped)
    if cost_usd is not None:
        out[PREFIX + "cost-usd"] = f"{cost_usd:.8g}"
    return out


def _skips(skipped: Iterable[Skip]) -> str:
    """``model=reason`` pairs (reason: capability, over_budget or unhealthy), comma-separated."""
    return safe(",".join(f"{s.model}={s.reason}" for s in skipped))
