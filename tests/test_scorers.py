"""Every way of turning similarities into route confidence: the pure reductions in
``semroute.routing.scoring``, the learned head, and a router built with each scorer."""

from __future__ import annotations

import gc
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from semroute import CorruptIndexError, Reason, Router
from semroute.config.routes import SCORERS
from semroute.index.head import Head, fit_head
from semroute.routing.rule import choose, contenders, decide
from semroute.routing.scoring import HYBRID_WEIGHT, SCORING, centroids, hybrid, top_k_mean
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import ROUTES_YAML, write_routes

# --- scoring: pure functions ------------------------------------------------------------------


@st.composite
def segments(draw: st.DrawFn, values: st.SearchStrategy[float]) -> tuple[np.ndarray, np.ndarray]:
    """(queries, vectors) similarities split into routes of 1-9 vectors, and the route starts."""
    counts = draw(st.lists(st.integers(1, 9), min_size=1, max_size=6))
    queries = draw(st.integers(1, 4))
    sims = draw(hnp.arrays(np.float32, (queries, sum(counts)), elements=values))
    starts = np.cumsum([0, *counts[:-1]]).astype(np.int64)
    return sims, starts


# Few distinct values make ties common; the rest of the time any cosine.
SIMILARITY = st.one_of(
    st.sampled_from([-1.0, -0.25, 0.0, 0.5, 0.75, 1.0]), st.floats(-1, 1, width=32)
)


def _stops(starts: np.ndarray, total: int) -> list[int]:
    return [*starts[1:].tolist(), total]


@settings(deadline=None)  # timings on a busy 2-core CI box are not the point
@given(segments(SIMILARITY), st.integers(1, 6))
def test_top_k_mean_matches_a_plain_loop(case: tuple[np.ndarray, np.ndarray], k: int) -> None:
    sims, starts = case
    got = top_k_mean(sims, starts, k)
    assert got.shape == (sims.shape[0], len(starts))
    for q in range(sims.shape[0]):
        for r, (a, b) in enumerate(zip(starts, _stops(starts, sims.shape[1]), strict=True)):
            # A route shorter than k averages what it has.
            want = np.sort(sims[q, a:b].astype(np.float64))[::-1][:k].mean()
            assert got[q, r] == pytest.approx(want, abs=1e-6)


def test_top_k_mean_of_a_short_route_is_its_plain_mean() -> None:
    sims = np.array([[0.9, 0.1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]], dtype=np.float32)
    starts = np.array([0, 2], dtype=np.int64)  # routes of 2 and 6 vectors
    got = top_k_mean(sims, starts, 5)
    assert got[0].tolist() == pytest.approx([0.5, (0.5 + 0.4 + 0.3 + 0.2 + 0.1) / 5])


@st.composite
def unit_vectors(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    counts = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    dim = draw(st.integers(2, 8))
    raw = draw(hnp.arrays(np.float32, (sum(counts), dim), elements=st.floats(-1, 1, width=32)))
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assume(bool((norms > 1e-3).all()))
    starts = np.cumsum([0, *counts[:-1]]).astype(np.int64)
    return (raw / norms).astype(np.float32), starts


@settings(deadline=None)
@given(unit_vectors())
def test_centroids_are_the_normalised_mean_of_each_route(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, starts = case
    stops = _stops(starts, len(vectors))
    means = [
        vectors[a:b].astype(np.float64).mean(axis=0) for a, b in zip(starts, stops, strict=True)
    ]
    # Examples that cancel out have no direction to normalise.
    assume(all(np.linalg.norm(m) > 1e-2 for m in means))
    got = centroids(vectors, starts)
    assert got.shape == (len(starts), vectors.shape[1])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    for r, m in enumerate(means):
        np.testing.assert_allclose(got[r], m / np.linalg.norm(m), atol=1e-5)


@settings(deadline=None)
@given(
    hnp.arrays(np.float32, (3, 4), elements=st.floats(0, 1, width=32)),
    hnp.arrays(np.float32, (3, 4), elements=st.floats(-1, 1, width=32)),
)
def test_hybrid_is_the_weighted_average_of_head_and_nearest(
    probabilities: np.ndarray, nearest: np.ndarray
) -> None:
    got = hybrid(probabilities, nearest)
    want = HYBRID_WEIGHT * probabilities.astype(np.float64) + (1 - HYBRID_WEIGHT) * nearest
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_hybrid_weight_is_a_proper_share() -> None:
    assert 0 < HYBRID_WEIGHT < 1
    one, zero = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    assert hybrid(one, zero)[0, 0] == pytest.approx(HYBRID_WEIGHT)
    assert hybrid(zero, one)[0, 0] == pytest.approx(1 - HYBRID_WEIGHT)


@settings(deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda routes: st.tuples(
            hnp.arrays(
                np.float32,
                st.tuples(st.integers(1, 6), st.just(routes)),
                elements=st.one_of(
                    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0, 1, width=32)
                ),
            ),
            hnp.arrays(np.float32, routes, elements=st.sampled_from([0.0, 0.25, 0.5, 0.6, 0.9])),
        )
    ),
    st.one_of(st.just(0.0), st.sampled_from([0.05, 0.1, 0.25, 0.5]), st.floats(0, 0.6)),
)
def test_choose_agrees_with_decide_row_by_row(
    case: tuple[np.ndarray, np.ndarray], min_margin: float
) -> None:
    conf, thresholds = case
    chosen = choose(conf, thresholds, min_margin)
    assert chosen.shape == (len(conf),)
    top, held = contenders(conf, min_margin)
    for row, got, r, h in zip(conf, chosen, top, held, strict=True):
        want, reason, _, _ = decide(row, thresholds, min_margin)
        assert got == want, (row, reason)
        # What calibration sweeps: routed exactly when the held confidence clears the threshold.
        assert (h >= thresholds[r]) == (want >= 0), (row, h)


def test_choose_and_decide_agree_when_the_margin_is_min_margin_up_to_rounding() -> None:
    # 0.11 - 0.01 is 0.0999999... from float32 values in float64 but 0.1 in float32: both
    # must compute it the same way, or eval and calibrate disagree with route().
    conf = np.array([0.11, 0.01], dtype=np.float32)
    thresholds = np.zeros(2, dtype=np.float32)
    choice, _, _, _ = decide(conf, thresholds, 0.1)
    assert choose(conf[None, :], thresholds, 0.1).tolist() == [choice]


def test_choose_with_a_single_route_uses_zero_as_the_runner_up() -> None:
    conf = np.array([[0.7], [0.3], [0.9]], dtype=np.float32)
    thresholds = np.array([0.5], dtype=np.float32)
    assert choose(conf, thresholds, 0.0).tolist() == [0, -1, 0]
    # A margin over "nothing else" is the confidence itself.
    assert choose(conf, thresholds, 0.8).tolist() == [-1, -1, 0]


# --- the learned head -------------------------------------------------------------------------

DIM = 16


def _clusters(
    rng: np.random.Generator, centres: list[int], per_class: int, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around axis ``centres[c]`` for class c; labels are class indices."""
    xs, ys = [], []
    for label, axis in enumerate(centres):
        x = rng.normal(0, noise, (per_class, DIM))
        x[:, axis] += 1.0
        xs.append(x)
        ys.append(np.full(per_class, label))
    vectors = np.vstack(xs)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.concatenate(ys).astype(np.int64)


def test_head_separates_clearly_separable_routes() -> None:
    rng = np.random.default_rng(0)
    x, y = _clusters(rng, [0, 1, 2], 20)
    head = fit_head(x, y, n_classes=3, n_routes=3)
    x_new, y_new = _clusters(rng, [0, 1, 2], 10)  # unseen points of the same routes
    p = head.probabilities(x_new)
    assert p.shape == (30, 3)
    assert (p.argmax(axis=1) == y_new).all()
    assert p[np.arange(30), y_new].min() > 0.8
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)  # no out-of-scope class


def test_out_of_scope_class_absorbs_probability_for_out_of_scope_queries() -> None:
    rng = np.random.default_rng(1)
    x, y = _clusters(rng, [0, 1, 2], 20)  # classes 0, 1 are routes; 2 is out of scope
    head = fit_head(x, y, n_classes=3, n_routes=2)
    routes_x, routes_y = _clusters(rng, [0, 1], 10)
    oos_x, _ = _clusters(rng, [2], 10)
    p_routes, p_oos = head.probabilities(routes_x), head.probabilities(oos_x)
    assert (p_routes.shape, p_oos.shape) == ((20, 2), (10, 2))  # route columns only
    assert (p_routes.argmax(axis=1) == routes_y).all()
    assert p_routes.sum(axis=1).min() > 0.8
    assert p_oos.sum(axis=1).max() < 0.2  # the rest went to the out-of-scope class
    assert (p_routes.sum(axis=1) < 1).all() and (p_oos.sum(axis=1) < 1).all()


@pytest.mark.parametrize(("n_routes", "label"), [(2, "two routes"), (1, "one route + oos")])
def test_head_with_two_classes_still_gives_every_route_a_probability(
    n_routes: int, label: str
) -> None:
    rng = np.random.default_rng(2)
    x, y = _clusters(rng, [0, 1], 20)
    head = fit_head(x, y, n_classes=2, n_routes=n_routes)
    p = head.probabilities(x)
    assert p.shape == (40, n_routes), label
    # Class 1 (route b, or out of scope) must not be given to route 0.
    assert p[20:, 0].max() < 0.5, label


def test_single_route_without_negatives_is_always_certain() -> None:
    rng = np.random.default_rng(3)
    x, _ = _clusters(rng, [0], 5)
    head = fit_head(x, np.zeros(5, np.int64), n_classes=1, n_routes=1)
    anything, _ = _clusters(rng, [0, 5, 9], 3)
    p = head.probabilities(anything)
    assert p.shape == (9, 1)
    np.testing.assert_allclose(p, 1.0)


def test_head_save_and_load_round_trip_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x, y = _clusters(rng, [0, 1, 2, 3], 10)
    head = fit_head(x, y, n_classes=4, n_routes=3)
    path = tmp_path / "head.npz"
    head.save(path)
    with np.load(path, allow_pickle=False) as raw:  # plain arrays: nothing to unpickle
        assert set(raw.files) == {"coef", "intercept", "n_routes"}
        assert raw["coef"].dtype == np.float32 and raw["coef"].shape == (4, DIM)
    loaded = Head.load(path)
    assert loaded.n_routes == 3
    np.testing.assert_array_equal(loaded.coef, head.coef)
    np.testing.assert_array_equal(loaded.intercept, head.intercept)
    np.testing.assert_array_equal(loaded.probabilities(x), head.probabilities(x))


def test_rows_for_maps_rows_by_class_name_and_zeroes_new_classes() -> None:
    coef = np.arange(12, dtype=np.float32).reshape(3, 4)
    head = Head(coef, np.array([10, 20, 30], np.float32), n_routes=2)
    moved = head.rows_for(["a", "b", "(out of scope)"], ["b", "new", "a", "(out of scope)"])
    np.testing.assert_array_equal(moved.coef, [coef[1], np.zeros(4), coef[0], coef[2]])
    np.testing.assert_array_equal(moved.intercept, [20, 0, 10, 30])


def test_warm_start_predicts_like_a_cold_fit() -> None:
    rng = np.random.default_rng(5)
    x3, y3 = _clusters(rng, [0, 1, 2], 15)
    old = fit_head(x3, y3, n_classes=3, n_routes=3)
    # A route is added: the old head's rows seed the new fit, the new route starts at zero.
    x4, y4 = _clusters(rng, [0, 1, 2, 3], 15)
    start = old.rows_for(["a", "b", "c"], ["a", "b", "c", "d"])
    warm = fit_head(x4, y4, n_classes=4, n_routes=4, start=start)
    cold = fit_head(x4, y4, n_classes=4, n_routes=4)
    test_x, test_y = _clusters(rng, [0, 1, 2, 3], 10, noise=0.15)
    warm_p, cold_p = warm.probabilities(test_x), cold.probabilities(test_x)
    np.testing.assert_array_equal(warm_p.argmax(axis=1), cold_p.argmax(axis=1))
    assert (cold_p.argmax(axis=1) == test_y).all()
    np.testing.assert_allclose(warm_p, cold_p, atol=0.05)
    # Refitting unchanged data from its own head changes nothing that matters.
    again = fit_head(x4, y4, n_classes=4, n_routes=4, start=cold)
    np.testing.assert_allclose(again.probabilities(test_x), cold_p, atol=0.05)


# --- a router built with each scorer ----------------------------------------------------------

# The shared fixture's routes, every threshold the router's, plus out-of-scope examples.
ROUTES = ROUTES_YAML.replace("    threshold: 0.6\n", "") + (
    "out_of_scope:\n"
    "  - explain quantum physics to me\n"
    "  - write a poem about the sea\n"
    "  - who won the football game\n"
)
ROUTER = "router: {default_model: frontier-model, threshold: 0.2}\n"
UTTERANCES = {
    "weather": [
        "what is the weather forecast for tomorrow",
        "will it rain today",
        "how hot will it be this weekend",
    ],
    "billing": [
        "why was my credit card charged twice",
        "cancel my subscription plan",
        "download my invoice",
    ],
    "greeting": ["hello there", "good morning friend"],
}
CLEAR = [
    ("will it rain today", "weather"),
    ("weather forecast for tomorrow", "weather"),
    ("download my invoice", "billing"),
    ("cancel my subscription plan", "billing"),
    ("hello there", "greeting"),
    ("good morning friend", "greeting"),
]


@pytest.fixture(scope="module")
def scorer_indexes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scorers")
    routes = write_routes(root / "routes", routes=ROUTES, router=ROUTER)
    out = {}
    for scorer in SCORERS:
        out[scorer] = root / scorer
        build_index(routes, out[scorer], encoder=FakeEncoder(), scorer=scorer)
    return out


def test_every_scorer_is_covered() -> None:
    assert set(SCORERS) == {"nearest", "top5", "centroid", "head", "hybrid"}
    assert set(SCORING) == set(SCORERS)  # every name the route files accept has a scorer


def _closest(query: str, route: str) -> tuple[str, float]:
    enc = FakeEncoder()
    q = enc.encode([query]).vectors[0]
    sims = enc.encode(UTTERANCES[route]).vectors @ q
    return UTTERANCES[route][int(np.argmax(sims))], float(sims.max())


@pytest.mark.parametrize("scorer", SCORERS)
def test_every_scorer_routes_clear_queries_and_scores_every_route(
    scorer: str, scorer_indexes: dict[str, Path]
) -> None:
    router = Router.load(scorer_indexes[scorer])
    assert router.scorer == scorer
    for query, expected in CLEAR:
        d = router.route(query)
        assert (d.route, d.reason) == (expected, Reason.MATCHED), (scorer, query, d.scores)
        assert sorted(s.route for s in d.scores) == sorted(UTTERANCES)
        for s in d.scores:
            # The closest example is reported whatever the confidence is computed from.
            assert s.utterance == _closest(query, s.route)[0], (scorer, query, s.route)
    off_topic = router.route("explain quantum entanglement to a physicist")
    assert off_topic.route is None and off_topic.model == "frontier-model"


def test_nearest_confidence_is_the_cosine_to_the_closest_example(
    scorer_indexes: dict[str, Path],
) -> None:
    router = Router.load(scorer_indexes["nearest"])
    for query in ["will it rain this weekend", "my credit card", "hello good friend"]:
        d = router.route(query)
        for s in d.scores:
            utterance, cosine = _closest(query, s.route)
            assert s.confidence == pytest.approx(cosine, abs=1e-6)
            assert s.utterance == utterance


@pytest.mark.parametrize("scorer", ["head", "hybrid"])
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.unlink(), id="deleted"),
        pytest.param(lambda p: p.write_bytes(b"\0" * 100), id="garbage"),
        pytest.param(
            lambda p: np.savez(p, coef=np.zeros((3, 7), np.float32), intercept=np.zeros(3)),
            id="missing-array",
        ),
        pytest.param(
            lambda p: np.savez(
                p, coef=np.zeros((3, 7), np.float32), intercept=np.zeros(3), n_routes=np.array(3)
            ),
            id="wrong-dimension",
        ),
    ],
)
def test_index_with_a_damaged_head_is_refused(
    scorer: str,
    damage,
    tmp_path: Path,
    routes_dir: Path,  # type: ignore[no-untyped-def]
) -> None:
    build_index(routes_dir, tmp_path / "idx", encoder=FakeEncoder(), scorer=scorer)
    damage(tmp_path / "idx" / "head.npz")
    with pytest.raises(CorruptIndexError, match=r"learned head|head\.npz") as info:
        Router.load(tmp_path / "idx")
    assert "run `semroute build-index`" in str(info.value)


def _load_error(path: Path) -> type[BaseException] | None:
    try:
        Router.load(path)
    except Exception as exc:
        return type(exc)
    finally:
        gc.collect()
    return None


@pytest.mark.parametrize("keep", [0, 0.5])
def test_index_with_a_truncated_head_is_refused(
    keep: float, tmp_path: Path, routes_dir: Path
) -> None:
    build_index(routes_dir, tmp_path / "idx", encoder=FakeEncoder(), scorer="hybrid")
    head = tmp_path / "idx" / "head.npz"
    data = head.read_bytes()
    head.write_bytes(data[: int(len(data) * keep)])
    assert _load_error(tmp_path / "idx") is CorruptIndexError


TWO_ROUTES = """\
routes:
  - name: desserts
    utterances: [red apple pie, green apple tart]
  - name: diving
    utterances: [blue ocean waves, deep sea diving]
"""


@pytest.mark.parametrize("scorer", ["head", "hybrid"])
def test_two_route_index_with_a_head_routes_to_the_right_route(scorer: str, tmp_path: Path) -> None:
    routes = write_routes(tmp_path / "r", routes=TWO_ROUTES, router=ROUTER)
    build_index(routes, tmp_path / "idx", encoder=FakeEncoder(), scorer=scorer)
    d = Router.load(tmp_path / "idx").route("deep sea diving")
    assert d.route == "diving"
    assert d.scores[1].route == "desserts"
    assert d.scores[1].confidence < 0.5


def test_two_route_hybrid_index_can_be_rebuilt_after_an_edit(tmp_path: Path) -> None:
    routes = write_routes(tmp_path / "r", routes=TWO_ROUTES, router=ROUTER)
    build_index(routes, tmp_path / "idx", encoder=FakeEncoder(), scorer="hybrid")
    (routes / "routes.yaml").write_text(
        textwrap.dedent(TWO_ROUTES).replace("deep sea diving", "deep sea diving trip")
    )
    report = build_index(routes, tmp_path / "idx", encoder=FakeEncoder(), scorer="hybrid")
    assert report.embedded == 1
