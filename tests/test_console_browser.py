"""The console in a real browser (Debian's chromium through Playwright): the playground updates
as a query is typed, the traffic charts move with requests, the log filters and opens an entry,
log text holding markup stays text, and signing in takes an admin key and never puts it in a URL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from semroute.testing import FakeProvider
from tests.browser_kit import chromium
from tests.gateway_kit import Served, build

pytestmark = pytest.mark.usefixtures("provider_key")

ADMIN_KEY = "sk-admin-5e1f0c9d2b7a"
APP_KEY = "sk-app-7d1c5e0b9a2f"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("dialog", lambda d: errors.append("dialog: " + d.message))
    try:
        yield p
    finally:
        context.close()
    assert errors == []  # no script error, no alert() run from a log line


@pytest.fixture
def gateway(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    with Served(build(tmp_path, provider)) as served:
        yield served


def test_the_playground_shows_the_route_and_follows_typing(page: Any, gateway: Served) -> None:
    from playwright.sync_api import expect

    page.goto(gateway.url + "/ui")
    page.fill("#q", "will it rain today")
    expect(page.locator("#route")).to_have_text("weather")
    expect(page.locator("#model")).to_have_text("weather-model")
    page.fill("#q", "hello there")
    expect(page.locator("#route")).to_have_text("greeting")
    assert "q=hello+there" in page.url  # the link to share
    # the send button dispatches (with the page's CSRF token) and shows the answer
    page.click("#send")
    expect(page.locator("#answer")).to_contain_text("frontier")
    # a script of another origin's making, without the token, is refused
    status = page.evaluate(
        "fetch('/ui/send', {method: 'POST', body: JSON.stringify({q: 'x'}),"
        " headers: {'content-type': 'application/json'}}).then(r => r.status)"
    )
    assert status == 403


def test_traffic_charts_move_after_requests(page: Any, gateway: Served) -> None:
    from playwright.sync_api import expect

    page.goto(gateway.url + "/ui/traffic")
    expect(page.locator("#updated")).to_contain_text("updated")
    expect(page.locator("#total")).to_have_text("0")
    for text in ("will it rain today", "hello there", "will it rain today"):
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 200
    expect(page.locator("#total")).to_have_text("3")
    expect(page.locator("#chart-routes .row")).to_have_count(2)
    expect(page.locator("#chart-routes")).to_contain_text("66.7%")
    expect(page.locator("#chart-models")).to_contain_text("weather-model")
    assert page.locator("#chart-rps polyline").count() == 1
    expect(page.locator("#breakers")).to_contain_text("weather-model: closed")


def write_log(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def test_log_filters_open_an_entry_and_show_markup_as_text(
    page: Any, gateway: Served, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    evil = "<script>alert('log')</script>"
    base = {"reason": "matched", "fallbacks": [], "error": None, "confidence": 0.9}
    write_log(
        tmp_path / "decisions.jsonl",
        [
            {**base, "request_id": "aaa1", "route": "weather", "model": "weather-model"},
            {**base, "request_id": "bbb2", "route": "greeting", "model": "frontier", "error": evil},
            {
                **base,
                "request_id": "ccc3",
                "route": None,
                "model": "frontier",
                "reason": "below_threshold",
            },
            {"kind": "quality", "request_id": "aaa1", "status": "judged", "verdict": "loss"},
        ],
    )
    page.goto(gateway.url + "/ui/log")
    rows = page.locator("#log tbody tr")
    expect(rows).to_have_count(3)
    page.fill("#f-route", "weather")
    page.click("#apply")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".route")).to_have_text("weather")
    page.goto(gateway.url + "/ui/log")
    page.check("#f-low")
    page.click("#apply")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".route")).to_have_text("—")
    page.goto(gateway.url + "/ui/log?route=weather")
    page.click("#log a.open")
    expect(page.locator("h1")).to_contain_text("aaa1")
    expect(page.locator("#verdict-1")).to_contain_text("loss")
    # the error holding a script is shown as text, and runs nothing (see the page fixture)
    page.goto(gateway.url + "/ui/log?status=error")
    page.click("#log a.open")
    expect(page.locator("#error")).to_have_text(evil)
    assert page.locator("script:not([src])").count() == 0


def test_signing_in_refuses_a_non_admin_key_and_keeps_keys_out_of_urls(
    browser: Any, tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect

    monkeypatch.setenv("APP_KEY", APP_KEY)
    monkeypatch.setenv("OPS_KEY", ADMIN_KEY)
    keys = {"keys": ["os.environ/APP_KEY", {"key": "os.environ/OPS_KEY", "admin": True}]}
    with Served(build(tmp_path, provider, server=keys)) as served:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(served.url + "/ui/traffic")
        assert re.search(r"/ui/login\?next=%2Fui%2Ftraffic$", page.url)
        page.fill("#key", APP_KEY)
        page.click("#signin")
        expect(page.locator("#problem")).to_contain_text("not an admin key")
        page.fill("#key", ADMIN_KEY)
        page.click("#signin")
        expect(page.locator("#updated")).to_contain_text("updated")
        assert page.url.endswith("/ui/traffic")
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["semroute_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert ADMIN_KEY not in session["value"]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
        page.click("text=Sign out")
        expect(page.locator("#key")).to_be_visible()
        context.close()
    assert urls and not any(ADMIN_KEY in u or APP_KEY in u for u in urls)
