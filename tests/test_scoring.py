from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from semroute.decision import Reason
from semroute.routing.rule import decide
from semroute.routing.scoring import best_per_route, route_of_vectors


@st.composite
def segmented_sims(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    counts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=8))
    queries = draw(st.integers(1, 4))
    # Few distinct values make ties common, which is where argmax bookkeeping goes wrong.
    sims = draw(
        hnp.arrays(
            np.float32,
            (queries, sum(counts)),
            elements=st.sampled_from([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0]),
        )
    )
    starts = np.cumsum([0, *counts[:-1]]).astype(np.int64)
    return sims, starts


@given(segmented_sims())
def test_best_per_route_matches_a_plain_loop(case: tuple[np.ndarray, np.ndarray]) -> None:
    sims, starts = case
    conf, best = best_per_route(sims, starts)
    stops = [*starts[1:], sims.shape[1]]
    for q in range(sims.shape[0]):
        for r, (a, b) in enumerate(zip(starts, stops, strict=True)):
            segment = sims[q, a:b]
            assert conf[q, r] == segment.max()
            assert best[q, r] == a + int(np.argmax(segment))  # first of equal maxima


def test_route_of_vectors() -> None:
    assert route_of_vectors(np.array([0, 2, 3]), 6).tolist() == [0, 0, 1, 2, 2, 2]


@given(
    hnp.arrays(np.float32, st.integers(1, 8), elements=st.floats(0, 1, width=32)),
    st.floats(0, 1),
    st.floats(0, 0.5),
)
def test_decide_picks_the_best_route_only_when_it_clears_both_bars(
    conf: np.ndarray, threshold: float, min_margin: float
) -> None:
    thresholds = np.full(len(conf), threshold, dtype=np.float32)
    choice, reason, margin, order = decide(conf, thresholds, min_margin)
    top = int(np.argmax(conf))
    assert order[0] == top
    assert list(conf[order]) == sorted(conf, reverse=True)
    runner_up = float(np.sort(conf)[-2]) if len(conf) > 1 else 0.0
    assert np.isclose(margin, float(conf[top]) - runner_up)
    if conf[top] < thresholds[top]:
        assert (choice, reason) == (-1, Reason.BELOW_THRESHOLD)
    elif margin < min_margin:
        assert (choice, reason) == (-1, Reason.AMBIGUOUS)
    else:
        assert (choice, reason) == (top, Reason.MATCHED)


def test_decide_ignores_a_runner_up_that_clears_a_lower_threshold() -> None:
    conf = np.array([0.6, 0.55], dtype=np.float32)
    thresholds = np.array([0.7, 0.5], dtype=np.float32)
    choice, reason, _, _ = decide(conf, thresholds, 0.0)
    assert (choice, reason) == (-1, Reason.BELOW_THRESHOLD)
