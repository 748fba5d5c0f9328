"""``semroute eval --plot``: the threshold trade-off and every route's F1, drawn with matplotlib
(the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from semroute.tuning.evaluate import EvalReport

__all__ = ["plot_evaluation"]


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


# --- routing, dispatch, logs and indexes --------------------------------------------------------
