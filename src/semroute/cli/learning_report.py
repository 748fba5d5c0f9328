"""Rich tables for what the decision log teaches: changes a replay finds, feedback per route,
a challenger's agreement, drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from semroute.cli.report import shown

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["pairs_table", "print_learning"]


def pairs_table(title: str, pairs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title=title)
    for name in ("from", "to", "requests"):
        table.add_column(name, justify="right" if name == "requests" else "left")
    for p in pairs:
        table.add_row(shown(p["from"] or "(no route)"), shown(p["to"] or "(no route)"), str(p["n"]))
    return table


def print_learning(out: Console, stats: Mapping[str, Any]) -> None:
    """Feedback per route and tier, the challenger's agreement and the drift, when present."""
    for scope, groups in stats.get("feedback", {}).items():
        if not groups:
            continue
        table = Table(title=f"Feedback per {scope[:-1]}")
        for name in (scope[:-1], "feedback", "mean score", "up", "down", "corrected to"):
            table.add_column(name)
        for name, g in groups.items():
            corrected = ", ".join(f"{k} ({v})" for k, v in g["corrections"].items())
            mean = "-" if g["mean_score"] is None else f"{g['mean_score']:+.2f}"
            table.add_row(
                shown(name),
                str(g["feedback"]),
                mean,
                str(g["up"]),
                str(g["down"]),
                shown(corrected),
            )
        out.print(table)
    rival = stats.get("challenger")
    if rival:
        out.print(f"challenger agreed on {rival['agreement']:.1%} of {rival['requests']} requests")
        out.print(pairs_table("Disagreements (served -> challenger)", rival["disagreements"]))
    drift = stats.get("drift")
    if drift and "routes" in drift:
        table = Table(title=f"Drift against calibration (PSI; alarm over {drift['psi_alarm']})")
        for name in ("route", "PSI", "requests", "alarm"):
            table.add_column(name)
        for name, d in drift["routes"].items():
            value = "-" if d["psi"] is None else f"{d['psi']:.3f}"
            table.add_row(shown(name), value, str(d["requests"]), "ALARM" if d["alarm"] else "")
        out.print(table)
        share = drift["default_share"]
        logged = "-" if share["logged"] is None else f"{share['logged']:.1%}"
        out.print(
            f"to the default model: {logged} of the logged requests, "
            f"{share['calibration']:.1%} of the calibration rows"
            f"{' (ALARM)' if share['alarm'] else ''}"
        )
    elif drift:
        out.print(f"drift: {drift['problem']}")
