"""RouteLLM's metrics for a router between a weak and a strong model (Ong et al. 2024,
arXiv 2406.18665), as pure functions over arrays.

Each row has the weak and the strong model's quality (1/0 correctness or a judge score in
[0, 1]) and a router score: the higher, the more the row is thought to need the strong model.
Sending the ``k`` highest-scored rows to the strong model gives a quality; over ``k = 0..n``
this traces quality against the share of strong-model calls ``k / n``.

- PGR (performance gap recovered) at a share: ``(q - q_weak) / (q_strong - q_weak)``, where
  ``q_weak`` / ``q_strong`` are the qualities of sending every row to the weak / strong model.
- APGR: the area under PGR over shares 0..100%. Here it is exact: every ``k = 0..n`` is a point
  of the curve and the area is the trapezoidal rule over them (RouteLLM averages PGR over a
  grid of shares; with ``n`` points the two agree to within ``1/n``).
- CPT(x): the smallest share of strong calls whose PGR reaches ``x``.

Rows with equal scores cannot be ordered by the router: within a tie the curve is the
expectation over the tie's orders, a straight line from the quality before the tie to the one
after it. So a constant score is exactly a random router (APGR 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "GapMetrics",
    "apgr",
    "cpt",
    "gain_curve",
    "gap_metrics",
    "pgr_curve",
    "quality_at",
    "share_for_gain",
]

Floats = npt.NDArray[np.float64]
EPS = 1e-9


@dataclass(frozen=True)
class GapMetrics:
    """What ``semroute eval-difficulty`` reports for one set of scores."""

    n: int
    weak_quality: float
    strong_quality: float
    apgr: float
    cpt50: float
    cpt80: float


def _arrays(
    scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike
) -> tuple[Floats, Floats, Floats]:
    s, w, q = (np.asarray(a, dtype=np.float64).ravel() for a in (scores, weak, strong))
    if not (len(s) == len(w) == len(q)) or len(s) == 0:
        raise ValueError("scores, weak and strong need the same, non-zero length")
    if not (np.isfinite(s).all() and np.isfinite(w).all() and np.isfinite(q).all()):
        raise ValueError("scores and qualities must be finite numbers")
    return s, w, q


def gain_curve(scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> Floats:
    """Total quality gained over the all-weak router when the ``k`` highest-scored rows go to
    the strong model, for ``k = 0..n`` (ties: the expectation over their orders)."""
    s, w, q = _arrays(scores, weak, strong)
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    cum = np.concatenate([[0.0], np.cumsum((q - w)[order])])
    # Each position's tie group [start, end): within it the curve is a straight line.
    new_group = np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(s))
    group = np.cumsum(new_group) - 1
    k = np.arange(1, len(s) + 1)
    start, end = starts[group], ends[group]
    cum[1:] = cum[start] + (cum[end] - cum[start]) * (k - start) / (end - start)
    return cum


def pgr_curve(scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> Floats:
    """PGR after ``k = 0..n`` strong calls. Raises ValueError when the strong model is not
    better than the weak one overall (there is no gap to recover)."""
    cum = gain_curve(scores, weak, strong)
    if cum[-1] <= EPS:
        raise ValueError(
            "the strong model is not better than the weak one on these rows, so there is no "
            "quality gap to recover"
        )
    pgr: Floats = cum / cum[-1]
    return pgr


def apgr(pgr: Floats) -> float:
    """The area under a PGR curve given at every share ``k / n``, ``k = 0..n`` (trapezoids)."""
    n = len(pgr) - 1
    return float((pgr.sum() - (pgr[0] + pgr[-1]) / 2) / n)


def cpt(pgr: Floats, target: float) -> float:
    """The smallest share of strong calls ``k / n`` whose PGR reaches ``target``."""
    n = len(pgr) - 1
    return float(np.argmax(pgr >= target - EPS) / n)


def gap_metrics(scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> GapMetrics:
    """APGR, CPT(50%) and CPT(80%) of ``scores``, and the all-weak / all-strong qualities."""
    _, w, q = _arrays(scores, weak, strong)
    curve = pgr_curve(scores, weak, strong)
    return GapMetrics(
        n=len(w),
        weak_quality=float(w.mean()),
        strong_quality=float(q.mean()),
        apgr=apgr(curve),
        cpt50=cpt(curve, 0.5),
        cpt80=cpt(curve, 0.8),
    )


def quality_at(strong_calls: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> float:
    """Mean quality when the rows where ``strong_calls`` is true go to the strong model."""
    mask = np.asarray(strong_calls, dtype=bool)
    return float(np.where(mask, np.asarray(strong, float), np.asarray(weak, float)).mean())


def share_for_gain(
    scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike, gain: float
) -> float:
    """The smallest share of strong calls whose PGR reaches ``gain`` (CPT at ``gain``)."""
    return cpt(pgr_curve(scores, weak, strong), gain)
