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


@dataclass(frozen=True)
class ConversationSettings:
    """Validated `router.conversation` settings."""

    turns: int = 1
    sticky: bool = False
