"""What a build hands :meth:`Manifest.create <semroute.index.manifest.Manifest.create>`, in three
groups, and the manifest JSON they make."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semroute.index.head import HEAD_FILE
from semroute.index.manifest_entries import FAISS_FILE, FORMAT, UTTERANCES

__all__ = ["Carried", "Contents", "Provenance", "manifest_data"]


@dataclass(frozen=True)
class Provenance:
    """Which semroute built the index, when, how long it took, and from which route files."""

    semroute_version: str
    built_at: str
    routes_digest: str
    sources: Mapping[str, Any]
    """The fields of :class:`~semroute.index.manifest_entries.SourcesEntry`."""
    build_seconds: float | None = None


@dataclass(frozen=True)
class Contents:
    """What the index holds: the encoder, the scorer and settings, the routes' vectors."""

    encoder: Mapping[str, Any]
    """The fields of :class:`~semroute.index.manifest_entries.EncoderEntry`."""
    scorer: str
    settings: Mapping[str, Any]
    """The fields of :class:`~semroute.index.manifest_entries.SettingsEntry`."""
    routes: Sequence[Mapping[str, Any]]
    """Each route's :class:`~semroute.index.manifest_entries.RouteEntry` fields."""
    count: int
    """How many vectors: the routes' then the out-of-scope examples."""
    index: Mapping[str, Any]
    """The fields of :class:`~semroute.index.manifest_entries.IndexEntry` but ``file`` and
    ``count``."""
    head_classes: Sequence[str] | None = None


@dataclass(frozen=True)
class Carried:
    """The route files' settings the index carries for the router, the dispatcher and the server."""

    dispatch: Mapping[str, Any]
    calibration: Mapping[str, Any] | None = None
    policy: Mapping[str, Any] | None = None
    """Rules and tiers (left out of the manifest when empty)."""
    server: Mapping[str, Any] | None = None
    difficulty: Mapping[str, Any] | None = None


def manifest_data(
    provenance: Provenance, contents: Contents, carried: Carried, checksums: Mapping[str, str]
) -> dict[str, Any]:
    """The manifest's JSON data, its keys in the order they are written."""
    routes = contents.routes
    n_route_vectors = int(routes[-1]["vectors"][1]) if routes else 0
    data: dict[str, Any] = {
        "format": FORMAT,
        "semroute_version": provenance.semroute_version,
        "built_at": provenance.built_at,
        "encoder": dict(contents.encoder),
        "scorer": contents.scorer,
        "routes_digest": provenance.routes_digest,
        "sources": dict(provenance.sources),
        "settings": dict(contents.settings),
        "routes": [dict(r) for r in routes],
        "out_of_scope": {"vectors": [n_route_vectors, contents.count]},
        "dispatch": dict(carried.dispatch),
        "index": {"file": FAISS_FILE, **contents.index, "count": contents.count},
        "utterances_file": UTTERANCES,
    }
    if contents.head_classes is not None:
        data["head"] = {"file": HEAD_FILE, "classes": list(contents.head_classes)}
    if carried.calibration is not None:
        data["calibration"] = dict(carried.calibration)
    if carried.policy:
        data["policy"] = dict(carried.policy)
    if carried.server is not None:
        data["server"] = dict(carried.server)
    if carried.difficulty is not None:
        data["difficulty"] = dict(carried.difficulty)
    data["checksums"] = dict(checksums)
    data["build_seconds"] = provenance.build_seconds
    return data
