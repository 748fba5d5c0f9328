"""Screenshots of the console's pages for the README: docs/ui/{playground,traffic,log,entry,routes}.png.

    .venv/bin/python scripts/ui_screenshots.py [--out docs/ui]

Serves the demo gateway (scripts/_console_demo.py: models on a FakeProvider, one failing a
fifth of its requests), sends it a few dozen requests, adds shadow verdicts and feedback to its
log, then photographs each page in Debian's chromium (apt-get install -y chromium) through
Playwright. The PNGs are reduced to a 64-colour palette to keep them small.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import sync_playwright

from _console_demo import ARGS, CHROMIUM, QUERIES, demo_gateway

ROOT = Path(__file__).resolve().parents[1]


def traffic(url: str, log: Path, n: int) -> None:
    rng = random.Random(3)
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            text = rng.choice(QUERIES)
            body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
            client.post("/v1/chat/completions", json=body)
            if i % 5 == 0:
                time.sleep(0.1)  # spread over a few seconds, so the charts have a shape
    requests = [json.loads(x) for x in log.read_text().splitlines()]
    with log.open("a") as f:
        for r in requests[::3]:
            verdict = rng.choice(["win", "win", "tie", "loss"])
            quality = {
                "kind": "quality",
                "request_id": r["request_id"],
                "route": r["route"],
                "status": "judged",
                "verdict": verdict,
                "cost_usd": 0.0001,
            }
            f.write(json.dumps(quality) + "\n")
        for r in requests[::7]:
            feedback = {
                "kind": "feedback",
                "request_id": r["request_id"],
                "score": rng.choice(["up", "up", "down"]),
            }
            f.write(json.dumps(feedback) + "\n")


def shrink(path: Path) -> None:
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as work,
        demo_gateway(Path(work)) as (url, _, log),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 820})
        page.goto(url + "/ui/traffic")
        traffic(url, log, 60)
        page.wait_for_timeout(2500)
        shots = {"traffic": None}
        page.screenshot(path=str(args.out / "traffic.png"))
        pages = {
            "playground": "/ui?q=why+was+my+card+charged+twice%3F",
            "log": "/ui/log",
            "routes": "/ui/routes",
        }
        for name, path in pages.items():
            page.goto(url + path)
            page.screenshot(path=str(args.out / f"{name}.png"))
            shots[name] = None
        page.goto(url + "/ui/log?fallbacks=1")
        page.click("#log a.open")
        page.screenshot(path=str(args.out / "entry.png"))
        shots["entry"] = None
        browser.close()
    for name in shots:
        shrink(args.out / f"{name}.png")
        print(f"{args.out / (name + '.png')}: {(args.out / (name + '.png')).stat().st_size} bytes")


if __name__ == "__main__":
    main()
