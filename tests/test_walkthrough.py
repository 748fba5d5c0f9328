"""The README's walkthrough runs as written, in a fresh folder: route file → validate →
build-index → route → fake provider and gateway → openai client and curl → stats.

Its code blocks are run in order by one bash process (so `export` and `&` jobs carry over, as
in a terminal); a Python block is given to `python -`. The only change made to them: ports
9000 and 8000 become free ports, as other tests on this machine may hold those.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.gateway_kit import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Walkthrough: your routes, your gateway"
STEP = "@@step"


def walkthrough_blocks() -> list[tuple[str, str]]:
    """The (language, code) blocks of the README's walkthrough section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```(bash|python)\n(.*?)```", text[start:end], flags=re.S)


def script(blocks: list[tuple[str, str]], ports: dict[str, int]) -> str:
    # On a failed step, stop the background jobs, which hold the output pipe open.
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2> /dev/null || true' EXIT"]
    for i, (language, code) in enumerate(blocks):
        for written, port in ports.items():
            code = re.sub(rf"\b{written}\b", str(port), code)
        lines.append(f"echo '{STEP} {i}'")
        lines.append(code if language == "bash" else f"python - <<'PYEOF'\n{code}PYEOF")
    return "\n".join(lines) + "\n"


def test_the_readme_has_the_walkthrough_steps() -> None:
    code = "\n".join(c for _, c in walkthrough_blocks())
    for command in ("validate", "build-index", "route", "fake-provider", "serve", "stats"):
        assert f"semroute {command} " in code
    assert "from openai import OpenAI" in code and "curl -s" in code


def test_the_walkthrough_runs_as_written(model_cache: Path, tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    ports = {"9000": free_port(), "8000": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMROUTE_")}
    env["SEMROUTE_CACHE"] = str(model_cache)
    env["COLUMNS"] = "120"  # rich wraps a decision's line at the terminal's width
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        ["bash", "-c", script(blocks, ports)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its background jobs too, to stop them all if it fails
    )
    try:
        output, _ = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    steps = dict(re.findall(rf"^{STEP} (\d+)\n(.*?)(?=^{STEP} |\Z)", output, flags=re.M | re.S))
    write, check, start, client, curl_and_stats = (steps[str(i)] for i in range(5))
    assert (tmp_path / "my-routes" / "routes.yaml").is_file()
    assert "my-routes: 2 routes, 8 utterances, default model big" in check and ": ok" in check
    assert "Built my-index: 2 routes, 8 utterances" in check
    assert "→ route weather → model small (matched" in check
    assert "→ no route → model big (below_threshold" in check
    assert "weather small Hello from small." in client
    answer = json.loads(next(x for x in curl_and_stats.splitlines() if x.startswith("{")))
    assert answer["model"] == "big"
    assert answer["choices"][0]["message"]["content"] == "Hello from big."
    # The log is where the route file says, beside it, not in the folder the gateway ran from.
    log = tmp_path / "my-routes" / "logs" / "decisions.jsonl"
    records = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    assert [(r["route"], r["model"]) for r in records] == [("weather", "small"), (None, "big")]
    assert all(r["cost_usd"] > 0 for r in records)
    assert "my-routes/logs/decisions.jsonl: 2 requests" in curl_and_stats
    assert "unknown" not in curl_and_stats.split("2 requests", 1)[1].split("latency")[0]
    assert not write.strip() and "Traceback" not in output
    del start  # the servers' own lines come when they come; readiness is the step's check
