"""``semroute replay`` and ``semroute suggest``: learning from the decision log (see the README's
"Learning from traffic"); and the drift part of ``semroute stats``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from semroute.cli.options import INDEX_OPTION, JSON_OPTION, warn
from semroute.errors import SemrouteError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["drift_of", "replay_cmd", "suggest_cmd"]

LOG_ARGUMENT = click.argument("log_file", type=click.Path(path_type=Path, dir_okay=False))


@click.command("replay")
@LOG_ARGUMENT
@INDEX_OPTION
@click.option("--since", default=None, help="Only requests logged at or after this ISO time.")
@JSON_OPTION
def replay_cmd(log_file: Path, index_dir: Path | None, since: str | None, as_json: bool) -> None:
    """Re-decide every logged request with a candidate index and report what would change.

    Needs the requests' content in the log (`log_content: true`). Never calls a model; costs
    are estimated from each request's logged tokens at the candidate index's prices. Lines
    that are not log records are skipped and counted, as `semroute stats` counts them. Warns
    when under half of the routed requests went to routes the candidate has.

    \b
    Examples:
      semroute replay logs/decisions.jsonl --index indexes/candidate
      semroute replay logs/decisions.jsonl --index indexes/candidate --since 2026-05-01 --json
    """
    from semroute.routing.router import Router
    from semroute.tuning.logread import parse_since, read_log
    from semroute.tuning.replay import replay

    data = read_log(log_file, parse_since(since))
    router = Router.load(index_dir)
    report = replay(router, data, source=str(log_file))
    if report["warning"] is not None:
        warn(report["warning"])
    if as_json:
        click.echo(json.dumps({"log": str(log_file), **report}, indent=2, allow_nan=False))
        return
    from semroute.cli.learning_report import pairs_table
    from semroute.cli.report import console

    out = console()
    share = report["changed_share"]
    out.print(
        f"{report['replayed']} of {report['n']} requests replayed; {report['changed']} would "
        f"change ({share:.1%})"
        if share is not None
        else f"nothing to replay ({report['n']} requests)"
    )
    _print_malformed(out, report["malformed_lines"])
    if report["by_pair"]:
        out.print(pairs_table("Changes (from -> to)", report["by_pair"]))
    before, after = report["cost_usd_before"], report["cost_usd_after"]
    if before is not None:
        out.print(f"estimated cost: ${before:.6f} -> ${after:.6f} ({report['priced']} priced)")


@click.command("suggest")
@LOG_ARGUMENT
@INDEX_OPTION
@click.option(
    "--out",
    "out_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the route-file fragment here.",
)
@click.option(
    "--min-size",
    type=click.IntRange(2, 10_000),
    default=5,
    show_default=True,
    help="Smallest cluster proposed as a new route.",
)
@JSON_OPTION
def suggest_cmd(
    log_file: Path, index_dir: Path | None, out_file: Path | None, min_size: int, as_json: bool
) -> None:
    """Find the questions no route covers, and utterances existing routes miss.

    Looks at requests sent to the default model below threshold, decided by a low margin, or
    corrected by feedback; clusters them with the index's encoder; writes a route-file fragment
    (rename its routes, then `semroute validate`). Deterministic for a given log.

    \b
    Examples:
      semroute suggest logs/decisions.jsonl --index indexes/default --out suggested.yaml
      semroute suggest logs/decisions.jsonl --json
    """
    from semroute.routing.router import Router
    from semroute.tuning.logread import read_log
    from semroute.tuning.suggest import existing_note, patch_yaml, suggest

    if out_file is not None:  # before the work, not after it
        _check_out(out_file)
    data = read_log(log_file)
    router = Router.load(index_dir)
    report = suggest(router, data, min_size=min_size, source=str(log_file))
    if out_file is not None:
        _write_out(out_file, patch_yaml(report))
    if as_json:
        click.echo(json.dumps({"log": str(log_file), **report}, indent=2))
        return
    from semroute.cli.report import console, shown

    out = console()
    out.print(f"{report['new_routes']} proposed route(s), from {report['looked_at']} queries")
    _print_malformed(out, report["malformed_lines"])
    for c in report["clusters"]:
        out.print(f"  {c['name']} ({c['size']} queries): {shown(repr(c['examples'][0]))}")
        if c["existing_route"] is not None:
            out.print(f"    [yellow]{shown(existing_note(c))} with this index[/]")
    for add in report["additions"]:
        out.print(f"  +{len(add['utterances'])} utterance(s) for {add['route']!r}")
    if out_file is not None:
        out.print(f"Wrote {out_file}")


def _print_malformed(out: Console, malformed: int) -> None:
    """The line `semroute stats` prints for the log's malformed lines."""
    if malformed:
        out.print(f"[yellow]{malformed} malformed lines skipped[/]")


def _check_out(out_file: Path) -> None:
    """Refuse an --out whose folder is missing, or a file, before any work is done."""
    folder = out_file.parent
    if folder.is_dir():
        return
    found = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if found is not None and not found.is_dir():
        raise SemrouteError(
            f"--out {out_file}: {found} is a file, not a folder; choose another --out"
        )
    raise SemrouteError(
        f"--out {out_file}: the folder {folder} does not exist; create it first or choose "
        "another --out"
    )


def _write_out(out_file: Path, content: str) -> None:
    from semroute.files import atomic_write

    try:
        atomic_write(out_file, content)
    except OSError as exc:
        raise SemrouteError(
            f"--out {out_file}: cannot write it ({exc.strerror or exc}); choose another --out"
        ) from None


def drift_of(log_file: Path, index_dir: Path | None) -> dict[str, Any] | None:
    """The ``drift`` of `semroute stats --json` (None: no index given and none at the default
    place); a dict with ``problem`` when the index holds no calibration reference."""
    from semroute.errors import IndexLoadError
    from semroute.index.drift import DRIFT_FILE, read_reference
    from semroute.index.manifest import Manifest
    from semroute.routing.router import default_index_path
    from semroute.tuning.drift import drift_report
    from semroute.tuning.logread import read_log

    path = index_dir or Path(default_index_path())
    if index_dir is None and not path.exists():
        return None
    try:  # the log's summary stands without it: an unusable index is reported, not fatal
        manifest = Manifest.read(path)
        digest = manifest.checksums.get(DRIFT_FILE) if manifest.drift else None
        reference = read_reference(path, digest)
    except IndexLoadError as exc:
        return {"alarm": False, "problem": str(exc)}
    if reference is None:
        return {
            "alarm": False,
            "problem": f"the index at {path} has no calibration reference; run `semroute "
            "calibrate` on it",
        }
    return {"index": str(path), **drift_report(reference, read_log(log_file).requests)}
