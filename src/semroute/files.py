"""Writing files and folders so that a reader sees the old version or the new one, never half;
and the one way semroute fingerprints a file's content.

Everything semroute writes that another process may read at the same time (a manifest, a route
file, the model cache) goes through here: the content is written next to its destination, made
durable, then renamed over it in one step. A killed writer leaves at most a hidden temporary
sibling, never a truncated destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "sha256_file", "sibling_dir"]


def atomic_write(path: Path, content: str | bytes, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``content`` in one step (temporary sibling, fsync, rename)."""
    data = content.encode(encoding) if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # Not mkstemp: its files are private (0600); this one gets the mode a plain write would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def sibling_dir(target: Path, *, prefix: str) -> Iterator[Path]:
    """A fresh empty folder next to ``target`` (same filesystem, so it can be renamed onto it),
    deleted on the way out unless it was renamed away by then."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """The SHA-256 of ``path``'s content (hex), read a megabyte at a time."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
