"""The cost and quality tables of `semroute stats`: per route, rule and tier, the average cost,
the saving against the default model, cascade escalations and shadow verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semroute.cli.report import _pct, shown, usd

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_quality"]


def print_quality(console: Console, quality: dict[str, Any]) -> None:
    """Cost, saving against the default model, escalations and shadow verdicts per route, rule
    and tier; shown once the log holds any of them."""
    from rich.table import Column, Table

    for scope, groups in quality.items():
        rows = [
            (name, g)
            for name, g in groups.items()
            if g["avg_default_cost_usd"] is not None
            or g["cascade_requests"]
            or g["shadow"]["judged"]
            or g["shadow"]["dropped"]
            or g["shadow"]["failed"]
        ]
        if not rows:
            continue
        # Two tables of four or five columns rather than one of seven: each fits 80 columns
        # without cutting a name or a figure.
        single = scope.removesuffix("s")
        cost = Table(
            Column(single, overflow="fold"),  # a long name folds onto a second line, uncut
            "requests",
            "cost per request",
            "saved in total (share)",
            title=f"cost per {single} (saved: against the default model)",
            title_justify="left",
        )
        for name, g in rows:
            saving = usd(g["saving_usd"])
            if g["saving_share"] is not None:
                saving += f" ({_pct(g['saving_share'])})"
            cost.add_row(shown(name), str(g["requests"]), usd(g["avg_cost_usd"]), saving)
        console.print(cost)
        table = Table(
            Column(single, overflow="fold"),
            "escalated",
            "shadow win/tie/loss",
            "shadow dropped/failed",
            title=f"cascades and shadow evaluation per {single}",
            title_justify="left",
        )
        for name, g in rows:
            if not g["cascade_requests"] and not any(
                g["shadow"][k] for k in ("judged", "dropped", "failed")
            ):
                continue
            shadow = g["shadow"]
            verdicts = (
                "-" if not shadow["judged"] else f"{shadow['win']}/{shadow['tie']}/{shadow['loss']}"
            )
            table.add_row(
                shown(name),
                f"{g['escalated']} of {g['cascade_requests']}" if g["cascade_requests"] else "-",
                verdicts,
                f"{shadow['dropped']}/{shadow['failed']}",
            )
        if not table.row_count:
            continue
        console.print(table)
