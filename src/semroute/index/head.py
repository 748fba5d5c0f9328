"""The learned head: multinomial logistic regression over utterance embeddings.

Fitted when an index is built (``semroute.index.logistic``: numpy alone), one class per route
plus, when the route files give out-of-scope examples, one class for them. It is stored in the
index as plain arrays (``head.npz``, loaded with ``allow_pickle=False``), so routing needs numpy
only.

Hyperparameters: C=10, and out-of-scope examples weighted 3x, since one class has to stand for
everything no route covers. On CLINC150's validation split C=1 is clearly worse, while C=100 and
weights 1 or 10 change the calibrated cost by at most 0.005 per query, C=100 slightly ahead
(scripts/bench_choices.py, docs/benchmarks.md).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from semroute.index.logistic import fit_logistic

__all__ = ["Head", "fit_head"]

C = 10.0
OOS_WEIGHT = 3.0
MAX_ITER = 1000
HEAD_FILE = "head.npz"


@dataclass(frozen=True, eq=False)
class Head:
    """Linear class scores ``x @ coef.T + intercept``; the first ``n_routes`` classes are routes."""

    coef: npt.NDArray[np.float32]
    intercept: npt.NDArray[np.float32]
    n_routes: int

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """P(route | query) for every route (the out-of-scope class takes the rest)."""
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits[:, : self.n_routes]

    def save(self, path: Path) -> None:
        np.savez(path, coef=self.coef, intercept=self.intercept, n_routes=np.array(self.n_routes))

    @classmethod
    def load(cls, path: Path) -> Head:
        """Read ``head.npz``; raises ValueError for anything unreadable or malformed."""
        try:
            # Our own file handle: np.load leaks its handle when the archive is broken.
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                head = cls(
                    coef=np.ascontiguousarray(data["coef"], dtype=np.float32),
                    intercept=np.ascontiguousarray(data["intercept"], dtype=np.float32),
                    n_routes=int(data["n_routes"]),
                )
        except (OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"unreadable head: {exc}") from exc
        if head.coef.ndim != 2 or head.intercept.shape != (head.coef.shape[0],):
            raise ValueError("malformed head arrays")
        return head

    def rows_for(self, names: Sequence[str], classes: Sequence[str]) -> Head:
        """This head's coefficients rearranged for another class list (unknown classes: zero)."""
        index = {name: i for i, name in enumerate(names)}
        coef = np.zeros((len(classes), self.coef.shape[1]), dtype=np.float32)
        intercept = np.zeros(len(classes), dtype=np.float32)
        for row, name in enumerate(classes):
            if name in index:
                coef[row] = self.coef[index[name]]
                intercept[row] = self.intercept[index[name]]
        return Head(coef, intercept, self.n_routes)


def fit_head(
    vectors: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    n_classes: int,
    n_routes: int,
    *,
    start: Head | None = None,
) -> Head:
    """Fit the head; ``labels`` are class indices, ``n_routes`` of them routes, the rest
    out-of-scope. ``start`` (same class order) warm-starts the solver, which makes refitting
    after a small edit nearly free."""
    dim = vectors.shape[1]
    if n_classes < 2:
        # One route and no negatives: the classifier has nothing to separate.
        return Head(np.zeros((1, dim), np.float32), np.zeros(1, np.float32), n_routes)
    weights = np.where(labels >= n_routes, OOS_WEIGHT, 1.0)
    fit = fit_logistic(
        vectors,
        labels,
        n_classes,
        c=C,
        sample_weight=weights,
        start=None if start is None else (start.coef, start.intercept),
        max_iter=MAX_ITER,
    )
    # Hitting max_iter leaves a usable (slightly under-fitted) head: no warning.
    return Head(coef=fit.coef, intercept=fit.intercept, n_routes=n_routes)
