from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

import semroute
from semroute import Decision, InvalidQueryError, Reason, Router
from semroute.api import default_router
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import write_routes


@pytest.fixture
def router(fake_index: Path) -> Router:
    return Router.load(fake_index)


def test_clear_query_goes_to_its_route_and_model(router: Router) -> None:
    d = router.route("will it rain tomorrow")
    assert (d.route, d.model, d.reason) == ("weather", "weather-model", Reason.MATCHED)
    assert d.matched
    assert d.confidence == d.scores[0].confidence >= 0.5


def test_every_route_is_scored_best_first_with_threshold_and_example(router: Router) -> None:
    d = router.route("cancel my subscription")
    assert next(s.route for s in d.scores) == "billing"
    assert {s.route for s in d.scores} == {"weather", "billing", "greeting"}
    confidences = [s.confidence for s in d.scores]
    assert confidences == sorted(confidences, reverse=True)
    by_name = {s.route: s for s in d.scores}
    assert by_name["billing"].threshold == 0.6  # its own
    assert by_name["weather"].threshold == 0.5  # the router's default
    assert by_name["billing"].utterance == "cancel my subscription plan"
    assert by_name["greeting"].model == "frontier-model"  # a route without a model uses the default
    assert d.margin == pytest.approx(d.scores[0].confidence - d.scores[1].confidence)


def test_unrelated_query_goes_to_the_default_model(router: Router) -> None:
    d = router.route("explain quantum entanglement")
    assert d.route is None
    assert d.model == "frontier-model"
    assert d.reason == Reason.BELOW_THRESHOLD
    assert not d.matched


def test_ambiguous_query_goes_to_the_default_model(tmp_path: Path) -> None:
    routes = write_routes(
        tmp_path / "r",
        routes="""\
        routes:
          - name: a
            utterances: [red apple pie]
          - name: b
            utterances: [red apple juice]
        """,
        router="router: {default_model: big, threshold: 0.1, min_margin: 0.2}\n",
    )
    build_index(routes, tmp_path / "idx", encoder=FakeEncoder())
    d = Router.load(tmp_path / "idx").route("red apple")
    assert d.reason == Reason.AMBIGUOUS
    assert (d.route, d.model) == (None, "big")
    assert d.margin < 0.2


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_a_decision_not_an_error(router: Router, query: str) -> None:
    d = router.route(query)
    assert (d.route, d.model, d.reason) == (None, "frontier-model", Reason.EMPTY_QUERY)
    assert len(d.scores) == 3 and all(s.confidence == 0.0 for s in d.scores)


@pytest.mark.parametrize("query", [None, 42, b"bytes", ["list"]])
def test_non_string_query_raises_a_clear_error(router: Router, query: object) -> None:
    with pytest.raises(InvalidQueryError, match="must be a string"):
        router.route(query)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # also catchable as what it is
        router.route_batch(["fine", query])  # type: ignore[list-item]


def test_long_query_is_truncated_and_says_so(router: Router) -> None:
    long = "will it rain today " * 40
    d = router.route(long)
    assert d.truncated
    assert d.route == "weather"
    assert not router.route("will it rain").truncated


def test_route_batch_agrees_with_route(router: Router) -> None:
    queries = ["will it rain", "", "download my invoice please", "quantum physics", "hello"]
    batch = router.route_batch(queries, batch_size=2)
    assert len(batch) == len(queries)
    for q, got in zip(queries, batch, strict=True):
        want = router.route(q)
        assert dataclasses.replace(got, latency_ms=0) == dataclasses.replace(want, latency_ms=0)
        assert got.latency_ms >= 0


def test_decision_is_frozen_and_serialises(router: Router) -> None:
    d = router.route("hello there")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.route = "other"  # type: ignore[misc]
    data = json.loads(json.dumps(d.to_dict()))
    assert data["route"] == "greeting" and data["reason"] == "matched"
    assert {"route", "confidence", "threshold", "utterance", "model"} <= data["scores"][0].keys()
    assert len(data["scores"]) == 3


def test_module_level_route_uses_semroute_index(
    fake_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMROUTE_INDEX", str(fake_index))
    d = semroute.route("good morning")
    assert isinstance(d, Decision) and d.route == "greeting"


def test_default_router_loads_once_across_threads(
    fake_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMROUTE_INDEX", str(fake_index))
    seen: list[Router] = []
    decisions: list[Decision] = []

    def work() -> None:
        seen.append(default_router())
        decisions.append(semroute.route("will it rain today"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in seen}) == 1
    assert {d.route for d in decisions} == {"weather"}
