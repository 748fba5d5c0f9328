"""What the CLI shows people: rich tables for decisions, dispatches, logs, indexes, evaluation
and calibration, a PNG for an evaluation, and a progress bar on a terminal.

Everything shown that came from outside semroute (queries, utterances, labels, route and model
names, paths, providers' error texts) goes through :func:`shown` first: a query must not be able
to move the cursor or recolour the screen, nor be read as rich markup.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.errors import REBUILD_HINT
from semroute.text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from semroute.decision import Decision
    from semroute.dispatch.dispatcher import DispatchResult
    from semroute.dispatch.log import LogStats
    from semroute.tuning.evaluate import EvalReport

__all__ = [
    "console",
    "print_calibration",
    "print_decision",
    "print_dispatch",
    "print_evaluation",
    "print_info",
    "print_stats",
    "progress",
]


def shown(value: object, width: int | None = None) -> str:
    """``value`` as terminal-safe rich markup text, cut to ``width`` characters if given."""
    from rich.markup import escape

    text = printable(str(value))
    return escape(shorten(text, width) if width is not None else text)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_evaluation(console: Console, report: EvalReport, data: Path) -> None:
    from rich.table import Table

    console.print(f"[bold]{shown(data)}[/]: {report.n} rows, {report.n_oos} out of scope")
    summary = Table("metric", "value", title="Overall", title_justify="left")
    for label, value in [
        ("accuracy", _pct(report.accuracy)),
        ("in-scope accuracy", _pct(report.in_scope_accuracy)),
        ("closed-set accuracy (no thresholds)", _pct(report.closed_set_accuracy)),
        ("out-of-scope precision", _pct(report.oos_precision)),
        ("out-of-scope recall", _pct(report.oos_recall)),
        ("out-of-scope F1", _pct(report.oos_f1)),
        ("AUROC (in vs out of scope)", _pct(report.auroc)),
        ("coverage (not sent to default)", _pct(report.coverage)),
        (
            "latency p50 / p95",
            f"{report.latency_ms['p50']:.2f} / {report.latency_ms['p95']:.2f} ms",
        ),
    ]:
        summary.add_row(label, value)
    console.print(summary)
    worst = sorted(
        ((n, m) for n, m in report.per_route.items() if m.support),
        key=lambda item: item[1].f1 if item[1].f1 is not None else -1,
    )[:10]
    if worst:
        table = Table(
            "route",
            "precision",
            "recall",
            "F1",
            "rows",
            title="Weakest routes",
            title_justify="left",
        )
        for name, m in worst:
            table.add_row(
                shown(name), _pct(m.precision), _pct(m.recall), _pct(m.f1), str(m.support)
            )
        console.print(table)
    if report.confused_pairs:
        table = Table("route", "sent to", "rows", title="Most confused", title_justify="left")
        for a, b, n in report.confused_pairs:
            table.add_row(shown(a), shown(b), str(n))
        console.print(table)
    if report.misrouted:
        console.print(_misrouted(report.misrouted))


def _misrouted(rows: list[dict[str, Any]]) -> Table:
    """The sample of misrouted rows, each query cut to :data:`CELL_WIDTH` characters."""
    from rich.table import Table

    table = Table(
        "query",
        "label",
        "chosen",
        "top scores",
        title="Some misrouted queries",
        title_justify="left",
    )
    for row in rows:
        top = ", ".join(f"{shown(k)} {v:.2f}" for k, v in row["top_scores"].items())
        table.add_row(
            shown(shorten(row["text"], CELL_WIDTH)),
            shown(row["label"]),
            shown(row["chosen"] or "(default)"),
            top,
        )
    return table


def print_calibration(console: Console, result: dict[str, Any], *, written: bool) -> None:
    from rich.table import Table

    table = Table(
        "metric",
        "before",
        "after",
        title=f"Calibration on {shown(result['data'])} ({result['rows']} rows)",
        title_justify="left",
    )
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "coverage"):
        table.add_row(
            key.replace("_", " "), _pct(result["before"][key]), _pct(result["after"][key])
        )
    console.print(table)
    how = (
        f"per-route thresholds (shrinkage {result['shrinkage']:g})"
        if result["per_route"]
        else "one shared threshold"
    )
    objective = result["objective"] + (
        f" (misroute cost {result['misroute_cost']:g})" if result["objective"] == "cost" else ""
    )
    console.print(
        f"objective {objective}: {how}, shared value {result['shared_threshold']:.4f}; "
        f"encoding {result['seconds']['encode']:.1f} s, fitting {result['seconds']['fit']:.2f} s"
    )
    if written:
        console.print(f"[green]Wrote the thresholds into {shown(result['index'])}/manifest.json[/]")
    else:
        console.print("[yellow]Dry run: nothing written[/]")


def print_info(console: Console, summary: dict[str, Any]) -> None:
    """What ``semroute info`` shows: the summary an index gives of itself."""
    from rich.table import Table

    enc = summary["encoder"]
    console.print(
        f"[bold]{shown(summary['path'])}[/] built {shown(summary['built_at'])} "
        f"by semroute {shown(summary['semroute_version'])}"
    )
    console.print(
        f"encoder: {shown(enc['name'])} ({shown(summary['encoder_runtime'])}, {enc['dim']} dims, "
        f"fingerprint {shown(enc['fingerprint'])})"
    )
    console.print(
        f"default model: {shown(summary['default_model'])}; scorer: {shown(summary['scorer'])}"
    )
    search = summary["search"]
    line = f"search: {search['type']} over {summary['utterances']} vectors"
    if search["type"] == "hnsw":
        line += (
            f" (recall@10 {search['recall_at_10']}, nearest-route agreement "
            f"{search['nearest_route_agreement']} against exact search)"
        )
    console.print(line)
    if summary["calibration"]:
        cal = summary["calibration"]
        console.print(
            f"thresholds calibrated on {shown(cal['data'])} ({cal['rows']} rows, objective "
            f"{shown(cal['objective'])}) at {shown(cal['calibrated_at'])}"
        )
    table = Table("route", "model", "threshold", "utterances")
    for r in summary["routes"]:
        table.add_row(
            shown(r["name"]), shown(r["model"]), f"{r['threshold']:.2f}", str(r["utterances"])
        )
    console.print(table)
    if summary["stale"]:
        console.print(f"[yellow]stale:[/] {shown(summary['stale_reason'])}; {REBUILD_HINT}")
    else:
        console.print("[green]up to date[/] with its route files")


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def print_decision(console: Console, query: str, decision: Decision) -> None:
    from rich.table import Table

    table = Table(title=f"[bold]{shown(query, TITLE_WIDTH)}[/]", title_justify="left", expand=False)
    width = 12
    name_width = max(len(printable(s.route)) for s in decision.scores)
    # Everything but the utterance has a fixed width; the utterance is cut to what is left.
    room = max(12, console.width - (name_width + 10 + width + 9) - 16)
    table.add_column("route", no_wrap=True, min_width=name_width)
    table.add_column("confidence", justify="right", no_wrap=True, min_width=10)
    table.add_column("", no_wrap=True, min_width=width)
    table.add_column("threshold", justify="right", no_wrap=True, min_width=9)
    table.add_column("closest example", no_wrap=True)
    for s in decision.scores:
        filled = max(0, min(width, round(s.confidence * width)))
        style = "green" if s.passed else "dim"
        name = shown(s.route)
        table.add_row(
            f"[bold]{name}[/]" if s.route == decision.route else name,
            f"{s.confidence:.3f}",
            f"[{style}]{'█' * filled}{'·' * (width - filled)}[/]",
            f"{s.threshold:.2f}",
            shown(s.utterance or "", room),
        )
    console.print(table)
    target = f"route [bold]{shown(decision.route)}[/]" if decision.route else "no route"
    note = " (query truncated to the encoder's window)" if decision.truncated else ""
    console.print(
        f"→ {target} → model [bold]{shown(decision.model)}[/] ({decision.reason.value}, "
        f"confidence {decision.confidence:.3f}, margin {decision.margin:.3f}, "
        f"{decision.latency_ms:.1f} ms){note}\n"
    )
    if decision.language_warning:
        console.print(f"  [yellow]warning: {shown(decision.language_warning)}[/]\n")
    if decision.rule is not None:
        recommended = shown(decision.recommended_model or decision.model)
        if decision.blocked:
            outcome = "[red]blocked[/]: no model is called"
        else:
            outcome = f"models {' → '.join(shown(m) for m in decision.chain or (decision.model,))}"
        console.print(
            f"  rule [bold]{shown(decision.rule)}[/] matched: {outcome} "
            f"(the routes recommended {recommended})\n"
        )
    _print_checks(console, decision)


def _print_checks(console: Console, decision: Decision) -> None:
    """The capability and cost checks: each candidate skipped, the estimate and the ceiling."""
    for skip in decision.skipped:
        console.print(f"  skipped {shown(skip.model)} ({skip.reason}): {shown(skip.detail)}")
    limit = decision.cost_limit_usd
    if decision.over_budget and limit is not None:
        console.print(
            f"  [red]over budget[/]: the cheapest candidate, {shown(decision.model)}, is estimated "
            f"at ${decision.estimated_cost_usd or 0:.6g} (limit ${limit:.6g}); no model is called"
        )
    elif decision.estimated_cost_usd is not None:
        within = f" (limit ${limit:.6g})" if limit is not None else ""
        console.print(f"  estimated cost ${decision.estimated_cost_usd:.6g}{within}")
    if decision.skipped or decision.estimated_cost_usd is not None:
        console.print()


def print_dispatch(console: Console, result: DispatchResult) -> None:
    d = result.decision
    target = f"route [bold]{shown(d.route)}[/]" if d.route else "no route"
    console.print(
        f"\n→ {target} → model [bold]{shown(d.model)}[/] ({d.reason.value}, confidence "
        f"{d.confidence:.3f}, {d.latency_ms:.1f} ms)"
    )
    for a in result.attempts:
        outcome = "[green]answered[/]" if a.error is None else f"[red]failed[/]: {shown(a.error)}"
        console.print(f"  {shown(a.model)}: {outcome} ({a.latency_ms:.0f} ms)", highlight=False)
    for step in result.cascade:  # what became of each answer of a cascade
        why = f" ({shown(step.check)}: {shown(step.detail)})" if step.check else ""
        console.print(f"  cascade {shown(step.model)}: {step.verdict}{why}", highlight=False)
    usage = result.usage
    tokens = f"{usage.prompt_tokens} in, {usage.completion_tokens} out" if usage else "no usage"
    cost = f"${result.cost_usd:.6f}" if result.cost_usd is not None else "cost unknown"
    console.print(f"  {tokens}, {cost}, request {result.request_id}")


def print_stats(console: Console, log_file: Path, stats: LogStats) -> None:
    """The human summary of a decision log; its tables fit an 80-column terminal."""
    from rich.table import Table

    data = stats.to_dict()
    n = stats.requests
    console.print(f"[bold]{shown(log_file)}[/]: {n} requests")
    if stats.malformed_lines:
        console.print(f"[yellow]{stats.malformed_lines} malformed lines skipped[/]")
    if not n:
        return
    groups = [("route", data["routes"]), ("model", data["models"])]
    from semroute.dispatch.log import NO_RULE

    if any(name != NO_RULE for name in data["rules"]):  # shown once some request matched a rule
        groups.insert(1, ("rule", data["rules"]))
    for title, counts in groups:
        table = Table(title, "requests", "share", title_justify="left")
        for name, row in counts.items():
            table.add_row(shown(name), str(row["requests"]), f"{row['share']:.1%}")
        console.print(table)
    avg = data["avg_cost_usd"]
    if avg is None:
        console.print("cost: unknown (no request priced)")
    else:
        priced = "" if stats.priced_requests == n else f", {stats.priced_requests} of {n} priced"
        console.print(f"cost: {usd(stats.cost_usd_total)} in total, {usd(avg)} per request{priced}")
    refused = ", ".join(
        f"{row['requests']} {_REFUSED.get(reason, reason)}"
        for reason, row in data["refused"].items()
    )
    console.print(
        f"fallback rate: {data['fallback_rate']:.1%}, model failure rate: "
        f"{data['error_rate']:.1%}" + (f"; refused, no model called: {refused}" if refused else "")
    )
    cache = data["cache"]
    if cache:
        rate = f"{cache['hit_rate']:.1%}" if cache["hit_rate"] is not None else "-"
        console.print(
            f"semantic cache: {cache['hits']} hits of {cache['lookups']} lookups ({rate}), "
            f"${cache['saved_usd']:.6f} saved, {cache['bypassed']} not cacheable"
        )
    table = Table("latency (ms)", "p50", "p95", title_justify="left")
    for kind, q in data["latency_ms"].items():
        table.add_row(kind, _ms(q["p50"]), _ms(q["p95"]))
    console.print(table)
    if data["skip_reasons"]:
        table = Table("skip reason", "models skipped", "requests", "share", title_justify="left")
        for reason, row in data["skip_reasons"].items():
            share = f"{row['share']:.1%}"
            table.add_row(shown(reason), str(row["skips"]), str(row["requests"]), share)
        console.print(table)


_REFUSED = {"blocked": "blocked by a rule", "over_budget": "over budget"}


def usd(value: float | None) -> str:
    """A cost in dollars, readable however small: ``$0.000012``, ``$0.0123``, ``$1,234.50``,
    never ``1.2e-05``; three significant digits below a dollar, cents above."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    sign, size = "-" if value < 0 else "", abs(value)
    if size >= 1:
        return f"{sign}${size:,.2f}"
    decimals = min(12, 2 - math.floor(math.log10(size)))
    whole, _, cents = f"{size:.{decimals}f}".rstrip("0").partition(".")
    return f"{sign}${whole}.{cents.ljust(2, '0')}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


TITLE_WIDTH = 300
"""Characters of a query shown above its table (a huge query would bury the table)."""
CELL_WIDTH = 200
"""Characters of a query shown in a table's cell (the rest is cut, ending "…")."""


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class progress:
    """A rich progress bar on a terminal; silent otherwise. Yields a (done, total) callback."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()

        def update(done: int, total: int) -> None:
            if self._task is None:
                self._task = self._bar.add_task(self.label, total=total)
            self._bar.update(self._task, completed=done)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
