"""The gateway benchmark's processes: the upstream (FakeProvider in its own process), the servers
under test (`semroute serve`, LiteLLM's proxy in its own virtualenv), a redis-server for the
run with shared state, and their memory.

Used by scripts/bench_gateway.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from _bench import ROOT
from _gateway_load import ANSWER, slow_answer

LITELLM = "litellm[proxy]==1.102.4"  # the version semroute pins (pyproject.toml)
BENCH = ROOT / ".bench"
PROXY_VENV = BENCH / "litellm-proxy-venv"
KEY_ENV = "BENCH_UPSTREAM_KEY"
REDIS_ENV = "BENCH_REDIS_URL"
DEFAULT_MODEL = "fake-general"
BACKUP = "fake-backup"
FLAKY_RATE = 0.3
SCRIPT = ROOT / "scripts" / "bench_gateway.py"


# --------------------------------------------------------------------------------------------
# The upstream: FakeProvider in its own process, so that it never competes with the load
# generator for this process's interpreter lock.
# --------------------------------------------------------------------------------------------


def model_names(routes: list[str]) -> dict[str, str]:
    """Route → the upstream model serving it (None: the default model)."""
    return {route: f"fake-{route.replace('_', '-')}" for route in routes}


def upstream_main(
    delay: float, routes: list[str], chunk_delay: float = 0.0, long_stream_s: float = 5.0
) -> None:
    """Serve every model; with ``chunk_delay``, answers are :func:`slow_answer`'s (streamed:
    a word per event, each event ``chunk_delay`` seconds after the one before, for about
    ``long_stream_s`` seconds)."""
    from semroute.testing import FakeProvider

    text = slow_answer(long_stream_s, chunk_delay) if chunk_delay else ANSWER
    with FakeProvider() as provider:
        for model in [*model_names(routes).values(), DEFAULT_MODEL, BACKUP]:
            provider.answer(model, text=text, delay=delay, chunk_delay=chunk_delay)
            provider.flaky(f"flaky-{model}", rate=FLAKY_RATE, text=ANSWER, delay=delay)
        print(provider.url, flush=True)
        sys.stdin.read()  # until the parent closes the pipe


@contextlib.contextmanager
def upstream(
    delay: float,
    routes: list[str],
    log: Path,
    chunk_delay: float = 0.0,
    long_stream_s: float = 5.0,
) -> Iterator[str]:
    cmd = [sys.executable, str(SCRIPT), "_upstream", "--delay", str(delay)]
    cmd += ["--chunk-delay", str(chunk_delay), "--long-stream-s", str(long_stream_s)]
    cmd += ["--routes", ",".join(routes)]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        url = proc.stdout.readline().decode().strip()
        if not url.startswith("http://"):
            raise SystemExit(f"error: the upstream did not start; see {log}")
        yield url
    finally:
        proc.stdin.close()
        stop(proc)


# --------------------------------------------------------------------------------------------
# Servers under test
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command's name (state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_s(pids: list[int]) -> float:
    """The CPU time (user and system) the processes ``pids`` have used, in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """The whole machine's busy and total CPU time since it started, every core summed."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle - iowait) / tick, total / tick


class CpuUse:
    """What a server's processes and the whole machine spent on the CPU over some runs."""

    def __init__(self, server: Server | None) -> None:
        self.server = server
        self.server_s = self.busy_s = self.total_s = self.wall_s = 0.0

    @contextlib.contextmanager
    def over(self) -> Iterator[None]:
        """Count what is spent inside the ``with`` block."""
        pids = tree(self.server.proc.pid) if self.server and self.server.proc else []
        own, (busy, total), started = cpu_s(pids), machine_cpu_s(), time.perf_counter()
        yield
        self.wall_s += time.perf_counter() - started
        self.server_s += cpu_s(pids) - own
        now_busy, now_total = machine_cpu_s()
        self.busy_s += now_busy - busy
        self.total_s += now_total - total

    def summary(self, requests: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "machine_busy_pct": round(100 * self.busy_s / self.total_s, 1) if self.total_s else None
        }
        if self.server is not None and self.wall_s:
            out["server_cores"] = round(self.server_s / self.wall_s, 2)
            out["server_cpu_ms_per_request"] = round(1000 * self.server_s / requests, 2)
        return out


def memory_kib(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


def process_role(pid: int, root: int, pids: list[int]) -> str:
    """What a server's process is: its worker (the only process, or one that multiprocessing
    spawned), the supervisor above its workers, or a helper (multiprocessing's resource
    tracker)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmd = ""
    if "resource_tracker" in cmd:
        return "helper"
    if pid == root and len(pids) > 1:
        return "supervisor"
    return "worker"


class RssWatch:
    """Samples the summed VmRSS of a process tree in a thread; the peak is kept."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_kib = max(self.peak_kib, memory_kib(tree(self.pid), "VmRSS"))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    name: str
    cmd: list[str]
    url: str
    ready_path: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    index: Path | None = None
    """semroute's: the index it serves."""

    def start(self, timeout: float = 180.0) -> None:
        import httpx

        started = time.perf_counter()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: {self.name} exited at start; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    self.started_s = time.perf_counter() - started
                    return
            time.sleep(0.25)
        stop(self.proc)
        raise SystemExit(f"error: {self.name} was not ready after {timeout:.0f} s; see {self.log}")

    def memory(self) -> dict[str, Any]:
        """VmHWM summed over the server's processes, and each process's own (the figure per
        worker: a worker's peak RSS)."""
        assert self.proc is not None
        pids = tree(self.proc.pid)
        each: list[dict[str, Any]] = [
            {
                "role": process_role(pid, self.proc.pid, pids),
                "peak_rss_mib": round(memory_kib([pid], "VmHWM") / 1024, 1),
            }
            for pid in pids
        ]
        workers = [float(p["peak_rss_mib"]) for p in each if p["role"] == "worker"]
        return {
            "processes": len(pids),
            "peak_rss_mib": round(memory_kib(pids, "VmHWM") / 1024, 1),
            "rss_now_mib": round(memory_kib(pids, "VmRSS") / 1024, 1),
            "per_process": each,
            "worker_peak_rss_mib": max(workers) if workers else None,
        }

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            KEY_ENV: "sk-bench-not-a-real-key",
            "HF_HUB_OFFLINE": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONPATH": os.pathsep.join(
                p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p
            ),
        }
    )
    return env


def deployment(name: str, api_base: str) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{name}",
            "api_base": api_base,
            "api_key": f"os.environ/{KEY_ENV}",
            # Priced, so that both gateways work out each answer's cost, as they would for a
            # real model.
            "input_cost_per_token": 1e-6,
            "output_cost_per_token": 2e-6,
        },
    }


def semroute_routes(
    out: Path,
    api_base: str,
    *,
    flaky: bool,
    health: bool,
    log: Path,
    redis: bool = False,
    max_sessions: int | None = None,
) -> Path:
    """The bundled example routes, their models replaced by the upstream's; with ``redis``,
    `server: {redis_url: ...}` (from the environment) so health and spend are shared there."""
    out.mkdir(parents=True)
    prefix = "flaky-" if flaky else ""
    models = set()
    for source in sorted((ROOT / "routes").glob("*.yaml")):
        spec = yaml.safe_load(source.read_text())
        if "models" in spec:
            continue  # the real providers; replaced below
        for route in spec.get("routes", []):
            route["model"] = prefix + model_names([route["name"]])[route["name"]]
            route["fallbacks"] = [BACKUP]
            models.add(route["model"])
        if "router" in spec:
            router = spec["router"]
            router["default_model"] = prefix + DEFAULT_MODEL
            router["default_fallbacks"] = [BACKUP]
            router["dispatch"] = {"timeout": 30, "log": str(log)}
            router["health"] = {"enabled": health}
            if max_sessions is not None:  # the agent sessions one process keeps
                router.setdefault("conversation", {})["max_sessions"] = max_sessions
            if redis:
                spec.setdefault("server", {})["redis_url"] = f"os.environ/{REDIS_ENV}"
        (out / source.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    models |= {prefix + DEFAULT_MODEL, BACKUP}
    (out / "models.yaml").write_text(
        yaml.safe_dump({"models": [deployment(m, api_base) for m in sorted(models)]})
    )
    return out


def semroute_server(
    work: Path, api_base: str, workers: int, name: str | None = None, **kw: Any
) -> Server:
    """`semroute serve` (not started) over the bundled routes; its files in work/NAME (NAME
    by default from the options: semroute, semroute-flaky, -nohealth, -redis)."""
    if name is None:
        name = "semroute" + ("-flaky" if kw.get("flaky") else "")
        name += ("" if kw["health"] else "-nohealth") + ("-redis" if kw.get("redis") else "")
    folder = work / name
    routes = semroute_routes(folder / "routes", api_base, log=folder / "decisions.jsonl", **kw)
    semroute = [str(Path(sys.executable).parent / "semroute")]
    if not Path(semroute[0]).exists():
        semroute = [sys.executable, "-m", "semroute.cli.main"]
    env = server_env()
    if kw.get("redis"):
        env[REDIS_ENV] = kw["redis"]
        kw["redis"] = True
    proc = subprocess.run(
        [*semroute, "build-index", str(routes), "--out", str(folder / "index")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: semroute build-index failed: {proc.stderr.strip()[-500:]}")
    port = free_port()
    cmd = [*semroute, "serve", "--index", str(folder / "index"), "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    return Server(name, cmd, url, "/readyz", env, folder / "server.log", index=folder / "index")


def ensure_proxy_venv() -> Path:
    """litellm[proxy] in .bench/litellm-proxy-venv, installed once per constraints and Python.

    Under constraints.txt, so it shares semroute's versions of litellm, fastapi, uvicorn,
    starlette, httpx and pydantic; minus the pins litellm[proxy] refuses (rich)."""
    import fcntl

    BENCH.mkdir(exist_ok=True)
    constraints = BENCH / "litellm-proxy-constraints.txt"
    pins = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if not line.lower().startswith("rich==")
    ]
    wanted = json.dumps({"pins": pins, "pkg": LITELLM, "python": sys.version}, sort_keys=True)
    stamp_value = hashlib.sha256(wanted.encode()).hexdigest()
    stamp = PROXY_VENV / ".bench-installed"
    litellm = PROXY_VENV / "bin" / "litellm"
    with (BENCH / "litellm-proxy-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if litellm.exists() and stamp.exists() and stamp.read_text().strip() == stamp_value:
            return litellm
        print(f"installing {LITELLM} into {PROXY_VENV} ...", file=sys.stderr)
        base = getattr(sys, "_base_executable", sys.executable)
        if not (PROXY_VENV / "bin" / "python").exists():
            subprocess.run([base, "-m", "venv", str(PROXY_VENV)], check=True)
        constraints.write_text("\n".join(pins) + "\n")
        pip = [str(PROXY_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        proc = subprocess.run(
            [*pip, "install", "-q", "-c", str(constraints), LITELLM],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if "is ignored" not in x]
            raise SystemExit(f"error: pip could not install {LITELLM}: {' '.join(lines)[-600:]}")
        stamp.write_text(stamp_value + "\n")
    return litellm


def litellm_server(work: Path, api_base: str, models: list[str], workers: int) -> Server:
    litellm = ensure_proxy_venv()
    folder = work / "litellm"
    folder.mkdir(parents=True)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [deployment(m, api_base) for m in models]}))
    port = free_port()
    cmd = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", str(workers)]
    # Uvicorn's access log off, as `semroute serve` runs it: both servers log alike.
    cmd += ["--log_config", str(quiet_log_config(folder / "log_config.json"))]
    env = server_env()
    env.pop("PYTHONPATH")  # its own venv, nothing of semroute's
    return Server(
        "litellm", cmd, f"http://127.0.0.1:{port}", "/health/liveliness", env, folder / "proxy.log"
    )


def quiet_log_config(path: Path) -> Path:
    """Uvicorn's own logging configuration with the access logger given no handler and no
    parent (what uvicorn's ``access_log=False`` does), written for ``--log_config``."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.access"] = {"handlers": [], "level": "INFO", "propagate": False}
    path.write_text(json.dumps(config))
    return path


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[str]:
    """A redis-server of its own on a free loopback port, nothing saved to disk; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "error: the Redis run needs redis-server on PATH (apt-get install redis-server)"
        )
    port = free_port()
    folder = work / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(folder)]
    with (folder / "redis.log").open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 1) as c,
            ):
                c.sendall(b"PING\r\n")
                if c.recv(64).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


def redis_keys(url: str) -> int:
    """How many keys the redis-server at ``url`` (``redis://127.0.0.1:PORT/0``) holds."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), 5) as c:
        c.sendall(b"DBSIZE\r\n")
        reply = c.recv(64)
    return int(reply.strip().lstrip(b":"))
