"""Reading labelled data: one JSON value a line, each problem one line naming file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semroute.errors import DataError

__all__ = ["read_jsonl"]


def read_jsonl(path: Path, row: str) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number and JSON value. ``row`` shows what a row looks like, for
    the error about a line nested too deeply to read."""
    try:
        # Split on newlines only: splitlines() would also cut a JSON string holding U+2028 or
        # U+0085, which JSON allows unescaped.
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read it ({exc}); pass a UTF-8 JSON-lines file", file=path) from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise DataError(f"not valid JSON ({exc.args[0]})", file=path, line=number) from exc
        except RecursionError as exc:
            raise DataError(
                f"nested too deeply to read; a row is one flat {row} object",
                file=path,
                line=number,
            ) from exc
        yield number, value
