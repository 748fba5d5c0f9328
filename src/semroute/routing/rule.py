"""The decision rule: a query goes to its best route only if that route's confidence clears the
route's threshold and beats the runner-up by ``min_margin``; otherwise to the default model.

Routing (:func:`decide`, one query), evaluation (:func:`choose`, many) and calibration
(:func:`contenders`, which thresholds sweep over) all apply it from here, so a threshold fitted
on labelled data decides exactly what the router will decide.

Only the best route is considered: if it is under its own threshold the query goes to the
default model even when a runner-up clears a lower threshold, because the runner-up is by
definition the worse match. The margin is best minus runner-up (minus 0 for a single route),
computed in float64 in every shape so the three agree to the last bit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from semroute.decision import Reason

__all__ = ["choose", "contenders", "decide"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def decide(
    confidence: FloatArray, thresholds: FloatArray, min_margin: float
) -> tuple[int, Reason, float, IntArray]:
    """Pick a route for one query from every route's confidence.

    Returns (route index or -1, reason, margin, route order best first).
    """
    order = np.argsort(-confidence, kind="stable")
    top = int(order[0])
    runner_up = float(confidence[order[1]]) if len(order) > 1 else 0.0
    margin = float(confidence[top]) - runner_up
    if confidence[top] < thresholds[top]:
        return -1, Reason.BELOW_THRESHOLD, margin, order
    if margin < min_margin:
        return -1, Reason.AMBIGUOUS, margin, order
    return top, Reason.MATCHED, margin, order


def contenders(
    confidence: FloatArray, min_margin: float
) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """Each row's best route and the confidence its threshold is held to: the row is routed
    exactly when that is at least the route's threshold. Rows the margin sends to the default
    model whatever the threshold get ``-inf``."""
    confidence = np.atleast_2d(confidence)
    top = np.argmax(confidence, axis=1)
    best = confidence[np.arange(len(confidence)), top]
    if confidence.shape[1] > 1:
        runner_up = np.partition(confidence, -2, axis=1)[:, -2]
    else:
        runner_up = np.zeros(len(confidence), dtype=confidence.dtype)
    best64 = best.astype(np.float64)
    margin = best64 - runner_up.astype(np.float64)
    return top.astype(np.int64, copy=False), np.where(margin >= min_margin, best64, -np.inf)


def choose(confidence: FloatArray, thresholds: FloatArray, min_margin: float) -> IntArray:
    """:func:`decide` for many queries at once: each row's route index, or -1 for the default."""
    top, held = contenders(confidence, min_margin)
    # float32 thresholds widen exactly to float64: the comparison is the one decide() makes.
    return np.where(held >= thresholds[top], top, -1).astype(np.int64)
