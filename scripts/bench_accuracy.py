"""Routing accuracy on public intent data, through semroute's own CLI, beside semantic-router.

    .venv/bin/python scripts/bench_accuracy.py [--scorers hybrid,head,...] [--skip-peer]

For CLINC150 (Full, Small, and Full with 10 examples per intent) it follows the standard
protocol: utterances from `train`, thresholds fitted on `val` with `semroute calibrate`'s default
objective, `test` reported (`semroute eval`). For BANKING77 (no out-of-scope rows) it reports
closed-set accuracy on `test`. Test rows are never used for fitting. semantic-router 1.1.1 runs
on the same data with the same local model and its own threshold fitting
(scripts/peer_semantic_router.py). semroute learns from the 100 out-of-scope rows of CLINC150's
train split (its head's out-of-scope class); semantic-router has no place for them and runs
without them, and on CLINC150 Full also with them as one more route (`--oos-route`). Results
go to docs/results/accuracy.json and the "accuracy" section of docs/benchmarks.md.

    --from-json        measure nothing: write the section again from docs/results/accuracy.json
    --peer-oos-route   measure only semantic-router with the out-of-scope route, keep the rest
                       of docs/results/accuracy.json, and write the section again
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench import RESULTS, ROOT, machine, machine_markdown, require_data, save

SEMROUTE = str(Path(sys.executable).parent / "semroute")
SCORERS = ("hybrid", "head", "centroid", "top5", "nearest")
PEER = ROOT / "scripts" / "peer_semantic_router.py"

# (name, train, val, test, has out-of-scope rows)
DATASETS = [
    ("CLINC150 Full", "clinc150/train.jsonl", "clinc150/val.jsonl", "clinc150/test.jsonl", True),
    (
        "CLINC150 Small",
        "clinc150_small/train.jsonl",
        "clinc150/val.jsonl",
        "clinc150/test.jsonl",
        True,
    ),
    (
        "CLINC150 Full, 10 per intent",
        "clinc150/train_10.jsonl",
        "clinc150/val.jsonl",
        "clinc150/test.jsonl",
        True,
    ),
    ("BANKING77", "banking77/train.jsonl", None, "banking77/test.jsonl", False),
]
# Published reference points (see ../shared/data/README.md).
REFERENCES = {
    "CLINC150 Full": [
        ("fine-tuned BERT-base (Larson et al. 2019)", 96.2, 52.3),
        ("MLP on USE embeddings (Larson et al. 2019)", 93.4, 49.1),
    ]
}


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def semroute_runs(work: Path, scorers: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, train, val, test, has_oos in DATASETS:
        slug = name.lower().replace(" ", "-").replace(",", "")
        routes = work / slug / "routes"
        index = work / slug / "index"
        if not (routes / "train.yaml").exists():
            run(
                SEMROUTE,
                "import",
                str(require_data(*train.split("/"))),
                "--out",
                str(routes / "train.yaml"),
                "--default-model",
                "frontier",
            )
        for scorer in scorers:
            started = time.perf_counter()
            run(SEMROUTE, "build-index", str(routes), "--out", str(index), "--scorer", scorer)
            build_s = time.perf_counter() - started
            calibration = None
            if val:
                started = time.perf_counter()
                calibration = json.loads(
                    run(
                        SEMROUTE,
                        "calibrate",
                        "--data",
                        str(require_data(*val.split("/"))),
                        "--index",
                        str(index),
                        "--json",
                    )
                )
                calibration["wall_s"] = round(time.perf_counter() - started, 2)
            report = json.loads(
                run(
                    SEMROUTE,
                    "eval",
                    "--data",
                    str(require_data(*test.split("/"))),
                    "--index",
                    str(index),
                    "--json",
                )
            )
            row = {
                "dataset": name,
                "system": f"semroute {scorer}",
                "scorer": scorer,
                "in_scope_accuracy": report["in_scope_accuracy"],
                "oos_recall": report["oos_recall"],
                "accuracy": report["accuracy"],
                "auroc": report["auroc"],
                "closed_set_accuracy": report["closed_set_accuracy"],
                "latency_ms": report["latency_ms"],
                "build_s": round(build_s, 1),
                "calibration": calibration
                and {
                    k: calibration[k]
                    for k in (
                        "objective",
                        "misroute_cost",
                        "per_route",
                        "shared_threshold",
                        "seconds",
                        "wall_s",
                    )
                },
                "has_oos": has_oos,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


class TorchEncoder:
    """sentence-transformers on torch, as the reference the ONNX runtimes are compared with."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from semroute.config.routes import DEFAULT_ENCODER
        from semroute.encoders.base import EncoderInfo
        from semroute.encoders.export import locate_model

        self.model = SentenceTransformer(str(locate_model(DEFAULT_ENCODER)), device="cpu")
        self.info = EncoderInfo("sentence-transformers", DEFAULT_ENCODER, "torch-fp32", 384, 256)

    def encode(self, texts: Any) -> Any:
        import numpy as np

        from semroute.encoders.base import Embeddings

        vectors = self.model.encode(list(texts), normalize_embeddings=True, batch_size=64)
        return Embeddings(np.asarray(vectors, dtype=np.float32), np.zeros(len(texts), dtype=bool))


def runtime_runs(work: Path) -> list[dict[str, Any]]:
    """CLINC150 Full, hybrid scorer, each encoder runtime, through the Python API."""
    from semroute.config.routes import load_routes
    from semroute.routing.router import Router
    from semroute.tuning.build import build_index
    from semroute.tuning.calibrate import fit_thresholds
    from semroute.tuning.evaluate import load_labelled, metrics

    routes_dir = work / "clinc150-full" / "routes"
    base = load_routes(routes_dir)
    val = load_labelled(require_data("clinc150", "val.jsonl"))
    test = load_labelled(require_data("clinc150", "test.jsonl"))
    rows = []
    reference = None  # torch's fitted thresholds, to compare runtimes at one operating point
    for runtime in ("torch", "onnx-int8", "onnx", "static"):
        import dataclasses

        settings = dataclasses.replace(
            base.settings, encoder_runtime=runtime if runtime != "torch" else "onnx"
        )
        route_set = dataclasses.replace(base, settings=settings)
        out = work / f"runtime-{runtime}"
        encoder = TorchEncoder() if runtime == "torch" else None
        build_index(route_set, out, encoder=encoder, scorer="hybrid")
        router = Router.load(out, encoder=encoder, cache_size=0)
        names = [r.name for r in router.routes]
        val_scores = router.score(val.texts)
        fit = fit_thresholds(val_scores.confidence, val.truth(names))
        test_scores = router.score(test.texts)
        report = metrics(
            test_scores.confidence, test.truth(names), fit.thresholds, router.min_margin, names
        )
        if reference is None:
            reference = fit.thresholds
        same_point = metrics(
            test_scores.confidence, test.truth(names), reference, router.min_margin, names
        )
        row = {
            "runtime": runtime,
            "shared_threshold": round(fit.shared, 4),
            "at_reference_thresholds": {
                "in_scope_accuracy": same_point.in_scope_accuracy,
                "oos_recall": same_point.oos_recall,
                "accuracy": same_point.accuracy,
            },
            "in_scope_accuracy": report.in_scope_accuracy,
            "oos_recall": report.oos_recall,
            "accuracy": report.accuracy,
            "closed_set_accuracy": report.closed_set_accuracy,
            "auroc": report.auroc,
            "encoder": router.index.manifest.encoder.model_dump(),
        }
        if runtime != "torch":
            timings = []
            for text in test.texts[:500]:
                started = time.perf_counter()
                router.encoder.encode([text])
                timings.append((time.perf_counter() - started) * 1000)
            row["encode_p50_ms"] = round(sorted(timings)[len(timings) // 2], 3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


OOS_ROUTE_DATASETS = ("CLINC150 Full",)


def peer_runs(oos_route: bool = False) -> list[dict[str, Any]]:
    rows = []
    for name, train, val, test, has_oos in DATASETS:
        if oos_route and name not in OOS_ROUTE_DATASETS:
            continue
        args = [
            sys.executable,
            str(PEER),
            "accuracy",
            "--train",
            str(require_data(*train.split("/"))),
            "--test",
            str(require_data(*test.split("/"))),
        ]
        args += ["--val", str(require_data(*val.split("/")))] if val else ["--no-fit"]
        args += ["--oos-route"] if oos_route else []
        result = json.loads(run(*args))
        rows.append(
            {
                "dataset": name,
                "system": f"semantic-router {result.get('semantic_router_version', '1.1.1')}",
                "has_oos": has_oos,
                **result,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def pct(x: float | None) -> str:
    return "\u2013" if x is None else f"{100 * x:.1f}"


def runtime_markdown(rows: list[dict[str, Any]]) -> list[str]:
    ref = next(r for r in rows if r["runtime"] == "torch")
    out = [
        "### Encoder runtimes (CLINC150 Full, hybrid scorer, default calibration)",
        "",
        "Each runtime is calibrated on val by itself (shared threshold shown), then, to separate "
        "the encoder from where calibration lands, also evaluated at the thresholds fitted for "
        "the torch reference.",
        "",
        "| encoder runtime | encode p50 (1 query, 1 thread) | fitted threshold | in-scope accuracy | "
        "out-of-scope recall | accuracy | accuracy vs torch | closed-set | AUROC | "
        "at torch's thresholds: in-scope / oos recall / accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "onnx-int8": "onnx-int8 (default): ONNX dynamic int8",
        "onnx": "onnx: ONNX fp32",
        "static": "static: model2vec distilled",
        "torch": "sentence-transformers on torch, fp32 (reference)",
    }
    for r in rows:
        delta = 100 * (r["accuracy"] - ref["accuracy"])
        enc = f"{r['encode_p50_ms']:.2f} ms" if "encode_p50_ms" in r else "-"
        same = r["at_reference_thresholds"]
        out.append(
            f"| {names[r['runtime']]} | {enc} | {r['shared_threshold']:.3f} | "
            f"{pct(r['in_scope_accuracy'])} | {pct(r['oos_recall'])} | {pct(r['accuracy'])} | "
            f"{delta:+.2f} | {pct(r['closed_set_accuracy'])} | {pct(r['auroc'])} | "
            f"{pct(same['in_scope_accuracy'])} / {pct(same['oos_recall'])} / "
            f"{pct(same['accuracy'])} |"
        )
    return [*out, ""]


def markdown(res: dict[str, Any]) -> str:
    rows, peer, runtimes = res["semroute"], res["semantic_router"], res["runtimes"]
    peer_oos = res.get("semantic_router_oos_route", [])
    out = [
        "## Accuracy: CLINC150 and BANKING77",
        "",
        f"`.venv/bin/python scripts/bench_accuracy.py{res.get('flags', '')}`. Each semroute row is "
        "`semroute import train.jsonl` → `semroute build-index --scorer S` → "
        "`semroute calibrate --data val.jsonl` (default objective: misroute cost 2, 100 bootstrap "
        "resamples) → `semroute eval --data test.jsonl --json`, default encoder "
        "(all-MiniLM-L6-v2, ONNX int8). "
        "In-scope accuracy counts an in-scope query sent to the default model as wrong; "
        "out-of-scope recall is the share of out-of-scope queries sent to the default model. "
        "semantic-router 1.1.1 uses the same local model and its own threshold fitting on val "
        "(`router.fit`). The two do not see the same training data: semroute learns from "
        "the 100 out-of-scope rows of CLINC150's train split (they are its head's "
        "out-of-scope class), while semantic-router has no place for out-of-scope examples "
        "and its rows run without them. The row marked *out-of-scope rows as a route* gives "
        "them to semantic-router as one more route, a pick of which counts as routed nowhere "
        "(`peer_semantic_router.py accuracy --oos-route`).",
        "",
    ]
    for name, *_ in DATASETS:
        ours = [r for r in rows if r["dataset"] == name]
        theirs = [r for r in peer if r["dataset"] == name]
        has_oos = (ours or theirs)[0]["has_oos"] if (ours or theirs) else True
        out.append(f"### {name}")
        out.append("")
        if has_oos:
            out.append(
                "| system | in-scope accuracy | out-of-scope recall | accuracy | AUROC | closed-set |"
            )
            out.append("|---|---:|---:|---:|---:|---:|")
            for r in ours:
                out.append(
                    f"| {r['system']} | {pct(r['in_scope_accuracy'])} | {pct(r['oos_recall'])} | "
                    f"{pct(r['accuracy'])} | {pct(r['auroc'])} | {pct(r['closed_set_accuracy'])} |"
                )
            for r in theirs:
                out.append(
                    f"| {r['system']} (fitted on val) | {pct(r['in_scope_accuracy'])} | "
                    f"{pct(r['oos_recall'])} | {pct(r['accuracy'])} | \u2013 | {pct(r.get('closed_set_accuracy'))} |"
                )
                if "in_scope_accuracy_default_threshold" in r:
                    out.append(
                        f"| {r['system']} (default threshold) | "
                        f"{pct(r['in_scope_accuracy_default_threshold'])} | "
                        f"{pct(r['oos_recall_default_threshold'])} | \u2013 | \u2013 | \u2013 |"
                    )
            for r in (r for r in peer_oos if r["dataset"] == name):
                out.append(
                    f"| {r['system']}, out-of-scope rows as a route (fitted on val) | "
                    f"{pct(r['in_scope_accuracy'])} | {pct(r['oos_recall'])} | "
                    f"{pct(r['accuracy'])} | \u2013 | {pct(r.get('closed_set_accuracy'))} |"
                )
            for ref, ins, oos in REFERENCES.get(name, []):
                out.append(f"| {ref} | {ins:.1f} | {oos:.1f} | \u2013 | \u2013 | \u2013 |")
        else:
            out.append("| system | closed-set accuracy |")
            out.append("|---|---:|")
            for r in ours:
                out.append(f"| {r['system']} | {pct(r['closed_set_accuracy'])} |")
            for r in theirs:
                out.append(f"| {r['system']} | {pct(r.get('closed_set_accuracy'))} |")
        out.append("")
    if runtimes:
        out += runtime_markdown(runtimes)
    cal = [r for r in rows if r["calibration"]]
    if cal:
        fits = [r["calibration"]["seconds"]["fit"] for r in cal]
        out.append(
            f"Calibration on the 3,100 val rows took {min(fits):.2f}\u2013{max(fits):.2f} s beyond "
            f"encoding them (encoding: {cal[0]['calibration']['seconds']['encode']:.1f} s)."
        )
        out.append("")
    out.append(machine_markdown(res["machine"]))
    if "semantic_router_oos_route_machine" in res:
        out += [
            "",
            "The *out-of-scope rows as a route* row comes from a later run "
            "(`scripts/bench_accuracy.py --peer-oos-route`); every other figure from the run "
            "above. " + machine_markdown(res["semantic_router_oos_route_machine"]),
        ]
    if "rendered_at_commit" in res:
        out += [
            "",
            f"This text was written again at commit {res['rendered_at_commit']} from "
            "docs/results/accuracy.json (`--from-json`), measuring nothing.",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scorers", default=",".join(SCORERS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/semroute-bench-accuracy"))
    parser.add_argument("--skip-peer", action="store_true", help="Leave semantic-router out.")
    parser.add_argument(
        "--skip-runtimes", action="store_true", help="Leave the runtime comparison out."
    )
    parser.add_argument("--from-json", action="store_true", help="Measure nothing; write again.")
    parser.add_argument(
        "--peer-oos-route",
        action="store_true",
        help="Measure only semantic-router with the out-of-scope rows as a route.",
    )
    args = parser.parse_args()
    if args.from_json or args.peer_oos_route:
        results = json.loads((RESULTS / "accuracy.json").read_text())
        if args.peer_oos_route:
            results["semantic_router_oos_route_machine"] = machine()
            results["semantic_router_oos_route"] = peer_runs(oos_route=True)
            results.pop("rendered_at_commit", None)
        else:
            results["rendered_at_commit"] = machine()["git_commit"]
        save("accuracy", results, markdown(results))
        return
    info = machine()
    scorers = [s for s in args.scorers.split(",") if s]
    rows = semroute_runs(args.work, scorers)
    runtimes = [] if args.skip_runtimes or "hybrid" not in scorers else runtime_runs(args.work)
    peer = [] if args.skip_peer else peer_runs()
    peer_oos = [] if args.skip_peer else peer_runs(oos_route=True)
    flags = "" if args.scorers == ",".join(SCORERS) else f" --scorers {args.scorers}"
    flags += " --skip-peer" if args.skip_peer else ""
    flags += " --skip-runtimes" if args.skip_runtimes else ""
    results = {
        "machine": info,
        "flags": flags,
        "semroute": rows,
        "runtimes": runtimes,
        "semantic_router": peer,
        "semantic_router_oos_route": peer_oos,
    }
    save("accuracy", results, markdown(results))


if __name__ == "__main__":
    main()
