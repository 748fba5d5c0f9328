"""The gateway benchmark runs, checks what it reports, and a smoke run writes nowhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from semroute.config.routes import load_routes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_gateway.py"
WRITTEN = [ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "results" / "gateway.json"]


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))


def _smoke(tmp_path: Path, *args: str) -> dict[str, Any]:
    before = [p.read_bytes() if p.exists() else None for p in WRITTEN]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--work", str(tmp_path / "work"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.read_bytes() if p.exists() else None for p in WRITTEN] == before
    results: dict[str, Any] = json.loads(proc.stdout)
    return results


def test_the_script_runs_from_anywhere(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "--smoke" in proc.stdout


def test_an_unknown_target_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--targets", "direct,nginx"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "--targets: unknown ['nginx']" in proc.stderr


def test_a_smoke_run_checks_every_answer_and_writes_nowhere(tmp_path: Path) -> None:
    results = _smoke(
        tmp_path, "--targets", "direct", "--requests", "60", "--streamed", "20", "--sequential", "5"
    )
    direct = results["targets"]["direct"]
    assert direct["plain"]["answered"] == 60 and direct["plain"]["errors"] == 0
    assert direct["streamed"]["answered"] == 20 and direct["streamed"]["errors"] == 0
    # Every streamed answer came in many chunks, each counted, the last one [DONE].
    assert min(direct["streamed"]["chunks_per_stream"]) > 10
    assert direct["one_at_a_time"]["answered"] == 5
    assert results["checks"]["zero_failed_requests"] is True
    assert set(results["targets"]) == {"direct"}


@pytest.mark.usefixtures("scripts")
def test_the_route_files_put_every_model_on_the_upstream(tmp_path: Path) -> None:
    import _gateway_servers as bench

    api_base = "http://127.0.0.1:9/v1"
    folder = bench.semroute_routes(
        tmp_path / "routes", api_base, flaky=True, health=False, log=tmp_path / "log.jsonl"
    )
    routes = load_routes(folder)
    assert routes.routes and all(str(r.model).startswith("flaky-fake-") for r in routes.routes)
    declared = {m.model_name: m for m in routes.models}
    named = {str(r.model) for r in routes.routes} | {routes.settings.default_model, bench.BACKUP}
    assert named <= set(declared)
    assert all(m.litellm_params["api_base"] == api_base for m in declared.values())
    assert all(r.fallbacks == (bench.BACKUP,) for r in routes.routes)
    assert routes.settings.default_fallbacks == (bench.BACKUP,)
    assert routes.health.enabled is False


@pytest.mark.usefixtures("scripts")
def test_the_redis_run_points_semroute_at_redis_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import _gateway_servers as bench

    monkeypatch.setenv(bench.REDIS_ENV, "redis://127.0.0.1:9/0")
    args = ("http://127.0.0.1:9/v1",)
    kw: dict[str, Any] = {"flaky": False, "health": True, "log": tmp_path / "log.jsonl"}
    with_redis = load_routes(bench.semroute_routes(tmp_path / "a", *args, redis=True, **kw))
    assert with_redis.server is not None
    assert with_redis.server.redis_url == f"os.environ/{bench.REDIS_ENV}"
    assert load_routes(bench.semroute_routes(tmp_path / "b", *args, **kw)).server is None


@pytest.mark.usefixtures("scripts")
def test_the_litellm_proxy_gets_uvicorns_logging_without_the_access_log(tmp_path: Path) -> None:
    import _gateway_servers as bench

    config = bench.quiet_log_config(tmp_path / "log_config.json")
    # As uvicorn decides: it writes access lines only if the access logger has a handler.
    probe = (
        "import json, logging, logging.config, sys; "
        "logging.config.dictConfig(json.load(open(sys.argv[1]))); "
        "print(logging.getLogger('uvicorn.access').hasHandlers(), "
        "logging.getLogger('uvicorn.error').hasHandlers())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(config)], capture_output=True, text=True, check=True
    )
    assert proc.stdout.split() == ["False", "True"]


@pytest.mark.usefixtures("scripts")
def test_the_benchmarks_redis_server_starts_empty_and_stops(tmp_path: Path) -> None:
    import _gateway_servers as bench

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with bench.redis_server(tmp_path) as url:
        assert url.startswith("redis://127.0.0.1:")
        assert bench.redis_keys(url) == 0
    with pytest.raises(OSError):
        bench.redis_keys(url)


@pytest.mark.usefixtures("scripts")
def test_failures_are_told_apart_from_lost_requests() -> None:
    import _gateway_load as bench

    attempts = json.dumps({"error": {"message": "no model answered", "attempts": [{"m": 1}]}})
    outcomes = [
        bench.Outcome(200, 1.0, ok=True, request_id="a", fallbacks="flaky-x"),
        bench.Outcome(502, 1.0, request_id="b", body=attempts),
        bench.Outcome(502, 1.0, request_id="c", body='{"error": {"message": "?"}}'),
        bench.Outcome(0, 1.0, body="ServerDisconnectedError"),
    ]
    counts = bench.classify(outcomes, logged=["a", "b", "c", "c"])
    assert counts["answered"] == 1 and counts["answered_by_a_fallback"] == 1
    assert counts["failed_502_with_attempts"] == 1
    assert counts["lost"] == 2  # a 502 without attempts, and no answer at all
    assert counts["ids_logged_once"] == 2  # "c" was logged twice
    assert counts["requests_without_id"] == 1


@pytest.mark.model
def test_a_smoke_run_through_semroute_serve(tmp_path: Path, model_cache: Path) -> None:
    results = _smoke(
        tmp_path,
        "--targets",
        "semroute",
        "--requests",
        "40",
        "--streamed",
        "10",
        "--sequential",
        "5",
        "--flaky-requests",
        "30",
        "--rounds",
        "1",
        *(() if shutil.which("redis-server") else ("--redis-requests", "0")),
    )
    served = results["targets"]["semroute"]
    assert served["plain"]["answered"] == 40 and served["streamed"]["answered"] == 10
    assert served["memory"]["peak_rss_mib"] > 0
    # semroute's decision log holds one line per request, each with its routing time.
    for kind in ("plain", "streamed", "one_at_a_time"):
        logged = served["decision_log"][kind]
        assert logged["logged_once"] == logged["requests"] and logged["routing_p50_ms"] > 0
    for run in results["flaky"].values():
        assert run["lost"] == 0 and run["log_lines"] == run["requests"] == run["ids_logged_once"]
    # Slow streams pass through as they come: the first word long before the stream's end
    # (about 97 events 20 ms apart, so 1.9 s at the least).
    slow = results["slow_stream"]["semroute"]["slow_streamed"]
    assert slow["answered"] == slow["requests"] == 8 and slow["p50_ms"] >= 1900
    assert slow["first_chunk_p50_ms"] < slow["p50_ms"] / 2
    if "redis" in results:  # semroute with redis_url answered everything and used Redis
        assert results["redis"]["semroute-redis"]["plain"]["errors"] == 0
        assert results["redis"]["keys_in_redis_after"] > 0
