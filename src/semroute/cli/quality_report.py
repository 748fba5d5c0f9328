"""The cost and quality tables of `semroute stats`: per route, rule and tier, the average cost,
the saving against the default model, cascade escalations and shadow verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semroute.cli.report import _pct, shown

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_quality"]


def print_quality(console: Console, quality: dict[str, Any]) -> None:
    """Cost, saving against the default model, escalations and shadow verdicts per route, rule
    and tier; shown once the log holds any of them."""
    from rich.table import Table

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
        table = Table(
            scope.removesuffix("s"),
            "requests",
            "avg cost",
            "saving vs default",
            "escalated",
            "win / tie / loss",
            "shadow dropped / failed",
            title=f"cost and quality per {scope.removesuffix('s')}",
            title_justify="left",
        )
        for name, g in rows:
            shadow = g["shadow"]
            saving = "-" if g["saving_usd"] is None else f"${g['saving_usd']:.6f}"
            if g["saving_share"] is not None:
                saving += f" ({_pct(g['saving_share'])})"
            verdicts = (
                "-"
                if not shadow["judged"]
                else (f"{shadow['win']} / {shadow['tie']} / {shadow['loss']}")
            )
            table.add_row(
                shown(name),
                str(g["requests"]),
                "-" if g["avg_cost_usd"] is None else f"${g['avg_cost_usd']:.6f}",
                saving,
                f"{g['escalated']} of {g['cascade_requests']}" if g["cascade_requests"] else "-",
                verdicts,
                f"{shadow['dropped']} / {shadow['failed']}",
            )
        console.print(table)
