"""The ``difficulty`` signal: how likely a query needs the strong model, from its embedding.

A model (see :mod:`semroute.index.difficulty` for the files, :mod:`semroute.tuning.difficulty`
for training) is a weighted sum of standardised components, each a function of the query's
embedding, numpy only:

- ``softmax``: ``softmax(coef @ x + intercept) @ values``, the expected gain of the strong
  model over the weak one under a linear classifier of the outcome (or of the domain, whose
  mean gains are the values);
- ``knn``: the mean gain of the ``k`` training prompts closest to the query, compared in the
  space of the training prompts' first principal components.

A single query's products go through FAISS's single-threaded kernel
(:func:`semroute.index.vectors.inner_products`): a few hundredths of a millisecond, where
waking numpy's BLAS threads can cost milliseconds on a busy machine.

The sum (the raw score) is mapped, monotonically and piecewise-linearly, onto a difficulty in
[0, 1] whose 0.5 is the calibrated threshold: ``difficulty > 0.5`` sends the training data's
target share of queries to the strong model, ``> 0.75`` half that share, ``> 0.25`` the
target plus half of the rest (see the README's "Difficulty router").
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from semroute.index.difficulty import Component, DifficultyModel
from semroute.index.vectors import inner_products

__all__ = ["component_scores", "difficulty", "raw_scores"]


def raw_scores(model: DifficultyModel, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The model's raw score of each query vector (rows of ``vectors``, unit length)."""
    total = np.zeros(len(vectors), dtype=np.float64)
    for c in model.components:
        total += c.weight * (component_scores(c, vectors) - c.center) / c.scale
    return total


def difficulty(model: DifficultyModel, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The difficulty of each query vector, in [0, 1]; above 0.5 means the strong model."""
    mapped: npt.NDArray[np.float64] = np.interp(
        raw_scores(model, vectors), model.knots_raw, model.knots_difficulty
    )
    return mapped


def component_scores(c: Component, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """One component's score of each query vector, before it is standardised."""
    values = c.arrays["values"]
    if c.type == "softmax":
        logits = inner_products(vectors, c.arrays["coef"]) + c.arrays["intercept"]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return (logits @ values).astype(np.float64)
    # kNN in a smaller space (the training prompts' principal components): a twelfth of the
    # work of comparing full embeddings, for the same APGR (see semroute.tuning.difficulty_fit).
    k = c.k or 1
    # The query's length changes no ranking among the (unit-length) keys: it is not normalised.
    projected = inner_products(vectors - c.arrays["offset"], c.arrays["projection"])
    sims = inner_products(np.ascontiguousarray(projected), c.arrays["keys"])
    # The prompts at least as similar as the k-th most similar: a partition and a mask cost
    # half of sorting out the k positions (the same prompts unless similarities tie).
    cut = sims.shape[1] - k
    kth = np.partition(sims, cut, axis=1)[:, cut]
    near = sims >= kth[:, None]
    mean: npt.NDArray[np.float64] = (near @ values).astype(np.float64) / near.sum(axis=1)
    return mean
