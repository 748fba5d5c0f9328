"""``semroute tune``: fine-tune the encoder on the routes and write it as an encoder folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from semroute.cli.options import JSON_OPTION, OOS_OPTION, counted
from semroute.tuning.finetune import MAX_SEED

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_tuned", "tune_cmd"]

_FIGURES = (
    ("accuracy", "accuracy (in-scope routed right, out-of-scope to the default model)"),
    ("in_scope_accuracy", "in-scope accuracy"),
    ("oos_recall", "out-of-scope recall"),
    ("auroc", "AUROC, in-scope vs out-of-scope"),
)


@click.command("tune")
@click.argument("routes", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Encoder folder to write (replaced atomically), e.g. encoders/tuned.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    help='More training rows: JSON lines of {"text": ..., "label": ROUTE} (repeatable).',
)
@click.option(
    "--val",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Validation rows (same shape): early stopping, and the figures before and after.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1, max=100),
    default=None,
    help="Passes over the data [default: about 3,000 anchors' worth, 1 to 10].",
)
@OOS_OPTION
@click.option(
    "--base",
    default=None,
    help="Model name or checkpoint folder to start from [default: the routes' router.encoder].",
)
@click.option(
    "--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="Random seed."
)
@JSON_OPTION
def tune_cmd(
    routes: Path,
    out: Path,
    data: tuple[Path, ...],
    val: Path | None,
    epochs: int | None,
    oos_label: str,
    base: str | None,
    seed: int,
    as_json: bool,
) -> None:
    """Fine-tune the encoder on ROUTES' utterances and write it to --out.

    Pairs of one route's utterances are pulled together and pushed away from the other routes'
    and from every out-of-scope example (the route files' and --data rows labelled
    --oos-label). With --val, training stops when the validation score stops rising, and the
    accuracy, out-of-scope recall (at thresholds calibrated on --val) and AUROC are shown for
    the stock encoder and the tuned one. Needs torch: pip install 'semroute[tune]'.

    \b
    Examples:
      semroute tune routes/ --out encoders/tuned --val val.jsonl
      semroute build-index routes/ --encoder encoders/tuned --out indexes/default
    """
    from semroute.cli.report import progress as progress_bar
    from semroute.tuning.tune import TuneRequest, tune_encoder

    request = TuneRequest(routes, out, data, val, epochs, oos_label, base, seed)
    with progress_bar("Tuning the encoder") as progress:
        result = tune_encoder(request, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    from rich.table import Table

    from semroute.cli.report import console

    out = console()
    out.print(
        f"Tuned {result['base']} on {result['rows']} utterances of {result['routes']} routes "
        f"and {result['out_of_scope']} out-of-scope examples: "
        f"{counted(result['epochs_run'], 'epoch')} "
        f"(kept epoch {result['best_epoch']}) in {result['train_seconds']:.0f} s; wrote "
        f"{result['encoder']}",
        highlight=False,
    )
    before, after = result.get("before"), result.get("after")
    if before is None or after is None:
        out.print("No --val: give validation rows to see whether tuning helped.")
    else:
        table = Table(title=f"On {result['validation']} (thresholds calibrated on it)")
        for column in ("", "stock", "tuned"):
            table.add_column(column, justify="left" if not column else "right")
        for key, label in _FIGURES:
            table.add_row(label, _pct(before[key]), _pct(after[key]))
        out.print(table)
        shared = result.get("validation_in_training") or 0
        if shared:
            out.print(
                f"{shared} of the {result['validation_rows']} validation rows "
                f"{'is also a training text' if shared == 1 else 'are also training texts'} "
                "(route utterances or --data rows): the figures on them are optimistic, and "
                "early stopping watches them; keep validation rows out of the training data.",
                style="yellow",
                highlight=False,
            )
        if result["helped"]:
            out.print("Tuning helped.", style="green")
        else:
            out.print(
                "Tuning did not help on the validation rows: keep the stock encoder, or add "
                "labelled rows (--data) and try again.",
                style="yellow",
            )
    out.print(
        f"Use it: `router.encoder: {result['encoder']}` in a route file, or "
        f"semroute build-index ROUTES --encoder {result['encoder']}",
        highlight=False,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_tuned(out: Console, tuned: dict[str, Any] | None) -> None:
    """``semroute info``'s lines on an index whose encoder `semroute tune` wrote."""
    if tuned is None:
        return
    from rich.markup import escape

    recipe = tuned.get("recipe") or {}
    out.print(
        f"tuned from {escape(str(tuned.get('base')))} on data {tuned.get('data_fingerprint')} "
        f"({recipe.get('loss')}, {recipe.get('epochs')} epochs, lr {recipe.get('lr')}, "
        f"seed {recipe.get('seed')})",
        highlight=False,
    )
    before, after = tuned.get("before"), tuned.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        figures = ", ".join(
            f"{key} {_pct(before.get(key))} -> {_pct(after.get(key))}"
            for key in ("accuracy", "in_scope_accuracy", "oos_recall", "auroc")
        )
        out.print(f"on {escape(str(tuned.get('validation')))}: {figures}", highlight=False)
