"""Turning other formats into route files.

- Labelled data (``{"text", "label"}`` JSON lines): one route per label; rows with the
  out-of-scope label become the file's ``out_of_scope`` examples, never a route.
- A semantic-router / LiteLLM auto-router config (``router.json``, JSON or YAML, or a bare list
  of routes): routes with ``name``, ``utterances``, ``description``, ``score_threshold`` and
  optionally ``llm.model``.

semantic-router's ``score_threshold`` is the cosine similarity between the query and a route's
closest example, on its encoder. semroute's ``nearest`` scorer measures exactly that, so a
threshold is carried over only where it keeps its meaning: the config names semroute's encoder
(all-MiniLM-L6-v2) and the written file sets ``router.scorer: nearest`` (it has a router block:
``default_model`` given). Anywhere else (the default ``hybrid`` scorer averages that cosine with
a classifier's probability, another encoder has another cosine scale) the value would send
near-paraphrases to the default model, so it is kept as ``metadata.semantic_router_threshold``
instead and the report says so: the route uses the router's threshold until ``semroute
calibrate`` fits one.

Duplicates (same text, ignoring case and spacing) are dropped: within a label silently, across
labels by keeping the first label and counting the rest, since an example must belong to one
route. Rows (or utterances) with no text are skipped and counted apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from semroute.config.routefile import DEFAULT_ENCODER
from semroute.config.routes import normalise_utterance, parse_routes
from semroute.config.yamlsafe import MAX_DEPTH, read_text, read_yaml
from semroute.errors import DataError, RouteConfigError, SemrouteError
from semroute.files import atomic_write
from semroute.tuning.evaluate import DEFAULT_OOS_LABEL, load_labelled

__all__ = ["ImportReport", "import_file"]


@dataclass(frozen=True)
class ImportReport:
    path: Path
    routes: int
    utterances: int
    out_of_scope: int
    dropped: int
    """Rows left out as duplicates."""
    blank: int = 0
    """Rows (or utterances) left out because they hold no text."""
    notes: tuple[str, ...] = ()
    """What the import changed on the way and why (thresholds, scorer)."""


def import_file(
    source: str | Path,
    out: str | Path,
    *,
    default_model: str | None = None,
    oos_label: str = DEFAULT_OOS_LABEL,
    force: bool = False,
) -> ImportReport:
    """Write ``out`` as a route file built from ``source`` (JSON lines, or a router.json)."""
    src, dst = Path(source), Path(out)
    if default_model is not None and not default_model.strip():
        raise SemrouteError(
            "--default-model is empty; name the model that answers what no route matches"
        )
    if dst.exists() and not force:
        raise DataError(f"{dst} already exists; choose another --out or pass --force", file=src)
    notes: list[str] = []
    if src.suffix == ".jsonl":
        data, dropped, blank = _from_labelled(src, oos_label)
    else:
        data, dropped, blank, notes = _from_router_config(
            src, with_router=default_model is not None
        )
    if default_model:
        router: dict[str, Any] = {"default_model": default_model}
        data = {"router": {**router, **data.pop("router", {})}, **data}
    _validate(data, src, has_router=default_model is not None)
    _write_yaml(dst, data, header=f"Imported from {src.name} by `semroute import`.")
    return ImportReport(
        path=dst,
        routes=len(data["routes"]),
        utterances=sum(len(r["utterances"]) for r in data["routes"]),
        out_of_scope=len(data.get("out_of_scope", [])),
        dropped=dropped,
        blank=blank,
        notes=tuple(notes),
    )


def _from_labelled(path: Path, oos_label: str) -> tuple[dict[str, Any], int, int]:
    """The route file's data, the duplicate rows dropped and the rows with no text skipped."""
    rows = load_labelled(path)
    by_label: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    dropped = blank = 0
    for text, label in zip(rows.texts, rows.labels, strict=True):
        key = normalise_utterance(text)
        if not key:
            blank += 1
            continue
        if key in owner:
            dropped += 1
            continue
        owner[key] = label
        by_label.setdefault(label, []).append(text.strip())
    out_of_scope = by_label.pop(oos_label, [])
    if not by_label:
        why = [f"{len(out_of_scope)} labelled {oos_label!r} (out of scope)"] if out_of_scope else []
        why += [f"{blank} with no text"] if blank else []
        raise DataError(
            f"there is no route to import: of its rows, {' and '.join(why)}; "
            "add rows with text labelled with route names",
            file=path,
        )
    data: dict[str, Any] = {
        "routes": [{"name": label, "utterances": texts} for label, texts in by_label.items()]
    }
    if out_of_scope:
        data["out_of_scope"] = out_of_scope
    return data, dropped, blank


def _from_router_config(
    path: Path, *, with_router: bool
) -> tuple[dict[str, Any], int, int, list[str]]:
    raw = _read_router_config(path)
    if isinstance(raw, list):  # semantic-router's bare list of routes
        raw = {"routes": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("routes"), list):
        raise DataError(
            'expected a mapping with a "routes" list, or a list of routes (semantic-router format)',
            file=path,
        )
    seen: set[str] = set()
    routes, dropped, blank = [], 0, 0
    thresholds: dict[str, float] = {}
    for i, entry in enumerate(raw["routes"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DataError(f'routes[{i}] has no "name"', file=path)
        utterances = []
        for u in _strings(entry.get("utterances"), path, f"routes[{i}].utterances"):
            key = normalise_utterance(u)
            if not key:
                blank += 1
                continue
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            utterances.append(u.strip())
        route: dict[str, Any] = {"name": entry["name"], "utterances": utterances}
        if entry.get("description"):
            route["description"] = str(entry["description"])
        llm = entry.get("llm")
        if isinstance(llm, dict) and isinstance(llm.get("name") or llm.get("model"), str):
            route["model"] = llm.get("model") or llm["name"]
        threshold = _threshold(entry.get("score_threshold"), path, i)
        if threshold is not None:
            thresholds[entry["name"]] = threshold
        if isinstance(entry.get("metadata"), dict) and entry["metadata"]:
            route["metadata"] = entry["metadata"]
        routes.append(route)
    data: dict[str, Any] = {"routes": routes}
    notes = _carry_thresholds(data, thresholds, raw.get("encoder_name"), with_router=with_router)
    return data, dropped, blank, notes


def _threshold(value: Any, path: Path, i: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise DataError(
            f"routes[{i}].score_threshold should be a number from 0 to 1, not {value!r}",
            file=path,
        )
    return float(value)


def _same_encoder(encoder_name: Any) -> bool:
    """Whether semantic-router's ``encoder_name`` is semroute's default encoder."""
    if not isinstance(encoder_name, str):
        return False
    return encoder_name.rsplit("/", 1)[-1].lower() == DEFAULT_ENCODER.rsplit("/", 1)[-1].lower()


def _carry_thresholds(
    data: dict[str, Any], thresholds: dict[str, float], encoder_name: Any, *, with_router: bool
) -> list[str]:
    """Put semantic-router's thresholds where they mean the same (see the module docstring)
    and say what was done."""
    if not thresholds:
        return []
    listed = ", ".join(f"{name} {value:g}" for name, value in thresholds.items())
    if _same_encoder(encoder_name) and with_router:
        data["router"] = {"scorer": "nearest"}
        for route in data["routes"]:
            if route["name"] in thresholds:
                route["threshold"] = thresholds[route["name"]]
        return [
            f"thresholds kept ({listed}) with `router.scorer: nearest`: semantic-router's "
            "score_threshold is the cosine similarity to the closest example on the same "
            "encoder, which is what `nearest` scores (the other routes: the router's threshold)"
        ]
    for route in data["routes"]:
        if route["name"] in thresholds:
            metadata = route.setdefault("metadata", {})
            metadata["semantic_router_threshold"] = thresholds[route["name"]]
    if not _same_encoder(encoder_name):
        why = (
            f"they are cosine similarities on {encoder_name!r}, whose scale is not that of "
            f"semroute's encoder ({DEFAULT_ENCODER})"
            if isinstance(encoder_name, str)
            else "the config does not name its encoder, and cosine scales differ by encoder"
        )
    else:
        why = (
            "they are cosine similarities to the closest example, the scale of `router.scorer: "
            "nearest`, and this file has no router block to set it (pass --default-model to "
            "write one, and the thresholds are kept)"
        )
    return [
        f"thresholds not copied ({listed}): {why}; under the default hybrid scorer they would "
        "send close paraphrases to the default model. They are kept as "
        "metadata.semantic_router_threshold; the routes use the router's threshold, and "
        "`semroute calibrate` fits per-route ones on labelled data"
    ]


def _read_router_config(path: Path) -> Any:
    """A router.json / .yaml, read with the limits every file semroute reads has (size, depth,
    alias expansion), so a hostile config is one error line, never a traceback or a bomb."""
    try:
        if path.suffix != ".json":
            return read_yaml(path)[0]
        raw = json.loads(read_text(path))
    except RouteConfigError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise DataError(
            f"cannot read it as a router config{where}: {exc.message}", file=path
        ) from exc
    except RecursionError as exc:  # nested beyond what Python's JSON decoder can follow
        raise DataError(
            "cannot read it as a router config: nested too deeply; flatten the structure",
            file=path,
        ) from exc
    except ValueError as exc:
        raise DataError(
            f"cannot read it as a router config ({type(exc).__name__}); pass a .jsonl file of "
            'labelled rows or a semantic-router router.json/.yaml with "routes"',
            file=path,
        ) from exc
    if _depth_over(raw, MAX_DEPTH):
        raise DataError(
            f"cannot read it as a router config: nested more than {MAX_DEPTH} levels deep; "
            "flatten the structure",
            file=path,
        )
    return raw


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _strings(value: Any, path: Path, field: str) -> Iterable[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{field} must be a list of strings", file=path)
    return value


def _validate(data: dict[str, Any], src: Path, *, has_router: bool) -> None:
    # Validate exactly as `semroute validate` would; a file without a router block is checked
    # with a stand-in one, since the real one lives in another file.
    probe = data if has_router else {"router": {"default_model": "-"}, **data}
    try:
        parse_routes(probe, source=str(src))
    except RouteConfigError as exc:
        raise DataError(f"would not make a valid route file: {exc.message}", file=src) from exc


def _write_yaml(dst: Path, data: dict[str, Any], *, header: str) -> None:
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dst, f"# {header}\n{body}")
    except OSError as exc:
        raise SemrouteError(
            f"cannot write {dst}: {exc.strerror or exc}; choose another --out"
        ) from None
