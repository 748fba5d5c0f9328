"""The ``semroute`` command line. Human output by default, ``--json`` for scripts."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from semroute.config.routes import SCORERS
from semroute.errors import SemrouteError
from semroute.text import printable
from semroute.tuning.calibrate import OBJECTIVES

log = logging.getLogger("semroute")

INDEX_OPTION = click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Index folder [default: $SEMROUTE_INDEX or indexes/default].",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class _Group(click.Group):
    """Turns a SemrouteError into one red line and exit code 1 (usage errors stay exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SemrouteError as exc:
            # Messages quote user input (queries, labels, file names): escape it for the terminal.
            message = printable(" ".join(str(exc).split("\n")))
            click.secho(f"error: {message}", fg="red", err=True)
            ctx.exit(1)


def _warn(message: object) -> None:
    click.secho(f"warning: {printable(' '.join(str(message).split()))}", fg="yellow", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semroute")
def main() -> None:
    """semroute: decide, per request, which model should answer.

    \b
    Quick start:
      semroute validate routes/
      semroute build-index routes/ --out indexes/default
      semroute route "fix the TypeError in my script"
      semroute chat "fix the TypeError in my script"     # needs the models' API keys
    """
    if not log.handlers:  # main() may run many times in one process (tests, embedding apps)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


@main.command("build-index")
@click.argument("routes", type=click.Path(path_type=Path), default=Path("routes"))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("indexes/default"),
    show_default=True,
    help="Folder to write the index to (replaced atomically).",
)
@click.option(
    "--scorer",
    type=click.Choice(SCORERS),
    default=None,
    help="How route confidence is computed [default: the route files' router.scorer, else hybrid].",
)
@click.option(
    "--index-type",
    type=click.Choice(["auto", "flat", "hnsw"]),
    default="auto",
    show_default=True,
    help="flat: exact search; hnsw: approximate; auto: exact up to 20,000 utterances.",
)
def build_index_cmd(routes: Path, out: Path, scorer: str | None, index_type: str) -> None:
    """Embed the utterances of ROUTES (a file or folder, default routes/) into an index.

    Utterances the previous index at --out already embedded with the same encoder are reused,
    so after editing one route only its new text is embedded.

    \b
    Example:
      semroute build-index routes/ --out indexes/default
    """
    from semroute.cli.report import progress as progress_bar
    from semroute.config.routes import load_routes
    from semroute.tuning.build import build_index

    route_set = load_routes(routes)
    for warning in route_set.warnings:
        _warn(warning)
    with progress_bar("Embedding utterances") as progress:
        report = build_index(
            route_set, out, scorer=scorer, index_type=index_type, progress=progress
        )
    oos = f", {report.out_of_scope} out-of-scope examples" if report.out_of_scope else ""
    click.echo(
        f"Built {report.path}: {report.routes} routes, {report.utterances} utterances{oos} "
        f"({report.embedded} embedded, {report.reused} reused) in {report.seconds:.1f} s"
    )
    if report.kept_thresholds:
        click.echo(
            f"Kept calibrated thresholds for {report.kept_thresholds} of {report.routes} routes "
            "(their configured thresholds are unchanged); re-run `semroute calibrate` after "
            "larger edits."
        )


@main.command("route")
@click.argument("queries", nargs=-1, required=True)
@INDEX_OPTION
@JSON_OPTION
def route_cmd(queries: tuple[str, ...], index_dir: Path | None, as_json: bool) -> None:
    """Show every route's confidence for each QUERY and where it would go.

    With --json, prints one JSON object per query (one line each).

    \b
    Examples:
      semroute route "translate 'good morning' into Spanish"
      semroute route "what's the capital of France?" --json
    """
    from semroute.routing.router import Router

    router = Router.load(index_dir)
    decisions = [router.route(q) for q in queries]
    if as_json:
        for decision in decisions:
            click.echo(json.dumps(decision.to_dict(), ensure_ascii=False))
        return
    from semroute.cli.report import console, print_decision

    out = console()
    for query, decision in zip(queries, decisions, strict=True):
        print_decision(out, query, decision)


@main.command("validate")
@click.argument("routes", type=click.Path(path_type=Path), default=Path("routes"))
def validate_cmd(routes: Path) -> None:
    """Check route files without embedding anything.

    \b
    Example:
      semroute validate routes/
    """
    from semroute.config.routes import load_routes

    route_set = load_routes(routes)
    for warning in route_set.warnings:
        _warn(warning)
    n_utt = sum(len(r.utterances) for r in route_set.routes)
    click.echo(
        f"{routes}: {len(route_set.routes)} routes, {n_utt} utterances, "
        f"default model {route_set.settings.default_model}, encoder {route_set.settings.encoder}: ok"
    )


@main.command("info")
@INDEX_OPTION
@JSON_OPTION
def info_cmd(index_dir: Path | None, as_json: bool) -> None:
    """Describe an index: routes, utterance counts, encoder, thresholds, staleness.

    \b
    Example:
      semroute info --index indexes/default
    """
    from semroute.index.store import RouteIndex
    from semroute.routing.router import default_index_path

    index = RouteIndex.load(index_dir or default_index_path(), check_routes=False)
    stale = index.staleness()
    m = index.manifest
    summary = {
        "path": str(index.path),
        "built_at": m.get("built_at"),
        "semroute_version": m.get("semroute_version"),
        "encoder": m["encoder"],
        # A fake or custom encoder passed to build_index ignores the configured runtime.
        "encoder_runtime": m["settings"].get("encoder_runtime", "onnx")
        if m["encoder"]["kind"] in ("onnx", "static")
        else m["encoder"]["kind"],
        "default_model": m["settings"]["default_model"],
        "min_margin": m["settings"].get("min_margin", 0.0),
        "scorer": m["scorer"],
        "utterances": m["index"]["count"],
        "out_of_scope_examples": len(index.out_of_scope),
        "search": {k: v for k, v in m["index"].items() if k not in ("file", "count")},
        "calibration": m.get("calibration"),
        "stale": stale is not None,
        "stale_reason": stale,
        "routes": [
            {
                "name": r.name,
                "model": r.model,
                "threshold": r.threshold,
                "utterances": r.stop - r.start,
            }
            for r in index.routes
        ],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    from semroute.cli.report import console, print_info

    print_info(console(), summary)


@main.command("chat")
@click.argument("text")
@INDEX_OPTION
@JSON_OPTION
@click.option("--model", default=None, help="Send to this model; nothing is routed.")
def chat_cmd(text: str, index_dir: Path | None, as_json: bool, model: str | None) -> None:
    """Route TEXT, send it to the chosen model through LiteLLM, print the answer and decision.

    The models, fallback chains and decision log are those of the index (`models:` and
    `fallbacks:` in the route files). Keys come from the environment.

    \b
    Examples:
      semroute chat "why does my script raise KeyError: 'id'?"
      semroute chat "translate 'good night' into Italian" --json
    """
    import warnings

    from semroute.config.deployments import UnknownPriceWarning
    from semroute.routing.router import Router

    router = Router.load(index_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = router.complete(text, model=model)
    for warning in caught:  # ours (an unknown price, an unwritable log), not libraries' notices
        if issubclass(warning.category, UnknownPriceWarning | RuntimeWarning):
            _warn(warning.message)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    from semroute.cli.report import console, print_dispatch

    # The answer is the provider's text: it must not drive the terminal either.
    click.echo(printable((result.text or "").replace("\r\n", "\n")))
    print_dispatch(console(), result)


@main.command("stats")
@click.argument("log_file", metavar="LOG", type=click.Path(path_type=Path, dir_okay=False))
@JSON_OPTION
def stats_cmd(log_file: Path, as_json: bool) -> None:
    """Summarise a decision log: requests, share per route and model, cost, fallbacks, latency.

    A line that is not a log record is skipped and counted as malformed: a line that is not one
    JSON object with a string request_id, or whose route, model or error is not text or null,
    whose fallbacks is not a list or null, or whose routing_ms, model_ms or cost_usd is not a
    finite number or null. A log that holds only malformed lines still exits 0.

    \b
    Examples:
      semroute stats logs/decisions.jsonl
      semroute stats logs/decisions.jsonl --json
    """
    from semroute.dispatch.log import summarise

    try:
        with log_file.open(encoding="utf-8", errors="replace") as lines:
            stats = summarise(lines)
    except OSError as exc:
        raise SemrouteError(
            f"cannot read {log_file} ({exc.strerror}); pass the file named by `dispatch.log` "
            "or $SEMROUTE_LOG"
        ) from exc
    if as_json:
        # allow_nan=False: NaN and Infinity are not JSON; to_dict() keeps every number finite.
        click.echo(json.dumps({"log": str(log_file), **stats.to_dict()}, indent=2, allow_nan=False))
        return
    from semroute.cli.report import console, print_stats

    print_stats(console(), log_file, stats)


@main.command("import")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Route file to write, e.g. routes/imported.yaml.",
)
@click.option(
    "--default-model", default=None, help="Also write a `router:` block with this default model."
)
@click.option(
    "--oos-label",
    default="oos",
    show_default=True,
    help="Label of out-of-scope rows (kept as out-of-scope examples, not a route).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def import_cmd(
    source: Path, out: Path, default_model: str | None, oos_label: str, force: bool
) -> None:
    """Write a route file from labelled data or a semantic-router config.

    SOURCE is either JSON lines of {"text": ..., "label": ...} (one route per label) or a
    semantic-router / LiteLLM auto-router router.json (or .yaml).

    \b
    Examples:
      semroute import train.jsonl --out routes/intents.yaml --default-model gpt-4o
      semroute import router.json --out routes/from-semantic-router.yaml
    """
    from semroute.tuning.importers import import_file

    report = import_file(source, out, default_model=default_model, oos_label=oos_label, force=force)
    extra = f", {report.out_of_scope} out-of-scope examples" if report.out_of_scope else ""
    dropped = f"; {report.dropped} duplicate rows dropped" if report.dropped else ""
    click.echo(
        f"Wrote {report.path}: {report.routes} routes, {report.utterances} utterances"
        f"{extra}{dropped}"
    )


DATA_OPTION = click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help='JSON lines of {"text": ..., "label": ...}.',
)
OOS_OPTION = click.option(
    "--oos-label", default="oos", show_default=True, help="Label of out-of-scope rows."
)


@main.command("eval")
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
    from semroute.cli.report import console, plot_evaluation, print_evaluation
    from semroute.routing.router import Router
    from semroute.tuning.evaluate import evaluate, load_labelled

    router = Router.load(index_dir)
    report, scores, truth = evaluate(router, load_labelled(data), oos_label=oos_label)
    if plot is not None:
        plot_evaluation(report, scores.confidence, truth, router.thresholds, plot)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    print_evaluation(console(), report, data)
    if plot is not None:
        click.echo(f"Plot written to {plot}")


@main.command("calibrate")
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
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="For --objective cost: how much worse a misroute is than a fallback.",
)
@click.option(
    "--target",
    type=click.FloatRange(0, 1),
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
    objective: str,
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
        _warn(doubt)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_calibration(console(), result, written=not dry_run)


@main.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of route files (for editor autocompletion).

    \b
    Example:
      semroute schema > route-file.schema.json
    """
    from semroute.config.routes import route_file_schema

    click.echo(json.dumps(route_file_schema(), indent=2))
