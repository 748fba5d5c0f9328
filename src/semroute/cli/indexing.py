"""Commands that read route files and write or describe indexes: validate, build-index, info,
import, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from semroute.cli.options import INDEX_OPTION, JSON_OPTION, counted, error, warn
from semroute.config.routes import SCORERS

if TYPE_CHECKING:
    from semroute.config.routefile import ScorerName
    from semroute.tuning.build import IndexType

__all__ = ["build_index_cmd", "import_cmd", "info_cmd", "schema_cmd", "validate_cmd"]


@click.command("validate")
@click.argument("routes", type=click.Path(path_type=Path), default=Path("routes"))
def validate_cmd(routes: Path) -> None:
    """Check route files without embedding anything.

    Every problem is listed, one line each (every field of every file, then those between
    files), and the command exits 1 if there is any.

    \b
    Example:
      semroute validate routes/
    """
    from semroute.config.routes import check_routes

    route_set, problems = check_routes(routes)
    for problem in problems:
        error(problem)
    if route_set is None:
        files = len({p.file for p in problems})
        if len(problems) == 1:  # its one line says it all
            raise SystemExit(1)
        click.secho(
            f"{routes}: {counted(len(problems), 'problem')} in {counted(files, 'file')}",
            fg="red",
            err=True,
        )
        raise SystemExit(1)
    if route_set.difficulty is not None:
        from semroute.index.difficulty import read_model

        read_model(route_set.difficulty)  # its files, as build-index checks them (not its encoder)
    for warning in route_set.warnings:
        warn(warning)
    n_utt = sum(len(r.utterances) for r in route_set.routes)
    click.echo(
        f"{routes}: {counted(len(route_set.routes), 'route')}, {counted(n_utt, 'utterance')}, "
        f"default model {route_set.settings.default_model}, encoder {route_set.settings.encoder}: ok"
    )


@click.command("build-index")
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
@click.option(
    "--encoder",
    default=None,
    help="Model name or encoder folder (such as `semroute tune` writes) to embed with "
    "[default: the route files' router.encoder].",
)
def build_index_cmd(
    routes: Path, out: Path, scorer: ScorerName | None, index_type: IndexType, encoder: str | None
) -> None:
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
        warn(warning)
    with progress_bar("Embedding utterances") as progress:
        report = build_index(
            route_set,
            out,
            scorer=scorer,
            index_type=index_type,
            progress=progress,
            encoder_name=encoder,
        )
    oos = f", {counted(report.out_of_scope, 'out-of-scope example')}" if report.out_of_scope else ""
    click.echo(
        f"Built {report.path}: {counted(report.routes, 'route')}, "
        f"{counted(report.utterances, 'utterance')}{oos} "
        f"({report.embedded} embedded, {report.reused} reused) in {report.seconds:.1f} s"
    )
    if report.kept_thresholds:
        click.echo(
            f"Kept calibrated thresholds for {report.kept_thresholds} of {report.routes} routes "
            "(their configured thresholds are unchanged); re-run `semroute calibrate` after "
            "larger edits."
        )


@click.command("info")
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
    tuned = _tuned(index.path)
    summary = {
        "path": str(index.path),
        "built_at": m.built_at,
        "semroute_version": m.semroute_version,
        "encoder": m.encoder.model_dump(),
        "tuned": tuned,
        # A fake or custom encoder passed to build_index ignores the configured runtime.
        "encoder_runtime": m.settings.encoder_runtime
        if m.encoder.kind in ("onnx", "static")
        else m.encoder.kind,
        "default_model": m.settings.default_model,
        "min_margin": m.settings.min_margin,
        "scorer": m.scorer,
        "utterances": m.index.count,
        "out_of_scope_examples": len(index.out_of_scope),
        "search": m.index.model_dump(exclude={"file", "count"}, exclude_unset=True),
        "calibration": m.calibration,
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
    from semroute.cli.tune import print_tuned

    print_info(console(), summary)
    print_tuned(console(), tuned)


def _tuned(index_path: Path) -> dict[str, object] | None:
    """What `semroute tune` recorded in the index's encoder (None: a stock encoder)."""
    from semroute.encoders.base import ENCODER_META
    from semroute.index.manifest import ENCODER_DIR

    try:
        meta = json.loads((index_path / ENCODER_DIR / ENCODER_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tuned = meta.get("tuned") if isinstance(meta, dict) else None
    if not isinstance(tuned, dict):
        return None
    keys = ("base", "data_fingerprint", "recipe", "before", "after", "helped", "validation")
    return {k: tuned.get(k) for k in keys}


@click.command("import")
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
    semantic-router / LiteLLM auto-router router.json (or .yaml, or a bare list of routes).
    semantic-router's score_threshold (a cosine similarity) is kept, with `scorer: nearest`,
    when the config used semroute's encoder and --default-model writes a router block;
    otherwise it is kept as metadata only, and a warning says why.

    \b
    Examples:
      semroute import train.jsonl --out routes/intents.yaml --default-model gpt-4o
      semroute import router.json --out routes/from-semantic-router.yaml
    """
    from semroute.tuning.importers import import_file

    report = import_file(source, out, default_model=default_model, oos_label=oos_label, force=force)
    extra = (
        f", {counted(report.out_of_scope, 'out-of-scope example')}" if report.out_of_scope else ""
    )
    dropped = f"; {counted(report.dropped, 'duplicate row')} dropped" if report.dropped else ""
    blank = f"; {counted(report.blank, 'row')} with no text skipped" if report.blank else ""
    click.echo(
        f"Wrote {report.path}: {counted(report.routes, 'route')}, "
        f"{counted(report.utterances, 'utterance')}{extra}{dropped}{blank}"
    )
    for note in report.notes:
        warn(note)


@click.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of route files (for editor autocompletion).

    \b
    Example:
      semroute schema > route-file.schema.json
    """
    from semroute.config.routes import route_file_schema

    click.echo(json.dumps(route_file_schema(), indent=2))
