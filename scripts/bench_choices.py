"""The measurements behind semroute's fixed choices, on CLINC150's train and validation splits.

    .venv/bin/python scripts/bench_choices.py [--splits 50] [--work /tmp/semroute-bench-choices]

- int8 against fp32: the cosine between the `onnx-int8` and `onnx` (fp32) vectors of every
  CLINC150 validation and test text (the README's "mean cosine to it");
- the head (semroute.index.head): logistic regression's C and the weight of out-of-scope examples,
  over a small grid, then the hybrid weight (semroute.scoring.HYBRID_WEIGHT) at the chosen
  head. Each is fitted on `train` and judged on `val`, at the shared threshold that minimises
  the default cost objective on `val` (misroute cost 2, no bagging): that operating point
  is what selection looks at, so the figures are in-sample for the threshold; `test` is
  never touched;
- bagging (semroute.tuning.calibrate): `val` is split into random halves; a shared threshold is fitted
  on one half, exactly (`bootstrap=0`) and bagged (the default, 100 resamples), and its cost
  is measured on the other half. Reported: the spread of fitted thresholds over the splits and
  the held-out cost of each.

Default encoder (all-MiniLM-L6-v2) in the default `onnx-int8` runtime unless said otherwise.
Results go to docs/results/choices.json and the "choices" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from _bench import cached_vectors, machine, machine_markdown, require_data, save

Array = npt.NDArray[np.float32]
C_GRID = (1.0, 10.0, 100.0)
OOS_WEIGHT_GRID = (1.0, 3.0, 10.0)
HYBRID_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def read(split: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in require_data("clinc150", f"{split}.jsonl").open()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def encode(runtime: str, texts: list[str], work: Path, name: str) -> Array:
    """Vectors of ``texts``, kept in ``work`` so a second run skips the encoder."""
    from semroute.config.routes import DEFAULT_ENCODER
    from semroute.encoders.export import load_encoder

    return cached_vectors(
        work / f"{name}-{runtime}.npy",
        f"{len(texts)} {name} texts ({runtime})",
        lambda: load_encoder(DEFAULT_ENCODER, runtime=runtime).encode(texts).vectors,
    )


def int8_cosine(work: Path) -> dict[str, Any]:
    texts = read("val")[0] + read("test")[0]
    int8 = encode("onnx-int8", texts, work, "val+test")
    fp32 = encode("onnx", texts, work, "val+test")
    cos = np.sum(int8 * fp32, axis=1)  # both L2-normalised
    return {
        "texts": len(texts),
        "mean": round(float(cos.mean()), 4),
        "median": round(float(np.median(cos)), 4),
        "p1": round(float(np.percentile(cos, 1)), 4),
        "min": round(float(cos.min()), 4),
    }


class Data:
    """CLINC150 train vectors by class and val vectors with their truth, for the head grid."""

    def __init__(self, work: Path) -> None:
        train_texts, train_labels = read("train")
        val_texts, val_labels = read("val")
        self.routes = sorted({lab for lab in train_labels if lab != "oos"})
        index = {name: i for i, name in enumerate(self.routes)}
        n = len(self.routes)
        self.train = encode("onnx-int8", train_texts, work, "train")
        self.labels = np.array([index.get(lab, n) for lab in train_labels], dtype=np.int64)
        self.val = encode("onnx-int8", val_texts, work, "val")
        self.truth = np.array([index.get(lab, -1) for lab in val_labels], dtype=np.int64)
        # Similarity of each val row to each route's closest train example (routes only).
        sims = self.val @ self.train[self.labels < n].T
        owner = self.labels[self.labels < n]
        self.nearest = np.full((len(self.val), n), -1.0, dtype=np.float32)
        for r in range(n):
            self.nearest[:, r] = sims[:, owner == r].max(axis=1)

    def probabilities(self, c: float, oos_weight: float) -> Array:
        """semroute.head.fit_head with C and the out-of-scope weight as parameters."""
        from sklearn.linear_model import LogisticRegression

        from semroute.index.head import MAX_ITER, Head

        n = len(self.routes)
        weights = np.where(self.labels >= n, oos_weight, 1.0)
        model = LogisticRegression(C=c, max_iter=MAX_ITER)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lbfgs failed to converge.*")
            warnings.filterwarnings("ignore", message=".*max_iter.*")
            model.fit(self.train, self.labels, sample_weight=weights)
        head = Head(model.coef_.astype(np.float32), model.intercept_.astype(np.float32), n)
        return head.probabilities(self.val)


def judge(conf: Array, truth: npt.NDArray[np.int64], routes: list[str]) -> dict[str, Any]:
    """Metrics at the shared threshold minimising the default cost on these rows."""
    from semroute.tuning.calibrate import fit_thresholds
    from semroute.tuning.evaluate import metrics

    fit = fit_thresholds(conf, truth, per_route=False, bootstrap=0)
    report = metrics(conf, truth, fit.thresholds, 0.0, routes)
    return {
        "threshold": round(fit.shared, 4),
        "cost_per_row": round(cost(conf, truth, fit.shared), 4),
        "in_scope_accuracy": report.in_scope_accuracy,
        "oos_recall": report.oos_recall,
        "accuracy": report.accuracy,
        "closed_set_accuracy": report.closed_set_accuracy,
        "auroc": report.auroc,
    }


def cost(conf: Array, truth: npt.NDArray[np.int64], threshold: float) -> float:
    """calibrate's default objective per row: 2 x misroutes + fallbacks."""
    from semroute.routing.rule import choose
    from semroute.tuning.calibrate import DEFAULT_MISROUTE_COST

    chosen = choose(conf, np.full(conf.shape[1], threshold, dtype=np.float32), 0.0)
    misroutes = ((chosen >= 0) & (chosen != truth)).sum()
    fallbacks = ((chosen < 0) & (truth >= 0)).sum()
    return float(DEFAULT_MISROUTE_COST * misroutes + fallbacks) / len(truth)


def head_grid(data: Data) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Array]:
    from semroute.index.head import OOS_WEIGHT, C
    from semroute.routing.scoring import HYBRID_WEIGHT

    rows, shipped = [], None
    for c in C_GRID:
        for w in OOS_WEIGHT_GRID:
            started = time.perf_counter()
            p = data.probabilities(c, w)
            conf = HYBRID_WEIGHT * p + (1 - HYBRID_WEIGHT) * data.nearest
            row = {"C": c, "oos_weight": w, **judge(conf, data.truth, data.routes)}
            row["fit_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            if (c, w) == (C, OOS_WEIGHT):
                shipped = p
    if shipped is None:
        shipped = data.probabilities(C, OOS_WEIGHT)
    hybrid = []
    for h in HYBRID_GRID:
        conf = h * shipped + (1 - h) * data.nearest
        hybrid.append({"hybrid_weight": h, **judge(conf, data.truth, data.routes)})
        print(json.dumps(hybrid[-1]), file=sys.stderr)
    return rows, hybrid, shipped


def bagging(data: Data, shipped: Array, splits: int) -> dict[str, Any]:
    """Exact against bagged shared thresholds, fitted on random halves of val."""
    from semroute.routing.scoring import HYBRID_WEIGHT
    from semroute.tuning.calibrate import BOOTSTRAP, fit_thresholds

    conf = HYBRID_WEIGHT * shipped + (1 - HYBRID_WEIGHT) * data.nearest
    rng = np.random.default_rng(0)
    fitted: dict[str, list[float]] = {"exact": [], "bagged": []}
    held_out: dict[str, list[float]] = {"exact": [], "bagged": []}
    for _ in range(splits):
        order = rng.permutation(len(conf))
        a, b = order[: len(order) // 2], order[len(order) // 2 :]
        for name, boot in (("exact", 0), ("bagged", BOOTSTRAP)):
            fit = fit_thresholds(conf[a], data.truth[a], per_route=False, bootstrap=boot)
            fitted[name].append(fit.shared)
            held_out[name].append(cost(conf[b], data.truth[b], fit.shared))
    spread = {k: float(np.std(v, ddof=1)) for k, v in fitted.items()}
    bagged_lower = sum(
        bg < ex - 1e-12 for ex, bg in zip(held_out["exact"], held_out["bagged"], strict=True)
    )
    bagged_higher = sum(
        bg > ex + 1e-12 for ex, bg in zip(held_out["exact"], held_out["bagged"], strict=True)
    )
    return {
        "splits": splits,
        "bootstrap": BOOTSTRAP,
        "threshold_sd": {k: round(v, 4) for k, v in spread.items()},
        "spread_reduction": round(1 - spread["bagged"] / spread["exact"], 3),
        "threshold_mean": {k: round(float(np.mean(v)), 4) for k, v in fitted.items()},
        "held_out_cost_mean": {k: round(float(np.mean(v)), 4) for k, v in held_out.items()},
        "held_out_cost_sd": {k: round(float(np.std(v, ddof=1)), 4) for k, v in held_out.items()},
        "bagged_lower_cost_splits": bagged_lower,
        "bagged_higher_cost_splits": bagged_higher,
    }


def pct(x: float | None) -> str:
    return "\u2013" if x is None else f"{100 * x:.1f}"


def markdown(r: dict[str, Any]) -> str:
    from semroute.index.head import OOS_WEIGHT, C
    from semroute.routing.scoring import HYBRID_WEIGHT

    cos, bag = r["int8_cosine"], r["bagging"]
    cols = "| cost / row | threshold | in-scope accuracy | out-of-scope recall | accuracy | closed-set | AUROC |"
    rule = "|---:|---:|---:|---:|---:|---:|---:|"

    def cells(x: dict[str, Any]) -> str:
        return (
            f"{x['cost_per_row']:.4f} | {x['threshold']:.3f} | {pct(x['in_scope_accuracy'])} | "
            f"{pct(x['oos_recall'])} | {pct(x['accuracy'])} | "
            f"{pct(x['closed_set_accuracy'])} | {pct(x['auroc'])} |"
        )

    out = [
        "## Choices: int8 fidelity, the head, the hybrid weight, bagging",
        "",
        f"`.venv/bin/python scripts/bench_choices.py --splits {bag['splits']}`: CLINC150, "
        "default encoder in the `onnx-int8` runtime. The head and hybrid rows are fitted on "
        "`train` and judged on `val` (3,000 in-scope, 100 out-of-scope rows) at the shared "
        "threshold minimising the default cost (2 per misroute, 1 per fallback) on `val` "
        "itself, so they compare choices rather than predict test figures; `test` is not used "
        "for any choice.",
        "",
        f"**int8 against fp32.** Over the {cos['texts']:,} CLINC150 validation and test texts, "
        f"the cosine between a text's `onnx-int8` and `onnx` (fp32) vectors has mean "
        f"{cos['mean']:.4f}, median {cos['median']:.4f}, 1st percentile {cos['p1']:.4f}, "
        f"minimum {cos['min']:.4f}.",
        "",
        f"**The head** (logistic regression; hybrid weight {HYBRID_WEIGHT}). semroute ships "
        f"C = {C:g} and out-of-scope weight {OOS_WEIGHT:g}.",
        "",
        f"| C | out-of-scope weight {cols}",
        f"|---:|---:{rule}",
    ]
    for x in r["head"]:
        out.append(f"| {x['C']:g} | {x['oos_weight']:g} | {cells(x)}")
    out += [
        "",
        f"**The hybrid weight** (share of the head's probability; the rest is similarity to "
        f"the route's closest example), head at C = {C:g}, weight {OOS_WEIGHT:g}. semroute "
        f"ships {HYBRID_WEIGHT}.",
        "",
        f"| hybrid weight {cols}",
        f"|---:{rule}",
    ]
    for x in r["hybrid"]:
        out.append(f"| {x['hybrid_weight']:g} | {cells(x)}")
    ex, bg = "exact", "bagged"
    out += [
        "",
        f"**Bagging.** `val` split into random halves {bag['splits']} times (seed 0); on one "
        "half a shared threshold is fitted exactly (`--bootstrap 0`) and bagged (the mean over "
        f"{bag['bootstrap']} bootstrap resamples, the default); cost is measured on the other "
        "half.",
        "",
        "| fit | threshold mean | threshold SD over splits | held-out cost / row, mean (SD) |",
        "|---|---:|---:|---:|",
        f"| exact | {bag['threshold_mean'][ex]:.4f} | {bag['threshold_sd'][ex]:.4f} | "
        f"{bag['held_out_cost_mean'][ex]:.4f} ({bag['held_out_cost_sd'][ex]:.4f}) |",
        f"| bagged | {bag['threshold_mean'][bg]:.4f} | {bag['threshold_sd'][bg]:.4f} | "
        f"{bag['held_out_cost_mean'][bg]:.4f} ({bag['held_out_cost_sd'][bg]:.4f}) |",
        "",
        f"Bagging cuts the threshold's spread by {100 * bag['spread_reduction']:.0f}%; its "
        f"held-out cost is lower on {bag['bagged_lower_cost_splits']} splits and higher on "
        f"{bag['bagged_higher_cost_splits']} of {bag['splits']}.",
        "",
        machine_markdown(r["machine"]),
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path("/tmp/semroute-bench-choices"))
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "int8_cosine": int8_cosine(args.work)}
    print(json.dumps(results["int8_cosine"]), file=sys.stderr)
    data = Data(args.work)
    results["head"], results["hybrid"], shipped = head_grid(data)
    results["bagging"] = bagging(data, shipped, args.splits)
    save("choices", results, markdown(results))


if __name__ == "__main__":
    main()
