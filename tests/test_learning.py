"""Replay, suggest, drift and difficulty rows from a decision log, on logs written here, with
indexes built with the FakeEncoder (see test_learning_e2e.py for the loop through a gateway)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.errors import CorruptIndexError, DataError, ServeError
from semroute.index.drift import DRIFT_FILE, DriftReference, psi, read_reference
from semroute.index.store import RouteIndex
from semroute.routing.router import Router
from semroute.server.state import load_challenger
from semroute.tuning.calibrate import calibrate_index
from semroute.tuning.drift import MIN_REQUESTS, drift_report
from semroute.tuning.log_outcomes import outcomes_from_log
from semroute.tuning.logread import parse_since, read_log
from semroute.tuning.replay import replay
from semroute.tuning.suggest import patch_yaml, suggest


def line(
    request_id: str,
    text: str | None,
    *,
    route: str | None = None,
    reason: str = "below_threshold",
    best: tuple[str, float] = ("weather", 0.3),
    margin: float = 0.2,
    model: str = "frontier-model",
    time: str = "2026-05-01T10:00:00.000+00:00",
    turns: list[str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": time,
        "request_id": request_id,
        "route": route,
        "reason": reason,
        "confidence": best[1],
        "margin": margin,
        "top_scores": [{"route": best[0], "confidence": best[1]}],
        "recommended_model": model,
        "model": model,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
    }
    if text is not None or turns:
        out["messages"] = [{"role": "user", "content": t} for t in (turns or [text])]
        out["answer"] = "ok"
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    return result


# --- replay ------------------------------------------------------------------------------------


def test_replay_refuses_a_log_without_content(tmp_path: Path, fake_index: Path) -> None:
    log = write(tmp_path / "log.jsonl", [line("a", None), line("b", None)])
    result = cli("replay", str(log), "--index", str(fake_index), "--json")
    assert result.exit_code == 1
    assert "log_content: true" in result.output


def test_replay_reports_the_changed_pairs_costs_and_feedback(
    tmp_path: Path, fake_index: Path
) -> None:
    records = [
        line("a", "will it rain today"),  # the candidate routes it to weather
        line("b", "will it rain today", route="weather", reason="matched", model="weather-model"),
        line("c", "tell me about quantum chromodynamics"),  # stays on the default
        line("d", None),  # no content: counted in n, not replayed
        line("e", "hello friend", turns=["will it rain today", "hello friend"]),
        {"kind": "feedback", "request_id": "a", "score": -0.5, "time": "x"},
        {"kind": "feedback", "request_id": "c", "score": 1},
        "not json",
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    report = replay(Router.load(fake_index), read_log(log))
    assert (report["n"], report["replayed"]) == (5, 4)
    pairs = {(p["from"], p["to"]): p["n"] for p in report["by_pair"]}
    assert pairs[(None, "weather")] == 1
    assert pairs[(None, "greeting")] == 1  # the multi-turn request's last turn
    assert report["changed"] == sum(pairs.values())
    assert report["feedback"] == {"changed_with_feedback": 1, "mean_score_before": -0.5}
    # Prices unknown to the index (no deployments): no cost claimed
    assert report["cost_usd_before"] is None
    [example] = next(e for e in report["examples"] if e["to"] == "weather")["requests"]
    assert example["request_id"] == "a"


def test_replay_since_keeps_later_requests(tmp_path: Path, fake_index: Path) -> None:
    log = write(
        tmp_path / "log.jsonl",
        [
            line("old", "will it rain today", time="2026-04-01T00:00:00+00:00"),
            line("new", "will it rain today", time="2026-05-02T00:00:00+00:00"),
        ],
    )
    report = replay(Router.load(fake_index), read_log(log, parse_since("2026-05-01")))
    assert (report["n"], report["replayed"], report["changed"]) == (1, 1, 1)
    result = cli("replay", str(log), "--index", str(fake_index), "--since", "May 1st")
    assert result.exit_code == 1 and "ISO 8601" in result.output


def test_replay_estimates_costs_with_the_routing_cost_model(
    tmp_path: Path, provider: Any, provider_key: Any
) -> None:
    from tests.gateway_kit import build

    index = build(tmp_path, provider)
    log = write(
        tmp_path / "log.jsonl",
        [
            line("a", "will it rain today", model="frontier"),
            line("b", "hello there", model="frontier"),
        ],
    )
    report = replay(Router.load(index), read_log(log))
    # $1 / $2 per million tokens for every model of the kit: 1000 in, 500 out each
    assert report["cost_usd_before"] == pytest.approx(2 * (1000e-6 + 500 * 2e-6))
    assert report["cost_usd_after"] == pytest.approx(report["cost_usd_before"])


# --- suggest -----------------------------------------------------------------------------------

CLUSTER = [
    "how do i reset my account password",
    "reset the password of my account",
    "i forgot my account password",
    "help me reset my account password",
    "account password reset is not working",
    "where do i reset my account password",
]


def test_suggest_proposes_a_route_for_a_cluster_and_utterances_from_feedback(
    tmp_path: Path, fake_index: Path
) -> None:
    records = [line(f"p{i}", t) for i, t in enumerate(CLUSTER)]
    records += [line("s1", "scattered lonely question"), line("s2", "another unrelated thing")]
    records += [line("f1", "is my invoice ready", route="weather", reason="matched", margin=0.4)]
    records += [{"kind": "feedback", "request_id": "f1", "score": -1, "route": "billing"}]
    log = write(tmp_path / "log.jsonl", records)
    router = Router.load(fake_index)
    report = suggest(router, read_log(log), min_size=4)
    [cluster] = report["clusters"]
    assert cluster["name"] == "new-route-1" and cluster["size"] == len(CLUSTER)
    assert set(cluster["utterances"]) == set(CLUSTER)
    assert report["additions"] == [{"route": "billing", "utterances": ["is my invoice ready"]}]
    patch = patch_yaml(report)
    assert "# utterances to add to route 'billing':" in patch
    # reversed log, same answer
    again = suggest(router, read_log(write(tmp_path / "r.jsonl", records[::-1])), min_size=4)
    assert again == report


def test_suggest_patch_is_a_route_file_validate_accepts(tmp_path: Path, fake_index: Path) -> None:
    log = write(tmp_path / "log.jsonl", [line(f"p{i}", t) for i, t in enumerate(CLUSTER)])
    routes = tmp_path / "routes"  # the fake_index's route files
    out = tmp_path / "patch.yaml"
    result = cli(
        "suggest", str(log), "--index", str(fake_index), "--out", str(out), "--min-size", "4"
    )
    assert result.exit_code == 0, result.output
    (routes / "suggested.yaml").write_text(out.read_text())
    result = cli("validate", str(routes))
    assert result.exit_code == 0, result.output
    assert "4 routes" in result.output


# --- drift -------------------------------------------------------------------------------------


def test_psi_matches_its_formula_and_is_zero_for_the_same_distribution() -> None:
    assert psi([10, 10], [1, 1]) == pytest.approx(0.0)
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi([5, 5], [8, 2]) == pytest.approx(expected)
    assert psi([0, 0], [1, 2]) is None and psi([1, 2], [0, 0]) is None


def _reference(share: float = 0.2) -> DriftReference:
    return DriftReference(
        bins=10, rows=100, default_share=share, routes={"weather": [0] * 7 + [10, 30, 10]}
    )


def _window(n: int, confidence: float, route: str | None = "weather") -> list[Any]:
    return [
        line(f"{confidence}-{i}", "q", route=route, reason="matched", best=("weather", confidence))
        for i in range(n)
    ]


def test_drift_alarms_past_the_threshold_with_enough_requests(tmp_path: Path) -> None:
    like = _window(10, 0.75) + _window(30, 0.85) + _window(10, 0.95)  # the reference's shape
    same = read_log(write(tmp_path / "a.jsonl", like)).requests
    shifted = read_log(write(tmp_path / "b.jsonl", _window(MIN_REQUESTS, 0.35))).requests
    few = read_log(write(tmp_path / "c.jsonl", _window(MIN_REQUESTS - 1, 0.35))).requests
    calm = drift_report(_reference(0.0), same)
    assert calm["routes"]["weather"]["alarm"] is False and calm["alarm"] is False
    loud = drift_report(_reference(0.0), shifted)
    assert loud["routes"]["weather"]["psi"] > 0.2 and loud["routes"]["weather"]["alarm"] is True
    assert drift_report(_reference(0.0), few)["routes"]["weather"]["alarm"] is False


@pytest.mark.parametrize(
    ("shape", "alarm"),
    [((12, 20, 18), False), ((10, 20, 20), True)],  # PSI 0.182 and 0.220, around 0.2
)
def test_a_route_alarms_past_a_psi_of_0_2(
    tmp_path: Path, shape: tuple[int, int, int], alarm: bool
) -> None:
    records = _window(shape[0], 0.75) + _window(shape[1], 0.85) + _window(shape[2], 0.95)
    report = drift_report(_reference(0.0), read_log(write(tmp_path / "a.jsonl", records)).requests)
    assert report["routes"]["weather"]["alarm"] is alarm
    assert (report["routes"]["weather"]["psi"] > 0.2) is alarm


def test_drift_alarms_when_the_default_share_moves(tmp_path: Path) -> None:
    records = _window(20, 0.85) + _window(20, 0.75, route=None)
    requests = read_log(write(tmp_path / "a.jsonl", records)).requests
    assert drift_report(_reference(0.4), requests)["default_share"]["alarm"] is False
    report = drift_report(_reference(0.3), requests)
    assert report["default_share"] == {"logged": 0.5, "calibration": 0.3, "alarm": True}
    assert report["alarm"] is True


def test_calibrate_stores_a_checksummed_reference(tmp_path: Path, fake_index: Path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [("will it rain today", "weather"), ("hello there", "greeting"), ("what?", "oos")]
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    calibrate_index(fake_index, data, bootstrap=0)
    index = RouteIndex.load(fake_index)
    assert index.manifest.drift is not None and index.manifest.drift.rows == 3
    reference = read_reference(fake_index, index.manifest.checksums[DRIFT_FILE])
    assert reference is not None and sum(sum(c) for c in reference.routes.values()) == 3
    raw = json.loads((fake_index / DRIFT_FILE).read_text())
    assert "will it rain" not in json.dumps(raw)  # no calibration text is kept
    raw["default_share"] = 0.9
    (fake_index / DRIFT_FILE).write_text(json.dumps(raw))
    with pytest.raises(CorruptIndexError):
        RouteIndex.load(fake_index)
    with pytest.raises(CorruptIndexError, match=DRIFT_FILE):
        read_reference(fake_index, index.manifest.checksums[DRIFT_FILE])


def test_stats_without_a_calibrated_index_says_why_there_is_no_drift(
    tmp_path: Path, fake_index: Path
) -> None:
    log = write(tmp_path / "log.jsonl", _window(3, 0.8))
    result = cli("stats", str(log), "--index", str(fake_index), "--json")
    assert result.exit_code == 0, result.output
    drift = json.loads(result.output)["drift"]
    assert drift["alarm"] is False and "semroute calibrate" in drift["problem"]
    result = cli("stats", str(log), "--index", str(tmp_path / "nothing-here"), "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["requests"] == 3 and "nothing-here" in stats["drift"]["problem"]


# --- difficulty from the log ------------------------------------------------------------------


def test_outcome_rows_from_verdicts_and_feedback(tmp_path: Path) -> None:
    records = [
        line("w", "easy one", model="cheap"),
        line("t", "fine one", model="cheap"),
        line("l", "hard one", model="cheap", route="weather"),
        line("f", "judged by a person", model="cheap"),
        line("s", "answered by the strong model", model="strong"),
        line("n", "nothing known", model="cheap"),
        line("x", None, model="cheap"),
        {"kind": "quality", "request_id": "w", "status": "judged", "verdict": "win"},
        {"kind": "quality", "request_id": "t", "status": "judged", "verdict": "tie"},
        {"kind": "quality", "request_id": "l", "status": "judged", "verdict": "loss"},
        {"kind": "quality", "request_id": "s", "status": "judged", "verdict": "loss"},
        {"kind": "quality", "request_id": "x", "status": "judged", "verdict": "loss"},
        {"kind": "feedback", "request_id": "f", "score": -0.5},
    ]
    rows = outcomes_from_log(read_log(write(tmp_path / "l.jsonl", records)), "strong", "l")
    assert rows.prompts == ["easy one", "fine one", "hard one", "judged by a person"]
    assert rows.weak.tolist() == [1.0, 1.0, 0.0, 0.25]
    assert rows.strong.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert rows.domains == ["(no route)", "(no route)", "weather", "(no route)"]
    with pytest.raises(DataError, match="log_content"):
        outcomes_from_log(read_log(write(tmp_path / "e.jsonl", records[-7:])), None, "e")


def test_train_difficulty_takes_data_or_a_log_not_both(tmp_path: Path) -> None:
    log = write(tmp_path / "l.jsonl", [line("a", "q")])
    result = cli("train-difficulty", "--out", str(tmp_path / "m"))
    assert result.exit_code == 2 and "--from-log" in result.output
    result = cli("train-difficulty", str(log), "--from-log", str(log), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2


def test_train_difficulty_from_a_log(tmp_path: Path, fake_index: Path) -> None:
    rng = np.random.default_rng(0)
    records: list[dict[str, Any]] = []
    for i in range(120):
        hard = i % 3 == 0
        text = f"prove the theorem number {i}" if hard else f"say hi to person {i}"
        records.append(line(f"r{i}", text, model="cheap"))
        verdict = "loss" if hard or rng.random() < 0.1 else "tie"
        records.append(
            {"kind": "quality", "request_id": f"r{i}", "status": "judged", "verdict": verdict}
        )
    log = write(tmp_path / "l.jsonl", records)
    out = tmp_path / "model"
    result = cli(
        "train-difficulty",
        "--from-log",
        str(log),
        "--out",
        str(out),
        "--index",
        str(fake_index),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"] == str(out)


# --- challenger ---------------------------------------------------------------------------------


def test_a_challenger_routes_in_the_same_call_and_is_carried_by_the_decision(
    fake_index: Path, tmp_path: Path
) -> None:
    router = Router.load(fake_index)
    assert router.route("will it rain today").challenger is None
    both = router.with_challenger(Router.load(fake_index))
    decision = both.route("will it rain today")
    assert decision.challenger is not None
    assert decision.challenger.route == decision.route == "weather"
    assert decision.to_dict()["challenger"]["route"] == "weather"
    assert router.route("will it rain today").challenger is None  # the original is unchanged
    with pytest.raises(ServeError, match=r"^server\.challenger: the challenger index at"):
        load_challenger(tmp_path / "missing")


def test_a_challenger_with_the_same_encoder_reuses_the_query_embedding(fake_index: Path) -> None:
    main_router, rival = Router.load(fake_index), Router.load(fake_index)
    both = main_router.with_challenger(rival)
    before = (main_router.encoder.calls, rival.encoder.calls)  # type: ignore[attr-defined]
    for i in range(5):
        decision = both.route(f"will it rain on day {i}")
        assert decision.challenger is not None and decision.challenger.route == decision.route
    after = (main_router.encoder.calls, rival.encoder.calls)  # type: ignore[attr-defined]
    assert (after[0] - before[0], after[1] - before[1]) == (5, 0)


def test_serve_with_a_challenger_that_cannot_load_stops_with_one_line(
    fake_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMROUTE_CHALLENGER", "")  # restored after the test: serve sets it
    missing = tmp_path / "missing"
    result = cli("serve", "--index", str(fake_index), "--challenger", str(missing))
    assert result.exit_code == 1
    assert result.output.startswith(
        f"error: server.challenger: the challenger index at {missing} (--challenger, or "
        "server.challenger) cannot be loaded"
    )
    assert "Traceback" not in result.output


def test_a_since_that_is_no_time_names_the_flag_once(fake_index: Path, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text('{"request_id": "a", "route": null}\n')
    result = cli("replay", str(log), "--index", str(fake_index), "--since", "yesterday")
    assert result.exit_code == 1
    assert result.output.startswith("error: --since: 'yesterday' is not an ISO 8601 time")


def test_an_index_folder_that_cannot_be_locked_says_what_to_check(
    tmp_path: Path, routes_dir: Path
) -> None:
    (tmp_path / "file").write_text("a file, not a folder\n")
    blocked = tmp_path / "file" / "index"
    result = cli("build-index", str(routes_dir), "--out", str(blocked))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.endswith(": File exists; choose another --out\n")
    # A folder that is there but where no lock file can be made (Linux's /proc).
    out = Path("/proc/semroute-test-index")
    bundled = Path(__file__).resolve().parents[1] / "routes"  # the real encoder
    result = cli("build-index", str(bundled), "--out", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"check that {out.parent} is a folder you can write to" in result.output


def test_the_tables_print_without_json(tmp_path: Path, fake_index: Path) -> None:
    records = [line(f"p{i}", t) for i, t in enumerate(CLUSTER)]
    records[0]["challenger"] = {
        "route": "weather",
        "model": "m",
        "reason": "matched",
        "confidence": 0.9,
    }
    records += [{"kind": "feedback", "request_id": "p1", "score": "down", "route": "billing"}]
    log = write(tmp_path / "log.jsonl", records)
    stats = cli("stats", str(log), "--index", str(fake_index))
    assert stats.exit_code == 0, stats.output
    assert "Feedback per route" in stats.output and "challenger agreed" in stats.output
    replayed = cli("replay", str(log), "--index", str(fake_index))
    assert replayed.exit_code == 0 and "6 of 6 requests replayed" in replayed.output
    suggested = cli("suggest", str(log), "--index", str(fake_index), "--min-size", "4")
    assert suggested.exit_code == 0 and "proposed route" in suggested.output
