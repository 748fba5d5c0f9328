"""Fitting a difficulty model's components on embedded outcome data (scikit-learn, lazily).

Three components, each scoring how much the strong model is expected to gain over the weak one
on a prompt, all from its embedding (see :mod:`semroute.routing.difficulty` for how they are
applied):

- ``outcome``: a multinomial logistic regression over the four outcomes (each model right or
  wrong; a judge score counts as right from 0.5), whose class values are each outcome's mean
  gain, so it predicts the expected gain. Predicting the gain, not "the weak model fails", is
  what matters: a prompt both models fail gains nothing from the strong one.
- ``knn``: the mean gain of the ``k`` nearest training prompts (compared on their first 32
  principal components).
- ``domain`` (only when every row names one): a logistic regression predicting the domain,
  whose class values are each domain's mean gain (shrunk towards the overall mean). Domains
  are not known at route time; predicting them from the embedding is.

Choices, by 5-fold cross-validation on routellm_mmlu's train split (APGR of out-of-fold scores;
docs/benchmarks.md has the test figures): the outcome model at C=0.3 (0.647; C=1: 0.636,
C=0.1: 0.643; an MLP 0.640), kNN at k=200 (0.655; 100: 0.649, 500: 0.640; similarity-weighted
kernels 0.64 at best), the domain prior at C=10 (0.641); their standardised sum 0.663 (the best
of every three-way sum tried, weights 1 or 2 each; predicting "the weak model fails" instead
gives 0.585 for the logistic regression alone, "the strong model gains" 0.62).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from semroute.index.logistic import fit_logistic

__all__ = ["Fitted", "fit_components", "knn_k"]

OUTCOME_C = 0.3
DOMAIN_C = 10.0
DOMAIN_SHRINK = 10.0
"""Prompts' worth of the overall mean gain added to each domain's mean (small domains)."""
KNN_SHARE = 0.028
KNN_MAX = 200
KNN_DIM = 32
"""Principal components the kNN compares prompts in: 32, 64, 128 or all 384 dimensions give
APGR 0.663 within 0.001 in the ensemble, and 32 reads a twelfth of the memory per query (the
training prompts' keys, which the encoder has pushed out of the CPU's caches by then)."""
MAX_ITER = 2000

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Fitted:
    """One fitted component: its type, its arrays (by role) and its k (kNN only)."""

    name: str
    type: str
    arrays: dict[str, Floats]
    k: int | None = None


def knn_k(n: int) -> int:
    """How many neighbours the kNN component averages for ``n`` training prompts."""
    return int(min(KNN_MAX, max(1, round(n * KNN_SHARE)), n))


def fit_components(
    x: Floats,
    weak: npt.NDArray[np.float64],
    strong: npt.NDArray[np.float64],
    domains: Sequence[str] | None,
) -> list[Fitted]:
    """Every component fitted on the embedded rows ``x``."""
    gain = (strong - weak).astype(np.float32)
    outcome = (2 * (weak >= 0.5) + (strong >= 0.5)).astype(np.int64)
    out = [_softmax("outcome", x, outcome, gain, OUTCOME_C, shrink=0.0)]
    out.append(_knn(x, gain))
    if domains is not None and len(set(domains)) > 1:
        labels = np.unique(np.asarray(domains), return_inverse=True)[1]
        out.append(_softmax("domain", x, labels, gain, DOMAIN_C, shrink=DOMAIN_SHRINK))
    return out


def _knn(x: Floats, gain: Floats) -> Fitted:
    """The training prompts, projected on their first principal components and renormalised,
    and their gains."""
    offset = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - offset, full_matrices=False)
    projection = np.ascontiguousarray(vt[: min(KNN_DIM, len(vt))], dtype=np.float32)
    keys = (x - offset) @ projection.T
    keys /= np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    arrays = {
        "projection": projection,
        "offset": offset.astype(np.float32),
        "keys": np.ascontiguousarray(keys, dtype=np.float32),
        "values": gain,
    }
    return Fitted("knn", "knn", arrays, k=knn_k(len(x)))


def _softmax(
    name: str,
    x: Floats,
    labels: npt.NDArray[np.int64],
    gain: Floats,
    c: float,
    *,
    shrink: float,
) -> Fitted:
    """A multinomial logistic regression of ``labels`` whose classes are valued at their mean
    gain; one class alone is a constant."""
    classes = np.unique(labels)
    overall = float(gain.mean())
    values = np.array(
        [
            (gain[labels == k].sum() + shrink * overall) / ((labels == k).sum() + shrink)
            for k in classes
        ],
        dtype=np.float32,
    )
    dim = x.shape[1]
    if len(classes) < 2:
        zeros = np.zeros((1, dim), np.float32)
        return Fitted(
            name, "softmax", {"coef": zeros, "intercept": np.zeros(1, np.float32), "values": values}
        )
    index = np.searchsorted(classes, labels)
    fit = fit_logistic(x, index, len(classes), c=c, max_iter=MAX_ITER)
    return Fitted(
        name,
        "softmax",
        {
            "coef": fit.coef,
            "intercept": fit.intercept,
            "values": values,
        },
    )
