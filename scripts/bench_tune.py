"""`semroute tune` against the frozen encoder on CLINC150 and BANKING77, in one run.

Per set and seed: import the training split into a route file, build an index with the stock
encoder, calibrate it on the validation split, evaluate on test (the frozen baseline); then
`semroute tune` on the same route file (validation split for early stopping), build with the
tuned encoder, calibrate on validation, evaluate on test. No choice is made on a test split.
route() p50 is timed on 200 test queries for both indexes in the same process. Results for
each (set, seed) are merged into docs/results/tune.json, so sets and seeds can be run one at a
time; the "tune" section of docs/benchmarks.md is rewritten from all of them.

    .venv/bin/python scripts/bench_tune.py --sets clinc10 banking10 --seeds 0
    .venv/bin/python scripts/bench_tune.py --sets clinc_full banking_full --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from _bench import RESULTS, ROOT, machine, machine_markdown, require_data, save

SETS: dict[str, dict[str, Any]] = {
    "clinc_full": {
        "title": "CLINC150 Full",
        "train": ("clinc150", "train.jsonl"),
        "val": ("clinc150", "val.jsonl"),
        "test": ("clinc150", "test.jsonl"),
        "goal": "≥ 96.0 in-scope / ≥ 80 OOS recall",
    },
    "clinc10": {
        "title": "CLINC150 10-shot (train_10)",
        "train": ("clinc150", "train_10.jsonl"),
        "val": ("clinc150", "val.jsonl"),
        "test": ("clinc150", "test.jsonl"),
        "goal": "≥ 94.2 in-scope",
    },
    "banking10": {
        "title": "BANKING77 10-shot (train_10)",
        "train": ("banking77", "train_10.jsonl"),
        "val": ("banking77", "dialoglue_val.jsonl"),
        "test": ("banking77", "test.jsonl"),
        "goal": "≥ 87.2",
    },
    "banking_full": {
        "title": "BANKING77 Full (DialoGLUE train)",
        "train": ("banking77", "dialoglue_train.jsonl"),
        "val": ("banking77", "dialoglue_val.jsonl"),
        "test": ("banking77", "test.jsonl"),
        "goal": "≥ 93.7",
    },
}


def figures(index: Path, val: Path, test: Path) -> dict[str, Any]:
    """Calibrate ``index`` on ``val`` (the default objective), evaluate on ``test``."""
    from semroute.routing.router import Router
    from semroute.tuning.calibrate import calibrate_index
    from semroute.tuning.evaluate import evaluate, load_labelled

    calibrate_index(index, val)
    report, _, _ = evaluate(Router.load(index), load_labelled(test))
    keys = ("in_scope_accuracy", "oos_recall", "closed_set_accuracy", "accuracy", "auroc")
    out = {
        k: None if getattr(report, k) is None else round(100 * getattr(report, k), 2) for k in keys
    }
    out["route_p50_ms"] = report.latency_ms["p50"]
    return out


def interleaved_p50(stock: Path, tuned: Path, test: Path, n: int = 300) -> dict[str, float]:
    """route() p50 of both indexes on the same test queries, one query each in turn (which
    goes first alternates), so load on the machine falls on both alike."""
    import numpy as np

    from semroute.routing.router import Router

    routers = {"stock": Router.load(stock), "tuned": Router.load(tuned)}
    queries = [json.loads(line)["text"] for line in test.open()][:n]
    for router in routers.values():
        router.route(queries[0])  # first-call set-up out of the timing
    times: dict[str, list[float]] = {k: [] for k in routers}
    for i, query in enumerate(queries):
        order = list(routers) if i % 2 else list(reversed(routers))
        for key in order:
            started = time.perf_counter()
            routers[key].route(query)
            times[key].append((time.perf_counter() - started) * 1000)
    return {k: round(float(np.percentile(v, 50)), 3) for k, v in times.items()}


def run(name: str, seed: int, work: Path) -> dict[str, Any]:
    from semroute.tuning.build import build_index
    from semroute.tuning.importers import import_file
    from semroute.tuning.tune import TuneRequest, tune_encoder

    spec = SETS[name]
    train, val, test = (require_data(*spec[k]) for k in ("train", "val", "test"))
    shutil.rmtree(work, ignore_errors=True)
    (work / "routes").mkdir(parents=True)
    routes = work / "routes" / "imported.yaml"
    import_file(train, routes, default_model="gpt-4o-mini", oos_label="oos", force=True)
    started = time.perf_counter()
    build_index(routes, work / "stock")
    stock = figures(work / "stock", val, test)
    stock_s = time.perf_counter() - started
    started = time.perf_counter()
    tuned_info = tune_encoder(TuneRequest(routes, work / "encoder", val=val, seed=seed))
    tune_s = time.perf_counter() - started
    build_index(routes, work / "tuned", encoder_name=str(work / "encoder"))
    tuned = figures(work / "tuned", val, test)
    p50 = interleaved_p50(work / "stock", work / "tuned", test)
    keep = ("recipe", "epochs_run", "best_epoch", "val_scores", "before", "after", "train_seconds")
    return {
        "set": name,
        "seed": seed,
        "stock": stock,
        "tuned": tuned,
        "stock_seconds": round(stock_s, 1),
        "tune_seconds": round(tune_s, 1),
        "route_p50_ms_interleaved": p50,
        "tune": {k: tuned_info[k] for k in keep},
    }


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def _p50(runs: list[dict[str, Any]]) -> str:
    pairs = [r["route_p50_ms_interleaved"] for r in runs if "route_p50_ms_interleaved" in r]
    if not pairs:
        return "-"
    stock = statistics.median(p["stock"] for p in pairs)
    tuned = statistics.median(p["tuned"] for p in pairs)
    return f"{stock:.2f} / {tuned:.2f} ({100 * (tuned / stock - 1):+.0f}%)"


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for name, spec in SETS.items():
        runs = [r for r in results["runs"] if r["set"] == name]
        if not runs:
            rows.append(f"| {spec['title']} | not run | | | {spec['goal']} | | | |")
            continue

        def col(side: str, key: str, rs: list[dict[str, Any]] = runs) -> str:
            values = [r[side][key] for r in rs if r[side][key] is not None]
            return _spread(values) if values else "-"

        seeds = ", ".join(str(r["seed"]) for r in runs)
        rows.append(
            f"| {spec['title']} | {col('stock', 'in_scope_accuracy')} / {col('stock', 'oos_recall')}"
            f" | {col('tuned', 'in_scope_accuracy')} / {col('tuned', 'oos_recall')}"
            f" | {col('stock', 'closed_set_accuracy')} → {col('tuned', 'closed_set_accuracy')}"
            f" | {spec['goal']} | {_spread([r['tune_seconds'] for r in runs])} s"
            f" | {_p50(runs)} | {seeds} |"
        )
    return f"""## `semroute tune` (CLINC150, BANKING77)

`scripts/bench_tune.py`: import the training split into a route file → build-index (stock
encoder) → calibrate on the validation split → eval on test; then `semroute tune` on the same
route file (validation split for early stopping) → build-index --encoder → calibrate on
validation → eval on test. Frozen and tuned in the same run, same process. Figures in percent;
`a ± b (n=3)` is the mean and standard deviation over seeds. BANKING77 has no out-of-scope rows
(its OOS column is empty) and no official validation split: DialoGLUE's is used, with
DialoGLUE's train as "Full" (the official train overlaps that validation split). Wall time is
`semroute tune`'s whole run (training, export, quantisation, its own before/after indexes) on
this machine, which is shared and loaded (see the load average below).

| set | frozen: in-scope / OOS recall | tuned: in-scope / OOS recall | closed-set accuracy frozen → tuned | goal | tune wall time | route() p50 ms frozen / tuned (interleaved) | seeds |
|---|---:|---:|---:|---|---:|---:|---|
{chr(10).join(rows)}

Not run here (time) is marked so; the command in the script's docstring runs it.
{results.get("notes", "")}

{machine_markdown(results["machine"])}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["clinc10", "banking10"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "tune")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="re-time route() on the indexes --work still holds for --sets and --seeds",
    )
    args = parser.parse_args()
    file = RESULTS / "tune.json"
    results = json.loads(file.read_text()) if file.exists() else {"runs": []}
    if args.latency_only:
        for r in results["runs"]:
            work = args.work / f"{r['set']}-{r['seed']}"
            if r["set"] in args.sets and r["seed"] in args.seeds and (work / "tuned").exists():
                test = require_data(*SETS[r["set"]]["test"])
                r["route_p50_ms_interleaved"] = interleaved_p50(
                    work / "stock", work / "tuned", test
                )
                print(r["set"], r["seed"], r["route_p50_ms_interleaved"])
        save("tune", results, markdown(results))
        return
    if not args.report_only:
        results["machine"] = machine()
        for name in args.sets:
            for seed in args.seeds:
                run_result = run(name, seed, args.work / f"{name}-{seed}")
                results["runs"] = [
                    r for r in results["runs"] if (r["set"], r["seed"]) != (name, seed)
                ] + [run_result]
                save("tune", results, markdown(results))
                print(json.dumps(run_result, indent=2), flush=True)
    save("tune", results, markdown(results))


if __name__ == "__main__":
    main()
