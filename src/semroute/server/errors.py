"""Errors as OpenAI's API shapes them: ``{"error": {"message", "type", "param", "code"}}``, with a
status; ``param`` is the field the message names (``messages[0].role``), as OpenAI fills it (the
SDK's ``e.param``), or null when no one field is to blame.

The status says what to do: 400 fix the body (also when a model rejected it as malformed:
``rejected_by_model``), 401 send a valid key, 402 the request or the key is over its cost limit,
403 a rule blocks it, 413 the body is too large, 429 the key is over its rate limit (retry
after ``Retry-After`` seconds), 502 no model answered (``attempts`` lists each
model tried), 504 every model tried timed out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from semroute.errors import (
    BlockedError,
    CostLimitError,
    DispatchError,
    InvalidQueryError,
    RequestRejectedError,
)
from semroute.records import Attempt

__all__ = ["ApiError", "error_response", "from_semroute"]


class ApiError(Exception):
    """A request the gateway refuses, as the client will see it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        """Headers the response carries (``Retry-After`` of a 429)."""
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        """The field at fault (``messages[0].role``; None: none)."""
        self.extra = dict(extra or {})
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": {**error, **self.extra}}


def error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> Response:
    content = json.dumps(error.body(), ensure_ascii=False).encode()
    return Response(content, error.status, {**(headers or {}), **error.headers}, "application/json")


def from_semroute(exc: Exception) -> ApiError | None:
    """The API error for an error dispatching raised (None: not one the client caused)."""
    if isinstance(exc, BlockedError):
        return ApiError(403, str(exc), type="permission_error", code="blocked_by_rule")
    if isinstance(exc, CostLimitError):
        return ApiError(402, str(exc), type="insufficient_quota", code="over_cost_limit")
    if isinstance(exc, DispatchError):
        attempts = [a.to_dict() for a in exc.attempts]
        extra = {"attempts": attempts, "skipped": [s.to_dict() for s in exc.skipped]}
        if isinstance(exc, RequestRejectedError):
            return ApiError(400, str(exc), code="rejected_by_model", extra=extra)
        if exc.attempts and all(_timed_out(a) for a in exc.attempts):
            return ApiError(504, str(exc), type="api_error", code="upstream_timeout", extra=extra)
        return ApiError(502, str(exc), type="api_error", code="no_model_answered", extra=extra)
    if isinstance(exc, InvalidQueryError):
        return ApiError(400, str(exc), code="invalid_request")
    return None


def _timed_out(attempt: Attempt) -> bool:
    # LiteLLM raises its Timeout (status 408) for a model that did not answer in time.
    return attempt.status == 408 or (attempt.error or "").startswith(("Timeout", "APITimeout"))
