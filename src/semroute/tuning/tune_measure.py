"""What a tuned encoder changes, measured the way a user would see it: the route files built
into an index with each encoder, thresholds calibrated on the validation rows (``semroute
calibrate``'s default objective), and ``semroute eval``'s metrics at those thresholds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from semroute.config.routeset import RouteSet
from semroute.tuning.evaluate import Labelled

__all__ = ["FIGURES", "measure", "verdict"]

FIGURES = ("accuracy", "in_scope_accuracy", "oos_recall", "auroc", "closed_set_accuracy")
"""The figures reported before and after tuning (ratios in [0, 1]; None where undefined)."""


def measure(
    routes: RouteSet, encoder_dir: Path, val: Labelled, work: Path, *, oos_label: str
) -> dict[str, Any]:
    """The figures of ``routes`` embedded with the prepared encoder in ``encoder_dir``, on
    ``val``, at thresholds calibrated on ``val`` (an index is built under ``work``)."""
    from semroute.routing.router import Router
    from semroute.tuning.build import build_index
    from semroute.tuning.calibrate import fit_thresholds
    from semroute.tuning.evaluate import metrics

    settings = dataclasses.replace(routes.settings, encoder=str(encoder_dir))
    index = work / f"index-{encoder_dir.name}"
    build_index(dataclasses.replace(routes, settings=settings, root=None), index)
    router = Router.load(index)
    names = [r.name for r in router.routes]
    truth = val.truth(names, oos_label)
    confidence = router.score(val.texts).confidence
    fit = fit_thresholds(confidence, truth, min_margin=router.min_margin, source=val.source)
    report = metrics(confidence, truth, fit.thresholds, router.min_margin, names)
    return {
        k: None if getattr(report, k) is None else round(getattr(report, k), 4) for k in FIGURES
    }


def verdict(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool | None:
    """Whether tuning helped: accuracy on the validation rows (in-scope rows routed right and
    out-of-scope rows sent to the default model) went up. None without validation data."""
    if before is None or after is None:
        return None
    return bool(after["accuracy"] > before["accuracy"])
