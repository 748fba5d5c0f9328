"""Feedback: ``POST /v1/feedback`` through a real gateway, ``semroute.feedback()``, and what
`semroute stats` makes of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import semroute
from semroute.dispatch.feedback import MAX_COMMENT_CHARS
from semroute.dispatch.log import summarise
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines

pytestmark = pytest.mark.usefixtures("provider_key")


def _post(served: Served, body: Any, **kw: Any) -> httpx.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.post(served.url + "/v1/feedback", content=data, timeout=30, **kw)


def _feedback(folder: Path) -> list[dict[str, Any]]:
    return [x for x in log_lines(folder) if x.get("kind") == "feedback"]


@pytest.fixture
def served(tmp_path: Path, provider: FakeProvider) -> Any:
    with Served(build(tmp_path, provider)) as s:
        yield s


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"score": 1}, "request_id"),
        ({"request_id": "", "score": 1}, "request_id"),
        ({"request_id": "x" * 129, "score": 1}, "request_id"),
        ({"request_id": 12, "score": 1}, "request_id"),
        ({"request_id": "a\nb", "score": 1}, "request_id"),
        ({"request_id": "r1"}, "score"),
        ({"request_id": "r1", "score": 1.01}, "score"),
        ({"request_id": "r1", "score": -1.5}, "score"),
        ({"request_id": "r1", "score": True}, "score"),
        ({"request_id": "r1", "score": "sideways"}, "score"),
        ({"request_id": "r1", "score": "1"}, "score"),
        ({"request_id": "r1", "score": 1, "route": "billing"}, "route"),
        ({"request_id": "r1", "score": 1, "route": 3}, "route"),
        ({"request_id": "r1", "score": 1, "comment": "x" * (MAX_COMMENT_CHARS + 1)}, "comment"),
        ({"request_id": "r1", "score": 1, "comment": ["no"]}, "comment"),
        ({"request_id": "r1", "score": 1, "rating": 5}, "rating"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(
    served: Served, tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    response = _post(served, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(f"{field}:")
    assert _feedback(tmp_path) == []


@pytest.mark.parametrize("raw", [b"[1]", b"not json", b'{"request_id": "r", "score": NaN}'])
def test_a_body_that_is_not_a_feedback_object_is_a_400(served: Served, raw: bytes) -> None:
    response = _post(served, raw)
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_a_large_body_is_refused_before_it_is_all_read(served: Served) -> None:
    response = _post(served, {"request_id": "r", "score": 1, "comment": "x" * 20_000})
    assert response.status_code == 413


def test_feedback_is_recorded_with_the_scores_and_routes_it_may_hold(
    served: Served, tmp_path: Path
) -> None:
    answer = httpx.post(
        served.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "will it rain today"}]},
        timeout=30,
    )
    request_id = answer.headers["x-semroute-request-id"]
    bodies = [
        {"request_id": request_id, "score": "up"},
        {"request_id": request_id, "score": "down", "route": None},
        {"request_id": request_id, "score": -1, "route": "greeting"},
        {"request_id": "never-seen", "score": 0.25, "comment": "x" * MAX_COMMENT_CHARS},
    ]
    for body in bodies:
        response = _post(served, body)
        assert response.status_code == 202, response.text
        assert response.json() == {"recorded": True, "request_id": body["request_id"]}
    up, down, moved, unknown = _feedback(tmp_path)
    assert (up["score"], "route" in up) == (1.0, False)
    assert (down["score"], down["route"]) == (-1.0, None)
    assert moved["route"] == "greeting"
    # log_content is off: the comment's text is not written, its length is
    assert "comment" not in unknown and unknown["comment_chars"] == MAX_COMMENT_CHARS
    stats = summarise((tmp_path / "decisions.jsonl").read_text().splitlines()).to_dict()
    assert stats["requests"] == 1 and stats["malformed_lines"] == 0
    assert stats["feedback_records"] == 4
    weather = stats["feedback"]["routes"]["weather"]
    # the last feedback on a request counts
    assert weather == {
        "feedback": 1,
        "mean_score": -1.0,
        "up": 0,
        "down": 1,
        "corrections": {"greeting": 1},
    }
    assert stats["feedback"]["routes"]["(unknown request)"]["feedback"] == 1


def test_a_comment_is_written_when_content_is_logged(
    tmp_path: Path, provider: FakeProvider
) -> None:
    with Served(build(tmp_path, provider, dispatch={"log_content": True})) as served:
        assert (
            _post(served, {"request_id": "r1", "score": 1, "comment": "great"}).status_code == 202
        )
    [record] = _feedback(tmp_path)
    assert record["comment"] == "great"


def test_feedback_needs_the_key_when_keys_are_set(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_KEY", "sk-feedback-test-key")
    index = build(tmp_path, provider, server={"keys": ["os.environ/APP_KEY"]})
    with Served(index) as served:
        assert _post(served, {"request_id": "r1", "score": 1}).status_code == 401
        headers = {"Authorization": "Bearer sk-feedback-test-key"}
        assert _post(served, {"request_id": "r1", "score": 1}, headers=headers).status_code == 202


def test_without_a_decision_log_feedback_is_a_404(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    index = build(tmp_path, provider, dispatch={"log": None})
    with Served(index) as served:
        response = _post(served, {"request_id": "r1", "score": 1})
    assert response.status_code == 404
    assert "dispatch.log" in response.json()["error"]["message"]


def test_the_python_api_records_feedback_in_the_default_log(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = build(tmp_path, provider)
    monkeypatch.setenv("SEMROUTE_INDEX", str(index))
    semroute.feedback("req-1", score="down", route="weather")
    semroute.feedback("req-2", score=0.5)
    with pytest.raises(semroute.FeedbackError, match=r"^route:"):
        semroute.feedback("req-3", score=1, route="nope")
    with pytest.raises(semroute.FeedbackError, match=r"^score:"):
        semroute.feedback("req-3", score=2)
    first, second = _feedback(tmp_path)
    assert (first["request_id"], first["score"], first["route"]) == ("req-1", -1.0, "weather")
    assert (second["score"], "route" in second) == (0.5, False)
