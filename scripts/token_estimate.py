"""How close semroute's token estimate (UTF-8 bytes / 4) is to a real tokenizer, and how fast.

    .venv/bin/python scripts/token_estimate.py

Compares :func:`semroute.routing.signals.estimate_tokens` with tiktoken's cl100k_base (read from
LiteLLM's bundled copy, offline) on English prose (the README), Python (semroute's source) and
dense JSON (LiteLLM's model price map), and times both on a 50,000-token input. Writes
docs/results/token_estimate.json.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "token_estimate.json"


def main() -> None:
    import litellm

    tokenizers = Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tokenizers))
    import tiktoken

    from semroute.routing.signals import estimate_tokens

    enc = tiktoken.get_encoding("cl100k_base")
    prices = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
    texts = {
        "prose (README.md)": (ROOT / "README.md").read_text(),
        "python (src/semroute)": "".join(
            p.read_text() for p in sorted((ROOT / "src" / "semroute").rglob("*.py"))
        ),
        "json (LiteLLM prices)": json.dumps(json.loads(prices.read_text()))[:400_000],
    }
    rows = {}
    for name, text in texts.items():
        real = len(enc.encode(text))
        rows[name] = {"tiktoken": real, "estimate": estimate_tokens(text)}
        rows[name]["ratio"] = round(rows[name]["estimate"] / real, 3)
    big = texts["prose (README.md)"] * 6
    big = big[: len(big) * 50_000 // len(enc.encode(big))]
    timings = {}
    for label, count in (("estimate", estimate_tokens), ("tiktoken", lambda t: len(enc.encode(t)))):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            count(big)
            runs.append((time.perf_counter() - started) * 1000)
        timings[label] = round(statistics.median(runs), 3)
    result = {"texts": rows, "ms_for_50k_tokens": timings}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
