"""Fitting thresholds on labelled data by an exact sweep over the observed confidences.

Every objective is evaluated at every distinct confidence the data produces, so the optimum on
the data is found exactly (no grid, no random search). Objectives:

- ``cost`` (default): minimise ``misroute_cost * misroutes + fallbacks``. A misroute is a query
  answered by the wrong route's model (an out-of-scope query routed anywhere included); a
  fallback is an in-scope query sent to the default model. The default ratio of 2 says a wrong
  specialised answer is twice as bad as paying the frontier model for a query a route could
  have taken. Like ``accuracy`` it adds up over rows, so the data's share of out-of-scope
  rows moves it: calibrate on data whose mix resembles the traffic.
- ``accuracy``: maximise overall accuracy.
- ``balanced``: maximise in-scope accuracy + out-of-scope recall (needs out-of-scope rows).
- ``oos-recall``: the lowest threshold catching at least ``target`` of out-of-scope rows.
- ``fallback-rate``: the highest threshold sending at most ``target`` of all rows to the default.

The optimum of such a step function is unstable: on a flat stretch of the objective, a few rows
more or less move it by several hundredths, which on new queries moves out-of-scope recall by
points. So for ``cost``, ``accuracy`` and ``balanced`` the shared threshold is bagged: the mean of
the exact optimum over ``bootstrap`` resamples of the rows (100 by default, with a fixed seed, so
a fit is reproducible; ``bootstrap=0`` gives the optimum on the data itself). On random halves
of CLINC150's validation split it cuts the spread of the fitted threshold by about 40%, with the
same cost on the other half on average (scripts/bench_choices.py, docs/benchmarks.md).

For ``cost`` and ``accuracy``, which add up row by row, a route chosen by at least 10 rows may
get its own threshold, shrunk toward the shared one by ``n / (n + s)`` where ``n`` is how many
rows chose it. 5-fold cross-validation picks ``s`` (∞ meaning one shared threshold) by the
one-standard-error rule, so routes get their own threshold only where the data supports it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from semroute.errors import DataError

__all__ = ["OBJECTIVES", "Fit", "calibrate_index", "fit_thresholds"]

Objective = Literal["cost", "accuracy", "balanced", "oos-recall", "fallback-rate"]
OBJECTIVES: tuple[str, ...] = ("cost", "accuracy", "balanced", "oos-recall", "fallback-rate")
DEFAULT_MISROUTE_COST = 2.0
SHRINKAGE = (0.0, 5.0, 20.0, 50.0, math.inf)
FOLDS = 5
MIN_ROUTE_ROWS = 10
"""Rows that must choose a route before it may have a threshold of its own."""
BOOTSTRAP = 100
"""Resamples whose exact optima are averaged into the shared threshold (bagging)."""
BAGGED = ("cost", "accuracy", "balanced")
MIN_FIT_ROWS = 30
"""Fewer labelled rows than this and calibrate warns that the fit is unreliable."""

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Fit:
    """Fitted thresholds and how they were chosen."""

    thresholds: npt.NDArray[np.float32]
    shared: float
    shrinkage: float
    """Cross-validated shrinkage strength; ∞ means every route uses ``shared``."""
    objective: str
    misroute_cost: float
    target: float | None
    bootstrap: int = 0
    """Resamples bagged into the shared threshold (0: the exact optimum on the data)."""

    def summary(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "misroute_cost": self.misroute_cost if self.objective == "cost" else None,
            "target": self.target,
            "bootstrap": self.bootstrap,
            "shared_threshold": self.shared,
            "per_route": math.isfinite(self.shrinkage),
            "shrinkage": None if math.isinf(self.shrinkage) else self.shrinkage,
            "calibrated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def fit_thresholds(
    confidence: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    *,
    objective: str = "cost",
    misroute_cost: float = DEFAULT_MISROUTE_COST,
    target: float | None = None,
    min_margin: float = 0.0,
    per_route: bool = True,
    bootstrap: int = BOOTSTRAP,
    source: str = "data",
) -> Fit:
    """Fit one threshold per route (possibly all equal) for the given objective.

    ``bootstrap`` resamples are bagged into the shared threshold (0: the exact optimum on
    ``confidence`` itself); see the module docstring.
    """
    n_routes = confidence.shape[1]
    top = np.argmax(confidence, axis=1)
    best = confidence[np.arange(len(confidence)), top].astype(np.float64)
    if n_routes > 1:
        margin = best - np.partition(confidence, -2, axis=1)[:, -2]
        # Ambiguous rows go to the default model whatever the threshold.
        best = np.where(margin >= min_margin, best, -np.inf)
    ok = top == truth
    ins = truth >= 0
    _check(objective, target, ins, source)
    if bootstrap < 0:
        raise DataError(f"bootstrap must be 0 or more, not {bootstrap}", file=source)

    # Targets are quantiles of the data, not optima: only optima are bagged.
    bagged = bootstrap if objective in BAGGED else 0

    def shared_for(rows: BoolArray | slice) -> float:
        return _bagged(best[rows], ok[rows], ins[rows], objective, misroute_cost, target, bagged)

    shared = shared_for(slice(None))
    counts = np.bincount(top, minlength=n_routes)
    if objective not in ("cost", "accuracy") or not per_route or counts.max() < MIN_ROUTE_ROWS:
        return Fit(
            np.full(n_routes, shared, np.float32),
            shared,
            math.inf,
            objective,
            misroute_cost,
            target,
            bagged,
        )
    folds = np.random.default_rng(0).integers(0, FOLDS, len(best))
    fold_shared = [shared_for(folds != f) for f in range(FOLDS)]
    per_fold: dict[float, FloatArray] = {}
    for s in SHRINKAGE:
        values = np.zeros(FOLDS)
        for f, g in enumerate(fold_shared):
            fit_rows, held = folds != f, folds == f
            th = _per_route(
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
    chosen = _one_standard_error(per_fold)
    thresholds = _per_route(best, ok, ins, top, n_routes, shared, chosen, objective, misroute_cost)
    return Fit(
        thresholds.astype(np.float32), shared, chosen, objective, misroute_cost, target, bagged
    )


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


def _check(objective: str, target: float | None, ins: BoolArray, source: str) -> None:
    if objective not in OBJECTIVES:
        raise DataError(
            f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}", file=source
        )
    if objective in ("balanced", "oos-recall") and ins.all():
        raise DataError(
            f"objective {objective!r} needs out-of-scope rows and this data has none; "
            "add some or use --objective cost",
            file=source,
        )
    if objective in ("oos-recall", "fallback-rate") and (target is None or not 0 <= target <= 1):
        raise DataError(f"objective {objective!r} needs --target between 0 and 1", file=source)


def _bagged(
    best: FloatArray,
    ok: BoolArray,
    ins: BoolArray,
    objective: str,
    misroute_cost: float,
    target: float | None,
    bootstrap: int,
) -> float:
    """The mean of :func:`_sweep`'s optimum over ``bootstrap`` resamples of the rows."""
    if bootstrap == 0 or len(best) < 2:
        return _sweep(best, ok, ins, objective, misroute_cost, target)
    finite = best[np.isfinite(best)]
    # A resample whose optimum is "route nothing" means above every row, not just above the
    # resample's own highest row.
    nothing = _above(float(finite.max())) if len(finite) else 1.0
    rng = np.random.default_rng(0)
    draws = [
        _sweep(best[i], ok[i], ins[i], objective, misroute_cost, target, nothing=nothing)
        for i in (rng.integers(0, len(best), len(best)) for _ in range(bootstrap))
    ]
    return float(np.mean(draws))


def _above(confidence: float) -> float:
    """The next float32 above ``confidence``: thresholds are stored and compared as float32,
    where a float64 step above would round back down."""
    return float(np.nextafter(np.float32(confidence), np.float32(np.inf)))


def _sweep(
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


def _per_route(
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
        own = _sweep(best[rows], ok[rows], ins[rows], objective, misroute_cost, None)
        thresholds[r] = (n * own + shrinkage * shared) / (n + shrinkage)
    return thresholds


def _value(
    routed: BoolArray, ok: BoolArray, ins: BoolArray, objective: str, misroute_cost: float
) -> float:
    if objective == "cost":
        return -float(misroute_cost * (routed & ~ok).sum() + (~routed & ins).sum())
    return float((routed & ok).sum() + (~routed & ~ins).sum())


def apply_to_manifest(
    manifest: dict[str, Any],
    fit: Fit,
    *,
    data: str,
    rows: int,
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    """A copy of ``manifest`` carrying the fitted thresholds and a record of the calibration."""
    out = dict(manifest)
    out["routes"] = [
        # Full precision: a fitted threshold sits exactly on an observed confidence, and
        # rounding it up would send that row to the default model.
        dict(r, threshold=float(t))
        for r, t in zip(manifest["routes"], fit.thresholds, strict=True)
    ]
    out["calibration"] = {
        **fit.summary(),
        "data": data,
        "rows": rows,
        "before": before,
        "after": after,
    }
    return out


def headline(report: Any) -> dict[str, Any]:
    """The few numbers calibrate prints and records, from an :class:`EvalReport`."""
    keys: Sequence[str] = (
        "accuracy",
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "coverage",
    )
    return {k: None if getattr(report, k) is None else round(getattr(report, k), 4) for k in keys}


def support(
    truth: npt.NDArray[np.int64], routes: Sequence[str], oos_label: str, source: str
) -> list[str]:
    """Why thresholds fitted on these rows should not be trusted (empty when nothing stands out).

    Raises :class:`DataError` when no row is in scope: every objective then favours routing
    nothing, and writing that to every route would send all traffic to the default model.
    """
    n, n_in = len(truth), int((truth >= 0).sum())
    if n_in == 0:
        raise DataError(
            f"all {n} rows are labelled {oos_label!r} (out of scope), so no row shows a route "
            "taking a query and any fit would send every query to the default model; add rows "
            "labelled with route names (the thresholds were left unchanged)",
            file=source,
        )
    doubts = []
    if n < MIN_FIT_ROWS:
        doubts.append(
            f"only {n} row{'' if n == 1 else 's'}: thresholds fitted on so few move with every row added or removed; "
            f"label at least {MIN_FIT_ROWS} (better, a few per route) before relying on them"
        )
    missing = [name for r, name in enumerate(routes) if not (truth == r).any()]
    if missing:
        listed = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        doubts.append(
            f"{len(missing)} of {len(routes)} routes have no rows ({listed}): their thresholds "
            "are fitted on other routes' rows; add rows for them"
        )
    if n_in == n:
        doubts.append(
            f"no out-of-scope rows ({oos_label!r}): nothing shows the fit what the default model "
            "should get, so it only weighs routes against each other and may set thresholds too "
            "low to turn unrelated queries away; add out-of-scope rows in the share your "
            "traffic has"
        )
    return doubts


def calibrate_index(
    index_dir: str | Path | None,
    data_file: str | Path,
    *,
    objective: str = "cost",
    misroute_cost: float = DEFAULT_MISROUTE_COST,
    target: float | None = None,
    per_route: bool = True,
    bootstrap: int = BOOTSTRAP,
    oos_label: str = "oos",
    write: bool = True,
) -> dict[str, Any]:
    """Fit thresholds for the index on labelled data; write them into its manifest.

    Data with no in-scope row is refused (:class:`DataError`). Data too thin to trust the fit
    is fitted, with the reasons to doubt it listed in the result's ``warnings``.
    """
    from semroute.index.store import read_manifest, write_manifest
    from semroute.routing.router import Router
    from semroute.tuning.build import build_lock
    from semroute.tuning.evaluate import load_labelled, metrics

    router = Router.load(index_dir)
    data = load_labelled(data_file)
    names = [r.name for r in router.routes]
    truth = data.truth(names, oos_label)
    doubts = support(truth, names, oos_label, str(data_file))
    started = time.perf_counter()
    scores = router.score(data.texts)
    encoded = time.perf_counter()
    fit = fit_thresholds(
        scores.confidence,
        truth,
        objective=objective,
        misroute_cost=misroute_cost,
        target=target,
        min_margin=router.min_margin,
        per_route=per_route,
        bootstrap=bootstrap,
        source=str(data_file),
    )
    before = metrics(scores.confidence, truth, router.thresholds, router.min_margin, names)
    after = metrics(scores.confidence, truth, fit.thresholds, router.min_margin, names)
    fitted = time.perf_counter()
    result = {
        "index": str(router.index.path),
        **fit.summary(),
        "data": str(data_file),
        "rows": len(truth),
        "out_of_scope_rows": int((truth < 0).sum()),
        "before": headline(before),
        "after": headline(after),
        "thresholds": {n: float(t) for n, t in zip(names, fit.thresholds, strict=True)},
        "seconds": {"encode": round(encoded - started, 3), "fit": round(fitted - encoded, 3)},
        "warnings": doubts,
    }
    if write:
        path = router.index.path
        with build_lock(path):
            manifest = read_manifest(path)
            if manifest.get("built_at") != router.index.manifest.get("built_at"):
                raise DataError(
                    f"{path} was rebuilt while calibrating; run calibrate again", file=data_file
                )
            write_manifest(
                path,
                apply_to_manifest(
                    manifest,
                    fit,
                    data=str(data_file),
                    rows=len(truth),
                    before=result["before"],
                    after=result["after"],
                ),
            )
    return result
