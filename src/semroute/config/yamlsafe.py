"""Reading YAML the way untrusted input must be read.

Route files, LiteLLM proxy configs and imported router configs all come through
:func:`read_yaml`: safe tags only, bounded in size, depth and alias expansion, no duplicate
keys. Every problem is a one-line :class:`RouteConfigError` naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from semroute.errors import RouteConfigError

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPANDED_NODES",
    "MAX_FILE_BYTES",
    "field_path",
    "key_written_at",
    "line_of",
    "read_text",
    "read_yaml",
    "written_at",
]

# What any YAML file semroute reads may amount to. A route file of CLINC150's 15,000 examples is
# about 1 MB and 16,000 entries; these leave room for far larger ones and still bound the memory
# a hostile file can take.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_EXPANDED_NODES = 1_000_000
MAX_DEPTH = 64


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Read one YAML file the way untrusted input must be read: safe tags only, at most
    ``MAX_FILE_BYTES``, nested at most ``MAX_DEPTH`` deep, expanding (aliases included) to at
    most ``MAX_EXPANDED_NODES`` entries, no duplicate keys. Returns the data and its node tree
    (None for an empty file); every problem is a one-line :class:`RouteConfigError`."""
    text = read_text(path)
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        # The parser's events are counted before any node is composed, so an alias bomb is
        # refused from its size on paper and never materialises.
        _check_events(loader_cls(text), path)
        loader = loader_cls(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, None
            _check_keys(node, path)
            return loader.construct_document(node), node
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from exc


def read_text(path: Path) -> str:
    """A file's UTF-8 text, refused (one line) past ``MAX_FILE_BYTES`` before it is read."""
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:  # refused before it is read
                raise RouteConfigError(_too_big(), file=path)
            raw = f.read(MAX_FILE_BYTES + 1)  # also bounds what a device or pipe can send
        if len(raw) > MAX_FILE_BYTES:
            raise RouteConfigError(_too_big(), file=path)
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteConfigError(
            f"cannot read file ({exc}); check it is UTF-8 text", file=path
        ) from exc


def _too_big() -> str:
    return (
        f"file is larger than {MAX_FILE_BYTES // 2**20} MB; split it into several files "
        "in the same folder"
    )


def _check_events(loader: Any, path: Path) -> None:
    """Count what the document expands to, event by event: each scalar, collection and alias
    (an alias counts as the whole of what it repeats), and how deep collections nest."""
    anchors: dict[str, int] = {}  # finished anchored nodes: their expanded sizes
    frames: list[list[Any]] = []  # open collections: [anchor, expanded size so far]
    expanded = 0
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                if any(anchor == event.anchor for anchor, _ in frames):
                    raise RouteConfigError(
                        "a YAML alias refers to itself; remove the anchor or the alias",
                        file=path,
                        line=line,
                    )
                size = anchors.get(event.anchor, 1)
            elif isinstance(event, yaml.CollectionStartEvent):
                frames.append([event.anchor, 0])
                if len(frames) > MAX_DEPTH:
                    raise RouteConfigError(
                        f"nested more than {MAX_DEPTH} levels deep; flatten the structure",
                        file=path,
                        line=line,
                    )
                size = 1
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, inner = frames.pop()
                if anchor is not None:
                    anchors[anchor] = inner + 1
                size = 0
                if frames:
                    frames[-1][1] += inner + 1
                continue
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    anchors[event.anchor] = 1
            else:
                continue
            if frames:
                frames[-1][1] += size
            expanded += size
            if expanded > MAX_EXPANDED_NODES:
                raise RouteConfigError(_too_many(bool(anchors)), file=path, line=line)
    finally:
        loader.dispose()


def _too_many(aliased: bool) -> str:
    if aliased:
        return (
            f"YAML aliases expand this file to over {MAX_EXPANDED_NODES:,} entries; "
            "write the entries out or use fewer aliases"
        )
    return f"file holds over {MAX_EXPANDED_NODES:,} entries; split it into several files"


def _check_keys(root: yaml.Node, path: Path) -> None:
    """Reject duplicate keys, which PyYAML accepts silently (the last one wins, dropping data)."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:  # a shared alias: checked once
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[Any] = set()
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in keys:
                        raise RouteConfigError(
                            f"key {k.value!r} appears twice in one mapping; merge them",
                            file=path,
                            line=k.start_mark.line + 1,
                        )
                    keys.add(k.value)
                stack += (k, v)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _yaml_error(exc: yaml.YAMLError, path: Path) -> RouteConfigError:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    problem_mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None)
    context_mark: Any = getattr(exc, "context_mark", None)
    # Point at where the unfinished construct began (an unclosed quote or bracket), which is
    # where the fix goes; the parser only notices the problem later, often at end of file.
    opened = context_mark is not None and str(context).startswith("while")
    mark = context_mark if opened else problem_mark
    where = ""
    if opened and problem_mark and context_mark.line != problem_mark.line:
        where = f" ({context} that starts here; noticed at line {problem_mark.line + 1})"
    return RouteConfigError(
        f"invalid YAML: {problem}{where}; fix the syntax",
        file=path,
        line=mark.line + 1 if mark else None,
    )


def field_path(loc: Iterable[Any]) -> str:
    """A pydantic error location as a field's name in messages: ``routes[0].utterances``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(node: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """The line a pydantic error location points at: the key for a mapping entry."""
    if node is None:
        return None
    marker, _ = _walk(node, loc)
    return int(marker.start_mark.line) + 1


def written_at(node: yaml.Node | None, loc: Iterable[Any]) -> str | None:
    """The text of the unquoted scalar at a pydantic error location as the file spells it
    (``yes``, ``2024-01-01``, ``~``), or None where there is none (quoted, a collection, data
    not read from a file)."""
    if node is None:
        return None
    _, found = _walk(node, loc)
    if not isinstance(found, yaml.ScalarNode) or found.style:  # plain: None, or "" (libyaml)
        return None
    return str(found.value)


def key_written_at(node: yaml.Node | None, loc: Iterable[Any], key: Any) -> str | None:
    """How the file spells the unquoted key ``key`` (the value YAML made of it, such as a date)
    of the mapping at ``loc``, or None if there is no such key."""
    _, mapping = _walk(node, loc) if node is not None else (None, None)
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, _ in mapping.value:
        if isinstance(k, yaml.ScalarNode) and not k.style:
            try:
                value = yaml.safe_load(k.value)
            except yaml.YAMLError:
                continue
            if type(value) is type(key) and value == key:
                return str(k.value)
    return None


def _walk(node: yaml.Node, loc: Iterable[Any]) -> tuple[yaml.Node, yaml.Node | None]:
    """The node to point at for ``loc`` (the key for a mapping entry, as far as ``loc`` could
    be followed) and the value node ``loc`` reaches (None if it could not be followed)."""
    current, marker = node, node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            match = next(((k, v) for k, v in current.value if k.value == part), None)
            if match is None:
                return marker, None
            marker, current = match
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                return marker, None
            marker = current = current.value[part]
        else:
            return marker, None
    return marker, current
