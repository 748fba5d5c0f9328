"""Exact threshold sweeps: the optimum of an objective over every distinct confidence observed.

The building blocks of :mod:`semroute.tuning.calibrate`: the optimum on the rows themselves,
its mean over bootstrap resamples, per-route thresholds shrunk toward the shared one, and the
cross-validated choice of how strongly to shrink.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["bagged_optimum", "choose_shrinkage", "optimum", "per_route_thresholds"]

SHRINKAGE = (0.0, 5.0, 20.0, 50.0, math.inf)
FOLDS = 5
MIN_ROUTE_ROWS = 10
"""Rows that must choose a route before it may have a threshold of its own."""

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def choose_shrinkage(
    best: FloatArray,
    ok: BoolArray,
    ins: BoolArray,
    top: npt.NDArray[np.int64],
    n_routes: int,
    shared_for: Callable[[BoolArray], float],
    objective: str,
    misroute_cost: float,
) -> float:
    """The shrinkage toward the shared threshold that 5-fold cross-validation supports, by the
    one-standard-error rule (∞: one shared threshold)."""
    folds = np.random.default_rng(0).integers(0, FOLDS, len(best))
    fold_shared = [shared_for(folds != f) for f in range(FOLDS)]
    per_fold: dict[float, FloatArray] = {}
    for s in SHRINKAGE:
        values = np.zeros(FOLDS)
        for f, g in enumerate(fold_shared):
            fit_rows, held = folds != f, folds == f
            th = per_route_thresholds(
                best[fit_rows],
                ok[fit_rows],
                ins[fit_rows],
                top[fit_rows],
                n_routes,
                g,
                s,
                objective,
                misroute_cost,
            )
            values[f] = _value(
                best[held] >= th[top[held]], ok[held], ins[held], objective, misroute_cost
            )
        per_fold[s] = values
    return _one_standard_error(per_fold)


def _one_standard_error(per_fold: dict[float, FloatArray]) -> float:
    """The simplest model whose cross-validated value is within one standard error of the best
    (the usual guard against choosing a complex model on noise). Simplest first: one shared
    threshold (∞), then ever weaker shrinkage."""
    totals = {s: float(v.sum()) for s, v in per_fold.items()}
    best = max(totals, key=lambda s: totals[s])
    spread = float(np.std(per_fold[best], ddof=1) * np.sqrt(len(per_fold[best])))
    for s in sorted(per_fold, reverse=True):  # inf, 50, 20, 5, 0
        if totals[s] >= totals[best] - spread:
            return s
    return best


def bagged_optimum(
    best: FloatArray,
    ok: BoolArray,
    ins: BoolArray,
    objective: str,
    misroute_cost: float,
    target: float | None,
    bootstrap: int,
) -> float:
    """The mean of :func:`optimum`'s optimum over ``bootstrap`` resamples of the rows."""
    if bootstrap == 0 or len(best) < 2:
        return optimum(best, ok, ins, objective, misroute_cost, target)
    finite = best[np.isfinite(best)]
    # A resample whose optimum is "route nothing" means above every row, not just above the
    # resample's own highest row.
    nothing = _above(float(finite.max())) if len(finite) else 1.0
    rng = np.random.default_rng(0)
    draws = [
        optimum(best[i], ok[i], ins[i], objective, misroute_cost, target, nothing=nothing)
        for i in (rng.integers(0, len(best), len(best)) for _ in range(bootstrap))
    ]
    return float(np.mean(draws))


def _above(confidence: float) -> float:
    """The next float32 above ``confidence``: thresholds are stored and compared as float32,
    where a float64 step above would round back down."""
    return float(np.nextafter(np.float32(confidence), np.float32(np.inf)))


def optimum(
    best: FloatArray,
    ok: BoolArray,
    ins: BoolArray,
    objective: str,
    misroute_cost: float,
    target: float | None,
    *,
    nothing: float | None = None,
) -> float:
    """The best threshold for rows with these top confidences: exact over every distinct value.
    ``nothing`` is the threshold that routes nothing (default: just above the highest row)."""
    finite = np.isfinite(best)
    candidates = np.unique(best[finite])
    if len(candidates) == 0:
        return 1.0 if nothing is None else nothing
    order = np.argsort(best, kind="stable")
    s, ok_s, ins_s = best[order], ok[order], ins[order]
    cut = np.searchsorted(s, candidates, side="left")  # rows cut: are routed
    cut = np.append(cut, len(s))  # one more candidate: route nothing
    if nothing is None:
        nothing = _above(float(candidates[-1]))
    thresholds = np.append(candidates, np.float64(nothing))

    # Suffix sums over routed rows, prefix sums over rows sent to the default model.
    def suffix(x: BoolArray) -> FloatArray:
        return np.append(np.cumsum(x[::-1])[::-1], 0).astype(np.float64)

    def prefix(x: BoolArray) -> FloatArray:
        return np.append(0, np.cumsum(x)).astype(np.float64)

    routed_ok, routed_bad = suffix(ok_s)[cut], suffix(~ok_s)[cut]
    fallback_in, fallback_oos = prefix(ins_s)[cut], prefix(~ins_s)[cut]
    n, n_in, n_oos = len(s), max(int(ins.sum()), 1), max(int((~ins).sum()), 1)
    if objective == "cost":
        value = -(misroute_cost * routed_bad + fallback_in)
    elif objective == "accuracy":
        value = routed_ok + fallback_oos
    elif objective == "balanced":
        value = routed_ok / n_in + fallback_oos / n_oos
    elif objective == "oos-recall":
        assert target is not None
        meets = fallback_oos / n_oos >= target - 1e-12
        return float(thresholds[np.argmax(meets)]) if meets.any() else float(thresholds[-1])
    else:  # fallback-rate: the highest threshold within the budget
        assert target is not None
        within = np.flatnonzero((fallback_in + fallback_oos) / n <= target + 1e-12)
        return float(thresholds[within[-1]]) if len(within) else float(thresholds[0])
    return float(thresholds[int(np.argmax(value))])


def per_route_thresholds(
    best: FloatArray,
    ok: BoolArray,
    ins: BoolArray,
    top: npt.NDArray[np.int64],
    n_routes: int,
    shared: float,
    shrinkage: float,
    objective: str,
    misroute_cost: float,
) -> FloatArray:
    thresholds = np.full(n_routes, shared, dtype=np.float64)
    if math.isinf(shrinkage):
        return thresholds
    for r in np.unique(top):
        rows = top == r
        n = int(rows.sum())
        if n < MIN_ROUTE_ROWS:
            continue
        own = optimum(best[rows], ok[rows], ins[rows], objective, misroute_cost, None)
        thresholds[r] = (n * own + shrinkage * shared) / (n + shrinkage)
    return thresholds


def _value(
    routed: BoolArray, ok: BoolArray, ins: BoolArray, objective: str, misroute_cost: float
) -> float:
    if objective == "cost":
        return -float(misroute_cost * (routed & ~ok).sum() + (~routed & ins).sum())
    return float((routed & ok).sum() + (~routed & ~ins).sum())
