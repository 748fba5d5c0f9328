"""The ``semroute`` command line. Human output by default, ``--json`` for scripts."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from semroute.cli import difficulty, indexing, learning, tuning
from semroute.cli.fake import fake_provider_cmd
from semroute.cli.options import INDEX_OPTION, JSON_OPTION, FiniteRange, error
from semroute.cli.options import warn as _warn
from semroute.cli.serve import serve_cmd
from semroute.cli.tune import tune_cmd
from semroute.errors import SemrouteError
from semroute.text import printable

log = logging.getLogger("semroute")


class _Group(click.Group):
    """Turns a SemrouteError into one red line and exit code 1, and a command's usage error
    (a bad option value, a missing argument) into one red line and exit code 2, not click's
    three (the usage, a hint, the error)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SemrouteError as exc:
            error(exc)
            ctx.exit(1)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            error(f"{exc.format_message().rstrip('.')}; see `{where} --help`")
            ctx.exit(exc.exit_code)


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


@main.command("route")
@click.argument("queries", nargs=-1)
@INDEX_OPTION
@click.option("--task", default=None, help="The task hint rules test as `task`.")
@click.option("--tier", "user_tier", default=None, help="The user tier rules test as `user_tier`.")
@click.option(
    "--max-cost",
    type=FiniteRange(min=0),
    default=None,
    help="The cost ceiling in USD (`max_cost_usd`).",
)
@click.option(
    "--max-tokens", type=click.IntRange(min=1), default=None, help="The answer's token cap."
)
@click.option(
    "--request",
    "body_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="An OpenAI chat-completions body (JSON): its messages, tools, response_format and "
    "max_tokens feed the rules; without QUERY its messages are routed.",
)
@JSON_OPTION
def route_cmd(
    queries: tuple[str, ...],
    index_dir: Path | None,
    task: str | None,
    user_tier: str | None,
    max_cost: float | None,
    max_tokens: int | None,
    body_file: Path | None,
    as_json: bool,
) -> None:
    """Show every route's confidence for each QUERY and where it would go.

    With --json, prints one JSON object per query (one line each). The options are the
    signals the index's `rules:` test.

    \b
    Examples:
      semroute route "translate 'good morning' into Spanish"
      semroute route "what's the capital of France?" --json
      semroute route "review this diff" --task code-review --tier free --json
      semroute route --request body.json --json
    """
    from semroute.routing.router import Router

    body = _read_body(body_file) if body_file is not None else None
    if not queries and not (body and body.get("messages")):
        raise click.UsageError("give a QUERY, or --request with a body that has messages")
    if max_tokens is not None:
        body = {**(body or {}), "max_tokens": max_tokens}
    router = Router.load(index_dir)
    hints: dict[str, Any] = {"task": task, "user_tier": user_tier, "max_cost_usd": max_cost}
    asked: list[Any] = list(queries) if queries else [body["messages"] if body else []]
    decisions = [router.route(q, request=body, **hints) for q in asked]
    if as_json:
        for decision in decisions:
            click.echo(json.dumps(decision.to_dict(), ensure_ascii=False))
        return
    from semroute.cli.report import console, print_decision

    out = console()
    for query, decision in zip(asked, decisions, strict=True):
        print_decision(
            out, query if isinstance(query, str) else "(the request's messages)", decision
        )


def _read_body(path: Path) -> dict[str, Any]:
    """An OpenAI chat-completions body, checked enough that routing it cannot fail oddly."""
    from semroute.errors import InvalidQueryError

    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidQueryError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidQueryError(f"{path}: not valid JSON ({exc})") from exc
    kinds = {"messages": list, "tools": list, "response_format": dict, "max_tokens": int}
    if not isinstance(body, dict):
        raise InvalidQueryError(f"{path}: should be a JSON object with `messages`")
    for key, kind in kinds.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InvalidQueryError(f"{path}: `{key}` should be a {kind.__name__}")
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidQueryError(f"{path}: messages[{i}] should be an object with a role")
    return body


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

    from semroute.config.pricing import UnknownPriceWarning
    from semroute.dispatch.dispatcher import Dispatcher
    from semroute.routing.router import Router

    router = Router.load(index_dir)
    dispatcher = Dispatcher.for_index(router.index)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = dispatcher.complete(text, router=router, model=model)
    for warning in caught:  # ours (an unknown price, an unwritable log), not libraries' notices
        if issubclass(warning.category, UnknownPriceWarning | RuntimeWarning):
            _warn(warning.message)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        from semroute.cli.report import console, print_dispatch

        # The answer is the provider's text: it must not drive the terminal either.
        click.echo(printable((result.text or "").replace("\r\n", "\n")))
        print_dispatch(console(), result)
    # A shadowed request's evaluation runs after the answer: let it write its record before
    # the process exits (each of its calls is bounded by the dispatch timeout).
    dispatcher.wait_for_shadows()


@main.command("stats")
@click.argument("log_file", metavar="LOG", type=click.Path(path_type=Path, dir_okay=False))
@INDEX_OPTION
@JSON_OPTION
def stats_cmd(log_file: Path, index_dir: Path | None, as_json: bool) -> None:
    """Summarise a decision log: requests, share per route, rule and model, cost, fallbacks,
    latency, and how often each skip reason fired; per route, rule and tier, the average cost,
    the saving against the default model, cascade escalations and shadow verdicts.

    A request refused before any model was called (blocked by a rule, over budget) is counted
    as refused, not as a model failure. Costs are per request or in total, as labelled.

    A line that is not a log record is skipped and counted as malformed: a line that is not one
    JSON object with a string request_id, or with a field (or a field nested in one) of another
    shape than the gateway writes: text that is not text, a duration that is negative or not
    finite, an attempt without a model, a skip without a reason (the README lists them). A record
    without timings adds nothing to the latency. Quality records (shadow evaluation) are counted
    apart. A log that holds only malformed lines still exits 0.

    \b
    Examples:
      semroute stats logs/decisions.jsonl
      semroute stats logs/decisions.jsonl --json
      semroute stats logs/decisions.jsonl --index indexes/default --json   # with drift

    With an index (--index, else $SEMROUTE_INDEX or indexes/default when it exists), the JSON
    gains `drift`: the logged confidences against the calibration data's (see the README).
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
    summary = {**stats.to_dict(), "drift": learning.drift_of(log_file, index_dir)}
    if as_json:
        # allow_nan=False: NaN and Infinity are not JSON; to_dict() keeps every number finite.
        click.echo(json.dumps({"log": str(log_file), **summary}, indent=2, allow_nan=False))
        return
    from semroute.cli.learning_report import print_learning
    from semroute.cli.quality_report import print_quality
    from semroute.cli.report import console, print_stats

    out = console()
    print_stats(out, log_file, stats)
    print_quality(out, summary["quality"])
    print_learning(out, summary)


for _command in (
    indexing.build_index_cmd,
    indexing.import_cmd,
    indexing.info_cmd,
    indexing.schema_cmd,
    indexing.validate_cmd,
    serve_cmd,
    fake_provider_cmd,
    tuning.calibrate_cmd,
    tuning.eval_cmd,
    tune_cmd,
    difficulty.train_difficulty_cmd,
    difficulty.eval_difficulty_cmd,
    learning.replay_cmd,
    learning.suggest_cmd,
):
    main.add_command(_command)
