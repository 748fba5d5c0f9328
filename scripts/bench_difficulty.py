"""The difficulty router on routellm_mmlu (Mixtral-8x7B vs GPT-4 on MMLU), train → test.

    .venv/bin/python scripts/bench_difficulty.py [--strong-share 0.3] [--smoke]

Trains on ../shared/data/routellm_mmlu/train.jsonl only and reports RouteLLM's metrics (APGR,
CPT(50%), CPT(80%); see semroute.tuning.difficulty_metrics) on test.jsonl for: a random router
(mean over seeds), a per-domain prior (each test row scored by its domain's mean gain on train:
it reads the test row's domain, which a router does not have, so it is an oracle), the
predicted-domain prior alone (semroute's domain component: the domain predicted from the
embedding), logistic regression on the frozen embeddings (predicting "the strong model gains",
its C chosen by 5-fold cross-validation on train), and semroute's difficulty router (`semroute
train-difficulty` with its defaults), with a paired bootstrap (the same resampled test prompts
for both) of semroute's APGR minus each baseline's, and the
strong-call share and quality it reaches at the threshold calibrated on train. Then the cost:
scoring one query given its embedding, and `Router.route()` end to end with and without a rule
on `difficulty`. The prompts' embeddings are cached in .bench/difficulty/ (embedding 14,000
prompts takes minutes). Results go to docs/results/difficulty.json and the "difficulty"
section of docs/benchmarks.md; `--smoke` runs on 600 rows of each split and writes nowhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _bench import ROOT, cached_vectors, machine, machine_markdown, require_data, save
from semroute.encoders.base import Embeddings, Encoder, EncoderInfo

CACHE = ROOT / ".bench" / "difficulty"
SEEDS = 20
TIMED = 1000
TIMED_ROUTES = 500


class Cached:
    """An encoder that answers from embeddings made once by the real one (same info)."""

    def __init__(self, info: EncoderInfo, vectors: dict[str, np.ndarray]) -> None:
        self._info = info
        self._vectors = vectors

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode(self, texts: Sequence[str]) -> Embeddings:
        out = np.stack([self._vectors[t] for t in texts]).astype(np.float32)
        return Embeddings(out, np.zeros(len(texts), dtype=bool))


def embeddings(encoder: Encoder, name: str, prompts: list[str], path: Path) -> np.ndarray:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return cached_vectors(
        CACHE / f"{name}-{encoder.info.fingerprint}-{digest}.npy",
        f"{len(prompts)} {name} prompts",
        lambda: encoder.encode(prompts).vectors,
    )


def baselines(
    train: Any, test: Any, x_train: np.ndarray, x_test: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], dict[str, Any]]:
    """Each baseline's metrics on test, its test scores (for the paired bootstrap; the random
    router's: one seed's) and how the logistic regression's C was chosen."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    random_runs = [_row(rng.random(len(test)), test) for _ in range(SEEDS)]
    gain = train.strong - train.weak
    by_domain: dict[str, list[float]] = {}
    for d, g in zip(train.domains, gain, strict=True):
        by_domain.setdefault(d, []).append(g)
    overall = float(gain.mean())
    c, cv = tuned_c(train, x_train)
    lr = LogisticRegression(C=c, max_iter=2000).fit(x_train, gain > 0)
    scores = {
        "random router (one seed)": np.random.default_rng(0).random(len(test)),
        ORACLE: np.array([np.mean(by_domain.get(d, [overall])) for d in test.domains]),
        PREDICTED: predicted_domain_prior(train, x_train, x_test),
        f"logistic regression on the embeddings (C={c:g}, chosen by CV on train)": (
            lr.predict_proba(x_test)[:, 1]
        ),
    }
    metrics = {name: _row(v, test) for name, v in scores.items()}
    random_name = f"random router (mean of {SEEDS} seeds)"
    metrics = {random_name: {k: float(np.mean([r[k] for r in random_runs])) for k in _KEYS}} | {
        k: v for k, v in metrics.items() if not k.startswith("random")
    }
    return metrics, scores, {"lr_c": c, "lr_cv_apgr_by_c": cv}


ORACLE = "per-domain prior (reads the test row's domain: an oracle)"
PREDICTED = "predicted-domain prior alone (semroute's domain component)"
_KEYS = ("apgr", "cpt50", "cpt80")
LR_CS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
CV_FOLDS = 5
BOOTSTRAP = 1000


def _row(scores: np.ndarray, rows: Any) -> dict[str, float]:
    from semroute.tuning.difficulty_metrics import gap_metrics

    m = gap_metrics(scores, rows.weak, rows.strong)
    return {"apgr": m.apgr, "cpt50": m.cpt50, "cpt80": m.cpt80}


def tuned_c(train: Any, x_train: np.ndarray) -> tuple[float, dict[str, float]]:
    """The logistic regression's C with the best out-of-fold APGR on train (5-fold): the test
    split plays no part in the choice."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    from semroute.tuning.difficulty_metrics import gap_metrics

    gain = train.strong - train.weak
    folds = list(KFold(CV_FOLDS, shuffle=True, random_state=0).split(x_train))
    by_c: dict[str, float] = {}
    for c in LR_CS:
        oof = np.zeros(len(x_train))
        for fit, held in folds:
            lr = LogisticRegression(C=c, max_iter=2000).fit(x_train[fit], gain[fit] > 0)
            oof[held] = lr.predict_proba(x_train[held])[:, 1]
        by_c[f"{c:g}"] = gap_metrics(oof, train.weak, train.strong).apgr
    best = max(by_c, key=lambda k: by_c[k])
    return float(best), by_c


def predicted_domain_prior(train: Any, x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The domain component of semroute's model alone, fitted on train: a classifier of the
    domain from the embedding, each domain valued at its (shrunk) mean gain on train. Unlike
    the oracle prior it needs nothing a router does not have."""
    from semroute.index.difficulty import Component
    from semroute.routing.difficulty import component_scores
    from semroute.tuning.difficulty_fit import fit_components

    fitted = {f.name: f for f in fit_components(x_train, train.weak, train.strong, train.domains)}
    domain = fitted["domain"]
    component = Component(domain.type, 1.0, 0.0, 1.0, domain.k, domain.arrays)
    return component_scores(component, np.ascontiguousarray(x_test, dtype=np.float32))


def paired_bootstrap(
    ours: np.ndarray, others: dict[str, np.ndarray], rows: Any, n: int = BOOTSTRAP
) -> dict[str, dict[str, float]]:
    """semroute's APGR minus each baseline's on the same resampled test prompts, ``n`` times:
    the mean difference, its standard deviation and 95% percentile interval. Only the test
    prompts are resampled (the models stay as trained)."""
    from semroute.tuning.difficulty_metrics import apgr, pgr_curve

    rng = np.random.default_rng(1)
    diffs: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(n):
        idx = rng.integers(0, len(ours), len(ours))
        w, q = rows.weak[idx], rows.strong[idx]
        a = apgr(pgr_curve(ours[idx], w, q))
        for name, scores in others.items():
            diffs[name].append(a - apgr(pgr_curve(scores[idx], w, q)))
    out = {}
    for name, d in diffs.items():
        arr = np.array(d)
        out[name] = {
            "mean": float(arr.mean()),
            "sd": float(arr.std(ddof=1)),
            "ci95": [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))],
            "share_above_0": float((arr > 0).mean()),
        }
    return out


def scoring_cost(model: Any, x_test: np.ndarray) -> dict[str, float]:
    from semroute.routing.difficulty import difficulty

    times = []
    for v in x_test[:TIMED]:
        started = time.perf_counter()
        difficulty(model, v[None, :])
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99))}


ROUTES = """\
router:
  default_model: openai/gpt-4o-mini
  tiers: {{premium: [openai/gpt-4o]}}
  difficulty: {model}
routes:
  - name: maths
    utterances: [solve this equation, compute the integral, what is the derivative of x squared]
  - name: history
    utterances: [when did the war end, who was the first emperor, explain the french revolution]
  - name: law
    utterances: [is this contract valid, what does the statute say, explain negligence]
rules:
{rules}
"""


def route_cost(model_dir: Path, prompts: list[str], work: Path) -> dict[str, float]:
    """Median route() latency over distinct prompts, with a rule on difficulty and without
    (the two routers take turns on each prompt, so load on the machine hits both alike)."""
    from semroute.routing.router import Router
    from semroute.tuning.build import build_index

    # Neither rule ever matches, so both routers take the same path once the signals are read:
    # the difference is the cost of the difficulty signal alone.
    rules = {
        "with_difficulty_rule": "  - {name: hard, when: {difficulty: {gt: 2}}, tier: premium}",
        "without": "  - {name: long, when: {input_tokens: {gt: 100000}}, tier: premium}",
    }
    routers = {}
    for name, rule in rules.items():
        folder = work / name
        folder.mkdir()
        (folder / "routes.yaml").write_text(ROUTES.format(model=model_dir, rules=rule))
        build_index(folder, folder / "index")
        routers[name] = Router.load(folder / "index", cache_size=0)
    times: dict[str, list[float]] = {name: [] for name in routers}
    for i, p in enumerate(prompts[: TIMED_ROUTES + 20]):
        for name, router in routers.items():
            started = time.perf_counter()
            router.route(p)
            if i >= 20:  # the first ones warm up
                times[name].append((time.perf_counter() - started) * 1000)
    out = {f"{name}_median_ms": statistics.median(t) for name, t in times.items()}
    # Per prompt, then the median: steadier than the difference of the two medians.
    paired = [a - b for a, b in zip(*times.values(), strict=True)]
    out["difference_ms"] = statistics.median(paired)
    return out


def run(strong_share: float, smoke: bool) -> dict[str, Any]:
    from semroute.config.routefile import DEFAULT_ENCODER, DEFAULT_RUNTIME
    from semroute.encoders.export import load_encoder
    from semroute.routing.difficulty import raw_scores
    from semroute.tuning.difficulty import evaluate_difficulty, load_model, train_difficulty
    from semroute.tuning.outcomes import load_outcomes

    paths = {s: require_data("routellm_mmlu", f"{s}.jsonl") for s in ("train", "test")}
    train, test = (load_outcomes(paths[s]) for s in ("train", "test"))
    encoder = load_encoder(DEFAULT_ENCODER, runtime=DEFAULT_RUNTIME)
    x_train = embeddings(encoder, "train", train.prompts, paths["train"])
    x_test = embeddings(encoder, "test", test.prompts, paths["test"])
    if smoke:
        train, x_train = _head(train, x_train, 600)
        test, x_test = _head(test, x_test, 600)
    cached = Cached(
        encoder.info,
        {
            **dict(zip(train.prompts, x_train, strict=True)),
            **dict(zip(test.prompts, x_test, strict=True)),
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        report = train_difficulty(
            train,
            work / "model",
            encoder=cached,
            runtime=DEFAULT_RUNTIME,
            strong_share=strong_share,
        )
        train_seconds = time.perf_counter() - started
        model = load_model(work / "model")
        ours = evaluate_difficulty(test, model, cached)
        our_scores = raw_scores(model, np.ascontiguousarray(x_test, dtype=np.float32))
        cost = scoring_cost(model, x_test)
        routing = route_cost(work / "model", test.prompts, work)
        model_bytes = sum(f.stat().st_size for f in (work / "model").iterdir())
    metrics, scores, tuning = baselines(train, test, x_train, x_test)
    return {
        "machine": machine(),
        "command": "python scripts/bench_difficulty.py"
        + (f" --strong-share {strong_share}" if strong_share != 0.3 else ""),
        "data": {"train": len(train), "test": len(test), "source": "routellm_mmlu"},
        "target": {"strong_share": strong_share},
        "train_seconds": round(train_seconds, 1),
        "cross_fitted_on_train": report.metrics,
        "baselines": metrics,
        "baseline_tuning": tuning,
        "semroute": ours,
        "apgr_difference": {
            "bootstrap_resamples": BOOTSTRAP,
            "semroute_minus": paired_bootstrap(our_scores, scores, test),
        },
        "scoring_cost": cost,
        "route_cost": routing,
        "model_bytes": model_bytes,
    }


def _head(rows: Any, x: np.ndarray, n: int) -> tuple[Any, np.ndarray]:
    import dataclasses

    return dataclasses.replace(
        rows,
        prompts=rows.prompts[:n],
        weak=rows.weak[:n],
        strong=rows.strong[:n],
        domains=rows.domains[:n] if rows.domains else None,
    ), x[:n]


def markdown(r: dict[str, Any]) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    ours = r["semroute"]
    lines = [
        "## Difficulty router",
        "",
        f"routellm_mmlu: per-question correctness of Mixtral-8x7B (weak) and GPT-4 (strong) on "
        f"MMLU, from RouteLLM's released results; trained on train ({r['data']['train']} rows), "
        f"measured on test ({r['data']['test']} rows). All weak: {pct(ours['weak_quality'])} "
        f"correct; all strong: {pct(ours['strong_quality'])}. APGR is exact (every share "
        "k/n, trapezoids); CPT(x) is the smallest strong-call share whose PGR reaches x.",
        "",
        "| router | APGR | CPT(50%) | CPT(80%) | semroute's APGR minus this one's [95% interval] |",
        "|---|---|---|---|---|",
    ]
    diff = r["apgr_difference"]["semroute_minus"]
    for name, m in r["baselines"].items():
        d = diff.get(name) or diff.get(name.replace(f"mean of {SEEDS} seeds", "one seed"))
        shown = f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else ""
        lines.append(
            f"| {name} | {m['apgr']:.3f} | {pct(m['cpt50'])} | {pct(m['cpt80'])} | {shown} |"
        )
    lines.append(
        f"| **semroute difficulty router** | **{ours['apgr']:.3f}** | **{pct(ours['cpt50'])}** | "
        f"**{pct(ours['cpt80'])}** | |"
    )
    tr = r["cross_fitted_on_train"]
    tuning = r["baseline_tuning"]
    lines += [
        "",
        f"The interval: {r['apgr_difference']['bootstrap_resamples']} paired bootstrap "
        "resamples of the test prompts (each resample scores semroute and the baseline on the "
        "same prompts; the models are not retrained, so training's own variance is not in it), "
        "2.5th to 97.5th percentile. " + verdict(diff) + " The logistic regression's C was "
        "chosen by 5-fold cross-validation on train (out-of-fold APGR "
        + ", ".join(f"C={c}: {a:.3f}" for c, a in tuning["lr_cv_apgr_by_c"].items())
        + f"; C={tuning['lr_c']:g} kept"
        + (", the edge of the grid" if tuning["lr_c"] in (LR_CS[0], LR_CS[-1]) else "")
        + "). The random row's interval uses one seed's scores.",
        "",
        f"Threshold calibrated on train (cross-fitted scores) to {pct(r['target']['strong_share'])} "
        f"strong calls: on test it sends {pct(ours['strong_share'])} to the strong model, for "
        f"{pct(ours['quality'])} correct ({pct(ours['pgr_at_threshold'])} of the gap recovered; "
        f"on train's cross-fitted scores {pct(tr['strong_share'])} and "
        f"{pct(tr['pgr_at_threshold'])}). Training took {r['train_seconds']} s given the "
        "embeddings.",
        "",
        f"Cost per query: scoring difficulty given the embedding {r['scoring_cost']['median_ms']:.3f} "
        f"ms median ({r['scoring_cost']['p99_ms']:.3f} ms p99); `Router.route()` end to end "
        f"(encoder included, query cache off) {r['route_cost']['with_difficulty_rule_median_ms']:.2f}"
        f" ms median with a rule on `difficulty`, {r['route_cost']['without_median_ms']:.2f} ms "
        f"with a rule on another signal (neither rule matches, so the two take the same path "
        f"otherwise; median difference per query {r['route_cost']['difference_ms']:.3f} ms, the "
        "two routers taking turns on each query, on a busy shared machine). Model size "
        f"{(r['model_bytes'] or 0) / 2**20:.1f} MiB.",
        "",
        ROUTELLM_NOTE,
        "",
        machine_markdown(r["machine"]),
        f"Command: `{r['command']}`.",
    ]
    return "\n".join(lines)


def verdict(diff: dict[str, dict[str, Any]]) -> str:
    """What the intervals support, in words: a baseline beaten only where its interval is
    above zero."""
    above = [n for n, d in diff.items() if d["ci95"][0] > 0]
    within = [n for n, d in diff.items() if d["ci95"][0] <= 0 <= d["ci95"][1]]
    below = [n for n, d in diff.items() if d["ci95"][1] < 0]
    out = []
    if above:
        out.append("semroute's APGR is above that of the " + _names(above))
    if within:
        out.append("no difference is shown from the " + _names(within) + " (0 is inside)")
    if below:
        out.append("semroute's APGR is below that of the " + _names(below))
    return "What the intervals show: " + "; ".join(out) + "."


def _names(names: list[str]) -> str:
    return ", ".join(n.split(" (")[0] for n in names)


ROUTELLM_NOTE = """\
RouteLLM's own figures. Their paper (Ong et al. 2024, "RouteLLM: Learning to Route LLMs with
Preference Data", https://arxiv.org/html/2406.18665v4) reports MMLU results for the same model
pair, but its MMLU table could not be retrieved from the sources this benchmark was written
with, so no published figure is quoted here rather than one from memory. How the set-ups
differ, from what could be read: RouteLLM's routers learn from Chatbot Arena human preference
data (which of two models' answers a person preferred), augmented with golden-label data and
LLM-judge labels (the paper's abstract: "leverages human preference data and employs data
augmentation"), and are then evaluated on MMLU, a distribution they were mostly not trained
on; which MMLU split their golden-label data came from could not be confirmed. semroute's
router here learns from per-question correctness on MMLU's own questions (the train half of
the same test set, split by prompt hash, with the prompts RouteLLM marks as contaminated left
out): in-distribution data, which makes the task easier than RouteLLM's. RouteLLM's
evaluation script (routellm/evals/evaluate.py in lm-sys/RouteLLM) computes APGR by trapezoids
over the points of about ten thresholds and CPT by interpolating between them; here every
share k/n is a point, so the two agree up to that discretisation."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strong-share", type=float, default=0.3)
    parser.add_argument("--smoke", action="store_true", help="600 rows a split; write nowhere.")
    args = parser.parse_args()
    results = run(args.strong_share, args.smoke)
    if args.smoke:
        print(
            json.dumps(
                {
                    k: results[k]
                    for k in ("baselines", "baseline_tuning", "semroute", "apgr_difference")
                },
                indent=2,
            )
        )
        return
    save("difficulty", results, markdown(results))


if __name__ == "__main__":
    main()
