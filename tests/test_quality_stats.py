"""`semroute stats` on cascades and shadow evaluation: cost, saving and verdicts per route,
rule and tier, and quality records that are never counted as requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.dispatch.log import summarise
from semroute.testing import FakeProvider
from tests.quality_kit import CHAT, EXTRACT, build, lines, spec

GOOD_JSON = '{"total": 12}'


def _stats(log: Path, *extra: str) -> CliRunner:
    result = CliRunner().invoke(main, ["stats", str(log), *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.usefixtures("provider_key")
def test_stats_show_cost_saving_escalations_and_verdicts(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.script("cheap", [GOOD_JSON, "not json"])
    provider.script("judge", ["A", "B", "B", "A", "TIE", "TIE"])
    data = spec(
        provider,
        tmp_path,
        extract={"cascade": ["cheap", "strong"], "accept": {"json": True}},
        router={
            "shadow": {"sample": 1.0, "reference": "reference", "judge": "judge"},
            "tiers": {"budget": ["cheap"]},
        },
        rules=[{"name": "budget-users", "when": {"user_tier": "free"}, "tier": "budget"}],
    )
    router, dispatcher = build(tmp_path, data)
    accepted = dispatcher.complete(EXTRACT, router=router)  # cheap answers: win
    assert dispatcher.wait_for_shadows(timeout=20)
    escalated = dispatcher.complete(EXTRACT, router=router)  # cheap rejected, strong: loss
    assert dispatcher.wait_for_shadows(timeout=20)
    dispatcher.complete(CHAT, router=router, user_tier="free")  # the budget tier: tie
    assert dispatcher.wait_for_shadows(timeout=20)
    assert (accepted.model, escalated.model) == ("cheap", "strong")
    log = tmp_path / "decisions.jsonl"
    assert len(lines(tmp_path)) == 3 and len(lines(tmp_path, "quality")) == 3

    data = json.loads(_stats(log, "--json").stdout)
    assert data["requests"] == 3 and data["malformed_lines"] == 0
    assert data["quality_records"] == 3
    extract = data["quality"]["routes"]["extract"]
    assert extract["requests"] == 2
    assert (extract["cascade_requests"], extract["escalated"], extract["escalation_rate"]) == (
        2,
        1,
        0.5,
    )
    shadow = extract["shadow"]
    assert (shadow["judged"], shadow["win"], shadow["tie"], shadow["loss"]) == (2, 1, 0, 1)
    assert shadow["win_rate"] == 0.5 and shadow["dropped"] == shadow["failed"] == 0
    # Costs: the average of what the two requests cost, against the default model's price
    # for the same tokens (logged with each request).
    costs = [accepted.cost_usd, escalated.cost_usd]
    assert extract["avg_cost_usd"] == pytest.approx(sum(costs) / 2)
    defaults = [line["default_cost_usd"] for line in lines(tmp_path)[:2]]
    assert extract["avg_default_cost_usd"] == pytest.approx(sum(defaults) / 2)
    assert extract["saving_usd"] == pytest.approx(sum(defaults) - sum(costs))
    assert extract["saving_share"] == pytest.approx(1 - sum(costs) / sum(defaults), abs=1e-4)
    tier = data["quality"]["tiers"]["budget"]
    assert tier["requests"] == 1 and tier["shadow"]["tie"] == 1
    assert tier["saving_usd"] > 0  # the cheap model at a tenth of the default's price
    assert data["quality"]["rules"]["budget-users"]["shadow"]["judged"] == 1

    human = _stats(log).stdout
    assert "cost per route" in human and "cost per tier" in human
    assert "cascades and shadow evaluation per route" in human
    assert "1/0/1" in human and "1 of 2" in human


def test_quality_records_are_not_requests() -> None:
    request = {"request_id": "r1", "route": "a", "cost_usd": 0.002, "default_cost_usd": 0.01}
    quality = {
        "kind": "quality",
        "request_id": "r1",
        "route": "a",
        "status": "judged",
        "verdict": "win",
        "cost_usd": 0.001,
    }
    bad_quality = {**quality, "verdict": "great"}
    other_kind = {"kind": "audit", "request_id": "r1"}
    stats = summarise(json.dumps(r) for r in (request, quality, bad_quality, other_kind))
    assert (stats.requests, stats.quality_records, stats.malformed_lines) == (1, 1, 2)
    group = stats.to_dict()["quality"]["routes"]["a"]
    assert group["requests"] == 1 and group["shadow"]["win"] == 1
    assert group["saving_usd"] == pytest.approx(0.008)
    assert group["saving_share"] == pytest.approx(0.8)
    assert group["shadow"]["cost_usd"] == pytest.approx(0.001)


@pytest.mark.parametrize(
    "record",
    [
        {"status": "judged", "verdict": None},
        {"status": "dropped", "verdict": "win"},
        {"status": "lost", "verdict": None},
        {"status": "failed", "verdict": None, "route": ["a"]},
        {"status": "failed", "verdict": None, "cost_usd": "free"},
        {"status": "failed", "verdict": None, "cost_usd": 1e400},
    ],
)
def test_a_malformed_quality_record_is_counted_and_skipped(record: dict[str, object]) -> None:
    line = json.dumps({"kind": "quality", "request_id": "r", **record})
    stats = summarise([line])
    assert (stats.requests, stats.quality_records, stats.malformed_lines) == (0, 0, 1)
    json.dumps(stats.to_dict(), allow_nan=False)


def test_a_log_without_quality_data_shows_no_quality_table(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text(json.dumps({"request_id": "r", "route": "a", "cost_usd": 0.1}) + "\n")
    assert "cost and quality" not in _stats(log).stdout
    data = json.loads(_stats(log, "--json").stdout)
    group = data["quality"]["routes"]["a"]
    assert group["saving_usd"] is None and group["shadow"]["judged"] == 0


@pytest.mark.usefixtures("provider_key")
def test_a_tier_is_logged_without_any_cascade_or_shadow(
    tmp_path: Path, provider: FakeProvider
) -> None:
    data = spec(
        provider,
        tmp_path,
        router={"tiers": {"budget": ["cheap", "strong"]}},
        rules=[{"name": "budget-users", "when": {"user_tier": "free"}, "tier": "budget"}],
    )
    router, dispatcher = build(tmp_path, data)
    dispatcher.complete(CHAT, router=router, user_tier="free")
    dispatcher.complete(CHAT, router=router)
    tiered, plain = lines(tmp_path)
    assert (tiered["tier"], tiered["cascade"], plain["tier"]) == ("budget", None, None)
    # The cheap model answered at a tenth of the default model's price.
    assert tiered["default_cost_usd"] == pytest.approx(10 * tiered["cost_usd"])
    stats = json.loads(_stats(tmp_path / "decisions.jsonl", "--json").stdout)
    assert stats["quality"]["tiers"]["budget"]["saving_share"] == pytest.approx(0.9)


def test_an_index_built_without_quality_settings_still_knows_rules_tiers(
    tmp_path: Path, provider: FakeProvider
) -> None:
    from semroute import Dispatcher

    data = spec(
        provider,
        tmp_path,
        router={"tiers": {"budget": ["cheap"]}},
        rules=[{"name": "budget-users", "when": {"user_tier": "free"}, "tier": "budget"}],
    )
    router, dispatcher = build(tmp_path, data)
    assert dispatcher.config.quality.tier_of("budget-users") == "budget"
    # What an index written before the quality settings existed holds: no `quality` key.
    router.index.manifest.dispatch.pop("quality")
    older = Dispatcher.for_index(router.index)
    assert older.config.quality.tier_of("budget-users") == "budget"
