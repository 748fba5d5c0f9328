"""Learning from traffic, end to end through the gateway: traffic with `log_content: true`
against a FakeProvider, a cluster of questions no route covers, feedback on some of them;
replay with a candidate index that adds the missing route; suggest finds the cluster and its
patch validates; stats reports drift once the traffic shifts; a challenger logs both decisions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from semroute.tuning.calibrate import calibrate_index
from tests.gateway_kit import Served, log_lines, spec

pytestmark = pytest.mark.usefixtures("provider_key")

WEATHER = [
    "what is the weather forecast for tomorrow",
    "will it rain today",
    "is it going to rain this weekend",
    "what is the forecast for today",
]
GREETING = ["hello there", "good morning friend", "hello good morning", "hello friend"]
OTHER = ["tell me a joke about cats", "recommend a novel to read", "what is two plus two"]
PASSWORD = [
    "how do i reset my account password",
    "i forgot my account password how do i reset it",
    "reset the password of my account please",
    "my account password does not work how to reset",
    "help me reset my account password",
    "can you reset my password for my account",
    "account password reset link is not working",
    "where do i reset the password for my account",
]
NEW_ROUTE = {"name": "accounts", "utterances": PASSWORD[:3]}


def _index(folder: Path, provider: FakeProvider, *, extra: list[dict[str, Any]] = ()) -> Path:
    data = spec(folder, provider, dispatch={"log_content": True})
    data["routes"] += list(extra)
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    build_index(routes, folder / "index", encoder=FakeEncoder())
    return folder / "index"


def _calibrate(index: Path, folder: Path) -> None:
    rows = [{"text": t, "label": "weather"} for t in WEATHER]
    rows += [{"text": t, "label": "greeting"} for t in GREETING]
    rows += [{"text": t, "label": "oos"} for t in OTHER]
    data = folder / "calibration.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calibrate_index(index, data, bootstrap=0)


def _ask(served: Served, text: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    response = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_loop_from_traffic_to_a_better_router(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _index(tmp_path / "live", provider)
    _calibrate(index, tmp_path)
    log = tmp_path / "live" / "decisions.jsonl"
    with Served(index) as served:
        for _ in range(4):  # traffic like the calibration data
            for text in WEATHER + GREETING + OTHER:
                _ask(served, text)
        before = json.loads(_cli("stats", str(log), "--index", str(index), "--json"))
        ids = []
        for _ in range(6):  # then a cluster of questions no route covers
            for text in PASSWORD:
                ids.append(_ask(served, text).headers["x-semroute-request-id"])
        for request_id in ids[:5]:
            feedback = {"request_id": request_id, "score": "down", "route": None}
            response = httpx.post(served.url + "/v1/feedback", json=feedback, timeout=30)
            assert response.status_code == 202, response.text
        metrics = httpx.get(served.url + "/metrics", timeout=30).text
    assert 'semroute_route_confidence_bucket{le="0.1",route="weather"}' in metrics
    assert 'semroute_drift{route="weather"}' in metrics

    lines = log_lines(tmp_path / "live")
    requests = [x for x in lines if "kind" not in x]
    assert len(requests) == 44 + 48
    assert all(x["route"] is None for x in requests if x["messages"][-1]["content"] in PASSWORD)
    assert sum(1 for x in lines if x.get("kind") == "feedback") == 5

    # stats: feedback per route, and drift once the traffic shifted
    assert before["drift"]["alarm"] is False
    stats = json.loads(_cli("stats", str(log), "--index", str(index), "--json"))
    assert stats["feedback"]["routes"]["(no route)"]["feedback"] == 5
    assert stats["feedback"]["routes"]["(no route)"]["mean_score"] == -1.0
    assert stats["drift"]["alarm"] is True
    assert stats["drift"]["default_share"]["alarm"] is True
    share = stats["drift"]["default_share"]
    said = " ".join(_cli("stats", str(log), "--index", str(index)).split())
    assert (
        f"to the default model: {share['logged']:.1%} of the logged requests, "
        f"{share['calibration']:.1%} of the calibration rows (ALARM)"
    ) in said

    # replay: a candidate with the missing route takes those requests
    candidate = _index(tmp_path / "candidate", provider, extra=[NEW_ROUTE])
    report = json.loads(_cli("replay", str(log), "--index", str(candidate), "--json"))
    assert report["n"] == report["replayed"] == 92
    assert report["changed"] > 0
    pair = next(p for p in report["by_pair"] if p["to"] == "accounts")
    assert pair["from"] is None and pair["n"] >= 30
    assert report["feedback"]["changed_with_feedback"] == 5
    assert report["feedback"]["mean_score_before"] == -1.0
    assert report["cost_usd_before"] is not None and report["cost_usd_after"] is not None

    # suggest: finds the cluster; its patch, routes renamed, validates with the route files
    patch = tmp_path / "suggested.yaml"
    found = json.loads(
        _cli("suggest", str(log), "--index", str(index), "--out", str(patch), "--json")
    )
    [cluster] = found["clusters"]
    assert set(cluster["utterances"]) <= set(PASSWORD) and cluster["size"] == len(PASSWORD)
    routes = tmp_path / "validated"
    shutil.copytree(tmp_path / "live" / "routes", routes)
    (routes / "suggested.yaml").write_text(patch.read_text().replace("new-route-1", "accounts"))
    assert "3 routes" in _cli("validate", str(routes))
    again = json.loads(_cli("suggest", str(log), "--index", str(index), "--json"))
    assert again == found  # deterministic

    # a challenger: both decisions logged, its route in a header
    monkeypatch.setenv("SEMROUTE_CHALLENGER", str(candidate))
    log.unlink()
    with Served(index) as served:
        headers = _ask(served, PASSWORD[3]).headers
        assert headers["x-semroute-challenger-route"] == "accounts"
        assert headers["x-semroute-route"] == ""
        _ask(served, WEATHER[0])
    first, second = log_lines(tmp_path / "live")
    assert first["route"] is None
    assert first["challenger"]["route"] == "accounts"
    assert set(first["challenger"]) == {"route", "model", "reason", "confidence"}
    assert second["challenger"]["route"] == second["route"] == "weather"
    stats = json.loads(_cli("stats", str(log), "--json"))
    assert stats["challenger"] == {
        "requests": 2,
        "agreement": 0.5,
        "disagreements": [{"from": "(no route)", "to": "accounts", "n": 1}],
    }
