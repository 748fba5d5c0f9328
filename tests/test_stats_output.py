"""`semroute stats` as people read it: refusals are not model failures, costs say whether they
are per request or in total and stay readable however small, and it fits 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from semroute.cli.report import usd
from semroute.dispatch.log import summarise

LONG_ROUTE = "customer-support-escalations-for-enterprise"


def _record(i: int, **fields: Any) -> dict[str, Any]:
    record = {
        "request_id": f"r{i}",
        "route": "weather",
        "reason": "matched",
        "model": "small",
        "fallbacks": [],
        "skipped": [],
        "routing_ms": 3.0,
        "model_ms": 100.0,
        "cost_usd": 0.000012,
        "default_cost_usd": 0.00025,
        "error": None,
        "rule": None,
        "tier": None,
    }
    return {**record, **fields}


RECORDS = [
    _record(0),
    _record(
        1,
        route=LONG_ROUTE,
        model="claude-3-5-sonnet-20241022",
        cost_usd=0.0123,
        default_cost_usd=0.02,
        rule="premium-users",
        tier="premium",
        cascade={"escalated": True},
    ),
    _record(
        2,
        route=None,
        reason="blocked",
        model=None,
        error="blocked by rule 'no-pii'",
        cost_usd=None,
        default_cost_usd=None,
        rule="no-pii",
    ),
    _record(
        3,
        route=None,
        reason="over_budget",
        model=None,
        error="every candidate is over the cost limit",
        cost_usd=None,
        default_cost_usd=None,
    ),
    _record(4, model=None, fallbacks=["small", "big"], error="no model answered", cost_usd=None),
    _record(5, model="big", fallbacks=["small"], cost_usd=0.0000001),
]
QUALITY = {
    "kind": "quality",
    "request_id": "q1",
    "status": "judged",
    "verdict": "win",
    "route": LONG_ROUTE,
    "rule": None,
    "tier": None,
    "cost_usd": 0.00001,
}


def _log(tmp_path: Path) -> Path:
    log = tmp_path / "decisions.jsonl"
    lines = [json.dumps(r) for r in [*RECORDS, QUALITY]]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return log


def test_blocked_and_over_budget_requests_are_refusals_not_model_failures(tmp_path: Path) -> None:
    stats = summarise(_log(tmp_path).read_text().splitlines())
    data = stats.to_dict()
    assert stats.errors == 1  # only request 4: every model it tried failed
    assert data["error_rate"] == round(1 / 6, 4)
    assert data["refused"] == {
        "blocked": {"requests": 1, "share": round(1 / 6, 4)},
        "over_budget": {"requests": 1, "share": round(1 / 6, 4)},
    }
    assert {"(blocked)", "(over budget)", "(failed)"} <= set(data["models"])
    assert data["models"]["(failed)"]["requests"] == 1


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1.2e-05, "$0.000012"),
        (6.05e-06, "$0.00000605"),
        (0.000488, "$0.000488"),
        (0.0123, "$0.0123"),
        (0.5, "$0.50"),
        (1234.5, "$1,234.50"),
        (0, "$0"),
        (-2e-05, "-$0.00002"),
        (None, "-"),
    ],
)
def test_costs_read_as_dollars_however_small(value: float | None, shown: str) -> None:
    assert usd(value) == shown


def test_stats_fits_80_columns_with_every_name_and_figure_whole(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "80"}
    log = _log(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "from semroute.cli.main import main; main()", "stats", str(log)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out  # nothing cut short
    assert "e-0" not in out  # no scientific notation
    # A long name folds onto the next line of its cell, whole.
    cells = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert LONG_ROUTE in cells
    assert "cost: $0.0123 in total, $0.0041 per request, 3 of 6 priced" in out
    assert "cost per request" in out and "saved in total" in out
    assert "$0.000012" in out.replace("\n", " ") or "$0.00000605" in out
    flat = " ".join(out.split())
    assert "model failure rate: 16.7%" in flat
    assert "refused, no model called: 1 blocked by a rule, 1 over budget" in flat
