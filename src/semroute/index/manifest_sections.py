"""Checks of a manifest beyond its schema: its format number, and the sections it carries in
another module's shape (dispatch settings, rules and tiers, `server:` settings), each turned
into one :class:`~semroute.errors.CorruptIndexError` line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from semroute.config.deployments import DispatchConfig
from semroute.config.policy import Policy
from semroute.config.server import ServerSettings
from semroute.errors import REBUILD_HINT as REBUILD
from semroute.errors import CorruptIndexError, RouteConfigError
from semroute.index.checksums import MANIFEST
from semroute.index.manifest_entries import FORMAT, short
from semroute.text import printable

__all__ = ["check_dispatch", "check_format", "first_problem", "policy_of", "server_of"]


def check_format(found: object, path: Path) -> None:
    if found == FORMAT:
        return
    if isinstance(found, int) and not isinstance(found, bool) and 0 < found < FORMAT:
        why = f"was built by an older semroute (manifest format {found}, this one reads {FORMAT})"
    else:
        why = f"manifest format {short(found)} is not the supported {FORMAT}"
    raise CorruptIndexError(f"{why}; {REBUILD}", path=path)


def check_dispatch(dispatch: dict[str, Any], path: Path) -> None:
    try:
        DispatchConfig.from_dict(dispatch)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptIndexError(
            f"{MANIFEST}: dispatch settings are malformed ({type(exc).__name__}); {REBUILD}",
            path=path,
        ) from exc


def policy_of(data: dict[str, Any] | None, path: Path) -> Policy:
    """The rules and tiers, validated (empty when there are none)."""
    if data is None:
        return Policy()
    try:
        return Policy.from_dict(data, MANIFEST)
    except RouteConfigError as exc:
        raise CorruptIndexError(f"{printable(str(exc))}; {REBUILD}", path=path) from exc


def server_of(data: dict[str, Any] | None, path: Path) -> ServerSettings | None:
    """The `server:` settings, validated (None when there are none)."""
    if data is None:
        return None
    try:
        return ServerSettings.from_dict(data)
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptIndexError(
            f"{MANIFEST}: server settings are malformed ({type(exc).__name__}); {REBUILD}",
            path=path,
        ) from exc


def first_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, on one printable line, with how many more there are."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the manifest"
    message = error["msg"].removeprefix("Value error, ")
    problems = exc.error_count()
    more = f" (and {problems - 1} more problems)" if problems > 1 else ""
    return printable(f"{where}: {message}{more}")
