"""Commands that measure and tune an index on labelled data: eval, calibrate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from semroute.cli.options import (
    DATA_OPTION,
    INDEX_OPTION,
    JSON_OPTION,
    OOS_OPTION,
    FiniteRange,
    warn,
)
from semroute.errors import SemrouteError
from semroute.tuning.calibrate import OBJECTIVES, Objective

__all__ = ["calibrate_cmd", "eval_cmd"]


@click.command("eval")
@DATA_OPTION
@INDEX_OPTION
@JSON_OPTION
@OOS_OPTION
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Draw the threshold trade-off and per-route F1 into this PNG.",
)
def eval_cmd(
    data: Path, index_dir: Path | None, as_json: bool, oos_label: str, plot: Path | None
) -> None:
    """Measure a router on labelled data.

    An out-of-scope row is right only when it goes to the default model; an in-scope row sent
    to the default model is wrong.

    \b
    Example:
      semroute eval --data test.jsonl --index indexes/default --plot eval.png
    """
    import importlib.util

    from semroute.cli.plot import plot_evaluation
    from semroute.cli.report import console, print_evaluation
    from semroute.routing.router import Router
    from semroute.tuning.evaluate import evaluate, in_index_warning, load_labelled

    if plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            raise SemrouteError("--plot needs matplotlib: pip install 'semroute[plot]'")
        _check_plot(plot)
    router = Router.load(index_dir)
    report, scores, truth = evaluate(router, load_labelled(data), oos_label=oos_label)
    if plot is not None:
        try:
            plot_evaluation(report, scores.confidence, truth, router.thresholds, plot)
        except OSError as exc:
            raise SemrouteError(f"cannot write the plot to {plot}: {exc.strerror or exc}") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    out = console()
    print_evaluation(out, report, data)
    if report.rows_in_index:
        out.print(in_index_warning(report.rows_in_index, report.n), style="yellow")
    if plot is not None:
        click.echo(f"Plot written to {plot}")


def _check_plot(plot: Path) -> None:
    """Refuse a ``--plot`` path the plot cannot be written to, before the data is routed."""
    from matplotlib.backend_bases import FigureCanvasBase

    folder = plot.expanduser().parent
    if not folder.is_dir():
        raise SemrouteError(
            f"--plot {plot}: {folder} is not a folder; create it or name a file in one"
        )
    kinds = FigureCanvasBase.get_supported_filetypes()
    kind = plot.suffix.lower().removeprefix(".")
    if kind and kind not in kinds:
        raise SemrouteError(
            f"--plot {plot}: a plot cannot be written as '.{kind}'; "
            f"name a .png file (or one of {', '.join('.' + k for k in sorted(kinds))})"
        )


@click.command("calibrate")
@DATA_OPTION
@INDEX_OPTION
@JSON_OPTION
@OOS_OPTION
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="cost",
    show_default=True,
    help="What the thresholds optimise (see `semroute calibrate --help`).",
)
@click.option(
    "--misroute-cost",
    type=FiniteRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="For --objective cost: how much worse a misroute is than a fallback.",
)
@click.option(
    "--target",
    type=FiniteRange(0, 1),
    default=None,
    help="For oos-recall / fallback-rate: the share to reach / not exceed.",
)
@click.option("--shared-only", is_flag=True, help="One threshold for every route.")
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Resamples averaged into the shared threshold (0: the exact optimum on the data).",
)
@click.option("--dry-run", is_flag=True, help="Show the result without writing it.")
def calibrate_cmd(
    data: Path,
    index_dir: Path | None,
    as_json: bool,
    oos_label: str,
    objective: Objective,
    misroute_cost: float,
    target: float | None,
    shared_only: bool,
    bootstrap: int,
    dry_run: bool,
) -> None:
    """Fit route thresholds on labelled data and write them into the index.

    Nothing is re-embedded except the data's own texts. Objectives: cost (default; a misroute
    counts --misroute-cost times a needless fallback to the default model), accuracy,
    balanced (in-scope accuracy + out-of-scope recall), oos-recall and fallback-rate (with
    --target). With cost, accuracy or balanced, the shared threshold is the mean optimum over
    --bootstrap resamples of the data, which holds up better on new queries than the optimum
    on the data itself. With cost or accuracy, routes get their own thresholds where
    cross-validation on the data shows it helps.

    \b
    Examples:
      semroute calibrate --data val.jsonl --index indexes/default
      semroute calibrate --data val.jsonl --objective oos-recall --target 0.9 --dry-run
    """
    from semroute.cli.report import console, print_calibration
    from semroute.tuning.calibrate import calibrate_index

    result = calibrate_index(
        index_dir,
        data,
        objective=objective,
        misroute_cost=misroute_cost,
        target=target,
        per_route=not shared_only,
        bootstrap=bootstrap,
        oos_label=oos_label,
        write=not dry_run,
    )
    for doubt in result["warnings"]:
        warn(doubt)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_calibration(console(), result, written=not dry_run)
