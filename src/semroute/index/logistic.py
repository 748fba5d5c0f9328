"""L2-regularised multinomial logistic regression, fitted with L-BFGS on numpy alone.

The learned head and the difficulty router are fitted at ``build-index`` time, on every install;
scikit-learn (with scipy, 190 MiB of the library install) is no longer needed for it. The problem
is the one scikit-learn's ``LogisticRegression(C=c)`` solves: minimise ``C * sum_i w_i *
cross_entropy_i + ||coef||^2 / 2`` (intercepts not penalised), with one weight row per class, or
for two classes one row, class 1's logit minus class 0's. The objective is strictly convex in the
coefficients, so any solver that converges lands on the same model; ``tests/test_logistic.py``
compares the probabilities with scikit-learn's where it is installed (the development
environment), so this fit cannot drift from the reference. Built from the same train splits and
measured the same way (calibrated on val, eval on test), CLINC150 gave 94.67% in scope and 77.3%
out-of-scope recall with this fit against 94.64% and 76.6% with scikit-learn's (its default
tolerance stops further from the optimum), BANKING77 93.05% against 92.92%; the head's fit on
CLINC150's 15,100 rows took 5.9 s against 4.9 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Logistic", "fit_logistic"]

Floats = npt.NDArray[np.float64]

# Stop when the largest gradient entry of the (sample-weight-normalised) objective is this small:
# scikit-learn's default tolerance for lbfgs is 1e-4 on the same scale; ten times tighter costs a
# few more iterations and lands closer to the optimum both approximate.
TOL = 1e-5
HISTORY = 10  # L-BFGS correction pairs
ARMIJO = 1e-4


@dataclass(frozen=True, eq=False)
class Logistic:
    """Class scores ``x @ coef.T + intercept``, one row per class (two rows for two classes, the
    first all zeros)."""

    coef: npt.NDArray[np.float32]
    intercept: npt.NDArray[np.float32]
    iterations: int
    converged: bool


def fit_logistic(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    n_classes: int,
    *,
    c: float,
    sample_weight: npt.NDArray[np.floating] | None = None,
    start: tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]] | None = None,
    max_iter: int = 1000,
) -> Logistic:
    """Fit on rows ``x`` whose ``labels`` are class indices in ``range(n_classes)``; ``start`` is
    a previous fit's ``(coef, intercept)`` in the same class order (a warm start)."""
    if n_classes < 2:
        raise ValueError("a logistic regression needs at least two classes")
    xs = np.ascontiguousarray(x, dtype=np.float64)
    n, dim = xs.shape
    weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    total = float(weights.sum())
    # Divided through by the weights' sum (as scikit-learn does), so the tolerance and the first
    # step do not depend on how many rows there are.
    weights = weights / total
    penalty = 1.0 / (c * total)
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    binary = n_classes == 2
    rows = 1 if binary else n_classes

    def unpack(theta: Floats) -> tuple[Floats, Floats]:
        return theta[: rows * dim].reshape(rows, dim), theta[rows * dim :]

    def objective(theta: Floats) -> tuple[float, Floats]:
        coef, intercept = unpack(theta)
        logits = xs @ coef.T + intercept
        if binary:
            logits = np.hstack([np.zeros((n, 1)), logits])
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1))
        loss = float(weights @ (log_norm - (logits * onehot).sum(axis=1)))
        residual = (np.exp(logits - log_norm[:, None]) - onehot) * weights[:, None]
        if binary:
            residual = residual[:, 1:]
        grad_coef = residual.T @ xs + penalty * coef
        loss += 0.5 * penalty * float((coef * coef).sum())
        return loss, np.concatenate([grad_coef.ravel(), residual.sum(axis=0)])

    theta = np.zeros(rows * (dim + 1))
    if start is not None:
        coef0 = np.asarray(start[0], np.float64)
        intercept0 = np.asarray(start[1], np.float64)
        if binary:  # the stored form keeps class 0's zero row
            coef0, intercept0 = coef0[1:] - coef0[:1], intercept0[1:] - intercept0[:1]
        theta = np.concatenate([coef0.ravel(), intercept0])
    theta, iterations, converged = _lbfgs(objective, theta, max_iter)
    coef, intercept = unpack(theta)
    if binary:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros(1), intercept])
    return Logistic(
        coef=np.ascontiguousarray(coef, dtype=np.float32),
        intercept=np.ascontiguousarray(intercept, dtype=np.float32),
        iterations=iterations,
        converged=converged,
    )


def _lbfgs(
    objective: Callable[[Floats], tuple[float, Floats]], theta: Floats, max_iter: int
) -> tuple[Floats, int, bool]:
    """Minimise a smooth convex ``objective`` (value and gradient) from ``theta``: L-BFGS
    directions, a backtracking (Armijo) line search, and curvature pairs kept only when
    ``s.y > 0``. Returns the point, the iterations taken, and whether the tolerance was met."""
    value, grad = objective(theta)
    steps: list[tuple[Floats, Floats, float]] = []  # (s, y, 1 / s.y)
    for iteration in range(max_iter):
        if np.abs(grad).max() <= TOL:
            return theta, iteration, True
        direction = -grad
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * float(s @ direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if steps:
            s, y, rho = steps[-1]
            direction = direction / (rho * float(y @ y))
        else:
            direction = direction / max(1.0, float(np.linalg.norm(grad)))
        for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
            beta = rho * float(y @ direction)
            direction = direction + (alpha - beta) * s
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction (rounding): start the memory afresh
            steps.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = 1.0
        for _ in range(40):
            candidate = theta + step * direction
            new_value, new_grad = objective(candidate)
            if new_value <= value + ARMIJO * step * slope:
                break
            step *= 0.5
        else:
            return theta, iteration, False  # no decrease left at machine precision
        s, y = candidate - theta, new_grad - grad
        curvature = float(s @ y)
        if curvature > 1e-12:
            steps.append((s, y, 1.0 / curvature))
            del steps[:-HISTORY]
        theta, value, grad = candidate, new_value, new_grad
    return theta, max_iter, bool(np.abs(grad).max() <= TOL)
