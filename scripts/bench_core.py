"""Cold start and incremental rebuild on a 150-route, 15,000-utterance index (CLINC150 train).

    .venv/bin/python scripts/bench_core.py [--runs 7] [--work /tmp/semroute-bench-core]

Measures, each as a median over --runs fresh processes:
- cold start: a new Python process imports semroute, loads the index and routes one query;
- the same through the CLI (`semroute route QUERY --json`);
- editing one route's utterances and running `semroute build-index` again.
Results go to docs/results/core.json and the "core" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml
from _bench import machine, machine_markdown, require_data, save

SEMROUTE = str(Path(sys.executable).parent / "semroute")
QUERY = "how do I say thank you in japanese"


def write_routes(train: Path, folder: Path) -> int:
    by_label: dict[str, list[str]] = defaultdict(list)
    for line in train.read_text().splitlines():
        row = json.loads(line)
        if row["label"] != "oos":
            by_label[row["label"]].append(row["text"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "router.yaml").write_text(
        yaml.safe_dump({"router": {"default_model": "gpt-4o", "threshold": 0.5}})
    )
    routes = [{"name": label, "utterances": texts} for label, texts in sorted(by_label.items())]
    (folder / "clinc150.yaml").write_text(yaml.safe_dump({"routes": routes}, sort_keys=False))
    return sum(len(t) for t in by_label.values())


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("/tmp/semroute-bench-core"))
    args = parser.parse_args()

    info = machine()
    routes, index = args.work / "routes", args.work / "index"
    shutil.rmtree(args.work, ignore_errors=True)
    n = write_routes(require_data("clinc150", "train.jsonl"), routes)
    first_build, out = timed([SEMROUTE, "build-index", str(routes), "--out", str(index)])
    print(out.strip(), file=sys.stderr)

    api = (
        "import semroute; "
        f"d = semroute.Router.load({str(index)!r}).route({QUERY!r}); "
        "print(d.route)"
    )
    cold_api, cold_cli, rebuild = [], [], []
    route_file = routes / "clinc150.yaml"
    original = route_file.read_text()
    data = yaml.safe_load(original)
    translate = next(r for r in data["routes"] if r["name"] == "translate")
    first = translate["utterances"][0]
    for i in range(args.runs):
        t, out = timed([sys.executable, "-c", api])
        assert out.strip() == "translate", out
        cold_api.append(t)
        t, out = timed([SEMROUTE, "route", QUERY, "--json", "--index", str(index)])
        assert json.loads(out)["route"] == "translate"
        cold_cli.append(t)
        # Edit one route: replace one of its utterances with a new one, then rebuild.
        translate["utterances"][0] = f"{first} (edit {i})"
        route_file.write_text(yaml.safe_dump(data, sort_keys=False))
        t, out = timed([SEMROUTE, "build-index", str(routes), "--out", str(index)])
        assert "(1 embedded," in out, out
        rebuild.append(t)
        translate["utterances"][0] = first
        route_file.write_text(original)
        timed([SEMROUTE, "build-index", str(routes), "--out", str(index)])

    results = {
        "machine": info,
        "routes": 150,
        "utterances": n,
        "runs": args.runs,
        "first_build_s": round(first_build, 2),
        "cold_start_api_s": {"median": round(statistics.median(cold_api), 3), "all": cold_api},
        "cold_start_cli_s": {"median": round(statistics.median(cold_cli), 3), "all": cold_cli},
        "rebuild_one_route_s": {"median": round(statistics.median(rebuild), 3), "all": rebuild},
    }
    md = f"""
## Core: cold start and incremental rebuild

`.venv/bin/python scripts/bench_core.py --runs {args.runs}`: a 150-route, {n:,}-utterance index built
from CLINC150 `train.jsonl` (out-of-scope rows left out). Medians of {args.runs} fresh processes.

| measurement | median | target |
|---|---:|---:|
| new process → `Router.load()` → first decision | {results["cold_start_api_s"]["median"]:.2f} s | ≤ 1.5 s |
| new process → `semroute route QUERY --json` | {results["cold_start_cli_s"]["median"]:.2f} s | |
| edit one route, `semroute build-index` again | {results["rebuild_one_route_s"]["median"]:.2f} s | ≤ 3 s |
| first build (embeds all {n:,} utterances, ONNX export cached) | {first_build:.1f} s | |

{machine_markdown(info)}
"""
    save("core", results, md)
    print(md)


if __name__ == "__main__":
    main()
