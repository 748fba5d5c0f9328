"""Measuring a router on labelled data: ``{"text", "label"}`` JSON lines.

A row whose label is the out-of-scope label (``oos`` unless told otherwise) is right only when
it goes to the default model; an in-scope row is right only when it goes to its own route (sent
to the default model, it counts as wrong). Metrics are computed from the raw per-route
confidences (:meth:`Router.score`), so calibration can recompute them for any thresholds
without re-encoding anything.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import semroute.text as text
from semroute.errors import DataError
from semroute.routing.rule import choose
from semroute.tuning.jsonl import read_jsonl

if TYPE_CHECKING:
    from semroute.routing.router import Router, Scores

__all__ = ["EvalReport", "Labelled", "evaluate", "load_labelled", "metrics"]

DEFAULT_OOS_LABEL = "oos"


@dataclass(frozen=True)
class Labelled:
    """Rows of labelled data; ``truth`` holds route indices, -1 for out-of-scope rows."""

    texts: list[str]
    labels: list[str]
    source: str

    def among(self, texts: Iterable[str]) -> int:
        """How many rows' texts are among ``texts`` (rows that training or an index already
        holds, whose figures are optimistic)."""
        known = set(texts)
        return sum(t in known for t in self.texts)

    def truth(
        self,
        routes: Sequence[str],
        oos_label: str = DEFAULT_OOS_LABEL,
        *,
        of: str = "the index",
        add: str = "rebuild the index with those routes",
    ) -> npt.NDArray[np.int64]:
        """Route index per row; refuses labels that name no route (listing them): no route
        of ``of``, and ``add`` says how to give them one."""
        index = {name: i for i, name in enumerate(routes)}
        if oos_label in index:
            raise DataError(
                f"the out-of-scope label {oos_label!r} is also the name of a route of {of}, so "
                "that route's rows would count as out of scope; pass --oos-label a label no "
                "route has",
                file=self.source,
            )
        unknown = Counter(lab for lab in self.labels if lab != oos_label and lab not in index)
        if unknown:
            listed = ", ".join(
                f"{lab!r} ({n} row{'s' if n != 1 else ''})" for lab, n in unknown.most_common(10)
            )
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            labels = "1 label names" if len(unknown) == 1 else f"{len(unknown)} labels name"
            raise DataError(
                f"{labels} no route of {of}: {listed}{more}; fix the labels, "
                f"{add}, or mark out-of-scope rows with "
                f"{oos_label!r} (see --oos-label)",
                file=self.source,
            )
        return np.array([index.get(lab, -1) for lab in self.labels], dtype=np.int64)


def load_labelled(path: str | Path) -> Labelled:
    """Read a JSON-lines file of ``{"text": ..., "label": ...}`` rows.

    Lone surrogates in a text or label (JSON escapes such as ``"\\ud800"`` make them) are
    replaced with U+FFFD, as in queries (see :mod:`semroute.text`).
    """
    p = Path(path)
    texts: list[str] = []
    labels: list[str] = []
    for number, row in read_jsonl(p, '{"text": ..., "label": ...}'):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError('expected an object with a string "text"', file=p, line=number)
        label = row.get("label")
        if not isinstance(label, str) or not label:
            raise DataError('expected a non-empty string "label"', file=p, line=number)
        texts.append(text.clean(row["text"]))
        labels.append(text.clean(label))
    if not texts:
        raise DataError("holds no rows", file=p)
    return Labelled(texts, labels, str(p))


@dataclass(frozen=True)
class RouteMetrics:
    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class EvalReport:
    """Everything ``semroute eval`` reports. Ratios are in [0, 1]; None where undefined."""

    n: int
    n_oos: int
    accuracy: float
    in_scope_accuracy: float | None
    closed_set_accuracy: float | None
    """In-scope rows whose best-scoring route is right, ignoring thresholds."""
    oos_precision: float | None
    oos_recall: float | None
    oos_f1: float | None
    auroc: float | None
    """How well the best route's confidence separates in-scope from out-of-scope rows."""
    coverage: float
    """Share of rows not sent to the default model."""
    per_route: dict[str, RouteMetrics]
    confused_pairs: list[tuple[str, str, int]]
    """(true route, chosen route, rows), most frequent first."""
    misrouted: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    rows_in_index: int = 0
    """Rows whose text is one of the index's own utterances: the figures on them are
    optimistic (a route finds its own utterance)."""

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["per_route"] = {k: vars(v) for k, v in self.per_route.items()}
        out["confused_pairs"] = [
            {"route": a, "chosen": b, "rows": n} for a, b, n in self.confused_pairs
        ]
        return out


def metrics(
    confidence: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    thresholds: npt.NDArray[np.float32],
    min_margin: float,
    routes: Sequence[str],
) -> EvalReport:
    """Metrics of the decisions these confidences and thresholds give (no latency, no samples)."""
    chosen = choose(confidence, thresholds, min_margin)
    top = np.argmax(confidence, axis=1)
    ins = truth >= 0
    n, n_oos = len(truth), int((~ins).sum())
    correct = chosen == truth
    to_default = chosen < 0
    caught = int((to_default & ~ins).sum())
    oos_precision = _ratio(caught, int(to_default.sum()))
    oos_recall = _ratio(caught, n_oos)
    per_route = {}
    for r, name in enumerate(routes):
        hit = int(((chosen == r) & (truth == r)).sum())
        p, rc = _ratio(hit, int((chosen == r).sum())), _ratio(hit, int((truth == r).sum()))
        per_route[name] = RouteMetrics(p, rc, _f1(p, rc), int((truth == r).sum()))
    pairs = Counter(
        (routes[t], routes[c])
        for t, c in zip(truth, chosen, strict=True)
        if t >= 0 and c >= 0 and t != c
    )
    return EvalReport(
        n=n,
        n_oos=n_oos,
        accuracy=float(correct.mean()),
        in_scope_accuracy=_ratio(int(correct[ins].sum()), int(ins.sum())),
        closed_set_accuracy=_ratio(int((top == truth)[ins].sum()), int(ins.sum())),
        oos_precision=oos_precision,
        oos_recall=oos_recall,
        oos_f1=_f1(oos_precision, oos_recall),
        auroc=auroc(confidence.max(axis=1), ins),
        coverage=float((~to_default).mean()),
        per_route=per_route,
        confused_pairs=[(a, b, k) for (a, b), k in pairs.most_common(10)],
    )


def evaluate(
    router: Router,
    data: Labelled,
    *,
    oos_label: str = DEFAULT_OOS_LABEL,
    latency_sample: int = 200,
    misrouted_sample: int = 10,
) -> tuple[EvalReport, Scores, npt.NDArray[np.int64]]:
    """Route every row and measure; also time up to ``latency_sample`` single-query routes."""
    names = [r.name for r in router.routes]
    truth = data.truth(names, oos_label)
    scores = router.score(data.texts)
    report = metrics(scores.confidence, truth, router.thresholds, router.min_margin, names)
    chosen = choose(scores.confidence, router.thresholds, router.min_margin)
    wrong = np.flatnonzero(chosen != truth)
    sample = []
    for i in wrong[:misrouted_sample]:
        order = np.argsort(-scores.confidence[i])[:3]
        sample.append(
            {
                "text": data.texts[i],
                "label": data.labels[i],
                "chosen": names[chosen[i]] if chosen[i] >= 0 else None,
                "top_scores": {names[r]: round(float(scores.confidence[i, r]), 4) for r in order},
            }
        )
    timings = []
    for query in data.texts[:latency_sample]:
        started = time.perf_counter()
        router.route(query)
        timings.append((time.perf_counter() - started) * 1000)
    latency = {
        "p50": round(float(np.percentile(timings, 50)), 3),
        "p95": round(float(np.percentile(timings, 95)), 3),
        "queries": float(len(timings)),
    }
    extra = {"misrouted": sample, "latency_ms": latency, "rows_in_index": in_index(router, data)}
    report = EvalReport(**{**vars(report), **extra})
    return report, scores, truth


def in_index(router: Router, data: Labelled) -> int:
    """How many of the rows are the index's own utterances (its routes' or out-of-scope)."""
    return data.among(router.index.utterances)


def in_index_doubts(router: Router, data: Labelled) -> list[str]:
    """The warning that some rows are the index's own utterances, if any are."""
    shared = in_index(router, data)
    return [in_index_warning(shared, len(data.texts))] if shared else []


def in_index_warning(shared: int, rows: int) -> str:
    return (
        f"{shared} of the {rows} rows {'is one of' if shared == 1 else 'are'} the index's own "
        "utterances: the figures on them are "
        "optimistic (a route finds its own utterance); measure on rows the routes do not hold"
    )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


def auroc(score: npt.NDArray[np.float32], positive: npt.NDArray[np.bool_]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with ties averaged); None without both classes."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
