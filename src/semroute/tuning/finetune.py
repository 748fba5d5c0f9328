"""Contrastive fine-tuning of a sentence-transformers encoder on labelled routes (torch).

The recipe (SetFit's and CPFT's known-good one, chosen by measurement; docs/tuning.md says
why): each step takes one anchor and one positive (another utterance of the same route) from
``batch`` different routes, so every other route's pair in the batch is a true negative; the
loss is a symmetric InfoNCE (sentence-transformers' MultipleNegativesRankingLoss, both ways) at
scale 20. To it is added, at equal weight, a cross-entropy of each anchor and positive over one
learned vector (proxy) per route, started at the stock model's route centroids: a batch holds
32 routes, the proxies hold every route, so each step also pushes away from the routes not in
it. Out-of-scope rows join every batch as extra negatives only: they are pushed away from
every route and never pulled together. Early stopping keeps the epoch whose validation score
(nearest-centroid accuracy, plus AUROC of in-scope against out-of-scope rows when there are
some) was best.

Torch and sentence-transformers (the ``tune`` extra) are imported here only, on first use.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semroute.errors import SemrouteError

__all__ = ["MAX_SEED", "Recipe", "TrainResult", "TrainingSet", "require_torch", "train"]

INSTALL_TUNE = "pip install 'semroute[tune]'"
MAX_SEED = 2**32 - 1
"""The largest seed: numpy's generator, which :func:`train` seeds with it, takes no larger."""

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Recipe:
    """How the encoder is trained; recorded in the tuned encoder's manifest."""

    loss: str = "symmetric-mnrl"
    epochs: int | None = None
    """None: enough epochs to see about :attr:`target_pairs` anchors (1 to 10): a few passes
    over a few-shot set, one over a large one."""
    batch: int = 32
    lr: float = 5e-5
    scale: float = 20.0
    warmup: float = 0.1
    oos_per_batch: int = 8
    patience: int = 2
    target_pairs: int = 3000
    seed: int = 0
    proxy_weight: float = 1.0
    """The weight of the route-proxy loss beside the pairs' (0: pairs alone); see :func:`_step`."""
    proxy_lr: float = 1e-3
    """The route proxies' learning rate (they start at the stock model's route centroids)."""

    def epochs_for(self, rows: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return max(1, min(10, math.ceil(self.target_pairs / max(rows, 1))))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class TrainingSet:
    """Texts per route (in the route files' order) and out-of-scope texts."""

    routes: dict[str, list[str]]
    out_of_scope: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(t) for t in self.routes.values())


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    best_epoch: int
    val_scores: list[float]
    """The early-stopping score after each epoch (index 0: before training); empty without
    validation data."""
    seconds: float


def require_torch() -> None:
    """Refuse, with the install command, when torch or sentence-transformers is missing."""
    import importlib.util

    missing = []
    try:
        import torch  # noqa: F401
    except ImportError:
        missing.append("torch")
    if importlib.util.find_spec("sentence_transformers") is None:
        missing.append("sentence-transformers")
    if missing:
        raise SemrouteError(
            f"semroute tune needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; run: {INSTALL_TUNE}"
        )


def train(
    base: Path,
    data: TrainingSet,
    out: Path,
    recipe: Recipe,
    *,
    val: TrainingSet | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Fine-tune the checkpoint in ``base`` on ``data`` and save the best epoch's
    sentence-transformers checkpoint to ``out``."""
    import time

    import torch

    started = time.perf_counter()
    _seed(recipe.seed)
    model = _load(base)
    epochs = recipe.epochs_for(data.rows)
    steps_per_epoch = len(_batches(data, recipe, random.Random(0)))
    total = epochs * steps_per_epoch
    proxies = _proxies(model, data) if recipe.proxy_weight > 0 else None
    groups = [{"params": list(model.parameters()), "lr": recipe.lr}]
    if proxies is not None:
        groups.append({"params": [proxies.weight], "lr": recipe.proxy_lr})
    optimiser = torch.optim.AdamW(groups, lr=recipe.lr)
    schedule = _schedule(optimiser, total, recipe.warmup)
    rng = random.Random(recipe.seed)
    scores = [_val_score(model, data, val)] if val is not None else []
    best, best_state, stale, done, ran = 0, None, 0, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in _batches(data, recipe, rng):
            _step(model, batch, recipe, optimiser, schedule, proxies)
            done += 1
            if progress:
                progress(done, total)
        ran = epoch
        if val is None:
            continue
        scores.append(_val_score(model, data, val))
        # The best trained epoch is kept (one no better than the stock model is still
        # published: the figures before and after say so).
        if best == 0 or scores[-1] > scores[best]:
            best, stale = epoch, 0
            if epoch < epochs:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= recipe.patience:
                break
    if val is None or best == ran:
        best = ran
    elif best_state is not None:
        model.load_state_dict(best_state)
    if progress:
        progress(total, total)
    model.save(str(out))
    return TrainResult(ran, best, [round(s, 4) for s in scores], time.perf_counter() - started)


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load(base: Path) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return SentenceTransformer(str(base), device="cpu")
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise SemrouteError(
                f"cannot load the base model at {base} for tuning: {exc}; pass --base a "
                "sentence-transformers model folder"
            ) from exc


@dataclass(frozen=True)
class _Batch:
    anchors: list[str]
    positives: list[str]
    negatives: list[str]
    routes: list[str]
    """The route of each anchor (and of its positive)."""


def _batches(data: TrainingSet, recipe: Recipe, rng: random.Random) -> list[_Batch]:
    """One epoch: every utterance is an anchor once, with another of its route as positive;
    a batch never holds two pairs of one route (they would be false negatives), nor one
    route's pair alone. A lone pair has no other route to be told from: with out-of-scope
    negatives it used to be a step all the same, and where one route holds most of the
    utterances those steps were most of the training (on 21 CLINC150 routes, one with 100
    utterances and the rest 5, 95 of 100 steps an epoch; tuned without them, closed-set
    accuracy on validation rose by 1 to 2 points, in a quarter to a third of the time). So
    once the other routes' utterances are spent, the rest of that route's wait for the next
    epoch's shuffle."""
    queues: dict[str, list[str]] = {}
    for name, texts in data.routes.items():
        if len(texts) >= 2:
            queues[name] = rng.sample(texts, len(texts))
    batches = []
    while queues:
        names = rng.sample(sorted(queues), min(recipe.batch, len(queues)))
        anchors, positives = [], []
        for name in names:
            anchor = queues[name].pop()
            if not queues[name]:
                del queues[name]
            others = [t for t in data.routes[name] if t != anchor] or [anchor]
            anchors.append(anchor)
            positives.append(rng.choice(others))
        k = min(recipe.oos_per_batch, len(data.out_of_scope))
        negatives = rng.sample(data.out_of_scope, k) if k else []
        if len(anchors) >= 2:
            batches.append(_Batch(anchors, positives, negatives, names))
    return batches


EMBED_CHUNK = 16
"""A step's texts go through the model in length-sorted groups of this many, each padded only to
its own longest text: the same embeddings and gradients as one batch padded to the longest of
all, for far fewer tokens (on BANKING77's 10-shot set, `tune` took 149 s instead of 225 s)."""


def _embed(model: Any, texts: Sequence[str]) -> Any:
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = []
    for start in range(0, len(order), EMBED_CHUNK):
        features = _features(model, [texts[i] for i in order[start : start + EMBED_CHUNK]])
        parts.append(model(features)["sentence_embedding"])
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return torch.cat(parts)[back]


def _features(model: Any, texts: list[str]) -> Any:
    # sentence-transformers 6 renamed tokenize to preprocess (the old name warns).
    preprocess = getattr(model, "preprocess", None)
    return preprocess(texts) if preprocess is not None else model.tokenize(texts)


@dataclass
class _Proxies:
    """One learned unit vector per route, started at the stock model's route centroid."""

    weight: Any
    rows: dict[str, int]


def _proxies(model: Any, data: TrainingSet) -> _Proxies:
    import torch

    texts = {name: t for name, t in data.routes.items() if t}
    model.eval()
    with torch.no_grad():
        centroids = _centroids(model, TrainingSet(texts))
    weight = torch.nn.Parameter(torch.tensor(centroids, dtype=torch.float32))
    return _Proxies(weight, {name: i for i, name in enumerate(texts)})


def _step(
    model: Any,
    batch: _Batch,
    recipe: Recipe,
    optimiser: Any,
    schedule: Any,
    proxies: _Proxies | None = None,
) -> None:
    """One step: the pairs' symmetric InfoNCE, plus (with ``proxies``) each anchor's and
    positive's cross-entropy over every route's proxy, weighted by ``recipe.proxy_weight``: a
    batch holds ``batch`` routes, the proxies hold them all."""
    import torch
    import torch.nn.functional as F

    scale = recipe.scale
    emb = F.normalize(_embed(model, batch.anchors + batch.positives + batch.negatives), dim=-1)
    n = len(batch.anchors)
    a, p, o = emb[:n], emb[n : 2 * n], emb[2 * n :]
    target = torch.arange(n)
    forward = scale * a @ torch.cat([p, o]).T
    backward = scale * p @ torch.cat([a, o]).T
    loss = (F.cross_entropy(forward, target) + F.cross_entropy(backward, target)) / 2
    if proxies is not None:
        routes = torch.tensor([proxies.rows[r] for r in batch.routes], dtype=torch.long)
        logits = scale * torch.cat([a, p]) @ F.normalize(proxies.weight, dim=-1).T
        loss = loss + recipe.proxy_weight * F.cross_entropy(logits, torch.cat([routes, routes]))
    optimiser.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()
    schedule.step()


def _schedule(optimiser: Any, total: int, warmup: float) -> Any:
    import torch

    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


VAL_ROWS = 2000
CENTROID_ROWS = 20


def _val_score(model: Any, data: TrainingSet, val: TrainingSet) -> float:
    """Nearest-centroid accuracy on the in-scope validation rows, averaged with the AUROC of
    the best cosine for in-scope against out-of-scope rows when there are some (fp32; a
    sample of at most :data:`VAL_ROWS` rows, centroids from at most :data:`CENTROID_ROWS`
    utterances a route)."""
    import numpy as np
    import torch

    from semroute.tuning.evaluate import auroc

    rng = random.Random(1)
    names = list(data.routes)
    rows = [(t, names.index(n)) for n, texts in val.routes.items() for t in texts]
    rows += [(t, -1) for t in val.out_of_scope]
    rows = rng.sample(rows, min(len(rows), VAL_ROWS))
    model.eval()
    with torch.no_grad():
        centroids = _centroids(model, data)
        sims = _encode(model, [t for t, _ in rows]) @ centroids.T
    truth = np.array([r for _, r in rows])
    ins = truth >= 0
    accuracy = float((sims.argmax(1) == truth)[ins].mean()) if ins.any() else 0.0
    area = auroc(sims.max(1).astype(np.float32), ins)  # None unless both kinds of row
    return accuracy if area is None else (accuracy + area) / 2


def _centroids(model: Any, data: TrainingSet) -> Any:
    """Each route's unit-length mean embedding, from at most :data:`CENTROID_ROWS` of its
    utterances (one encode call for all of them)."""
    import numpy as np

    parts = [texts[:CENTROID_ROWS] for texts in data.routes.values()]
    vectors = _encode(model, [t for part in parts for t in part])
    ends = np.cumsum([len(part) for part in parts])
    centroids = np.stack([v.mean(0) for v in np.split(vectors, ends[:-1])])
    return centroids / np.linalg.norm(centroids, axis=1, keepdims=True)


def _encode(model: Any, texts: Sequence[str]) -> Any:
    return model.encode(
        list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )
