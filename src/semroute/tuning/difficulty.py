"""Training and evaluating a difficulty router: which prompts need the strong model.

    semroute train-difficulty train.jsonl --out models/difficulty --strong-share 0.3
    semroute eval-difficulty test.jsonl --model models/difficulty

Training embeds each prompt with the encoder the router will use, fits the components
(:mod:`semroute.tuning.difficulty_fit`), and calibrates the threshold on cross-fitted scores:
each fold's prompts are scored by components fitted without them, so the threshold reaching
the target share on those scores reaches it on unseen prompts too (scores of the prompts a
model was fitted on are overconfident, and would put the threshold in the wrong place). The
model written is fitted on every row.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from semroute.encoders.base import Encoder
from semroute.errors import DataError, DifficultyModelError, SemrouteError
from semroute.files import sibling_dir
from semroute.index.difficulty import (
    MODEL_FILE,
    Component,
    DifficultyModel,
    read_model,
    write_model,
)
from semroute.routing.difficulty import component_scores, difficulty, raw_scores
from semroute.tuning.difficulty_fit import Fitted, fit_components
from semroute.tuning.difficulty_metrics import gap_metrics, quality_at, share_for_gain
from semroute.tuning.outcomes import Outcomes, load_outcomes

__all__ = ["TrainReport", "evaluate_difficulty", "load_model", "train_difficulty"]

FOLDS = 5
MIN_ROWS = 20
WEIGHTS = {"outcome": 1.0, "knn": 1.0, "domain": 1.0}
"""Each standardised component's weight in the raw score (see difficulty_fit's docstring)."""
LEVELS = 201
"""Knots of the score → difficulty mapping: quantiles of the cross-fitted scores."""
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainReport:
    """What ``train-difficulty`` did, with the cross-fitted metrics on the training rows."""

    path: Path
    n: int
    target: dict[str, float]
    metrics: dict[str, Any]
    seconds: float


def train_difficulty(
    data: str | Path | Outcomes,
    out: str | Path,
    *,
    encoder: Encoder,
    runtime: str,
    strong_share: float | None = None,
    quality_gain: float | None = None,
    progress: Progress | None = None,
) -> TrainReport:
    """Train a model on ``data`` and write it to ``out`` (replaced whole, atomically).

    The threshold is calibrated to ``strong_share`` (the share of prompts sent to the strong
    model) or ``quality_gain`` (the share of the strong model's quality gain to recover),
    exactly one of them. ``runtime`` names how ``encoder`` embeds (it is recorded, so routing
    can check it embeds the same way).
    """
    started = time.perf_counter()
    target = _target(strong_share, quality_gain)
    rows = data if isinstance(data, Outcomes) else load_outcomes(data)
    if len(rows) < MIN_ROWS:
        raise DataError(
            f"holds {len(rows)} rows; training needs at least {MIN_ROWS}", file=rows.source
        )
    rows.check_gap()
    x = embed(encoder, rows.prompts, progress)
    oof = _cross_fitted(x, rows)
    names = sorted(oof)
    centers = {k: float(oof[k].mean()) for k in names}
    scales = {k: float(oof[k].std()) or 1.0 for k in names}
    raw = sum(WEIGHTS[k] * (oof[k] - centers[k]) / scales[k] for k in names)
    assert isinstance(raw, np.ndarray)
    threshold, share = _calibrate(raw, rows, target)
    knots = _knots(raw, threshold, share)
    metrics = _metrics(raw, raw > threshold, rows)
    fitted = fit_components(x, rows.weak, rows.strong, rows.domains)
    spec, arrays = _spec(fitted, encoder, runtime, centers, scales, knots, threshold, target)
    spec["training"] = {**metrics, "folds": FOLDS, "components": names}
    path = Path(out)
    _publish(path, spec, arrays)
    return TrainReport(path, len(rows), target, metrics, time.perf_counter() - started)


def evaluate_difficulty(
    data: str | Path | Outcomes, model: DifficultyModel, encoder: Encoder
) -> dict[str, Any]:
    """APGR, CPT(50%), CPT(80%) of ``model`` on ``data``, and the strong-call share and
    quality reached at its calibrated threshold (difficulty above 0.5)."""
    rows = data if isinstance(data, Outcomes) else load_outcomes(data)
    model.check_encoder(encoder.info)
    x = embed(encoder, rows.prompts, None)
    scores = raw_scores(model, x)
    return {
        **_metrics(scores, difficulty(model, x) > 0.5, rows),
        "target": dict(model.spec.target),
        "threshold": model.spec.threshold,
    }


def embed(encoder: Encoder, texts: list[str], progress: Progress | None) -> npt.NDArray[np.float32]:
    """The rows' embeddings, 256 at a time."""
    out = np.zeros((len(texts), encoder.info.dim), dtype=np.float32)
    step = 256
    for start in range(0, len(texts), step):
        out[start : start + step] = encoder.encode(texts[start : start + step]).vectors
        if progress:
            progress(min(start + step, len(texts)), len(texts))
    return out


def load_model(path: str | Path) -> DifficultyModel:
    """The model at ``path``, checked (see :func:`semroute.index.difficulty.read_model`)."""
    folder = Path(path)
    if not (folder / MODEL_FILE).is_file():
        raise DifficultyModelError(
            f"no {MODEL_FILE} here; train one with `semroute train-difficulty DATA --out {folder}`",
            path=folder,
        )
    return read_model(folder)


# --- training steps ----------------------------------------------------------------------------


def _target(strong_share: float | None, quality_gain: float | None) -> dict[str, float]:
    if (strong_share is None) == (quality_gain is None):
        raise SemrouteError("give one target: --strong-share or --quality-gain")
    if strong_share is not None:
        if not 0 < strong_share < 1:
            raise SemrouteError(f"--strong-share must be between 0 and 1 (got {strong_share})")
        return {"strong_share": float(strong_share)}
    assert quality_gain is not None
    if not 0 < quality_gain < 1:
        raise SemrouteError(f"--quality-gain must be between 0 and 1 (got {quality_gain})")
    return {"quality_gain": float(quality_gain)}


def _folds(n: int) -> list[npt.NDArray[np.int64]]:
    order = np.random.default_rng(0).permutation(n)
    return [order[i::FOLDS] for i in range(FOLDS)]


def _cross_fitted(x: npt.NDArray[np.float32], rows: Outcomes) -> dict[str, npt.NDArray[np.float64]]:
    """Each component's score of each row by the component fitted on the other folds."""
    out: dict[str, npt.NDArray[np.float64]] = {}
    domains = np.asarray(rows.domains) if rows.domains is not None else None
    for held in _folds(len(rows)):
        keep = np.setdiff1d(np.arange(len(rows)), held)
        fitted = fit_components(
            x[keep],
            rows.weak[keep],
            rows.strong[keep],
            list(domains[keep]) if domains is not None else None,
        )
        for f in fitted:
            component = Component(f.type, 1.0, 0.0, 1.0, f.k, f.arrays)
            out.setdefault(f.name, np.zeros(len(rows)))[held] = component_scores(component, x[held])
    return out


def _calibrate(
    raw: npt.NDArray[np.float64], rows: Outcomes, target: dict[str, float]
) -> tuple[float, float]:
    """The raw threshold reaching ``target`` on the cross-fitted scores, and the strong share
    it gives there."""
    n = len(raw)
    if "strong_share" in target:
        share = target["strong_share"]
    else:
        share = share_for_gain(raw, rows.weak, rows.strong, target["quality_gain"])
    k = int(np.clip(round(share * n), 1, n - 1))
    ordered = np.sort(raw)[::-1]
    threshold = float((ordered[k - 1] + ordered[k]) / 2)
    return threshold, float((raw > threshold).mean())


def _knots(
    raw: npt.NDArray[np.float64], threshold: float, share: float
) -> tuple[list[float], list[float]]:
    """The score → difficulty mapping: 0.5 at the threshold; from there, linear in the share
    of cross-fitted scores passed (difficulty 1: none above, 0: all below)."""
    below = min(max(1 - share, 1e-6), 1 - 1e-6)  # the share of scores under the threshold
    levels = np.linspace(0, 1, LEVELS)
    values = np.quantile(raw, levels)
    mapped = np.where(
        levels <= below, 0.5 * levels / below, 0.5 + 0.5 * (levels - below) / (1 - below)
    )
    points = sorted(
        [(v, d) for v, d in zip(values, mapped, strict=True) if v != threshold] + [(threshold, 0.5)]
    )
    xs: list[float] = []
    ys: list[float] = []
    for v, d in points:
        # Keep the mapping increasing, and exactly 0.5 at the threshold.
        d = min(d, 0.5) if v < threshold else max(d, 0.5) if v > threshold else 0.5
        if xs and v <= xs[-1]:
            continue
        xs.append(float(v))
        ys.append(float(max(d, ys[-1]) if ys else d))
    if len(xs) < 2:
        xs, ys = [threshold - 1.0, threshold, threshold + 1.0], [0.0, 0.5, 1.0]
    return xs, ys


def _metrics(
    scores: npt.NDArray[np.float64], strong_calls: npt.NDArray[np.bool_], rows: Outcomes
) -> dict[str, Any]:
    """The metrics of a router scoring ``rows`` with ``scores``, and the share and quality
    reached when it sends ``strong_calls`` to the strong model."""
    try:
        m = gap_metrics(scores, rows.weak, rows.strong)
    except ValueError as exc:
        raise DataError(str(exc), file=rows.source) from exc
    quality = quality_at(strong_calls, rows.weak, rows.strong)
    return {
        "n": m.n,
        "apgr": m.apgr,
        "cpt50": m.cpt50,
        "cpt80": m.cpt80,
        "strong_share": float(strong_calls.mean()),
        "quality": quality,
        "pgr_at_threshold": (quality - m.weak_quality) / (m.strong_quality - m.weak_quality),
        "weak_quality": m.weak_quality,
        "strong_quality": m.strong_quality,
    }


def _spec(
    fitted: list[Fitted],
    encoder: Encoder,
    runtime: str,
    centers: dict[str, float],
    scales: dict[str, float],
    knots: tuple[list[float], list[float]],
    threshold: float,
    target: dict[str, float],
) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    from semroute.version import __version__

    arrays: dict[str, npt.NDArray[Any]] = {}
    components = []
    for f in fitted:
        files = {role: f"{f.name}_{role}.npy" for role in f.arrays}
        arrays.update({files[role]: a for role, a in f.arrays.items()})
        entry: dict[str, Any] = {
            "type": f.type,
            "weight": WEIGHTS[f.name],
            "center": centers[f.name],
            "scale": scales[f.name],
            "arrays": files,
        }
        if f.k is not None:
            entry["k"] = f.k
        components.append(entry)
    spec = {
        "semroute_version": __version__,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoder": {**encoder.info.to_dict(), "runtime": runtime},
        "components": components,
        "mapping": {"raw": knots[0], "difficulty": knots[1]},
        "threshold": threshold,
        "target": target,
        "training": {},
    }
    return spec, arrays


def _publish(out: Path, spec: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Write the model next to ``out`` and swap it in; refuse a folder that is not a model."""
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MODEL_FILE).is_file())
    ):
        raise SemrouteError(
            f"{out} exists and is not a difficulty model; choose another --out (nothing there "
            "is replaced but an earlier model)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with sibling_dir(out, prefix=f".{out.name}-") as tmp:
            write_model(tmp, spec, arrays)
            tmp.chmod(0o755)  # a temporary folder is private; a model is read by the server
            if out.exists():
                aside = out.with_name(f".{out.name}-old-{os.getpid()}")
                os.replace(out, aside)
                os.replace(tmp, out)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(tmp, out)
    except OSError as exc:
        raise SemrouteError(f"cannot write the model at {out}: {exc.strerror or exc}") from exc
