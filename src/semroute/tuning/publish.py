"""Where a build writes: refusing folders that are not an index, the writers' lock, the swap.

A build fills a fresh sibling folder and renames it into place, so an interrupted build leaves
the previous index untouched; two writers of one index cannot run at once. Only a folder that
holds an index (or an empty or missing one) is ever replaced: anything else may be the user's
own files, and is refused. A symlink is followed, so the folder it points to is replaced and
the link itself stays as it is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from semroute.errors import SemrouteError
from semroute.files import sibling_dir
from semroute.index.manifest import is_index_folder
from semroute.index.store import backup_of, writer_lock
from semroute.text import printable

__all__ = [
    "build_lock",
    "copy_tree",
    "make_parent",
    "remove_leftovers",
    "replace_dir",
    "writable_out",
]


def copy_tree(src: Path, dst: Path) -> None:
    """Copy an export into the index. A copy, never a hard link: writing to a linked file
    would write into the shared cache, and every later build would use the damaged export."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name.startswith("."):
            continue  # the cache's own bookkeeping (its checksums), not part of the export
        if f.is_dir():
            copy_tree(f, dst / f.name)
        elif f.is_file():
            _copy_file(f, dst / f.name)


_FICLONE = 0x40049409
"""ioctl that makes ``dst`` share ``src``'s blocks copy-on-write (btrfs, XFS): a copy that takes
no disk or time until either file changes."""


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return
        except OSError as exc:
            # Filesystems without reflinks (ext4, tmpfs) say so with one of these.
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                raise
        shutil.copyfileobj(fin, fout, 1 << 20)


def replace_dir(out: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh folder next to ``out`` and swap it in, keeping the old one as the backup
    until the new one is in place."""
    with sibling_dir(out, prefix=f".{out.name}.building-") as tmp:
        fill(tmp)
        backup = backup_of(out)
        _remove(backup)
        if out.exists():
            os.replace(out, backup)
        # A kill between these two renames leaves only the backup; recover() restores it.
        os.replace(tmp, out)
        _remove(backup)


def _remove(path: Path) -> None:
    """Delete a folder we made, or whatever else stands at its name (an older semroute could
    leave a symlink there), without following links."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Delete half-written folders of builds that were killed (we hold the lock: none is live)."""
    for leftover in out.parent.glob(f".{out.name}.building-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def make_parent(real: Path) -> None:
    """Create the folder that will hold ``real`` (an ``--out`` folder), or refuse in one line."""
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SemrouteError(
            f"cannot create {real.parent}: {exc.strerror or exc}; choose another --out"
        ) from exc


def writable_out(out: Path, routes_root: Path | None = None) -> Path:
    """The folder a build of ``out`` replaces, with symlinks followed; refuses any that is not
    an index, so no user file can be lost. ``routes_root``: where the route files are."""
    real = Path(os.path.realpath(out))
    where = f"{out}" + (f" (-> {real})" if real != out.absolute() else "")
    advice = "choose a new or empty folder for the index, such as indexes/default"
    if real.parent == real:
        raise SemrouteError(f"refusing to build an index at {where}: it is the root; {advice}")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise SemrouteError(
            f"refusing to build an index at {where}: it is or holds the current folder, which "
            f"a build would replace whole; {advice}"
        )
    if routes_root is not None:
        root = routes_root.resolve()
        if real == root or real in root.parents:
            raise SemrouteError(
                f"refusing to build an index at {where}: it holds the route files, which a "
                f"build would delete; {advice}"
            )
    if not real.exists():
        return real
    if not real.is_dir():
        raise SemrouteError(f"refusing to build an index at {where}: it is a file; {advice}")
    if not is_index_folder(real):
        names = sorted(p.name for p in real.iterdir())
        shown = ", ".join(printable(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        raise SemrouteError(
            f"refusing to build an index at {where}: it holds files that are not an index "
            f"({len(names)}: {shown}), which a build would delete; {advice}"
        )
    return real


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold the lock that keeps two writers (builds, calibrations) off one index."""
    with contextlib.ExitStack() as stack:
        try:
            locked = stack.enter_context(writer_lock(Path(os.path.realpath(out))))
        except OSError as exc:
            raise SemrouteError(
                f"cannot lock {out} for writing: {exc.strerror or exc}; check that "
                f"{out.parent} is a folder you can write to"
            ) from exc
        if not locked:
            raise SemrouteError(f"another build is writing {out}; wait for it to finish")
        yield
