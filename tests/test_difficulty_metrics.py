"""RouteLLM's metrics (semroute.tuning.difficulty_metrics) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semroute.tuning.difficulty_metrics import (
    apgr,
    cpt,
    gain_curve,
    gap_metrics,
    pgr_curve,
    quality_at,
    share_for_gain,
)

# Four prompts: the strong model gains on the first two only.
WEAK = [0, 0, 1, 1]
STRONG = [1, 1, 1, 1]


def test_a_perfect_router_recovers_the_gap_first() -> None:
    curve = pgr_curve([0.9, 0.8, 0.2, 0.1], WEAK, STRONG)
    assert curve.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    # Trapezoids over shares 0, 1/4, ..., 1: (0 + 0.5)/2 + (0.5 + 1)/2 + 1 + 1, times 1/4.
    assert apgr(curve) == pytest.approx((0.25 + 0.75 + 1 + 1) / 4)
    assert cpt(curve, 0.5) == 0.25
    assert cpt(curve, 0.8) == 0.5


def test_the_worst_router_recovers_the_gap_last() -> None:
    curve = pgr_curve([0.1, 0.2, 0.8, 0.9], WEAK, STRONG)
    assert curve.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert apgr(curve) == pytest.approx((0 + 0 + 0.25 + 0.75) / 4)
    assert cpt(curve, 0.5) == 0.75
    assert cpt(curve, 0.8) == 1.0


def test_a_constant_score_is_a_random_router() -> None:
    curve = pgr_curve([0.5] * 4, WEAK, STRONG)
    assert curve == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert apgr(curve) == pytest.approx(0.5)
    assert cpt(curve, 0.5) == 0.5


def test_ties_are_averaged_over_their_orders() -> None:
    # The top two tie: one gains, one does not, so each of them is worth half a gain.
    scores, weak, strong = [0.9, 0.9, 0.5, 0.1], [0, 1, 0, 1], [1, 1, 1, 1]
    assert gain_curve(scores, weak, strong).tolist() == [0.0, 0.5, 1.0, 2.0, 2.0]


def test_the_strong_model_can_be_worse_on_some_prompts() -> None:
    # Gains +1, -1, +1: sending the middle one too loses what was won, PGR passes 1 first.
    curve = pgr_curve([0.9, 0.1, 0.5], [0, 1, 0], [1, 0, 1])
    assert curve.tolist() == [0.0, 1.0, 2.0, 1.0]
    assert cpt(curve, 1.0) == pytest.approx(1 / 3)


def test_judge_scores_count_as_fractions() -> None:
    curve = pgr_curve([1.0, 0.0], [0.2, 0.5], [0.8, 0.7])
    assert curve == pytest.approx([0, 0.6 / 0.8, 1])


def test_gap_metrics_bundle_the_figures() -> None:
    m = gap_metrics([0.9, 0.8, 0.2, 0.1], WEAK, STRONG)
    assert (m.n, m.weak_quality, m.strong_quality) == (4, 0.5, 1.0)
    assert (m.cpt50, m.cpt80) == (0.25, 0.5)
    assert m.apgr == pytest.approx(0.75)


def test_quality_and_share_for_a_gain() -> None:
    assert quality_at([True, False, False, False], WEAK, STRONG) == 0.75
    assert quality_at([False] * 4, WEAK, STRONG) == 0.5
    assert share_for_gain([0.9, 0.8, 0.2, 0.1], WEAK, STRONG, 0.9) == 0.5


@pytest.mark.parametrize(
    ("scores", "weak", "strong"),
    [
        ([0.1, 0.2], [1, 1], [1, 0]),  # the strong model is worse
        ([0.1, 0.2], [1, 0], [1, 0]),  # no gap at all
        ([0.1], [0, 1], [1, 1]),  # lengths differ
        ([], [], []),
        ([float("nan"), 0.2], [0, 1], [1, 1]),
    ],
)
def test_no_gap_or_bad_arrays_are_refused(
    scores: list[float], weak: list[float], strong: list[float]
) -> None:
    with pytest.raises(ValueError):
        pgr_curve(scores, weak, strong)


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([(0, 1), (1, 1), (0, 0), (1, 0)])),
        min_size=2,
        max_size=40,
    )
)
def test_reversing_the_scores_mirrors_the_area(rows: list[tuple[int, tuple[int, int]]]) -> None:
    scores = np.array([r[0] for r in rows], dtype=float)
    weak = [r[1][0] for r in rows]
    strong = [r[1][1] for r in rows]
    if sum(strong) - sum(weak) <= 0:
        return
    forward, backward = (
        apgr(pgr_curve(scores, weak, strong)),
        apgr(pgr_curve(-scores, weak, strong)),
    )
    assert forward + backward == pytest.approx(1.0)
    # A constant score sits exactly halfway.
    assert apgr(pgr_curve(np.zeros(len(rows)), weak, strong)) == pytest.approx(0.5)
