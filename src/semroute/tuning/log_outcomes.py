"""Outcome rows for the difficulty router from a decision log (``semroute train-difficulty
--from-log``): shadow verdicts and feedback turned into ``{"prompt", "weak", "strong"}`` rows.

The strong model is the shadow reference (or ``--strong-model``): a request answered by any
other model is a weak answer. Per request with its content logged (``log_content: true``):

- a shadow verdict of the answer against the reference: ``win`` is weak 1, strong 0; ``tie``
  weak 1, strong 1; ``loss`` weak 0, strong 1;
- else feedback with a score ``s``: weak ``(s + 1) / 2``; strong 1 when ``s`` is negative (the
  answer was judged bad: assume the strong model would have done better), else the same as weak.

A request answered by the strong model itself says nothing about the weak one and is left out.
Each row's ``domain`` is its route (``(no route)`` for the default model's), for the per-domain
prior.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from semroute.errors import DataError
from semroute.tuning.outcomes import Outcomes

if TYPE_CHECKING:
    from semroute.tuning.logread import LogData

__all__ = ["VERDICT_ROWS", "outcomes_from_log"]

VERDICT_ROWS = {"win": (1.0, 0.0), "tie": (1.0, 1.0), "loss": (0.0, 1.0)}


def outcomes_from_log(data: LogData, strong_model: str | None, source: str) -> Outcomes:
    """The outcome rows of ``data`` (see the module docstring); :class:`DataError` when none."""
    prompts: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    domains: list[str] = []
    for r in data.with_content:
        if not (r.query or "").strip() or (strong_model is not None and r.model == strong_model):
            continue
        verdict = data.verdicts.get(r.request_id)
        found = data.feedback.get(r.request_id)
        if verdict is not None:
            w, s = VERDICT_ROWS[verdict]
        elif found is not None:
            w = (found["score"] + 1) / 2
            s = 1.0 if found["score"] < 0 else w
        else:
            continue
        prompts.append(r.query or "")
        weak.append(w)
        strong.append(s)
        domains.append(r.route or "(no route)")
    if not prompts:
        raise DataError(
            "holds no request with its content and a shadow verdict or feedback; turn on "
            "`log_content`, shadow evaluation (router.shadow) or collect feedback, then try again",
            file=source,
        )
    return Outcomes(
        prompts,
        np.array(weak, dtype=np.float64),
        np.array(strong, dtype=np.float64),
        source,
        domains,
    )
