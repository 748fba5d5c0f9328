"""``semroute serve``: the OpenAI-compatible gateway."""

from __future__ import annotations

from pathlib import Path

import click

from semroute.cli.options import INDEX_OPTION

__all__ = ["serve_cmd"]


@click.command("serve")
@INDEX_OPTION
@click.option(
    "--host", default=None, help="Address to listen on [default: server.host or 127.0.0.1]."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="[default: server.port or 8000]"
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=None, help="Worker processes [default: 1]."
)
@click.option(
    "--challenger",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also route every request with this index and log its decision [default: "
    "server.challenger].",
)
def serve_cmd(
    index_dir: Path | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    challenger: Path | None,
) -> None:
    """Serve the index as an OpenAI-compatible gateway: send `model: "auto"` to
    /v1/chat/completions and semroute routes, dispatches, falls back and logs.

    Settings come from the `server:` block of the route files (stored in the index); the
    options override them. The index is reloaded when it is rebuilt, or on SIGHUP; SIGTERM
    lets in-flight requests finish first.

    \b
    Examples:
      semroute serve
      semroute serve --index indexes/default --port 8080
      APP_KEY=... semroute serve --host 0.0.0.0 --workers 4   # needs server.keys
      semroute serve --challenger indexes/candidate   # logs both decisions
    """
    import os

    from semroute.server.runner import prepare, serve
    from semroute.server.state import CHALLENGER_ENV

    if challenger is not None:  # worker processes read it too
        os.environ[CHALLENGER_ENV] = str(challenger.absolute())

    loaded, settings = prepare(index_dir, host=host, port=port, workers=workers)
    serve(loaded, settings)
