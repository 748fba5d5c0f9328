"""``POST /v1/feedback``: a client says how good an answer was, and which route should have
answered it.

    {"request_id": "9f1c...", "score": "down", "route": "billing", "comment": "wrong team"}

``score``: a number in [-1, 1], ``"up"`` or ``"down"``; ``route`` (optional): a route of the
index, or null for "none of them"; ``comment`` (optional): at most 2,000 characters, written
only when ``log_content`` is on. Same API keys as the chat endpoint. The answer is 202 with
``{"recorded": true, "request_id": ...}``; a bad field is a 400 naming it. The request id is
not looked up (the log may be rotated or written by other replicas): with a decision log, the
feedback is recorded; without one (no ``dispatch.log``, no ``$SEMROUTE_LOG``) nothing can
consult or keep it, and the answer is 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from semroute.dispatch.feedback import FIELDS, UNSET, check_feedback, feedback_entry
from semroute.dispatch.log import DecisionLogs
from semroute.errors import FeedbackError
from semroute.server.errors import ApiError, error_response

if TYPE_CHECKING:
    from starlette.requests import Request

    from semroute.server.reload import IndexHolder

__all__ = ["MAX_FEEDBACK_BYTES", "FeedbackEndpoint"]

MAX_FEEDBACK_BYTES = 16 * 1024
"""A feedback body is small: a 2,000-character comment is at most 12 kB of JSON escapes."""


class FeedbackEndpoint:
    """The handler, with the log writers it keeps (one per file)."""

    def __init__(self, holder: IndexHolder) -> None:
        self.holder = holder
        self.logs = DecisionLogs()

    async def __call__(self, request: Request) -> Response:
        try:
            self.holder.keys.check(request.headers)
            body = await _body(request)
            loaded = self.holder.current
            request_id, score, route, comment = check_feedback(
                body.get("request_id"),
                body.get("score"),
                route=body.get("route", UNSET),
                comment=body.get("comment"),
                routes=(r.name for r in loaded.router.routes),
            )
            settings = loaded.dispatcher.config.settings
            log = self.logs.open(settings.log)
            if log is None:
                raise ApiError(
                    404,
                    "no decision log is kept (dispatch.log or $SEMROUTE_LOG), so request ids "
                    "cannot be found and feedback cannot be recorded; set dispatch.log",
                    code="no_decision_log",
                )
        except FeedbackError as exc:
            return error_response(ApiError(400, str(exc), code="invalid_request"))
        except ApiError as exc:
            return error_response(exc)
        entry = feedback_entry(
            request_id, score, route=route, comment=comment, log_content=settings.log_content
        )
        log.write(entry)
        payload = {"recorded": True, "request_id": request_id}
        return Response(json.dumps(payload).encode(), 202, media_type="application/json")

    def close(self) -> None:
        self.logs.close()


async def _body(request: Request) -> dict[str, object]:
    raw = b""
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FEEDBACK_BYTES:
                raise ApiError(
                    413, f"the body is over {MAX_FEEDBACK_BYTES} bytes", code="body_too_large"
                )
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection while sending the body") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON", code="invalid_request") from None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            'the body should be a JSON object with "request_id" and "score"',
            code="invalid_request",
        )
    extra = sorted(k for k in body if k not in FIELDS)
    if extra:
        raise ApiError(
            400,
            f"{str(extra[0])[:60]}: is not a feedback field (request_id, score, route, comment)",
            code="invalid_request",
        )
    return body
