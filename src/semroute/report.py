"""Rendering evaluation and calibration results: rich tables for people, a PNG for eyes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from rich.console import Console

    from semroute.evaluate import EvalReport

__all__ = ["plot_evaluation", "print_calibration", "print_evaluation"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_evaluation(console: Console, report: EvalReport, data: Path) -> None:
    from rich.table import Table

    console.print(f"[bold]{data}[/]: {report.n} rows, {report.n_oos} out of scope")
    summary = Table("metric", "value", title="Overall", title_justify="left")
    for label, value in [
        ("accuracy", _pct(report.accuracy)),
        ("in-scope accuracy", _pct(report.in_scope_accuracy)),
        ("closed-set accuracy (no thresholds)", _pct(report.closed_set_accuracy)),
        ("out-of-scope precision", _pct(report.oos_precision)),
        ("out-of-scope recall", _pct(report.oos_recall)),
        ("out-of-scope F1", _pct(report.oos_f1)),
        ("AUROC (in vs out of scope)", _pct(report.auroc)),
        ("coverage (not sent to default)", _pct(report.coverage)),
        (
            "latency p50 / p95",
            f"{report.latency_ms['p50']:.2f} / {report.latency_ms['p95']:.2f} ms",
        ),
    ]:
        summary.add_row(label, value)
    console.print(summary)
    worst = sorted(
        ((n, m) for n, m in report.per_route.items() if m.support),
        key=lambda item: item[1].f1 if item[1].f1 is not None else -1,
    )[:10]
    if worst:
        table = Table(
            "route",
            "precision",
            "recall",
            "F1",
            "rows",
            title="Weakest routes",
            title_justify="left",
        )
        for name, m in worst:
            table.add_row(name, _pct(m.precision), _pct(m.recall), _pct(m.f1), str(m.support))
        console.print(table)
    if report.confused_pairs:
        table = Table("route", "sent to", "rows", title="Most confused", title_justify="left")
        for a, b, n in report.confused_pairs:
            table.add_row(a, b, str(n))
        console.print(table)
    if report.misrouted:
        table = Table(
            "query",
            "label",
            "chosen",
            "top scores",
            title="Some misrouted queries",
            title_justify="left",
        )
        for row in report.misrouted:
            top = ", ".join(f"{k} {v:.2f}" for k, v in row["top_scores"].items())
            table.add_row(row["text"], row["label"], str(row["chosen"] or "(default)"), top)
        console.print(table)


def print_calibration(console: Console, result: dict[str, Any], *, written: bool) -> None:
    from rich.table import Table

    table = Table(
        "metric",
        "before",
        "after",
        title=f"Calibration on {result['data']} ({result['rows']} rows)",
        title_justify="left",
    )
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "coverage"):
        table.add_row(
            key.replace("_", " "), _pct(result["before"][key]), _pct(result["after"][key])
        )
    console.print(table)
    how = (
        f"per-route thresholds (shrinkage {result['shrinkage']:g})"
        if result["per_route"]
        else "one shared threshold"
    )
    objective = result["objective"] + (
        f" (misroute cost {result['misroute_cost']:g})" if result["objective"] == "cost" else ""
    )
    console.print(
        f"objective {objective}: {how}, shared value {result['shared_threshold']:.4f}; "
        f"encoding {result['seconds']['encode']:.1f} s, fitting {result['seconds']['fit']:.2f} s"
    )
    if written:
        console.print(f"[green]Wrote the thresholds into {result['index']}/manifest.json[/]")
    else:
        console.print("[yellow]Dry run: nothing written[/]")


def plot_evaluation(
    report: EvalReport,
    confidence: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    thresholds: npt.NDArray[np.float32],
    path: Path,
) -> None:
    """Two panels: in-scope accuracy vs out-of-scope recall as one shared threshold sweeps,
    with the current thresholds marked; and every route's F1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = confidence.argmax(axis=1)
    best = confidence.max(axis=1)
    ins = truth >= 0
    sweep = np.unique(np.quantile(best, np.linspace(0, 1, 200)))
    in_acc = [((top == truth) & (best >= t))[ins].mean() if ins.any() else np.nan for t in sweep]
    oos_rec = [(best < t)[~ins].mean() if (~ins).any() else np.nan for t in sweep]

    routes = sorted(report.per_route.items(), key=lambda kv: kv[1].f1 or 0.0)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, max(4.5, 0.16 * len(routes))), gridspec_kw={"width_ratios": [1, 1]}
    )
    left.plot(oos_rec, in_acc, color="tab:blue", label="one shared threshold")
    if report.oos_recall is not None and report.in_scope_accuracy is not None:
        left.scatter(
            [report.oos_recall],
            [report.in_scope_accuracy],
            color="tab:red",
            zorder=3,
            label="current thresholds",
        )
    left.set_xlabel("out-of-scope recall")
    left.set_ylabel("in-scope accuracy")
    left.set_title("Threshold trade-off")
    left.grid(alpha=0.3)
    left.legend(loc="lower left")
    right.barh([n for n, _ in routes], [m.f1 or 0.0 for _, m in routes], color="tab:green")
    right.set_xlim(0, 1)
    right.set_xlabel("F1")
    right.set_title("Per-route F1")
    right.tick_params(axis="y", labelsize=max(4, min(9, 600 // max(len(routes), 1))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
