"""Request signals: what rules test, read from an OpenAI-style request and the caller's hints.

    signals = extract("fix my script", request={"tools": [...], "max_tokens": 500},
                      hints=Hints(task="code-review", user_tier="free"))

Token counts are an estimate, not the LLM's tokenizer: UTF-8 bytes / 4, which costs one
encode and a ``len()`` (0.1 ms for a 50,000-token input; tiktoken takes 18 ms). Against tiktoken's
cl100k_base it counts 1.5% low on English prose, 3% high on Python and 19% low on dense JSON
(``scripts/token_estimate.py`` measures it into docs/results/token_estimate.json). Rules on
``input_tokens`` should leave that margin.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from semroute.errors import InvalidQueryError

__all__ = ["BYTES_PER_TOKEN", "MAX_SCANNED_TEXT", "Hints", "Signals", "estimate_tokens", "extract"]

BYTES_PER_TOKEN = 4
MAX_SCANNED_TEXT = 32_768
"""``text_matches`` searches at most the last this many characters of the user text, so a
pattern's cost is bounded whatever the request's size."""


@dataclass(frozen=True)
class Hints:
    """What the caller says about a request (a gateway reads them from headers)."""

    task: str | None = None
    user_tier: str | None = None
    max_cost_usd: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any((self.task, self.user_tier, self.max_cost_usd is not None, bool(self.metadata)))


@dataclass(frozen=True)
class Signals:
    """One request's features, and the semantic decision once it is known."""

    input_tokens: int = 0
    max_tokens: int | None = None
    system_prompt_tokens: int = 0
    has_tools: bool = False
    has_images: bool = False
    json_mode: bool = False
    task: str | None = None
    user_tier: str | None = None
    max_cost_usd: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    """The user text ``text_matches`` searches (its last :data:`MAX_SCANNED_TEXT` characters)."""
    route: str | None = None
    confidence: float = 0.0
    reason: str | None = None
    difficulty: float | None = None
    """How likely the query needs the strong model (0-1, see :mod:`semroute.routing.difficulty`);
    None when the index has no difficulty model or no rule tests it."""
    n: int = 1
    """How many choices the request asks for (its ``n``): each is paid for."""
    pii: tuple[str, ...] | None = None
    """The kinds of personal data found in the messages (see :mod:`semroute.routing.pii`);
    None when no rule tests them, so they were not looked for."""

    def get(self, name: str) -> Any:
        if name.startswith("metadata."):
            return self.metadata.get(name[len("metadata.") :])
        return getattr(self, name)

    def with_decision(self, route: str | None, confidence: float, reason: str) -> Signals:
        return dataclasses.replace(self, route=route, confidence=confidence, reason=reason)

    def with_difficulty(self, difficulty: float | None) -> Signals:
        return dataclasses.replace(self, difficulty=difficulty)

    def to_dict(self) -> dict[str, Any]:
        """Every signal but the user text (which the decision log must not hold)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "text"}
        out["metadata"] = dict(self.metadata)
        out["confidence"] = round(self.confidence, 6)
        if self.difficulty is None:  # absent without a difficulty model, as before it existed
            del out["difficulty"]
        else:
            out["difficulty"] = round(self.difficulty, 6)
        if self.n == 1:  # absent unless asked, as before it was read
            del out["n"]
        if self.pii is None:  # absent unless looked for
            del out["pii"]
        else:
            out["pii"] = list(self.pii)
        return out


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``, estimated as UTF-8 bytes / 4 (see the module docstring)."""
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN)


def extract(
    messages: Sequence[Mapping[str, Any]],
    request: Mapping[str, Any] | None = None,
    hints: Hints | None = None,
) -> Signals:
    """The signals of ``messages`` (OpenAI-style) with ``request``'s tools, response_format and
    max_tokens, and ``hints``. The semantic decision is added later (:meth:`Signals.with_decision`)."""
    request = request or {}
    hints = hints or Hints()
    total = system = 0
    images = False
    user: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise InvalidQueryError(f"a message must be a mapping, not {type(message).__name__}")
        text, has_image = _content(message.get("content"))
        images = images or has_image
        tokens = estimate_tokens(text)
        total += tokens
        role = message.get("role")
        if role in ("system", "developer"):
            system += tokens
        elif role == "user":
            user.append(text)
    tools = request.get("tools") or request.get("functions")
    fmt = request.get("response_format")
    json_mode = isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")
    return Signals(
        input_tokens=total,
        max_tokens=_max_tokens(request),
        system_prompt_tokens=system,
        has_tools=bool(tools),
        has_images=images,
        json_mode=json_mode,
        task=hints.task,
        user_tier=hints.user_tier,
        max_cost_usd=hints.max_cost_usd,
        metadata=dict(hints.metadata),
        text="\n".join(user)[-MAX_SCANNED_TEXT:],
        n=_choices(request),
    )


def _content(content: Any) -> tuple[str, bool]:
    """The text of a message's content (a string or a list of parts), and whether it holds an
    image."""
    if isinstance(content, str):
        return content, False
    if not isinstance(content, list):
        return "", False
    texts, image = [], False
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") in ("image_url", "input_image", "image"):
            image = True
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "\n".join(texts), image


def _choices(request: Mapping[str, Any]) -> int:
    """The request's ``n`` (1 unless it is a positive integer)."""
    value = request.get("n")
    if isinstance(value, int) and not isinstance(value, bool) and value > 1:
        return value
    return 1


def _max_tokens(request: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
