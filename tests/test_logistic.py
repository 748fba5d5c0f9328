"""The numpy logistic regression lands where scikit-learn's does (the reference, installed in the
development environment only), for the head's many classes with weights and for two classes."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression

from semroute.index.head import fit_head
from semroute.index.logistic import fit_logistic


def _problem(seed: int, classes: int, rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors whose labels follow noisy class centres: overlapping, as intents are."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centres = rng.normal(size=(classes, dim))
    y = np.argmax(x @ centres.T + rng.normal(scale=0.5, size=(rows, classes)), axis=1)
    y[:classes] = np.arange(classes)  # every class present
    return x, y


def _objective(
    coef: npt.NDArray[np.floating],
    intercept: npt.NDArray[np.floating],
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    c: float,
) -> float:
    """scikit-learn's: C * weighted cross-entropy + ||coef||^2 / 2, in float64."""
    z = x.astype(np.float64) @ coef.T.astype(np.float64) + intercept
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    penalty = float((coef.astype(np.float64) ** 2).sum())
    return c * float(w @ -log_p[np.arange(len(y)), y]) + penalty / 2


def _probabilities(coef: np.ndarray, intercept: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = x @ coef.T + intercept
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _sklearn(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float, tol: float) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=c, max_iter=20_000, tol=tol).fit(x, y, sample_weight=w)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return coef, intercept


@pytest.mark.parametrize(
    ("seed", "classes", "rows", "dim", "c"),
    [(0, 2, 200, 16, 10.0), (1, 2, 500, 64, 0.3), (2, 5, 300, 16, 10.0), (3, 40, 2000, 64, 10.0)],
)
def test_it_reaches_scikit_learns_optimum(
    seed: int, classes: int, rows: int, dim: int, c: float
) -> None:
    x, y = _problem(seed, classes, rows, dim)
    w = np.where(y == classes - 1, 3.0, 1.0)  # the head weighs out-of-scope rows 3x
    fit = fit_logistic(x, y, classes, c=c, sample_weight=w)
    assert fit.converged
    default = _sklearn(x, y, w, c, tol=1e-4)
    tight = _sklearn(x, y, w, c, tol=1e-10)
    ours = _objective(fit.coef, fit.intercept, x, y, w, c)
    # At least as low as scikit-learn's default fit, and within a hair of its tightest one:
    # a wrong C, weight, penalty or two-class parametrisation moves the optimum far more.
    assert ours <= _objective(*default, x, y, w, c) + 1e-6
    best = _objective(*tight, x, y, w, c)
    assert ours <= best + 1e-4 * abs(best)
    gap = np.abs(_probabilities(fit.coef, fit.intercept, x) - _probabilities(*tight, x)).max()
    assert gap < 0.02


def test_a_warm_start_from_the_answer_stops_at_once_and_a_near_one_soon() -> None:
    x, y = _problem(4, 12, 800, 32)
    cold = fit_logistic(x, y, 12, c=10.0)
    again = fit_logistic(x, y, 12, c=10.0, start=(cold.coef, cold.intercept))
    assert again.iterations <= 2
    x2, y2 = x[:-10], y[:-10]  # a small edit of the data
    warm = fit_logistic(x2, y2, 12, c=10.0, start=(cold.coef, cold.intercept))
    fresh = fit_logistic(x2, y2, 12, c=10.0)
    assert warm.iterations < fresh.iterations
    gap = np.abs(
        _probabilities(warm.coef, warm.intercept, x)
        - _probabilities(fresh.coef, fresh.intercept, x)
    )
    assert gap.max() < 0.01


def test_two_classes_keep_a_zero_row_and_warm_start_from_it() -> None:
    x, y = _problem(5, 2, 300, 16)
    fit = fit_logistic(x, y, 2, c=10.0)
    assert fit.coef.shape == (2, 16) and not fit.coef[0].any() and fit.intercept[0] == 0
    again = fit_logistic(x, y, 2, c=10.0, start=(fit.coef, fit.intercept))
    assert again.iterations <= 2


def test_the_head_is_the_reference_fit_with_out_of_scope_weighted() -> None:
    x, y = _problem(6, 8, 600, 32)  # classes 0..6 routes, 7 out of scope
    head = fit_head(x, y, n_classes=8, n_routes=7)
    coef, intercept = _sklearn(x, y, np.where(y >= 7, 3.0, 1.0), 10.0, tol=1e-10)
    expected = _probabilities(coef, intercept, x)[:, :7]
    assert np.abs(head.probabilities(x) - expected).max() < 0.02


def test_it_refuses_fewer_than_two_classes() -> None:
    with pytest.raises(ValueError, match="two classes"):
        fit_logistic(np.zeros((3, 2)), np.zeros(3, np.int64), 1, c=1.0)
