"""The gateway benchmark's profile (--profile): py-spy samples `semroute serve` under load, and
the samples are folded into where its CPU goes. Used by scripts/bench_gateway.py.

py-spy lives in a virtualenv of its own (.bench/pyspy-venv), installed once, as LiteLLM's proxy
does: nothing is installed into semroute's environment or the system. It runs `record --format
raw --nonblocking` (the server is never paused to be read) at --rate samples a second, idle
threads left out: each sample is a Python stack that was on a CPU.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from _gateway_load import load, request_bodies
from _gateway_servers import BENCH, semroute_server, upstream

PYSPY = "py-spy==0.4.3"
PYSPY_VENV = BENCH / "pyspy-venv"
RATE = 250

GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("routing: encoder ONNX run", ("onnxruntime/",)),
    (
        "routing: tokenizer/scoring/policy",
        ("tokenizers/", "semroute/routing/", "semroute/encoders/", "semroute/index/", "faiss/"),
    ),
    ("decision log", ("semroute/dispatch/log",)),
    ("metrics", ("prometheus_client/", "semroute/server/metrics")),
    (
        "dispatch: upstream HTTP client",
        (
            "semroute/dispatch/",
            "aiohttp/",
            "aiohappyeyeballs/",
            "yarl/",
            "multidict/",
            "litellm/",
            "httpx/",
            "httpcore/",
            "openai/",
            "semroute/config/pricing",
        ),
    ),
    ("request parsing/validation", ("pydantic", "semroute/server/schemas", "anthropic_schemas")),
    ("semroute's server code (handlers, headers, auth)", ("semroute/server/",)),
]
"""A sample goes to the group of the innermost frame that one of these names (first match in
this order for that frame); frames of libraries any layer uses (json, numpy, re, threading,
typing...) are passed over, so their time counts toward their caller."""
LOOP = (
    "HTTP server/starlette (uvicorn, starlette, the event loop)",
    ("uvicorn/", "starlette/", "httptools/", "uvloop/", "h11/", "anyio/", "asyncio/", "selectors"),
)
"""Only when no frame of a sample names a group above: the server and its event loop."""
OTHER = "other"
ENTRY = ("semroute/server/runner.py", "semroute/cli/")
"""Frames under which everything runs (the command, uvicorn's start): never a sample's group."""

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def ensure_pyspy() -> Path:
    """py-spy in .bench/pyspy-venv, installed once per version and Python."""
    BENCH.mkdir(exist_ok=True)
    stamp_value = hashlib.sha256(json.dumps([PYSPY, sys.version]).encode()).hexdigest()
    stamp = PYSPY_VENV / ".bench-installed"
    binary = PYSPY_VENV / "bin" / "py-spy"
    with (BENCH / "pyspy-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stamp.exists() and stamp.read_text().strip() == stamp_value:
            return binary
        print(f"installing {PYSPY} into {PYSPY_VENV} ...", file=sys.stderr)
        base = getattr(sys, "_base_executable", sys.executable)
        if not (PYSPY_VENV / "bin" / "python").exists():
            subprocess.run([base, "-m", "venv", str(PYSPY_VENV)], check=True)
        pip = [str(PYSPY_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        proc = subprocess.run(
            [*pip, "install", "-q", PYSPY], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if "is ignored" not in x]
            raise SystemExit(f"error: pip could not install {PYSPY}: {' '.join(lines)[-600:]}")
        stamp.write_text(stamp_value + "\n")
    return binary


class Recording:
    """py-spy recording ``pid`` (and its subprocesses) into ``out`` while the block runs."""

    def __init__(self, pyspy: Path, pid: int, out: Path) -> None:
        self.cmd = [str(pyspy), "record", "--pid", str(pid), "--format", "raw", "--output"]
        self.cmd += [str(out), "--rate", str(RATE), "--nonblocking", "--subprocesses"]
        self.out, self.log = out, out.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Recording:
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def read(self) -> str:
        if not self.out.exists():
            raise SystemExit(f"error: py-spy wrote no samples; see {self.log}")
        return self.out.read_text()


def group_of(stack: list[str]) -> tuple[str, str]:
    """The group of a sample's stack (root first), and the frame that decided it (for the
    event loop and other, the leaf)."""
    parsed = [(m.group("func"), m.group("path")) for f in stack if (m := _FRAME.match(f))]
    parsed = [(func, path) for func, path in parsed if not any(e in path for e in ENTRY)]
    for func, path in reversed(parsed):
        for name, parts in GROUPS:
            if any(p in path for p in parts):
                return name, f"{func} ({path})"
    leaf = "{} ({})".format(*(parsed[-1] if parsed else ("?", "?")))
    if any(p in path for _, path in parsed for p in LOOP[1]):
        return LOOP[0], leaf  # the leaf: the loop's frame that decided says little
    return OTHER, leaf


def fold(raw: str) -> dict[str, Any]:
    """py-spy's raw output (``frame;frame;... count`` a line) folded into the groups: samples
    and share of each, and the two frames that decided most of each group's samples."""
    samples: Counter[str] = Counter()
    frames: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        group, frame = group_of(stack.split(";"))
        samples[group] += int(count)
        frames.setdefault(group, Counter())[frame] += int(count)
    total = sum(samples.values())
    order = [name for name, _ in GROUPS] + [LOOP[0], OTHER]
    return {
        "samples": total,
        "groups": {
            name: {
                "samples": samples[name],
                "share": round(samples[name] / total, 4) if total else 0.0,
                "top": [f for f, _ in frames.get(name, Counter()).most_common(2)],
            }
            for name in order
        },
    }


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """The profile's table for the gateway section."""
    runs = profile["runs"]
    head = " | ".join(f"{r['label']}" for r in runs.values())
    out = [
        "",
        f"Where `semroute serve`'s CPU goes (`--profile`: py-spy {PYSPY.split('==')[1]} "
        f"`record --format raw --nonblocking --rate {RATE}` on the server, 1 worker, idle "
        "threads left out; a sample counts toward the innermost frame of a group below, a "
        "library any layer uses, such as json or numpy, toward its caller; onnxruntime's own "
        "worker threads run no Python and are not sampled, so the encoder's share is the "
        "calling thread's; uvloop and httptools run natively inside `Runner.run`):",
        "",
        f"| where | {head} | top frames |",
        "|---|" + "---:|" * len(runs) + "---|",
    ]
    names = list(next(iter(runs.values()))["fold"]["groups"])
    for name in names:
        cells = " | ".join(f"{r['fold']['groups'][name]['share']:.0%}" for r in runs.values())
        top = Counter[str]()
        for r in runs.values():
            top.update(r["fold"]["groups"][name]["top"])
        frames = "; ".join(f"`{f}`" for f, _ in top.most_common(2))
        out.append(f"| {name} | {cells} | {frames} |")
    samples = " | ".join(str(r["fold"]["samples"]) for r in runs.values())
    out.append(f"| samples | {samples} | |")
    return out


def profile_run(
    args: Any, work: Path, queries: list[tuple[str, str]], routes: list[str]
) -> dict[str, Any]:
    """A fresh upstream and `semroute serve` (1 worker): after a warm-up, py-spy records it
    through --profile-sequential requests one at a time, then --profile-requests
    --concurrency at a time (both non-streamed)."""
    pyspy = ensure_pyspy()
    folder = work / "profile"
    folder.mkdir()
    runs: dict[str, Any] = {}
    with upstream(args.delay, routes, folder / "upstream.log") as base:
        server = semroute_server(folder, base, 1, flaky=False, health=True)
        server.start()
        try:
            assert server.proc is not None
            warm = request_bodies(queries, args.warmup, auto=True, stream=False, tag="warm-up")
            load(server.url, warm, args.concurrency, False)
            plan = [
                ("one_at_a_time", "one at a time", args.profile_sequential, 1),
                ("plain", f"{args.concurrency} at a time", args.profile_requests, args.concurrency),
            ]
            for kind, label, n, concurrency in plan:
                print(f"profiling semroute, {label} ...", file=sys.stderr)
                bodies = request_bodies(queries, n, auto=True, stream=False, tag=kind)
                with Recording(pyspy, server.proc.pid, folder / f"{kind}.txt") as rec:
                    summary = load(server.url, bodies, concurrency, False).summary()
                runs[kind] = {"label": label, "load": summary, "fold": fold(rec.read())}
        finally:
            server.stop()
    return {"pyspy": PYSPY, "rate_hz": RATE, "runs": runs}
