"""The drift reference an index keeps: each route's confidence distribution on the calibration
data, and the share of it that went to the default model; and the population stability index
that compares a window of traffic with it.

``semroute calibrate`` writes ``drift.json`` into the index (its checksum in the manifest, as
every file of an index; plain JSON, never a pickle)::

    {"bins": 10, "rows": 1200, "default_share": 0.21,
     "routes": {"billing": [0, 0, 1, 3, 12, 40, 61, 33, 9, 1], ...}}

A route's counts are of the rows whose best route it is, by their best confidence in
:data:`BINS` equal bins over [0, 1]. No text of the calibration data is kept.

The population stability index of a window against the reference is
``sum((w - r) * ln(w / r))`` over the bins, ``w`` and ``r`` the window's and the reference's
shares (each at least :data:`EPSILON`). Usual reading, and semroute's: under 0.1 stable,
0.1 to 0.2 a moderate shift, over :data:`PSI_ALARM` (0.2) a shift worth acting on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from semroute.errors import REBUILD_HINT, CorruptIndexError

__all__ = [
    "BINS",
    "DRIFT_FILE",
    "PSI_ALARM",
    "DriftReference",
    "bin_of",
    "psi",
    "read_reference",
    "reference_of",
]

DRIFT_FILE = "drift.json"
BINS = 10
EPSILON = 1e-4
PSI_ALARM = 0.2
MAX_BYTES = 16 << 20

Count = Annotated[int, Field(ge=0)]


class DriftReference(BaseModel):
    """What ``drift.json`` holds (validated: an index is untrusted input)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    bins: Annotated[int, Field(ge=2, le=1000)]
    rows: Count
    default_share: Annotated[float, Field(ge=0.0, le=1.0)]
    routes: dict[str, list[Count]]

    def counts(self, route: str) -> npt.NDArray[np.float64]:
        found = self.routes.get(route)
        return np.asarray(found if found is not None else [0] * self.bins, dtype=np.float64)


def bin_of(confidence: float, bins: int = BINS) -> int:
    """The bin of a confidence in [0, 1] (values outside are clipped to it)."""
    if not math.isfinite(confidence):
        return 0
    return min(bins - 1, max(0, int(confidence * bins)))


def reference_of(
    confidence: npt.NDArray[np.float32], routed: npt.NDArray[np.int64], names: Sequence[str]
) -> DriftReference:
    """The reference from calibration scores: ``confidence`` (rows, routes), ``routed`` each
    row's route index or -1 (the default model) under the fitted thresholds."""
    n = len(confidence)
    best = np.argmax(confidence, axis=1) if n else np.zeros(0, dtype=np.int64)
    top = confidence[np.arange(n), best] if n else np.zeros(0, dtype=np.float32)
    bins = np.clip((np.nan_to_num(top) * BINS).astype(np.int64), 0, BINS - 1)
    routes = {}
    for r, name in enumerate(names):
        routes[name] = np.bincount(bins[best == r], minlength=BINS).astype(int).tolist()
    share = float((routed < 0).mean()) if n else 0.0
    return DriftReference(bins=BINS, rows=n, default_share=round(share, 6), routes=routes)


def psi(reference: npt.ArrayLike, window: npt.ArrayLike) -> float | None:
    """The population stability index of ``window``'s counts against ``reference``'s (None
    when either holds no count)."""
    ref = np.asarray(reference, dtype=np.float64)
    win = np.asarray(window, dtype=np.float64)
    if ref.sum() <= 0 or win.sum() <= 0:
        return None
    r = np.maximum(ref / ref.sum(), EPSILON)
    w = np.maximum(win / win.sum(), EPSILON)
    return float(((w - r) * np.log(w / r)).sum())


def encode_reference(reference: DriftReference) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256."""
    data = json.dumps(reference.model_dump(), separators=(",", ":")).encode()
    return data, hashlib.sha256(data).hexdigest()


def read_reference(path: Path, digest: str | None) -> DriftReference | None:
    """The reference of the index at ``path`` (None: it has none, ``digest`` None).
    :class:`CorruptIndexError` when the file is missing, changed or malformed."""
    if digest is None:
        return None
    file = path / DRIFT_FILE
    try:
        with file.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CorruptIndexError(
            f"{DRIFT_FILE} cannot be read ({exc.strerror}); run `semroute calibrate` again",
            path=path,
        ) from exc
    if len(data) > MAX_BYTES or hashlib.sha256(data).hexdigest() != digest:
        raise CorruptIndexError(
            f"{DRIFT_FILE} does not match its checksum; run `semroute calibrate` again or "
            f"{REBUILD_HINT}",
            path=path,
        )
    try:
        reference = DriftReference.model_validate_json(data)
    except ValidationError as exc:
        raise CorruptIndexError(
            f"{DRIFT_FILE} is malformed ({exc.error_count()} problems)", path=path
        ) from exc
    if any(len(c) != reference.bins for c in reference.routes.values()):
        raise CorruptIndexError(f"{DRIFT_FILE}: a route has the wrong number of bins", path=path)
    return reference


def reference_dict(reference: DriftReference) -> Mapping[str, Any]:
    return reference.model_dump()
