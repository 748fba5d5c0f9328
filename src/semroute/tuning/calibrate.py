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
a fit is reproducible; ``bootstrap=0`` gives the optimum on the data itself). Fitted on one
half of a labelled set, the bagged threshold moves less from half to half, at the same cost on
the other half on average (scripts/bench_choices.py measures it; docs/benchmarks.md).

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
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from semroute.errors import DataError
from semroute.files import atomic_write
from semroute.index.drift import DRIFT_FILE, DriftReference, encode_reference, reference_of
from semroute.routing.rule import choose, contenders
from semroute.tuning.sweep import (
    MIN_ROUTE_ROWS,
    BoolArray,
    bagged_optimum,
    choose_shrinkage,
    per_route_thresholds,
)

if TYPE_CHECKING:
    from semroute.index.store import RouteIndex

__all__ = ["OBJECTIVES", "Fit", "Objective", "calibrate_index", "fit_thresholds"]

Objective = Literal["cost", "accuracy", "balanced", "oos-recall", "fallback-rate"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
DEFAULT_MISROUTE_COST = 2.0
BOOTSTRAP = 100
"""Resamples whose exact optima are averaged into the shared threshold (bagging)."""
BAGGED = ("cost", "accuracy", "balanced")
MIN_FIT_ROWS = 30
"""Fewer labelled rows than this and calibrate warns that the fit is unreliable."""


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
    objective: Objective = "cost",
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
    # The router's own rule: a row is routed exactly when best >= its route's threshold.
    top, best = contenders(confidence, min_margin)
    ok = top == truth
    ins = truth >= 0
    _check(objective, target, misroute_cost, ins, source)
    if bootstrap < 0:
        raise DataError(f"bootstrap must be 0 or more, not {bootstrap}", file=source)

    # Targets are quantiles of the data, not optima: only optima are bagged.
    bagged = bootstrap if objective in BAGGED else 0

    def shared_for(rows: BoolArray | slice) -> float:
        return bagged_optimum(
            best[rows], ok[rows], ins[rows], objective, misroute_cost, target, bagged
        )

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
    chosen = choose_shrinkage(best, ok, ins, top, n_routes, shared_for, objective, misroute_cost)
    thresholds = per_route_thresholds(
        best, ok, ins, top, n_routes, shared, chosen, objective, misroute_cost
    )
    return Fit(
        thresholds.astype(np.float32), shared, chosen, objective, misroute_cost, target, bagged
    )


def _check(
    objective: str, target: float | None, misroute_cost: float, ins: BoolArray, source: str
) -> None:
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
    if not (isinstance(misroute_cost, int | float) and 0 < misroute_cost < math.inf):
        raise DataError(
            f"the misroute cost must be a number above 0, not {misroute_cost!r}", file=source
        )


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
    objective: Objective = "cost",
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
    from semroute.routing.router import Router
    from semroute.tuning.evaluate import in_index_doubts, load_labelled, metrics

    router = Router.load(index_dir)
    data = load_labelled(data_file)
    names = [r.name for r in router.routes]
    truth = data.truth(names, oos_label)
    doubts = support(truth, names, oos_label, str(data_file)) + in_index_doubts(router, data)
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
        routed = choose(scores.confidence, fit.thresholds, router.min_margin)
        reference = reference_of(scores.confidence, routed, names)
        _write_fit(router.index, fit, data_file, len(truth), result, reference)
    return result


def _write_fit(
    index: RouteIndex,
    fit: Fit,
    data_file: str | Path,
    rows: int,
    result: dict[str, Any],
    reference: DriftReference,
) -> None:
    """Write the fitted thresholds into the index's manifest, and the drift reference beside it
    (see :mod:`semroute.index.drift`), unless the index was rebuilt meanwhile."""
    from semroute.index.manifest import Manifest
    from semroute.tuning.publish import build_lock

    path = index.path
    with build_lock(path):
        manifest = Manifest.read(path)
        if manifest.built_at != index.manifest.built_at:
            raise DataError(
                f"{path} was rebuilt while calibrating; run calibrate again", file=data_file
            )
        record = {
            **fit.summary(),
            "data": str(data_file),
            "rows": rows,
            "before": result["before"],
            "after": result["after"],
        }
        data, digest = encode_reference(reference)
        entry = {"file": DRIFT_FILE, "rows": reference.rows, "calibrated_at": _now()}
        fitted = manifest.with_thresholds(fit.thresholds.tolist(), record, path)
        fitted = fitted.with_drift(entry, digest, path)
        # Only once the new manifest is known to be valid: drift.json is checksummed by the
        # manifest, so a new one beside the old manifest would leave the index unloadable.
        drift = path / DRIFT_FILE
        kept = drift.read_bytes() if drift.is_file() else None
        atomic_write(drift, data)
        try:
            fitted.write(path)
        except BaseException:
            if kept is None:
                drift.unlink(missing_ok=True)
            else:
                atomic_write(drift, kept)
            raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
