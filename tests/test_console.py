"""The console under /ui as a client without JavaScript meets it (httpx): server-rendered pages,
sign-in with an admin key, CSRF on the send, escaping of log text, the log's paging, page weight.
The browser tests are in test_console_browser.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from semroute.config.server import ServerSettings
from semroute.index.manifest import Manifest
from semroute.server.console.traffic import SNAPSHOT_TTL
from semroute.server.reload import restart_needed
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build

pytestmark = pytest.mark.usefixtures("provider_key")

ADMIN_KEY = "sk-admin-5e1f0c9d2b7a"
APP_KEY = "sk-app-7d1c5e0b9a2f"
KEYS = {"keys": ["os.environ/APP_KEY", {"key": "os.environ/OPS_KEY", "admin": True}]}
PAGES = ("/ui", "/ui/traffic", "/ui/log", "/ui/routes")
MAX_PAGE_BYTES = 300_000


@pytest.fixture
def gateway(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    with Served(build(tmp_path, provider)) as served:
        yield served


@pytest.fixture
def keyed(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    monkeypatch.setenv("APP_KEY", APP_KEY)
    monkeypatch.setenv("OPS_KEY", ADMIN_KEY)
    with Served(build(tmp_path, provider, server=KEYS)) as served:
        yield served


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    form = client.get("/ui/login")
    return client.post(
        "/ui/login", data={"key": key, "csrf": csrf_of(form.text), "next": "/ui/routes"}
    )


# --- pages, rendered on the server ------------------------------------------------------------


def test_a_shared_link_renders_the_decision_on_the_server(gateway: Served) -> None:
    page = httpx.get(gateway.url + "/ui?" + urlencode({"q": "will it rain today"}))
    assert page.status_code == 200
    assert re.search(r'id="route">weather<', page.text)
    assert re.search(r'id="model">weather-model<', page.text)
    # every route's confidence against its threshold, and the utterance nearest the query
    assert page.text.count('class="bar"') == 2
    assert "will it rain today" in page.text and "backup" in page.text  # the chain
    other = httpx.get(gateway.url + "/ui?" + urlencode({"q": "hello there"}))
    assert re.search(r'id="route">greeting<', other.text)


def test_the_playground_escapes_the_query_and_its_hints(gateway: Served) -> None:
    evil = '<script>alert("q")</script>'
    page = httpx.get(gateway.url + "/ui?" + urlencode({"q": evil, "task": evil, "max_cost": "x"}))
    assert page.status_code == 200
    assert evil not in page.text
    assert "&lt;script&gt;" in page.text
    assert "max cost: should be a positive number" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_every_page_answers_and_stays_under_the_weight_limit(gateway: Served) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        for path in PAGES:
            page = client.get(path, params={"q": "will it rain today"} if path == "/ui" else None)
            assert page.status_code == 200, path
            assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text)
            assert assets, path
            weight = len(page.content) + sum(len(client.get(a).content) for a in assets)
            assert weight <= MAX_PAGE_BYTES, (path, weight)
            assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text), path  # no CDN


def test_the_routes_page_lists_routes_and_conflicting_utterances(
    tmp_path: Path, provider: FakeProvider
) -> None:
    with Served(build(tmp_path, provider)) as served:
        page = httpx.get(served.url + "/ui/routes").text
    assert "weather-model" in page and "greeting" in page
    assert 'id="no-conflicts"' in page
    # the same utterance in two routes is a conflict
    index = build(tmp_path / "dup", provider, rules=None)
    routes = tmp_path / "dup" / "routes" / "routes.yaml"
    text = routes.read_text().replace("good morning friend", "will it rain today!")
    routes.write_text(text)
    from semroute.testing import FakeEncoder
    from semroute.tuning.build import build_index

    build_index(routes.parent, index, encoder=FakeEncoder())
    with Served(index) as served:
        page = httpx.get(served.url + "/ui/routes").text
    assert 'id="conflicts"' in page and page.count("will it rain today") >= 2


def test_ui_false_turns_the_console_off(tmp_path: Path, provider: FakeProvider) -> None:
    index = build(tmp_path, provider, server={"ui": False})
    settings = Manifest.read(index).server_settings(index)
    assert settings is not None and settings.ui is False
    with Served(index) as served:
        assert httpx.get(served.url + "/ui").status_code == 404
        assert httpx.get(served.url + "/ui/static/console.css").status_code == 404
        assert httpx.get(served.url + "/healthz").status_code == 200


def test_ui_and_admin_round_trip_and_are_validated() -> None:
    data = ServerSettings().to_dict()
    assert data["ui"] is True
    stored = {**data, "ui": False, "keys": [{"key": "os.environ/K", "admin": True}]}
    settings = ServerSettings.from_dict(stored)
    assert settings.ui is False and settings.keys[0].admin is True
    assert ServerSettings.from_dict(settings.to_dict()) == settings
    # a reload cannot mount or unmount the console: it asks for a restart
    assert restart_needed(ServerSettings(), ServerSettings(ui=False)) == ["server.ui"]
    for bad in ({"ui": "yes"}, {"keys": [{"key": "os.environ/K", "admin": "true"}]}):
        with pytest.raises(ValueError, match=r"ui|admin"):
            ServerSettings.from_dict({**data, **bad})


# --- sign-in and CSRF -------------------------------------------------------------------------


def test_with_keys_the_console_asks_to_sign_in(keyed: Served) -> None:
    for path in PAGES:
        page = httpx.get(keyed.url + path)
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login"), path
    assert httpx.get(keyed.url + "/ui/traffic.json").status_code == 401
    # an API key in a header is not a console session
    page = httpx.get(keyed.url + "/ui", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert page.status_code == 303


def test_a_non_admin_key_is_refused_and_an_admin_key_signs_in(keyed: Served) -> None:
    with httpx.Client(base_url=keyed.url) as client:
        for key in (APP_KEY, "sk-wrong", ""):
            refused = sign_in(client, key)
            assert refused.status_code == 403, key
            assert "semroute_session" not in refused.cookies
        assert "not an admin key" in sign_in(client, APP_KEY).text
        ok = sign_in(client, ADMIN_KEY)
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/routes"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert ADMIN_KEY not in cookie and ADMIN_KEY not in str(ok.url)
        assert client.get("/ui/routes").status_code == 200
        assert client.get("/ui/traffic.json").status_code == 200
        # signing out ends the session
        page = client.get("/ui/routes")
        out = client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert client.get("/ui/routes").status_code == 303


def test_a_forged_or_expired_session_cookie_is_refused(keyed: Served) -> None:
    with httpx.Client(base_url=keyed.url) as client:
        sign_in(client, ADMIN_KEY)
        good = client.cookies["semroute_session"]
        env, expiry, signature = good.split(".")
        forged = [
            f"APP_KEY.{expiry}.{signature}",
            f"{env}.{int(expiry) + 1}.{signature}",
            f"{env}.1.{signature}",
            "x" * 5000,
        ]
    for value in forged:
        page = httpx.get(keyed.url + "/ui/routes", cookies={"semroute_session": value})
        assert page.status_code == 303, value


def test_login_needs_the_csrf_token(keyed: Served) -> None:
    with httpx.Client(base_url=keyed.url) as client:
        client.get("/ui/login")
        refused = client.post("/ui/login", data={"key": ADMIN_KEY, "csrf": "wrong" * 5})
        assert refused.status_code == 403 and "semroute_session" not in refused.cookies


def send(client: httpx.Client, token: str | None, **extra: Any) -> httpx.Response:
    headers = {"x-csrf-token": token} if token is not None else {}
    return client.post(
        "/ui/send", json={"q": "will it rain today"}, headers={**headers, **extra}, timeout=30
    )


def test_send_dispatches_only_with_the_csrf_token(gateway: Served, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    with httpx.Client(base_url=gateway.url) as client:
        token = csrf_of(client.get("/ui").text)
        for bad in (None, "", "x" * 43, token[:-1]):
            assert send(client, bad).status_code == 403, bad
        assert not log.exists()  # no model was called
        assert send(client, token, origin="http://evil.example").status_code == 403
        answered = send(client, token)
        assert answered.status_code == 200, answered.text
        assert answered.json()["model"] == "weather-model"
        assert len(log.read_text().splitlines()) == 1
        bad_body = client.post("/ui/send", json={"q": ""}, headers={"x-csrf-token": token})
        assert bad_body.status_code == 400 and "q" in bad_body.json()["error"]


# --- the log ----------------------------------------------------------------------------------


def write_log(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def record(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "time": f"2026-01-01T00:00:{i % 60:02d}",
        "request_id": f"req{i:07d}",
        "route": "weather",
        "reason": "matched",
        "model": "weather-model",
        "confidence": 0.9,
        "fallbacks": [],
        "error": None,
        **kw,
    }


def test_log_text_is_shown_as_text(gateway: Served, tmp_path: Path) -> None:
    evil = "<script>document.title='owned'</script>"
    write_log(
        tmp_path / "decisions.jsonl",
        [record(1, route=evil, error=evil, model='"><img src=x onerror=alert(1)>')],
    )
    page = httpx.get(gateway.url + "/ui/log").text
    assert evil not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page
    link = re.search(r'href="(/ui/log/entry\?[^"]+)"', page)
    assert link is not None
    detail = httpx.get(gateway.url + link.group(1).replace("&amp;", "&")).text
    assert evil not in detail and "&lt;script&gt;" in detail


def test_the_log_filters_and_opens_an_entry(gateway: Served, tmp_path: Path) -> None:
    write_log(
        tmp_path / "decisions.jsonl",
        [
            record(1),
            record(2, route=None, reason="below_threshold", model="frontier"),
            record(3, fallbacks=["weather-model"], model="backup"),
            record(4, error="all models failed", model=None),
            {"kind": "quality", "request_id": "req0000001", "status": "judged", "verdict": "win"},
            {"kind": "feedback", "request_id": "req0000003", "score": -1},
            "not json",
        ],
    )
    url = gateway.url + "/ui/log"

    def ids(**params: str) -> list[str]:
        return re.findall(r"req\d{7}", httpx.get(url, params=params).text.split("<tbody>")[1])

    assert ids() == ["req0000004", "req0000003", "req0000002", "req0000001"]
    assert ids(route="-") == ["req0000002"]
    assert ids(model="backup") == ["req0000003"]
    assert ids(low="1") == ["req0000002"]
    assert ids(fallbacks="1") == ["req0000003"]
    assert ids(status="error") == ["req0000004"]
    assert ids(feedback="1") == ["req0000003"]
    assert ids(reason="matched", status="ok") == ["req0000003", "req0000001"]
    detail = httpx.get(gateway.url + "/ui/log/entry", params={"at": 0, "id": "req0000001"})
    assert detail.status_code == 200 and "<strong>win</strong>" in detail.text
    wrong = httpx.get(gateway.url + "/ui/log/entry", params={"at": 0, "id": "req0000002"})
    assert wrong.status_code == 404
    assert httpx.get(gateway.url + "/ui/log/entry", params={"at": "x"}).status_code == 404


def test_the_traffic_figures_count_the_gateways_requests(gateway: Served) -> None:
    url = gateway.url + "/ui/traffic.json"
    assert httpx.get(url).json()["requests"] == 0
    body = {"model": "auto", "messages": [{"role": "user", "content": "will it rain today"}]}
    for _ in range(2):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30).is_success
    figures = httpx.get(url).json()
    if figures["requests"] != 2:  # the figures are cached for half a second
        time.sleep(SNAPSHOT_TTL + 0.1)
        figures = httpx.get(url).json()
    assert figures["requests"] == 2 and figures["routes"] == {"weather": 2}
    assert figures["models"] == {"weather-model": 2}
    assert figures["cost_per_request"] > 0 and figures["breakers"]["weather-model"] == "closed"


def test_an_expired_session_is_refused(keyed: Served) -> None:
    from semroute.server.console.session import SESSION_S, new_session

    keys = keyed.app.state.holder.keys
    admin = keys.find(ADMIN_KEY.encode())
    fresh = new_session(keys, admin)
    old = new_session(keys, admin, now=time.time() - SESSION_S - 5)
    url = keyed.url + "/ui/routes"
    assert httpx.get(url, cookies={"semroute_session": fresh}).status_code == 200
    assert httpx.get(url, cookies={"semroute_session": old}).status_code == 303


HOSTILE = [
    {
        "request_id": "h1",
        "route": {"a": 1},
        "model": 3,
        "reason": None,
        "confidence": "high",
        "cost_usd": [1],
        "fallbacks": "backup",
        "error": {"x": "<b>"},
        "time": ["t"],
    },
    {
        "request_id": "h2",
        "top_scores": "x",
        "attempts": [1, None, {"model": "<i>"}],
        "skipped": {"a": 1},
        "cascade": [1],
        "confidence": True,
        "fallbacks": [{"m": 1}],
    },
    {"request_id": "h3", "time": "x" * 10_000, "route": "\u202e\x00\ud800"[:2]},
    {"kind": "quality", "request_id": "h1", "status": 5, "verdict": {"a": 1}},
    {"kind": "feedback", "request_id": "h2", "score": "<script>", "comment": ["x"]},
    {"kind": "feedback", "request_id": "h3", "score": 1e308},
]


def test_hostile_log_lines_and_parameters_never_break_a_page(
    gateway: Served, tmp_path: Path
) -> None:
    write_log(tmp_path / "decisions.jsonl", HOSTILE)
    with (tmp_path / "decisions.jsonl").open("a") as f:
        f.write('[1, 2]\n{"request_id": 5}\n\x00\xff garbage\n{"request_id": "h4"\n')
    log = gateway.url + "/ui/log"
    page = httpx.get(log)
    assert page.status_code == 200 and page.text.count('class="open"') == 3
    assert "<b>" not in page.text
    for link in re.findall(r'href="(/ui/log/entry\?[^"]+)"', page.text):
        detail = httpx.get(gateway.url + link.replace("&amp;", "&"))
        assert detail.status_code == 200 and "<i>" not in detail.text
    long_number = "9" * 5000
    for params in (
        {"before": long_number},
        {"before": "-1"},
        {"before": "١٢"},
        {"status": "<x>", "low": "yes", "route": "r" * 10_000},
        {"at": long_number, "id": "h1"},
    ):
        assert httpx.get(log, params=params).status_code == 200, params
        assert httpx.get(log + "/entry", params=params).status_code in (200, 404), params
    for params in ({"q": "x", "max_cost": "1e999"}, {"q": "\ud800"[:0] + "x" * 9000}):
        assert httpx.get(gateway.url + "/ui", params=params).status_code == 200
