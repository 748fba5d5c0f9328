"""semroute's model cache: exports and unpacked weights, each published whole and checksummed.

Entries live under ``$SEMROUTE_CACHE`` (default ``~/.cache/semroute``), keyed by the content
hash of the model they come from. An entry is filled in a fresh folder and renamed into place,
with the SHA-256 of each of its files; one whose files no longer match is made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from semroute.errors import EncoderError
from semroute.files import atomic_write, sha256_file, sibling_dir

__all__ = ["cache_dir", "cached", "damage", "publish", "tree_hash"]

log = logging.getLogger(__name__)

CACHE_ENV = "SEMROUTE_CACHE"
CHECKSUMS = ".checksums.json"
"""In every cache entry: the SHA-256 of each of its files, written before the entry is published
and checked before it is used, so a damaged export is made again instead of trusted."""


def cache_dir() -> Path:
    """Where exports and unpacked model weights live: ``$SEMROUTE_CACHE`` or ``~/.cache/semroute``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
        if path.exists() and not path.is_dir():
            raise EncoderError(
                f"{CACHE_ENV}={env} is not a folder; point {CACHE_ENV} at a folder for "
                "semroute's model cache, or unset it to use ~/.cache/semroute"
            )
        return path
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "semroute"


def publish(target: Path, fill: Callable[[Path], None], *, marker: str) -> None:
    """Fill a fresh folder next to ``target`` and rename it into place, so readers never see
    half a folder and a killed process leaves nothing at ``target``."""
    make_cache_dir(target.parent)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(sibling_dir(target, prefix=f".{target.name}-"))
        except OSError as exc:
            raise cache_error(target.parent, exc) from exc
        fill(tmp)
        sums = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in _files(tmp)}
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process published the same content first; theirs is as good as ours.
            if not (target / marker).is_file():
                raise


def cached(target: Path, marker: str) -> bool:
    """Whether ``target`` holds a complete cache entry whose files are all as published. One
    that is not (damaged, or made by a semroute that kept no checksums) is moved out of the way
    to be made again: trusting it would put its damage into every index built from it."""
    if not (target / marker).is_file():
        return False
    problem = damage(target)
    if problem is None:
        return True
    log.warning("The cached %s is %s; making it again", target, problem)
    aside = target.with_name(f".{target.name}-damaged-{os.getpid()}")
    try:
        os.replace(target, aside)
    except FileNotFoundError:
        return False  # another process moved it first
    except OSError as exc:
        raise cache_error(target, exc) from exc
    shutil.rmtree(aside, ignore_errors=True)
    return False


def damage(target: Path) -> str | None:
    """What is wrong with a folder published with checksums (None: every file is as written)."""
    try:
        sums = json.loads((target / CHECKSUMS).read_text())
    except FileNotFoundError:
        return "from an older semroute (no checksums)"
    except (OSError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__})"
    if not isinstance(sums, dict):
        return "missing its checksums"
    present = {f.relative_to(target).as_posix() for f in _files(target)} - {CHECKSUMS}
    if present != set(sums):
        return "missing files or holding others"
    for name, digest in sums.items():
        if sha256_file(target / name) != digest:
            return f"damaged ({name} differs from what was exported)"
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def make_cache_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_error(folder, exc) from exc


def cache_error(path: Path, exc: OSError) -> EncoderError:
    return EncoderError(
        f"cannot write semroute's model cache at {path} ({exc.strerror or exc}); point "
        f"{CACHE_ENV} at a writable folder"
    )


def tree_hash(folder: Path) -> str:
    """Content hash of a model folder, memoised by (path, size, mtime) so it is computed once."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(folder).parts and p.name != CHECKSUMS
    )
    stamp = json.dumps(
        [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    )
    memo_file = cache_dir() / "hashes.json"
    key = hashlib.sha256(f"{folder.resolve()}|{stamp}".encode()).hexdigest()
    try:
        memo: dict[str, str] = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        h.update(sha256_file(p).encode())
    digest = h.hexdigest()
    memo[key] = digest
    make_cache_dir(memo_file.parent)
    try:
        atomic_write(memo_file, json.dumps(memo))
    except OSError as exc:
        raise cache_error(memo_file, exc) from exc
    return digest
