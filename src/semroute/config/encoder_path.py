"""``router.encoder`` as the encoder loader is to read it: a hub name as written, a local
folder found beside the route file (made absolute) or from the current folder, and a value that
can only be a local path, found in neither place, refused naming both."""

from __future__ import annotations

import os
import re
from pathlib import Path

from semroute.config.routefile import ParsedFile
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = ["encoder_of"]


# A Hugging Face hub repository id (`org/name`, or a bare `name`), as the hub client checks it.
_HUB_NAME = re.compile(r"(?:\w(?:[\w.-]*\w)?/)?\w(?:[\w.-]*\w)?")


def encoder_of(written: str, router_file: ParsedFile | None, base: Path | None) -> str:
    """``router.encoder`` as the encoder loader is to read it. A local checkpoint folder is read
    against the file's folder when it is there; a hub name (`org/model`) is left as written, and
    so is a path found only from the current folder. A value that can only be a path and is
    found in neither place is refused here, naming both, rather than sent to the hub."""
    try:
        path = Path(written).expanduser()
    except RuntimeError:  # `~user` for no such user: a path that is not there
        path = Path(written)
    if base is not None and not path.is_absolute():
        local = base / written
        if local.is_dir():
            return str(local.resolve())
    if not _is_local_path(written) or path.exists():
        return written
    if path.is_absolute():
        looked = f"{written!r} does not exist" + (f" ({path})" if str(path) != written else "")
    else:
        places = [f"{os.path.normpath(path.absolute())} (from the current folder)"]
        if base is not None:
            beside = os.path.normpath((base / path).absolute())
            places.insert(0, f"{beside} (beside the route file)")
        looked = f"{written!r} is not at {' nor at '.join(places)}"
    raise RouteConfigError(
        f"encoder folder {looked}; write the path relative to the route file",
        file=None if router_file is None else router_file.source,
        field="router.encoder",
        line=None if router_file is None else line_of(router_file.node, ("router", "encoder")),
    )


def _is_local_path(name: str) -> bool:
    """Whether ``name`` can only be a folder on disk: it starts like one (``./``, ``../``, ``~``,
    a root or a drive) or holds a path separator where a hub id (`org/name`) could not."""
    seps = {"/", os.sep, os.altsep or "/"}
    starts = tuple(f"{lead}{sep}" for sep in seps for lead in ("", ".", ".."))
    if name.startswith(("~", *starts)) or name in (".", "..") or Path(name).is_absolute():
        return True
    hub = _HUB_NAME.fullmatch(name) is not None and ".." not in name and "--" not in name
    return not hub and any(sep in name for sep in seps)
