"""Fitting thresholds: the sweep is exact against brute force, every objective does what it
promises, per-route thresholds appear only where the data supports them, and
``semroute calibrate`` rewrites an index's thresholds without touching anything else."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semroute import Router
from semroute.cli.main import main
from semroute.errors import DataError
from semroute.routing.rule import choose
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from semroute.tuning.calibrate import calibrate_index, fit_thresholds
from semroute.tuning.evaluate import evaluate, load_labelled, metrics
from tests.conftest import ROUTES_YAML

ROUTE_NOTHING = math.inf


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- brute force ------------------------------------------------------------------------------


def random_data(
    seed: int, n: int, routes: int = 3, oos_share: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Confidences on a coarse grid (ties everywhere) with truth loosely following them."""
    rng = np.random.default_rng(seed)
    conf = np.round(rng.uniform(0, 1, (n, routes)), 1 if seed % 2 else 2).astype(np.float32)
    truth = np.where(rng.random(n) < 0.6, conf.argmax(axis=1), rng.integers(0, routes, n))
    truth[rng.random(n) < oos_share] = -1
    return conf, truth


def routed_at(conf: np.ndarray, threshold: float, min_margin: float = 0.0) -> np.ndarray:
    """Which rows one shared threshold routes, worked out row by row."""
    out = []
    for row in conf.astype(np.float64):
        ranked = sorted(row, reverse=True)
        margin = ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0)
        out.append(ranked[0] >= threshold and margin >= min_margin)
    return np.array(out, dtype=bool)


def objective_value(
    conf: np.ndarray,
    truth: np.ndarray,
    threshold: float,
    objective: str,
    misroute_cost: float = 2.0,
    min_margin: float = 0.0,
) -> float:
    routed = routed_at(conf, threshold, min_margin)
    right = conf.argmax(axis=1) == truth
    ins = truth >= 0
    if objective == "cost":  # negated: higher is better everywhere
        return -(misroute_cost * (routed & ~right).sum() + (~routed & ins).sum())
    if objective == "accuracy":
        return float((routed & right).sum() + (~routed & ~ins).sum())
    assert objective == "balanced"
    return (routed & right).sum() / ins.sum() + (~routed & ~ins).sum() / (~ins).sum()


def candidates(conf: np.ndarray) -> list[float]:
    """Every threshold worth trying: each observed top confidence, and routing nothing."""
    return [*sorted(set(conf.max(axis=1).astype(np.float64).tolist())), ROUTE_NOTHING]


def best_by_brute_force(conf: np.ndarray, truth: np.ndarray, objective: str, **kw: float) -> float:
    return max(objective_value(conf, truth, t, objective, **kw) for t in candidates(conf))


CASES = [(seed, n) for n in (1, 2, 7, 40, 250) for seed in range(6)]


@pytest.mark.parametrize(("seed", "n"), CASES)
@pytest.mark.parametrize("objective", ["cost", "accuracy"])
def test_shared_threshold_is_the_brute_force_optimum(seed: int, n: int, objective: str) -> None:
    conf, truth = random_data(seed, n)
    fit = fit_thresholds(conf, truth, objective=objective, per_route=False, bootstrap=0)
    assert math.isinf(fit.shrinkage)
    assert len(set(fit.thresholds.tolist())) == 1
    got = objective_value(conf, truth, fit.shared, objective)
    assert got == pytest.approx(best_by_brute_force(conf, truth, objective))


@pytest.mark.parametrize("misroute_cost", [0.5, 1.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_cost_objective_honours_the_misroute_cost(seed: int, misroute_cost: float) -> None:
    conf, truth = random_data(seed, 120)
    fit = fit_thresholds(conf, truth, misroute_cost=misroute_cost, per_route=False, bootstrap=0)
    got = objective_value(conf, truth, fit.shared, "cost", misroute_cost)
    assert got == pytest.approx(
        best_by_brute_force(conf, truth, "cost", misroute_cost=misroute_cost)
    )


def test_a_dearer_misroute_never_lowers_the_threshold() -> None:
    conf, truth = random_data(3, 300)
    shared = [
        fit_thresholds(conf, truth, misroute_cost=c, per_route=False).shared
        for c in (0.25, 1, 2, 4, 16)
    ]
    assert shared == sorted(shared)
    assert shared[0] < shared[-1]


@pytest.mark.parametrize(("seed", "n"), [c for c in CASES if c[1] > 1])
def test_balanced_threshold_is_the_brute_force_optimum(seed: int, n: int) -> None:
    conf, truth = random_data(seed, n)
    truth[0], truth[1] = -1, conf[1].argmax()  # both kinds of rows
    fit = fit_thresholds(conf, truth, objective="balanced", bootstrap=0)
    assert math.isinf(fit.shrinkage)  # balanced is not additive: always one shared threshold
    got = objective_value(conf, truth, fit.shared, "balanced")
    assert got == pytest.approx(best_by_brute_force(conf, truth, "balanced"))


@pytest.mark.parametrize("min_margin", [0.05, 0.2])
@pytest.mark.parametrize("objective", ["cost", "accuracy", "balanced"])
@pytest.mark.parametrize("seed", range(4))
def test_optimum_with_min_margin_counts_ambiguous_rows_as_fallbacks(
    seed: int, objective: str, min_margin: float
) -> None:
    conf, truth = random_data(seed, 150)
    fit = fit_thresholds(
        conf, truth, objective=objective, min_margin=min_margin, per_route=False, bootstrap=0
    )
    got = objective_value(conf, truth, fit.shared, objective, min_margin=min_margin)
    assert got == pytest.approx(best_by_brute_force(conf, truth, objective, min_margin=min_margin))


def test_ambiguous_rows_are_never_routed_so_the_threshold_ignores_them() -> None:
    # Three right but ambiguous rows at 0.3, one out-of-scope row at 0.5, clear rows at 0.8.
    conf = np.array([[0.3, 0.25]] * 3 + [[0.5, 0.1]] + [[0.8, 0.1]] * 2, dtype=np.float32)
    truth = np.array([0, 0, 0, -1, 0, 0])
    # Without a margin rule, routing the three rows is worth misrouting the oos one.
    assert fit_thresholds(conf, truth, per_route=False, bootstrap=0).shared <= np.float32(0.3)
    # With one they can never be routed, so letting the oos row through buys nothing.
    fit = fit_thresholds(conf, truth, min_margin=0.2, per_route=False, bootstrap=0)
    assert fit.shared > np.float32(0.5)
    assert choose(conf, fit.thresholds, 0.2).tolist() == [-1, -1, -1, -1, 0, 0]


def fallback(conf: np.ndarray, threshold: float, min_margin: float = 0.0) -> np.ndarray:
    return ~routed_at(conf, threshold, min_margin)


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_oos_recall_target_gives_the_lowest_threshold_reaching_it(seed: int, target: float) -> None:
    conf, truth = random_data(seed, 80)
    truth[0] = -1
    oos = truth < 0
    fit = fit_thresholds(conf, truth, objective="oos-recall", target=target)
    caught = fallback(conf, fit.shared)
    assert caught[oos].mean() >= target
    # Any lower threshold (one routing more rows) misses the target.
    lower = [t for t in candidates(conf) if fallback(conf, t).sum() < caught.sum()]
    assert all(fallback(conf, t)[oos].mean() < target for t in lower)


@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_fallback_rate_target_gives_the_highest_threshold_within_it(
    seed: int, target: float
) -> None:
    conf, truth = random_data(seed, 80)
    fit = fit_thresholds(conf, truth, objective="fallback-rate", target=target)
    sent = fallback(conf, fit.shared)
    assert sent.mean() <= target
    # Any higher threshold (one routing fewer rows) exceeds the budget.
    higher = [t for t in candidates(conf) if fallback(conf, t).sum() > sent.sum()]
    assert all(fallback(conf, t).mean() > target for t in higher)


@pytest.mark.parametrize(
    ("objective", "target", "message"),
    [
        ("balanced", None, "needs out-of-scope rows"),
        ("oos-recall", 0.9, "needs out-of-scope rows"),
        ("fallback-rate", None, "needs --target"),
        ("fallback-rate", 1.5, "needs --target between 0 and 1"),
        ("nonsense", None, "unknown objective 'nonsense'"),
    ],
)
def test_objectives_without_what_they_need_are_refused(
    objective: str, target: float | None, message: str
) -> None:
    conf, truth = random_data(0, 30, oos_share=0.0)
    assert (truth >= 0).all()
    with pytest.raises(DataError, match=message) as info:
        fit_thresholds(conf, truth, objective=objective, target=target, source="val.jsonl")
    assert str(info.value).startswith("val.jsonl: ")


def test_oos_recall_without_a_target_is_refused() -> None:
    conf, truth = random_data(0, 30)
    with pytest.raises(DataError, match="needs --target"):
        fit_thresholds(conf, truth, objective="oos-recall")


def test_when_routing_nothing_is_best_the_thresholds_route_nothing() -> None:
    conf = np.array([[0.3, 0.1], [0.7, 0.2]], dtype=np.float32)
    truth = np.array([-1, -1])  # everything is out of scope
    fit = fit_thresholds(conf, truth, per_route=False)
    assert objective_value(conf, truth, fit.shared, "cost") == 0  # the sweep knows
    assert choose(conf, fit.thresholds, 0.0).tolist() == [-1, -1]  # what the router gets


# --- bagging ----------------------------------------------------------------------------------


def gradual(seed: int, n: int, routes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Like real scores: the more confident a row, the likelier it is right, and out-of-scope
    rows sit lower. The cost is flat around its optimum, so the exact optimum wanders."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.1, -1, rng.integers(0, routes, n))
    conf = rng.uniform(0, 0.2, (n, routes))
    for i, t in enumerate(truth):
        c = rng.beta(2, 4) if t < 0 else rng.beta(4, 2)
        if t < 0:
            top = rng.integers(0, routes)
        else:
            top = t if rng.random() < c else (t + 1 + rng.integers(0, routes - 1)) % routes
        conf[i, top] = c
    return conf.astype(np.float32), truth


def cost_per_row(conf: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    return -objective_value(conf, truth, threshold, "cost") / len(truth)


def test_bagged_thresholds_wander_less_and_hold_up_on_fresh_data() -> None:
    fresh = gradual(999, 20_000)
    exact, bagged = [], []
    for seed in range(30):
        conf, truth = gradual(seed, 300)
        exact.append(fit_thresholds(conf, truth, per_route=False, bootstrap=0).shared)
        bagged.append(fit_thresholds(conf, truth, per_route=False).shared)
    assert np.std(bagged) < 0.85 * np.std(exact)
    fresh_exact = np.mean([cost_per_row(*fresh, t) for t in exact])
    assert np.mean([cost_per_row(*fresh, t) for t in bagged]) <= fresh_exact


def test_bagging_is_reproducible_and_recorded() -> None:
    conf, truth = gradual(0, 300)
    first, again = fit_thresholds(conf, truth), fit_thresholds(conf, truth)
    assert first.shared == again.shared
    assert first.summary()["bootstrap"] == 100
    exact = fit_thresholds(conf, truth, bootstrap=0)
    assert exact.summary()["bootstrap"] == 0 and exact.shared != first.shared
    # Targets are quantiles of the data, not optima: nothing to bag.
    recall = fit_thresholds(conf, truth, objective="oos-recall", target=0.5)
    assert recall.summary()["bootstrap"] == 0
    assert recall.shared == fit_thresholds(conf, truth, objective="oos-recall", target=0.5).shared


def test_negative_bootstrap_is_refused() -> None:
    conf, truth = gradual(0, 20)
    with pytest.raises(DataError, match="bootstrap must be 0 or more"):
        fit_thresholds(conf, truth, bootstrap=-1)


# --- per-route thresholds ---------------------------------------------------------------------


def two_kinds_of_route(seed: int, per_route: int) -> tuple[np.ndarray, np.ndarray]:
    """Route 0 is right above 0.7 and catches out-of-scope queries at 0.4-0.7; route 1 is right
    at 0.3-0.6 and catches them at 0.1-0.3. No single threshold serves both."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for route, (right, wrong) in enumerate([((0.7, 1.0), (0.4, 0.7)), ((0.3, 0.6), (0.1, 0.3))]):
        for _ in range(per_route):
            is_right = rng.random() < 0.5
            c = rng.uniform(*(right if is_right else wrong))
            row = [rng.uniform(0, c - 0.05), rng.uniform(0, c - 0.05)]
            row[route] = c
            rows.append(row)
            truth.append(route if is_right else -1)
    return np.array(rows, dtype=np.float32), np.array(truth)


@pytest.mark.parametrize("objective", ["cost", "accuracy"])
def test_per_route_thresholds_where_routes_clearly_differ(objective: str) -> None:
    conf, truth = two_kinds_of_route(0, 300)
    fit = fit_thresholds(conf, truth, objective=objective)
    assert math.isfinite(fit.shrinkage)
    assert fit.thresholds[0] > 0.6 and fit.thresholds[1] < 0.4
    # It pays off on fresh data from the same routes.
    fresh_conf, fresh_truth = two_kinds_of_route(1, 300)
    shared = fit_thresholds(conf, truth, objective=objective, per_route=False)
    names = ["a", "b"]
    own = metrics(fresh_conf, fresh_truth, fit.thresholds, 0.0, names)
    one = metrics(fresh_conf, fresh_truth, shared.thresholds, 0.0, names)
    assert own.accuracy > one.accuracy + 0.1
    assert fit.summary()["per_route"] is True and fit.summary()["shrinkage"] == fit.shrinkage


def test_routes_seen_once_share_one_threshold() -> None:
    # Each route is the top route of a single row: nothing supports a threshold of its own.
    conf = np.eye(4, dtype=np.float32) * np.array([0.9, 0.4, 0.6, 0.2], dtype=np.float32)
    truth = np.array([0, -1, 2, 3])
    fit = fit_thresholds(conf, truth)
    assert math.isinf(fit.shrinkage)
    assert len(set(fit.thresholds.tolist())) == 1
    assert fit.summary()["per_route"] is False and fit.summary()["shrinkage"] is None


def same_for_every_route(seed: int, n: int, routes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every route draws right answers and out-of-scope catches from the same distributions."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.3, -1, rng.integers(0, routes, n))
    conf = rng.uniform(0, 0.3, (n, routes))
    for i, t in enumerate(truth):
        top = rng.integers(0, routes) if (t < 0 or rng.random() < 0.15) else t
        conf[i, top] = rng.uniform(0.2, 0.6) if t < 0 else rng.uniform(0.4, 0.9)
    return conf.astype(np.float32), truth


def test_tiny_noisy_data_falls_back_to_one_shared_threshold() -> None:
    chosen = [fit_thresholds(*same_for_every_route(seed, 12)).shrinkage for seed in range(20)]
    assert all(math.isinf(s) for s in chosen), chosen


# --- calibrate_index and `semroute calibrate` on a FakeEncoder index --------------------------

ROWS = [
    ("will it rain tomorrow", "weather"),
    ("what is the weather forecast", "weather"),
    ("how hot will it be", "weather"),
    ("is it going to rain this weekend", "weather"),
    ("cancel my subscription", "billing"),
    ("download my invoice please", "billing"),
    ("my credit card was charged twice", "billing"),
    ("hello there", "greeting"),
    ("good morning", "greeting"),
    ("hello friend", "greeting"),
    ("explain quantum entanglement", "oos"),
    ("write a sonnet about autumn leaves", "oos"),
    ("what is the capital of france", "oos"),
    ("how do i bake sourdough bread", "oos"),
    ("will the stock market rise", "oos"),
]


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "val.jsonl", ROWS)


def manifest(index: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((index / "manifest.json").read_text())


def test_calibrate_writes_thresholds_and_nothing_else(fake_index: Path, data_file: Path) -> None:
    before = manifest(fake_index)
    files = {
        f: (fake_index / f).read_bytes() for f in ("index.faiss", "utterances.json", "head.npz")
    }
    result = calibrate_index(fake_index, data_file, per_route=False)
    after = manifest(fake_index)

    thresholds = {r["name"]: r["threshold"] for r in after["routes"]}
    assert thresholds == result["thresholds"]
    assert thresholds != {r["name"]: r["threshold"] for r in before["routes"]}
    assert len(set(thresholds.values())) == 1  # shared-only
    cal = after["calibration"]
    assert cal["objective"] == "cost" and cal["data"] == str(data_file) and cal["rows"] == 15
    assert cal["before"] == result["before"] and cal["after"] == result["after"]
    assert {"accuracy", "in_scope_accuracy", "oos_recall", "coverage"} <= cal["after"].keys()
    # The objective (2 x misroutes + fallbacks) is no worse than with the configured thresholds.
    texts = [t for t, _ in ROWS]
    conf = Router.load(fake_index).score(texts).confidence
    truth = load_labelled(data_file).truth(["weather", "billing", "greeting"])

    def cost(th: list[float]) -> int:
        chosen = choose(conf, np.array(th, np.float32), 0.0)
        return int(
            2 * ((chosen >= 0) & (chosen != truth)).sum() + ((chosen < 0) & (truth >= 0)).sum()
        )

    assert cost(list(thresholds.values())) <= cost([0.5, 0.6, 0.5])
    # Nothing re-embedded or retrained: the same vectors, head and build.
    assert {f: (fake_index / f).read_bytes() for f in files} == files
    assert after["built_at"] == before["built_at"]
    for key in ("routes_digest", "encoder", "index", "head", "settings", "sources"):
        assert after[key] == before[key]
    assert [r["configured_threshold"] for r in after["routes"]] == [0.5, 0.6, 0.5]

    # Still a fresh, loadable index, routing with the new thresholds.
    router = Router.load(fake_index)
    assert router.thresholds.tolist() == pytest.approx(list(thresholds.values()))
    d = router.route("will it rain tomorrow")
    assert {s.route: s.threshold for s in d.scores} == thresholds


def test_dry_run_writes_nothing(fake_index: Path, data_file: Path) -> None:
    before = (fake_index / "manifest.json").read_bytes()
    result = calibrate_index(fake_index, data_file, write=False)
    assert (fake_index / "manifest.json").read_bytes() == before
    assert set(result["thresholds"]) == {"weather", "billing", "greeting"}
    code, out, _ = run(
        "calibrate", "--data", str(data_file), "--index", str(fake_index), "--dry-run"
    )
    assert code == 0 and "Dry run: nothing written" in out
    assert (fake_index / "manifest.json").read_bytes() == before


def test_calibrated_index_routes_as_calibrate_reported(tmp_path: Path, routes_dir: Path) -> None:
    build_index(routes_dir, tmp_path / "idx", encoder=FakeEncoder(), scorer="nearest")
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [("rain today", "weather"), ("will it rain", "weather"), ("today is friday", "oos")],
    )
    result = calibrate_index(tmp_path / "idx", data, per_route=False)
    report, _, _ = evaluate(Router.load(tmp_path / "idx"), load_labelled(data))
    assert report.accuracy == pytest.approx(result["after"]["accuracy"], abs=1e-4)


def test_rebuild_keeps_calibrated_thresholds_unless_the_configured_one_changed(
    fake_index: Path, routes_dir: Path, data_file: Path
) -> None:
    result = calibrate_index(fake_index, data_file, per_route=False)
    calibrated = result["thresholds"]

    report = build_index(routes_dir, fake_index, encoder=FakeEncoder())
    assert report.kept_thresholds == 3
    m = manifest(fake_index)
    assert {r["name"]: r["threshold"] for r in m["routes"]} == calibrated
    assert m["calibration"]["objective"] == "cost" and "carried_over_at" in m["calibration"]

    # Editing billing's configured threshold means the user wants that value.
    (routes_dir / "routes.yaml").write_text(ROUTES_YAML.replace("threshold: 0.6", "threshold: 0.7"))
    report = build_index(routes_dir, fake_index, encoder=FakeEncoder())
    assert report.kept_thresholds == 2
    thresholds = {r["name"]: r["threshold"] for r in manifest(fake_index)["routes"]}
    assert thresholds == {**calibrated, "billing": 0.7}
    assert Router.load(fake_index).thresholds.tolist() == pytest.approx(
        [calibrated["weather"], 0.7, calibrated["greeting"]]
    )


def test_rebuild_without_calibration_keeps_nothing(fake_index: Path, routes_dir: Path) -> None:
    assert build_index(routes_dir, fake_index, encoder=FakeEncoder()).kept_thresholds == 0
    assert "calibration" not in manifest(fake_index)


def test_calibrate_cli_prints_before_and_after(fake_index: Path, data_file: Path) -> None:
    code, out, _ = run("calibrate", "--data", str(data_file), "--index", str(fake_index))
    assert code == 0
    text = " ".join(out.split())
    assert "before" in text and "after" in text
    assert "in scope accuracy" in text and "oos recall" in text
    assert "Wrote the thresholds into" in text
    assert "calibration" in manifest(fake_index)


def test_calibrate_cli_json(fake_index: Path, data_file: Path) -> None:
    code, out, _ = run(
        "calibrate", "--data", str(data_file), "--index", str(fake_index), "--json", "--shared-only"
    )
    assert code == 0
    result = json.loads(out)
    assert result["rows"] == 15 and result["out_of_scope_rows"] == 5
    assert result["per_route"] is False
    assert set(result["thresholds"]) == {"weather", "billing", "greeting"}
    assert {"accuracy", "coverage"} <= result["before"].keys() & result["after"].keys()
    assert result["bootstrap"] == 100


def test_calibrate_cli_bootstrap_zero_is_the_exact_optimum(
    fake_index: Path, data_file: Path
) -> None:
    args = ["calibrate", "--data", str(data_file), "--index", str(fake_index), "--json"]
    code, out, _ = run(*args, "--shared-only", "--bootstrap", "0", "--dry-run")
    assert code == 0
    result = json.loads(out)
    assert result["bootstrap"] == 0
    data = load_labelled(data_file)
    router = Router.load(fake_index)
    names = [r.name for r in router.routes]
    conf = router.score(data.texts).confidence
    exact = fit_thresholds(conf, data.truth(names), per_route=False, bootstrap=0)
    assert result["shared_threshold"] == exact.shared
    code, _, err = run(*args, "--bootstrap", "-1")
    assert code == 2 and "--bootstrap" in err


def test_calibrate_cli_unknown_labels_are_listed(fake_index: Path, tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "val.jsonl", [*ROWS, ("pay the bill", "payments"), ("rain?", "wether")]
    )
    before = (fake_index / "manifest.json").read_bytes()
    code, _, err = run("calibrate", "--data", str(data), "--index", str(fake_index))
    assert code == 1
    assert err.startswith(f"error: {data}: ") and err.count("\n") == 1
    assert "'payments' (1 row" in err and "'wether' (1 row" in err
    assert (fake_index / "manifest.json").read_bytes() == before


def test_calibrate_cli_oos_recall_needs_a_target(fake_index: Path, data_file: Path) -> None:
    code, _, err = run(
        "calibrate",
        "--data",
        str(data_file),
        "--index",
        str(fake_index),
        "--objective",
        "oos-recall",
    )
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "'oos-recall' needs --target between 0 and 1" in err


def test_calibrate_cli_target_out_of_range_is_a_usage_error(
    fake_index: Path, data_file: Path
) -> None:
    code, _, err = run(
        "calibrate",
        "--data",
        str(data_file),
        "--index",
        str(fake_index),
        "--objective",
        "oos-recall",
        "--target",
        "2",
    )
    assert code == 2
    assert "--target" in err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--misroute-cost", "nan"), ("--misroute-cost", "inf"), ("--target", "nan")],
)
def test_calibrate_cli_refuses_a_number_that_is_not_finite_and_the_index_still_loads(
    fake_index: Path, data_file: Path, option: str, value: str
) -> None:
    # A calibration first, so the index has a drift.json the manifest holds a checksum of.
    assert run("calibrate", "--data", str(data_file), "--index", str(fake_index))[0] == 0
    files = {f.name: f.read_bytes() for f in fake_index.iterdir() if f.is_file()}
    objective = ["--objective", "oos-recall"] if option == "--target" else []
    args = ["--data", str(data_file), "--index", str(fake_index), *objective, option, value]
    code, _, err = run("calibrate", *args)
    assert code == 2 and f"{value!r} is not a finite number" in err
    assert {f.name: f.read_bytes() for f in fake_index.iterdir() if f.is_file()} == files
    Router.load(fake_index)


@pytest.mark.parametrize("cost", [math.nan, math.inf, 0.0, -1.0])
def test_a_misroute_cost_that_is_not_a_number_above_0_is_refused(
    fake_index: Path, data_file: Path, cost: float
) -> None:
    with pytest.raises(DataError, match="misroute cost must be a number above 0"):
        calibrate_index(fake_index, data_file, misroute_cost=cost)


def test_a_manifest_that_cannot_be_written_leaves_the_old_drift_reference_and_a_loadable_index(
    fake_index: Path, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semroute.index.manifest import Manifest

    calibrate_index(fake_index, data_file)
    before = {f.name: f.read_bytes() for f in fake_index.iterdir() if f.is_file()}

    def full(self: Manifest, path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Manifest, "write", full)
    with pytest.raises(OSError, match="No space left"):
        calibrate_index(fake_index, data_file, per_route=False, bootstrap=0)
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in fake_index.iterdir() if f.is_file()} == before
    Router.load(fake_index).route("will it rain tomorrow")


def test_calibrate_cli_oos_recall_with_a_target(fake_index: Path, data_file: Path) -> None:
    code, out, _ = run(
        "calibrate",
        "--data",
        str(data_file),
        "--index",
        str(fake_index),
        "--objective",
        "oos-recall",
        "--target",
        "1",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["objective"] == "oos-recall" and result["target"] == 1.0
    assert result["after"]["oos_recall"] == 1.0


def test_calibrating_on_the_index_own_utterances_warns_that_it_is_optimistic(
    fake_index: Path, tmp_path: Path
) -> None:
    rows = [("hello there", "greeting"), ("download my invoice", "billing")]
    rows += [("will it rain on saturday", "weather")]
    result = calibrate_index(fake_index, write_jsonl(tmp_path / "d.jsonl", rows), write=False)
    assert "2 of the 3 rows are the index's own utterances" in " ".join(result["warnings"])
