"""The console's traffic page at 500 requests per second: how long its JSON takes to answer and
how large it is, against the same gateway idle; and what counting one request costs.

    .venv/bin/python scripts/bench_console.py [--rate 500] [--seconds 20]

The demo gateway (scripts/_console_demo.py) is served in this process. A load thread reports
--rate finished requests per second to the gateway's metrics, through the same
``Metrics.observe`` call the chat endpoint makes for each request (with decisions the router
made, attempts with and without a fallback, costs); the 2-core machine's gateway could not
itself answer 500 chat requests a second, and the page's cost does not depend on who made them.
Meanwhile a poller asks ``/ui/traffic.json`` once a second, as the page does, and times each
answer; ``/ui/traffic`` itself is fetched too. Results go to docs/results/console.json and the
"console" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from _bench import machine, machine_markdown, save
from _console_demo import ARGS, CHROMIUM, QUERIES, demo_gateway
from semroute.records import Attempt
from semroute.server.console.traffic import Traffic


def load(app: Any, rate: int, stop: threading.Event, sent: list[int]) -> None:
    loaded = app.state.holder.current
    metrics, label = app.state.gateway.metrics, loaded.catalog.label
    decisions = [loaded.router.route(q) for q in QUERIES]
    start, n = time.perf_counter(), 0
    while not stop.is_set():
        due = int(rate * (time.perf_counter() - start))
        while n < due:
            d = decisions[n % len(decisions)]
            if n % 10 == 0:  # a fallback
                attempts = (Attempt(d.model, "boom", 12.0), Attempt("backup", None, 40.0))
                model = "backup"
            else:
                attempts, model = (Attempt(d.model, None, 35.0 + n % 20),), d.model
            metrics.observe("chat", 200, d, label, attempts=attempts, model=model, cost_usd=1e-5)
            n += 1
        time.sleep(0.005)
    sent.append(n)


def poll(url: str, seconds: float) -> dict[str, Any]:
    times, sizes, rps = [], [], []
    with httpx.Client(base_url=url, timeout=10) as client:
        client.get("/ui/traffic.json")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = client.get("/ui/traffic.json")
            times.append((time.perf_counter() - t0) * 1000)
            sizes.append(len(r.content))
            rps.append(r.json()["rps_last"])
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
        t0 = time.perf_counter()
        page = client.get("/ui/traffic")
        page_ms = (time.perf_counter() - t0) * 1000
    times.sort()
    return {
        "polls": len(times),
        "json_ms_p50": round(statistics.median(times), 2),
        "json_ms_max": round(times[-1], 2),
        "json_bytes_max": max(sizes),
        "rps_shown_last": rps[-1],
        "page_ms": round(page_ms, 2),
        "page_bytes": len(page.content),
    }


WATCH = """() => {
  window.__updates = 0; window.__long = [];
  new MutationObserver(() => window.__updates++).observe(
    document.getElementById('updated'), {childList: true, characterData: true, subtree: true});
  new PerformanceObserver(l => l.getEntries().forEach(e => window.__long.push(e.duration)))
    .observe({type: 'longtask', buffered: false});
}"""
READ = """() => ({
  updates: window.__updates,
  long_tasks: window.__long.length,
  longest_task_ms: Math.max(0, ...window.__long),
  fetch_ms: performance.getEntriesByType('resource')
    .filter(e => e.name.endsWith('/ui/traffic.json')).map(e => e.duration),
  heap_mb: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null,
})"""


def browser(url: str, seconds: float) -> dict[str, Any] | None:
    """The traffic page in chromium for ``seconds``: updates seen, long tasks, fetch times."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = b.new_page()
        page.goto(url + "/ui/traffic")
        page.wait_for_function("document.getElementById('total').textContent !== '0'")
        page.evaluate(WATCH)
        page.wait_for_timeout(seconds * 1000)
        seen = page.evaluate(READ)
        b.close()
    fetches = sorted(seen.pop("fetch_ms"))
    seen["fetch_ms_p50"] = round(statistics.median(fetches), 1) if fetches else None
    seen["longest_task_ms"] = round(seen["longest_task_ms"], 1)
    seen["heap_mb"] = round(seen["heap_mb"], 1) if seen["heap_mb"] else None
    return {"seconds": seconds, **seen}


def observe_cost(n: int = 100_000) -> float:
    """Microseconds the traffic counters take per request (the listener alone)."""
    traffic = Traffic()
    attempt = (Attempt("m", None, 30.0),)
    from semroute.decision import Decision, Reason

    d = Decision("weather", "m", 0.9, 0.5, Reason.MATCHED, 1.0)
    t0 = time.perf_counter()
    for _ in range(n):
        traffic("chat", 200, d, attempt, (), "m", 1e-5)
    return round((time.perf_counter() - t0) / n * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    m = machine()
    with tempfile.TemporaryDirectory() as work, demo_gateway(Path(work)) as (url, app, _):
        idle = poll(url, 5)
        stop, sent = threading.Event(), []
        thread = threading.Thread(target=load, args=(app, args.rate, stop, sent))
        started = time.perf_counter()
        thread.start()
        busy = poll(url, args.seconds)
        page = browser(url, args.seconds)
        stop.set()
        thread.join()
        achieved = sent[0] / (time.perf_counter() - started)
    results = {
        "machine": m,
        "rate_asked": args.rate,
        "rate_fed": round(achieved, 1),
        "idle": idle,
        "loaded": busy,
        "observe_us": observe_cost(),
        "browser": page,
    }
    b, i = busy, idle
    markdown = f"""## Console: the traffic page at {args.rate} requests per second

`.venv/bin/python scripts/bench_console.py --rate {args.rate} --seconds {args.seconds:g}`: the demo
gateway (models on a FakeProvider) in this process; a thread reports {args.rate} finished requests
a second (fed {achieved:.0f}/s) through `Metrics.observe`, the call the chat endpoint makes per
request, while a poller asks `/ui/traffic.json` once a second as the page does.

| | idle | at {args.rate} req/s |
|---|---|---|
| `/ui/traffic.json` median / slowest (ms) | {i["json_ms_p50"]} / {i["json_ms_max"]} | {b["json_ms_p50"]} / {b["json_ms_max"]} |
| its size, largest (bytes) | {i["json_bytes_max"]} | {b["json_bytes_max"]} |
| requests in the last complete second, as the page showed it last | {i["rps_shown_last"]} | {b["rps_shown_last"]} |
| `/ui/traffic` HTML (ms, bytes) | {i["page_ms"]}, {i["page_bytes"]} | {b["page_ms"]}, {b["page_bytes"]} |

{_browser_text(page)}

Counting one request for the page costs {results["observe_us"]} µs (the listener alone, 100,000
calls). The browser gets one small JSON a second whatever the rate: the counting is done on the
server, in per-second buckets. One run on a loaded shared machine: medians move between runs.

{machine_markdown(m)}
"""
    save("console", results, markdown)


def _browser_text(page: dict[str, Any] | None) -> str:
    if page is None:
        return "(No chromium at /usr/bin/chromium: the page was not opened in a browser.)"
    return (
        f"The page itself, open in headless chromium for {page['seconds']:g} s at that rate: "
        f"{page['updates']} redraws, {page['long_tasks']} long tasks (over 50 ms; longest "
        f"{page['longest_task_ms']} ms), its JSON fetched in {page['fetch_ms_p50']} ms (median), "
        f"JS heap {page['heap_mb']} MB."
    )


if __name__ == "__main__":
    main()
