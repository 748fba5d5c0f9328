"""Shared by the benchmark scripts: machine details, writing results into the repo, and
keeping embeddings between runs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEMROUTE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "docs" / "results"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        if match:
            mem_gib = round(int(match.group(1)) / 2**20, 1)
    except OSError:
        pass
    packages = {}
    for name in (
        "semroute",
        "onnxruntime",
        "tokenizers",
        "faiss-cpu",
        "numpy",
        "torch",
        "sentence-transformers",
        "litellm",
    ):
        with contextlib.suppress(PackageNotFoundError):
            packages[name] = version(name)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
        "packages": packages,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    # A run on a tree with uncommitted edits did not measure that commit alone: say so.
    return out.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def machine_markdown(m: dict[str, Any]) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, "
        f"Python {m['python']}; load average at start {m['load_average_at_start']}; "
        f"commit {m['git_commit']}; {m['date']}.  \nPackages: {pk}."
    )


def save(name: str, results: dict[str, Any], markdown: str) -> None:
    """Write raw results to docs/results/NAME.json and a section of docs/benchmarks.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
    print(
        f"wrote {RESULTS / (name + '.json')} and the '{name}' section of {BENCHMARKS_MD}",
        file=sys.stderr,
    )


def require_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        sys.exit(f"error: {path} not found; set SEMROUTE_DATA to the folder holding clinc150/")
    return path


def cached_vectors(path: Path, what: str, encode: Callable[[], np.ndarray]) -> np.ndarray:
    """``encode()``'s vectors, kept at ``path`` so a second run skips the encoder; ``what``
    (say, "7093 train prompts") names them in the line that times the first run."""
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    vectors = encode()
    print(f"encoded {what} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors
