"""Run semantic-router 1.1.1 (aurelio-labs) on semroute's data and model, for side-by-side benchmarks.

    python3 scripts/peer_semantic_router.py setup
    python3 scripts/peer_semantic_router.py accuracy --train T.jsonl --val V.jsonl --test T.jsonl
    python3 scripts/peer_semantic_router.py accuracy --train T.jsonl --test T.jsonl --no-fit
    python3 scripts/peer_semantic_router.py latency --routes ROUTES.json --queries QUERIES.json

Each command prints one JSON object on stdout (progress goes to stderr) and exits non-zero with a
one-line error when a step fails (PEER_DEBUG=1 shows the traceback). Benchmark scripts call it as a
subprocess; nothing here writes outside .bench/.

- accuracy: one route per in-scope label of --train (rows labelled --oos-label, default "oos", are
  no route), fitted on --val, every --test row routed. Reports in_scope_accuracy (routed to its
  label), oos_recall (out-of-scope rows routed nowhere), accuracy (both together), the same three
  with semantic-router's default threshold, and closed_set_accuracy (the top route regardless of
  any threshold). --no-fit skips fitting (closed-set data such as BANKING77 has no val split and
  no out-of-scope rows). One torch thread unless --threads. semantic-router has no place for
  out-of-scope examples, so by default --train's out-of-scope rows are dropped; --oos-route
  gives them to it as one more route, whose pick counts as "routed nowhere" (fitting then
  learns that picking it is right for out-of-scope val rows; closed_set_accuracy still takes
  the best in-scope route).
- latency: builds the router from ROUTES.json ({"routes": [{"name", "utterances"}]}), warms up,
  then times each single-query `router(query)` over QUERIES.json (a list of strings) with one
  torch thread (--threads 0: torch's own default, one per core); cold_start_s is the median wall time of fresh processes that import semantic_router,
  build the router from the routes file and route one query.
- setup: only creates or updates the venv and reports the versions.

semantic-router lives in its own virtualenv, .bench/semantic-router-venv, with the CPU build of
torch (torch==2.13.0 first, then semantic-router under constraints.txt, so it shares semroute's
versions of torch, transformers and numpy; a minimal constraints file pinning only torch is the
fallback if those pins ever clash with semantic-router's requirements). It is installed on first
use and again only when constraints.txt or the Python changes. The commands re-run this file with
that venv's Python (`worker ...`). The model is semroute's default, all-MiniLM-L6-v2, from the
local folder `semroute.encoders.export.locate_model` unpacks (or --model FOLDER), loaded by
semantic-router's own HuggingFaceEncoder with the Hugging Face hub switched off.

How semantic-router 1.1.1 is used, as its README shows it:
- `IndexedRouter(encoder=HuggingFaceEncoder(name=FOLDER), routes=[Route(...), ...])` with its
  defaults: a LocalIndex, top_k=5, aggregation="mean" (a route's score is the mean cosine of its
  hits among the 5 nearest utterances), no confidence threshold (the best route always wins, so
  its default-threshold out-of-scope recall is 0).
- `router.fit(X=val_texts, y=val_labels)`, out-of-scope rows as None: Platt calibration of the
  top route's score against "was it right" (deterministic Newton steps, no random search); then
  `router.confidence_threshold = 0.5`, the bar its README sets ("act only when it's more likely
  right than wrong"). --threshold and --fit-method change either.
- Test rows are scored in batches by the router's own batched scorer (`_scores_many`, what its
  `fit` and `evaluate` use) and decided by its own `_choose`, i.e. exactly what `router(text)`
  returns; a sample of rows (--check-sample) also goes through the public `router(text)`, and a
  disagreement on more than 1% of them is an error.

accuracy also reports, as extra information, the best single bar on the calibrated confidence for
overall val accuracy (semantic-router has no such search: it is a sweep done here; --no-sweep
skips it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
VENV = BENCH / "semantic-router-venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".peer-installed"
PROJECT_CONSTRAINTS = ROOT / "constraints.txt"
OWN_CONSTRAINTS = BENCH / "semantic-router-constraints.txt"
SEMROUTE_PYTHON = ROOT / ".venv" / "bin" / "python"

SEMANTIC_ROUTER = "semantic-router==1.1.1"
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk; any other torch is a CUDA download
# HuggingFaceEncoder needs torch and transformers: the part of semantic-router[local] it uses
# (that extra also pulls gliner2 and sentence-transformers, for other classes).
PACKAGES = [SEMANTIC_ROUTER, "transformers", "tokenizers"]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OOS_ROUTE = "__out_of_scope__"
DEBUG = os.environ.get("PEER_DEBUG") == "1"


class Failure(Exception):
    """A step failed; its message is the one line printed."""


# --------------------------------------------------------------------------------------------
# Outer part: runs under any Python >= 3.11 with the standard library only.
# --------------------------------------------------------------------------------------------


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [str(VENV_PYTHON), "-m", "pip", "--disable-pip-version-check", "install", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # Some machines' pip configuration names index folders that do not exist; hide that noise.
    noise = ("WARNING: Location", "is ignored")
    for line in (proc.stdout + proc.stderr).splitlines():
        if not all(n in line for n in noise):
            print(line, file=sys.stderr)
    return proc


def _install(constraints: Path) -> subprocess.CompletedProcess[str]:
    proc = _pip(["-c", str(constraints), TORCH])
    if proc.returncode == 0:
        proc = _pip(["-c", str(constraints), *PACKAGES])
    return proc


def ensure_venv() -> str:
    """Create or update the venv; return the constraints file it was installed under."""
    import fcntl

    BENCH.mkdir(exist_ok=True)
    # One installer at a time when several benchmark scripts start together.
    with (BENCH / "semantic-router-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_venv()


def _ensure_venv() -> str:
    python = os.environ.get("PYTHON", "python3")
    wanted = json.dumps(
        {
            "packages": [TORCH, *PACKAGES],
            "constraints": PROJECT_CONSTRAINTS.read_text() if PROJECT_CONSTRAINTS.exists() else "",
            "python": subprocess.run(
                [python, "-c", "import sys; print(sys.version)"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
        },
        sort_keys=True,
    )
    stamp = hashlib.sha256(wanted.encode()).hexdigest()
    if VENV_PYTHON.exists() and STAMP.exists():
        done = json.loads(STAMP.read_text())
        if done.get("stamp") == stamp:
            return str(done["constraints"])
    if not VENV_PYTHON.exists():
        print(f"creating {VENV} ...", file=sys.stderr)
        proc = subprocess.run(
            [python, "-m", "venv", str(VENV)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise Failure(f"{python} -m venv {VENV} failed: {proc.stderr.strip()[-300:]}")
    print(f"installing {SEMANTIC_ROUTER} into {VENV} ...", file=sys.stderr)
    constraints = PROJECT_CONSTRAINTS
    proc = _install(constraints) if constraints.exists() else None
    if proc is None or proc.returncode != 0:
        # constraints.txt pins semroute's own stack; if it clashes with semantic-router's
        # requirements, pin only what must be pinned: the CPU torch.
        print(
            f"{PROJECT_CONSTRAINTS.name} does not fit {SEMANTIC_ROUTER}; "
            f"retrying with {OWN_CONSTRAINTS}",
            file=sys.stderr,
        )
        OWN_CONSTRAINTS.write_text(f"{TORCH}\n")
        constraints = OWN_CONSTRAINTS
        proc = _install(constraints)
        if proc.returncode != 0:
            raise Failure(f"pip could not install {SEMANTIC_ROUTER} into {VENV}")
    STAMP.write_text(json.dumps({"stamp": stamp, "constraints": str(constraints)}) + "\n")
    return str(constraints)


def locate_model(given: str | None) -> str:
    if given:
        folder = Path(given)
    else:
        if not SEMROUTE_PYTHON.exists():
            raise Failure(f"{SEMROUTE_PYTHON} not found; run scripts/test first or pass --model")
        code = f"from semroute.encoders.export import locate_model; print(locate_model({MODEL!r}))"
        proc = subprocess.run(
            [str(SEMROUTE_PYTHON), "-c", code], capture_output=True, text=True, check=False
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise Failure(f"semroute could not locate {MODEL}: {last}")
        folder = Path(lines[-1])
    if not (folder / "config.json").exists():
        raise Failure(f"{folder} is not a model folder (no config.json)")
    return str(folder)


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # Never reach for the hub; the model is a local folder.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(TOKENIZERS_PARALLELISM="false")
    if threads > 0:  # 0: leave torch its own default (one thread per core)
        n = str(threads)
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n)
        env.update(RAYON_NUM_THREADS=n)
    env.setdefault("SEMANTIC_ROUTER_LOG_LEVEL", "WARNING")
    env.pop("PYTHONPATH", None)  # keep semroute's venv out of the peer's imports
    return env


def run_worker(args: list[str], threads: int) -> dict[str, Any]:
    cmd = [str(VENV_PYTHON), str(Path(__file__).resolve()), "worker", *args]
    # stderr streams through (progress, and the worker's one-line error); stdout is the JSON.
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, text=True, env=worker_env(threads), check=False
    )
    if proc.returncode == 1:
        sys.exit(1)  # the worker printed its one-line error
    if proc.returncode != 0:
        raise Failure(f"semantic-router worker `{args[0]}` exited with status {proc.returncode}")
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise Failure(f"semantic-router worker `{args[0]}` printed no JSON: {e}") from e
    return result


def cold_starts(routes: Path, query: str, model: str, runs: int) -> list[float]:
    """Wall time of fresh processes that import semantic_router, build the router, route once."""
    times = []
    cmd = [str(VENV_PYTHON), str(Path(__file__).resolve()), "worker", "cold"]
    cmd += ["--routes", str(routes), "--query", query, "--model", model]
    for i in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(1), check=False)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise Failure(f"cold-start run {i + 1} failed: {last.removeprefix('error: ')}")
        times.append(round(elapsed, 3))
        print(f"cold start {i + 1}/{runs}: {elapsed:.2f} s", file=sys.stderr)
    return times


def outer(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="peer_semantic_router.py", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create or update the venv, locate the model")

    acc = sub.add_parser("accuracy", help="routing accuracy on {text,label} JSONL files")
    acc.add_argument("--train", type=Path, required=True)
    acc.add_argument("--val", type=Path, help="rows to fit on; required unless --no-fit")
    acc.add_argument("--test", type=Path, required=True)
    acc.add_argument("--oos-label", default="oos")
    acc.add_argument("--no-fit", action="store_true", help="closed-set use: no calibration")
    acc.add_argument("--fit-method", choices=["platt", "isotonic"], default="platt")
    acc.add_argument("--threshold", type=float, default=0.5, help="bar on the fitted confidence")
    acc.add_argument("--threads", type=int, default=1)
    acc.add_argument("--check-sample", type=int, default=200, help="rows also routed one by one")
    acc.add_argument("--no-sweep", action="store_true", help="skip the extra val threshold sweep")
    acc.add_argument(
        "--oos-route", action="store_true", help="train's out-of-scope rows as one more route"
    )
    acc.add_argument("--model", help="local model folder (default: semroute's default model)")

    lat = sub.add_parser("latency", help="single-query routing latency")
    lat.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0 leaves torch's default"
    )
    lat.add_argument("--routes", type=Path, required=True)
    lat.add_argument("--queries", type=Path, required=True)
    lat.add_argument("--repeat", type=int, default=1)
    lat.add_argument("--warmup", type=int, default=20)
    lat.add_argument("--cold-runs", type=int, default=3)
    lat.add_argument("--model", help="local model folder (default: semroute's default model)")

    args = parser.parse_args(argv)
    if args.command == "accuracy" and not args.no_fit and args.val is None:
        parser.error("accuracy needs --val (or --no-fit)")
    for name in ("train", "val", "test", "routes", "queries"):
        path = getattr(args, name, None)
        if path is not None and not path.exists():
            raise Failure(f"{path} not found")

    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    constraints = ensure_venv()
    setup_s = round(time.perf_counter() - started, 2)
    model = locate_model(args.model if args.command != "setup" else None)
    if args.command == "setup":
        version = run_worker(["version"], 1)
        return {"venv": str(VENV), "constraints": constraints, "model": model, **version}

    if args.command == "accuracy":
        wargs = [
            "accuracy",
            "--train",
            str(args.train.resolve()),
            "--test",
            str(args.test.resolve()),
        ]
        if args.val is not None and not args.no_fit:
            wargs += ["--val", str(args.val.resolve())]
        wargs += ["--oos-label", args.oos_label, "--model", model, "--threads", str(args.threads)]
        wargs += ["--fit-method", args.fit_method, "--threshold", str(args.threshold)]
        wargs += ["--check-sample", str(args.check_sample)]
        if args.no_fit:
            wargs.append("--no-fit")
        if args.no_sweep:
            wargs.append("--no-sweep")
        if args.oos_route:
            wargs.append("--oos-route")
        result = run_worker(wargs, args.threads)
    else:
        queries = json.loads(args.queries.read_text())
        if (
            not isinstance(queries, list)
            or not queries
            or not all(isinstance(q, str) for q in queries)
        ):
            raise Failure(f"{args.queries} must hold a non-empty JSON list of strings")
        cold = cold_starts(args.routes.resolve(), queries[0], model, args.cold_runs)
        wargs = ["latency", "--routes", str(args.routes.resolve())]
        wargs += ["--queries", str(args.queries.resolve()), "--model", model]
        wargs += ["--repeat", str(args.repeat), "--warmup", str(args.warmup)]
        wargs += ["--threads", str(args.threads)]
        result = run_worker(wargs, args.threads)
        result["cold_start_s"] = round(statistics.median(cold), 3) if cold else None
        result["cold_start_runs_s"] = cold
        result["cold_start_measures"] = (
            "wall time of a fresh process: import semantic_router, build the router from the "
            "routes file (embeds every utterance), route one query; median of the runs"
        )
    result["setup_check_s"] = setup_s
    result["constraints"] = constraints
    result["cores"] = os.cpu_count()
    result["load_average_at_start"] = load_at_start
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    return result


# --------------------------------------------------------------------------------------------
# Worker part: runs inside the semantic-router venv.
# --------------------------------------------------------------------------------------------


def _limit_threads(threads: int) -> Any:
    """Pin torch to ``threads`` threads; 0 leaves its default (one per core)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if threads > 0:
        n = str(threads)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = n
        os.environ["RAYON_NUM_THREADS"] = n
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    return torch


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _encoder(model: str) -> Any:
    from semantic_router.encoders import HuggingFaceEncoder

    # A local folder works as `name`: the encoder hands it to transformers' from_pretrained.
    return HuggingFaceEncoder(name=model, device="cpu")


def _router(encoder: Any, routes: list[Any]) -> Any:
    from semantic_router import IndexedRouter

    # Everything else at semantic-router's defaults (LocalIndex, top_k=5, mean, no threshold).
    return IndexedRouter(encoder=encoder, routes=routes)


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row["text"]), str(row["label"])))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise Failure(f"{path}:{i}: not a {{'text', 'label'}} row ({e})") from e
    if not rows:
        raise Failure(f"{path} holds no rows")
    return rows


def _scores(router: Any, texts: list[str], what: str) -> tuple[list[dict[str, float]], float]:
    """Raw scores of every route for each text, batched the way router.fit/evaluate do it."""
    from semantic_router.routers.base import run

    out: list[dict[str, float]] = []
    chunk = 512  # a multiple of the encoder's batch of 32, so batches match one big call
    started = time.perf_counter()
    for i in range(0, len(texts), chunk):
        out += run(router._scores_many(texts[i : i + chunk]))
        print(f"  scored {len(out)}/{len(texts)} {what}", file=sys.stderr)
    return out, time.perf_counter() - started


def _nowhere(name: str | None) -> str | None:
    """A pick of the out-of-scope route (--oos-route) means the query is routed nowhere."""
    return None if name == OOS_ROUTE else name


def _best_in_scope(scores: dict[str, float]) -> str | None:
    named = {k: v for k, v in scores.items() if k != OOS_ROUTE}
    return max(named, key=named.__getitem__) if named else None


def _decide(router: Any, scores: list[dict[str, float]]) -> list[str | None]:
    # router._choose is what router(text) returns once the scores are in (limit=1)
    return [_nowhere(router._choose(s, 1, None).name) for s in scores]


def _metrics(picks: list[str | None], gold: list[str | None]) -> dict[str, Any]:
    ins = [(p, g) for p, g in zip(picks, gold, strict=True) if g is not None]
    oos = [p for p, g in zip(picks, gold, strict=True) if g is None]
    right = sum(p == g for p, g in ins) + sum(p is None for p in oos)
    return {
        "in_scope_accuracy": round(sum(p == g for p, g in ins) / len(ins), 4) if ins else None,
        "oos_recall": round(sum(p is None for p in oos) / len(oos), 4) if oos else None,
        "accuracy": round(right / len(gold), 4),
    }


def _sweep(
    router: Any,
    val_texts: list[str],
    val_gold: list[str | None],
    test_scores: list[dict[str, float]],
    test_gold: list[str | None],
) -> dict[str, Any]:
    """Extra: the best single bar on the fitted confidence for overall val accuracy."""
    import numpy as np

    val_scores, _ = _scores(router, val_texts, "val rows (threshold sweep)")
    val_top = [max(s, key=s.__getitem__) for s in val_scores]
    raw = np.array([s[t] for s, t in zip(val_scores, val_top, strict=True)])
    conf = np.asarray(router.calibrator(raw), dtype=float)
    right = np.array([t == g for t, g in zip(val_top, val_gold, strict=True)])
    oos = np.array([g is None for g in val_gold])
    bars = np.unique(np.concatenate([[0.0], conf]))
    passed = conf[None, :] >= bars[:, None]  # one row per candidate bar
    ok = (passed & right).sum(axis=1) + (~passed & oos).sum(axis=1)
    best = int(np.argmax(ok))  # ties: the lowest bar
    router.confidence_threshold = float(bars[best])
    return {
        "what": "not part of semantic-router: the bar on its fitted confidence that maximises "
        "overall val accuracy (in-scope routed right + out-of-scope routed nowhere), swept here",
        "confidence_threshold": round(float(bars[best]), 6),
        "val_accuracy": round(float(ok[best]) / len(val_gold), 4),
        **_metrics(_decide(router, test_scores), test_gold),
    }


def worker_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    torch = _limit_threads(args.threads)
    import semantic_router
    from semantic_router import Route

    train = _read_jsonl(args.train)
    test = _read_jsonl(args.test)
    by_label: dict[str, list[str]] = {}
    oos_texts = []
    for text, label in train:
        if label != args.oos_label:
            by_label.setdefault(label, []).append(text)
        else:
            oos_texts.append(text)
    if not by_label:
        raise Failure(f"{args.train} has no in-scope rows")
    routes = [Route(name=label, utterances=texts) for label, texts in sorted(by_label.items())]
    if args.oos_route:
        if not oos_texts or OOS_ROUTE in by_label:
            raise Failure(f"--oos-route: {args.train} has no out-of-scope rows, or a {OOS_ROUTE}")
        routes.append(Route(name=OOS_ROUTE, utterances=oos_texts))

    def gold(rows: list[tuple[str, str]]) -> list[str | None]:
        return [None if label == args.oos_label else label for _, label in rows]

    unknown = sorted({g for g in gold(test) if g is not None and g not in by_label})
    if unknown:
        print(f"warning: test labels with no route (always wrong): {unknown[:5]}", file=sys.stderr)

    t0 = time.perf_counter()
    encoder = _encoder(args.model)
    model_load_s = time.perf_counter() - t0
    n_utt = sum(len(r.utterances) for r in routes)
    print(f"building: {len(routes)} routes, {n_utt} utterances ...", file=sys.stderr)
    t0 = time.perf_counter()
    router = _router(encoder, routes)
    build_s = time.perf_counter() - t0
    print(f"built in {build_s:.1f} s", file=sys.stderr)

    test_texts, test_gold = [t for t, _ in test], gold(test)
    scores, scoring_s = _scores(router, test_texts, "test rows")
    top = [_best_in_scope(s) for s in scores]
    default_picks = _decide(router, scores)
    default = _metrics(default_picks, test_gold)
    ins = [(t, g) for t, g in zip(top, test_gold, strict=True) if g is not None]
    result: dict[str, Any] = {
        "semantic_router_version": semantic_router.__version__,
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "encoder": "semantic_router.encoders.HuggingFaceEncoder",
        "model": args.model,
        "router": {
            "class": "IndexedRouter",
            "index": type(router.index).__name__,
            "top_k": router.top_k,
            "aggregation": "mean (default)",
            "routes": len(routes),
            "utterances": n_utt,
            "oos_route": args.oos_route,
            "oos_train_rows": len(oos_texts),
            "oos_train_rows_used": len(oos_texts) if args.oos_route else 0,
        },
        "threads": args.threads,
        "n": len(test),
        "n_oos": sum(g is None for g in test_gold),
        "closed_set_accuracy": round(sum(t == g for t, g in ins) / len(ins), 4) if ins else None,
        "default_threshold": router.confidence_threshold,
        "in_scope_accuracy_default_threshold": default["in_scope_accuracy"],
        "oos_recall_default_threshold": default["oos_recall"],
        "accuracy_default_threshold": default["accuracy"],
        "model_load_seconds": round(model_load_s, 2),
        "build_seconds": round(build_s, 2),
        "test_scoring_seconds": round(scoring_s, 2),
        "test_queries_per_second_batched": round(len(test) / scoring_s, 1),
    }

    picks = default_picks
    if args.no_fit:
        result.update(fitted=False, **default)
    else:
        val = _read_jsonl(args.val)
        val_texts, val_gold = [t for t, _ in val], gold(val)
        val_gold = [g if g in by_label else None for g in val_gold]
        # With the out-of-scope route, picking it is the right answer for an out-of-scope row.
        fit_gold = [OOS_ROUTE if g is None and args.oos_route else g for g in val_gold]
        print(f"fitting on {len(val)} val rows ({args.fit_method}) ...", file=sys.stderr)
        t0 = time.perf_counter()
        report = router.fit(X=val_texts, y=fit_gold, method=args.fit_method)
        fit_s = time.perf_counter() - t0
        router.confidence_threshold = args.threshold
        picks = _decide(router, scores)
        fitted = _metrics(picks, test_gold)
        result.update(
            fitted=True,
            fit_method=args.fit_method,
            confidence_threshold=args.threshold,
            calibrator=router.calibrator.to_dict(),
            fit_report={
                "n": report.n,
                "val_top1_accuracy_in_scope": round(report.accuracy, 4),
                "ece": round(report.ece, 4),
            },
            fit_seconds=round(fit_s, 2),
            n_val=len(val),
            n_val_oos=sum(g is None for g in val_gold),
            **fitted,
        )
        if not args.no_sweep and not args.oos_route:
            result["val_tuned_threshold"] = _sweep(router, val_texts, val_gold, scores, test_gold)
            router.confidence_threshold = args.threshold
    # Check: the public call agrees with the batched decisions on a sample of test rows.
    step = max(1, len(test) // max(1, args.check_sample))
    sample = list(range(0, len(test), step))[: args.check_sample]
    agree = sum(_nowhere(router(test_texts[i]).name) == picks[i] for i in sample)
    result["public_call_check"] = {"rows": len(sample), "same_decision": agree}
    if sample and agree < 0.99 * len(sample):
        raise Failure(
            f"router(text) disagreed with the batched decisions on {len(sample) - agree} rows"
        )
    return result


def _load_routes(path: Path) -> list[Any]:
    from semantic_router import Route

    data = json.loads(path.read_text())
    try:
        routes = [Route(name=r["name"], utterances=list(r["utterances"])) for r in data["routes"]]
    except (KeyError, TypeError) as e:
        raise Failure(f"{path}: expected {{'routes': [{{'name', 'utterances'}}]}} ({e})") from e
    if not routes:
        raise Failure(f"{path} holds no routes")
    return routes


def worker_latency(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    torch = _limit_threads(args.threads)
    import semantic_router

    routes = _load_routes(args.routes)
    queries: list[str] = json.loads(args.queries.read_text())
    t0 = time.perf_counter()
    encoder = _encoder(args.model)
    model_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    router = _router(encoder, routes)
    build_s = time.perf_counter() - t0
    for q in (queries * (1 + args.warmup // len(queries)))[: args.warmup]:
        router(q)
    times, routed = [], 0
    for r in range(args.repeat):
        for q in queries:
            started = time.perf_counter()
            choice = router(q)
            times.append(time.perf_counter() - started)
            routed += choice.name is not None
        print(f"  pass {r + 1}/{args.repeat}: {len(queries)} queries", file=sys.stderr)
    ms = np.array(times) * 1000
    return {
        "semantic_router_version": semantic_router.__version__,
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "encoder": "semantic_router.encoders.HuggingFaceEncoder",
        "model": args.model,
        "routes": len(routes),
        "utterances": sum(len(r.utterances) for r in routes),
        "threads": torch.get_num_threads(),
        "threads_pinned": args.threads > 0,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "n": len(times),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "max_ms": round(float(ms.max()), 3),
        "routed_share": round(routed / len(times), 4),
        "model_load_seconds": round(model_load_s, 3),
        "build_seconds": round(build_s, 3),
        "timed_call": "router(query) with the default threshold (none), one query per call",
    }


def worker_cold(args: argparse.Namespace) -> dict[str, Any]:
    _limit_threads(1)
    router = _router(_encoder(args.model), _load_routes(args.routes))
    return {"route": router(args.query).name}


def worker_version(_: argparse.Namespace) -> dict[str, Any]:
    import semantic_router
    import torch
    import transformers

    return {
        "semantic_router_version": semantic_router.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python": sys.version.split()[0],
    }


def worker(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="peer_semantic_router.py worker")
    sub = parser.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--train", type=Path, required=True)
    acc.add_argument("--val", type=Path)
    acc.add_argument("--test", type=Path, required=True)
    acc.add_argument("--oos-label", default="oos")
    acc.add_argument("--no-fit", action="store_true")
    acc.add_argument("--fit-method", default="platt")
    acc.add_argument("--threshold", type=float, default=0.5)
    acc.add_argument("--threads", type=int, default=1)
    acc.add_argument("--check-sample", type=int, default=200)
    acc.add_argument("--no-sweep", action="store_true")
    acc.add_argument("--oos-route", action="store_true")
    acc.add_argument("--model", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--routes", type=Path, required=True)
    lat.add_argument("--queries", type=Path, required=True)
    lat.add_argument("--repeat", type=int, default=1)
    lat.add_argument("--warmup", type=int, default=20)
    lat.add_argument("--threads", type=int, default=1)
    lat.add_argument("--model", required=True)
    cold = sub.add_parser("cold")
    cold.add_argument("--routes", type=Path, required=True)
    cold.add_argument("--query", required=True)
    cold.add_argument("--model", required=True)
    sub.add_parser("version")
    args = parser.parse_args(argv)
    commands = {
        "accuracy": worker_accuracy,
        "latency": worker_latency,
        "cold": worker_cold,
        "version": worker_version,
    }
    return commands[args.command](args)


def main() -> None:
    argv = sys.argv[1:]
    in_worker = bool(argv) and argv[0] == "worker"
    # Libraries may print; keep stdout for the one JSON object by pointing fd 1 at stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        result = worker(argv[1:]) if in_worker else outer(argv)
    except Failure as e:
        sys.exit(f"error: {e}")
    except Exception as e:
        if DEBUG:
            raise
        sys.exit(f"error: {type(e).__name__}: {e}".splitlines()[0])
    out.write(json.dumps(result) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
