"""Commands of the difficulty router: train-difficulty, eval-difficulty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from semroute.cli.options import JSON_OPTION

if TYPE_CHECKING:
    from rich.console import Console

    from semroute.encoders.base import Encoder
    from semroute.tuning.outcomes import Outcomes

__all__ = ["eval_difficulty_cmd", "train_difficulty_cmd"]

DATA_ARGUMENT = click.argument("data", type=click.Path(path_type=Path, dir_okay=False, exists=True))


@click.command("train-difficulty")
@click.argument(
    "data", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=False
)
@click.option(
    "--from-log",
    "from_log",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Learn from a decision log's shadow verdicts and feedback instead of DATA.",
)
@click.option(
    "--strong-model",
    default=None,
    help="With --from-log: the strong model; requests it answered are left out [default: "
    "none left out].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder to write the model to (replaced whole).",
)
@click.option(
    "--strong-share",
    type=float,
    default=None,
    help="Calibrate the threshold to send this share of prompts to the strong model "
    "[default: 0.3 unless --quality-gain is given].",
)
@click.option(
    "--quality-gain",
    type=float,
    default=None,
    help="Calibrate the threshold to recover this share of the strong model's quality gain.",
)
@click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Embed with this index's encoder [default: all-MiniLM-L6-v2, onnx-int8].",
)
@JSON_OPTION
def train_difficulty_cmd(
    data: Path | None,
    from_log: Path | None,
    strong_model: str | None,
    out: Path,
    strong_share: float | None,
    quality_gain: float | None,
    index_dir: Path | None,
    as_json: bool,
) -> None:
    """Learn from outcomes which prompts need the strong model.

    DATA holds JSON lines {"prompt", "weak", "strong"}: 1/0 correctness or a judge score in
    [0, 1] of a weak and a strong model. The model scores each prompt's difficulty from its
    embedding; its threshold (difficulty 0.5) is calibrated on cross-fitted scores to the
    target. Use it in route files with `router: {difficulty: DIR}` and rules like
    `when: {difficulty: {gt: 0.5}}`.

    \b
    Examples:
      semroute train-difficulty outcomes.jsonl --out models/difficulty --strong-share 0.3
      semroute train-difficulty outcomes.jsonl --out models/difficulty --quality-gain 0.8 \\
          --index indexes/default
      semroute train-difficulty --from-log logs/decisions.jsonl --out models/difficulty

    With --from-log, the rows come from the log (its content must have been logged): shadow
    verdicts (win: weak 1 strong 0, tie: 1 1, loss: 0 1) and feedback (score s: weak (s+1)/2,
    strong 1 when s < 0).
    """
    from semroute.cli.report import progress as progress_bar
    from semroute.tuning.difficulty import train_difficulty

    if (data is None) == (from_log is None):
        raise click.UsageError("give DATA or --from-log LOG, one of them")
    if strong_share is None and quality_gain is None:
        strong_share = 0.3
    rows: Path | Outcomes = data if data is not None else _log_rows(from_log, strong_model)
    encoder, runtime = _encoder(index_dir)
    with progress_bar("Embedding prompts") as progress:
        report = train_difficulty(
            rows,
            out,
            encoder=encoder,
            runtime=runtime,
            strong_share=strong_share,
            quality_gain=quality_gain,
            progress=progress,
        )
    if as_json:
        result = {"model": str(report.path), "target": report.target, **report.metrics}
        click.echo(json.dumps(result, indent=2))
        return
    from semroute.cli.report import console

    print_difficulty(
        console(), report.metrics, f"Cross-fitted on {data or from_log} ({report.n} rows)"
    )
    click.echo(f"Wrote {report.path} in {report.seconds:.1f} s")


@click.command("eval-difficulty")
@DATA_ARGUMENT
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="A folder written by `semroute train-difficulty`.",
)
@JSON_OPTION
def eval_difficulty_cmd(data: Path, model_dir: Path, as_json: bool) -> None:
    """Measure a difficulty model on outcome rows: APGR, CPT(50%), CPT(80%), and the share of
    strong-model calls and the quality at its calibrated threshold.

    \b
    Example:
      semroute eval-difficulty test.jsonl --model models/difficulty --json
    """
    from semroute.tuning.difficulty import evaluate_difficulty, load_model

    model = load_model(model_dir)
    encoder = _model_encoder(model.spec.encoder.model_dump())
    result = evaluate_difficulty(data, model, encoder)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from semroute.cli.report import console

    print_difficulty(console(), result, f"{data} ({result['n']} rows)")


def print_difficulty(out: Console, metrics: dict[str, Any], title: str) -> None:
    """RouteLLM's metrics and the figures at the threshold, as a table."""
    from rich.markup import escape
    from rich.table import Table

    from semroute.text import printable

    table = Table("metric", "value", title=escape(printable(title)), title_justify="left")
    rows = [
        ("APGR (area under PGR, 0-100% strong calls)", f"{metrics['apgr']:.3f}"),
        ("CPT(50%): strong calls to recover half the gap", _pct(metrics["cpt50"])),
        ("CPT(80%)", _pct(metrics["cpt80"])),
        ("strong calls at the threshold", _pct(metrics["strong_share"])),
        ("quality at the threshold", _pct(metrics["quality"])),
        ("gap recovered at the threshold (PGR)", _pct(metrics["pgr_at_threshold"])),
        (
            "quality: all weak / all strong",
            f"{_pct(metrics['weak_quality'])} / {_pct(metrics['strong_quality'])}",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _encoder(index_dir: Path | None) -> tuple[Encoder, str]:
    """The encoder to embed with and its runtime: the index's, or the default one."""
    if index_dir is not None:
        from semroute.routing.router import Router

        router = Router.load(index_dir, check_routes=False)
        return router.encoder, str(router.index.settings["encoder_runtime"])
    from semroute.config.routefile import DEFAULT_ENCODER, DEFAULT_RUNTIME
    from semroute.encoders.export import load_encoder

    return load_encoder(DEFAULT_ENCODER, runtime=DEFAULT_RUNTIME), DEFAULT_RUNTIME


def _model_encoder(info: dict[str, Any]) -> Encoder:
    """The encoder a model was trained with (its name and runtime, prepared if needed)."""
    if info["kind"] == "fake":
        from semroute.encoders.hashing import FakeEncoder

        return FakeEncoder(dim=info["dim"], max_tokens=info["max_tokens"])
    from semroute.encoders.export import RUNTIMES, load_encoder

    runtime = info["runtime"]
    if runtime not in RUNTIMES:
        from semroute.errors import SemrouteError

        raise SemrouteError(f"the model names an unknown encoder runtime {runtime!r}")
    return load_encoder(info["name"], runtime=runtime)


def _log_rows(log: Path | None, strong_model: str | None) -> Outcomes:
    from semroute.tuning.log_outcomes import outcomes_from_log
    from semroute.tuning.logread import read_log

    assert log is not None
    return outcomes_from_log(read_log(log), strong_model, str(log))
