"""The SHA-256 checksums of an index's files, and opening those files safely to check them."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from semroute.errors import REBUILD_HINT as REBUILD
from semroute.errors import CorruptIndexError
from semroute.files import sha256_file

__all__ = ["checksums_of", "open_files", "verify_checksums"]

MANIFEST = "manifest.json"


def checksums_of(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (except the manifest), by relative POSIX path."""
    return {
        f.relative_to(folder).as_posix(): sha256_file(f)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }


def open_files(dir_fd: int, names: Iterable[str], path: Path) -> dict[str, int]:
    """Open every file of ``names`` (the manifest's), relative to the open folder ``dir_fd``. Refuses a
    missing file, and anything but a regular file (a FIFO or a device in its place would block
    or never end when read). The caller closes the descriptors."""
    fds: dict[str, int] = {}
    try:
        for name in names:
            try:
                fds[name] = os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
                regular = stat.S_ISREG(os.fstat(fds[name]).st_mode)
            except FileNotFoundError as exc:
                raise CorruptIndexError(f"{name} is missing; {REBUILD}", path=path) from exc
            except OSError as exc:
                raise CorruptIndexError(
                    f"{name} is unreadable ({exc.strerror or exc}); {REBUILD}", path=path
                ) from exc
            if not regular:
                raise CorruptIndexError(f"{name} is not a regular file; {REBUILD}", path=path)
    except CorruptIndexError:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def verify_checksums(path: Path, expected: Mapping[str, str], fds: dict[str, int]) -> None:
    """Refuse the index if any of its files (open as ``fds``, see :func:`open_files`) differs
    from the checksum the build wrote (``expected``, by name). Files are hashed side by side: hashlib releases the GIL, and
    loading a 15,000-utterance index hashes about 45 MB."""
    from concurrent.futures import ThreadPoolExecutor

    names = sorted(expected, key=lambda n: -os.fstat(fds[n]).st_size)  # the biggest first
    with ThreadPoolExecutor(max(1, min(len(names), os.cpu_count() or 1))) as pool:
        found = dict(zip(names, pool.map(lambda n: _checksum_fd(fds[n]), names), strict=True))
    for name in names:
        if found[name] is None:
            raise CorruptIndexError(f"{name} is unreadable; {REBUILD}", path=path)
        if found[name] != expected[name]:
            raise CorruptIndexError(
                f"{name} is damaged or not the file this index was built with (its checksum "
                f"differs); {REBUILD}",
                path=path,
            )


def _checksum_fd(fd: int) -> str | None:
    # pread: the hash neither moves nor depends on the descriptor's offset.
    h = hashlib.sha256()
    offset = 0
    try:
        while block := os.pread(fd, 1 << 20, offset):
            h.update(block)
            offset += len(block)
    except OSError:
        return None
    return h.hexdigest()
