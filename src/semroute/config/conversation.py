"""The `router.conversation` block of a route file: how message lists are routed."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConversationSettings", "ConversationSpec"]


class ConversationSpec(BaseModel):
    """The `router.conversation` mapping of a route file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    turns: int = Field(
        default=1, ge=1, le=20, strict=True, description="How many latest user turns to route on."
    )
    sticky: bool = Field(
        default=False,
        strict=True,
        description="Keep a conversation on its route unless a new turn clearly matches another.",
    )
    session_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86_400,
        description="With sticky: how long a session keeps its model after its last answer.",
    )
    max_sessions: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        strict=True,
        description="With sticky: how many sessions each process keeps (least recently used go).",
    )


@dataclass(frozen=True)
class ConversationSettings:
    """Validated `router.conversation` settings."""

    turns: int = 1
    sticky: bool = False
    session_ttl_s: float = 3600.0
    """With ``sticky``: how long a session (an agent run) keeps its model after its last answer."""
    max_sessions: int = 100_000
    """With ``sticky``: how many sessions each process keeps (least recently used dropped)."""
