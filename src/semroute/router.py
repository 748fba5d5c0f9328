"""The router: a loaded index plus its encoder, turning queries into :class:`Decision` values."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from semroute.conversation import Message, route_messages
from semroute.decision import Decision, Reason, RouteScore
from semroute.encoders import Encoder, OnnxEncoder, StaticEncoder
from semroute.errors import CorruptIndexError, InvalidQueryError
from semroute.index import IndexedRoute, RouteIndex, encoder_path
from semroute.models import DispatchConfig
from semroute.scoring import (
    best_per_route,
    centroids,
    decide,
    from_neighbours,
    hybrid,
    top_k_mean,
)
from semroute.search import NEIGHBOURS

if TYPE_CHECKING:
    import numpy.typing as npt

    from semroute.dispatch import AsyncDispatchStream, DispatchResult, DispatchStream

__all__ = [
    "DEFAULT_INDEX",
    "Router",
    "Scores",
    "acomplete",
    "complete",
    "default_router",
    "route",
]

DEFAULT_INDEX = Path("indexes") / "default"
DEFAULT_CACHE_SIZE = 4096
SCORE_CHUNK = 256
INDEX_ENV = "SEMROUTE_INDEX"


@dataclasses.dataclass(frozen=True)
class Scores:
    """Raw per-route confidences for many queries (what evaluation and calibration work on)."""

    confidence: npt.NDArray[np.float32]
    """(queries, routes); zero for empty queries."""
    best: npt.NDArray[np.int64]
    """(queries, routes): index of each route's closest example in ``index.utterances``."""
    truncated: npt.NDArray[np.bool_]
    empty: npt.NDArray[np.bool_]


class Router:
    """Routes queries with a loaded :class:`RouteIndex` and the encoder it was built with.

    Build one with :meth:`Router.load`. A router is immutable and safe to share between threads.
    """

    def __init__(
        self,
        index: RouteIndex,
        encoder: Encoder,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        exact: bool = False,
    ) -> None:
        index.check_encoder(encoder.info)
        self.index = index
        self.encoder = encoder
        settings = index.settings
        self.default_model: str = settings["default_model"]
        self.min_margin = float(settings.get("min_margin", 0.0))
        self.scorer = index.scorer
        self._starts = np.array([r.start for r in index.routes], dtype=np.int64)
        self._thresholds = np.array([r.threshold for r in index.routes], dtype=np.float32)
        self._vectors = np.ascontiguousarray(index.route_vectors)
        self._head = index.head
        if self.scorer in ("head", "hybrid") and self._head is None:
            raise CorruptIndexError(
                f"scorer {self.scorer!r} needs a learned head and the index has none; "
                "run `semroute build-index`",
                path=index.path,
            )
        self._centroids = (
            centroids(self._vectors, self._starts) if self.scorer == "centroid" else None
        )
        self._owner = None
        self._sizes = np.array([r.stop - r.start for r in index.routes], dtype=np.int64)
        if index.approximate and not exact:
            self._owner = np.full(len(index.vectors), -1, dtype=np.int64)
            for i, r in enumerate(index.routes):
                self._owner[r.start : r.stop] = i
        # Repeated queries skip the encoder and the similarity search. lru_cache is thread-safe;
        # an entry holds one float and one int per route, whatever the index size.
        self._scored = (
            functools.lru_cache(maxsize=cache_size)(self._score_one) if cache_size else None
        )

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        encoder: Encoder | None = None,
        check_routes: bool = True,
        cache_size: int = DEFAULT_CACHE_SIZE,
        exact: bool = False,
    ) -> Router:
        """Load the index at ``path`` (default ``$SEMROUTE_INDEX`` or ``indexes/default``).

        Nothing is re-embedded. ``cache_size`` bounds the cache of recent queries' scores (0
        turns it off). ``exact=True`` compares every query with every example even when the index
        is approximate (HNSW): slower, used to check the approximation. Raises :class:`~semroute.errors.IndexLoadError` subclasses for a
        missing, corrupt or stale index, or one built with another encoder than ``encoder``.
        """
        index = RouteIndex.load(path or default_index_path(), check_routes=check_routes)
        return cls(index, encoder or _encoder_for(index), cache_size=cache_size, exact=exact)

    @property
    def routes(self) -> tuple[IndexedRoute, ...]:
        return self.index.routes

    @property
    def thresholds(self) -> npt.NDArray[np.float32]:
        return self._thresholds.copy()

    def route(self, query: str | Sequence[Message]) -> Decision:
        """Decide which model should answer ``query``. Low confidence is a value, not an error.

        ``query`` is a string or an OpenAI-style message list (see :mod:`semroute.conversation`).
        """
        if not isinstance(query, str):
            return route_messages(query, self.dispatch_config.conversation, self.route_batch)
        started = time.perf_counter()
        _check_query(query)
        if not query.strip():
            return self._empty(started)
        conf, best, truncated = self._scored(query) if self._scored else self._score_one(query)
        return self._decision(conf, best, truncated, started)

    def cache_info(self) -> functools._CacheInfo | None:
        """Hits, misses and size of the query cache (None when it is off)."""
        return self._scored.cache_info() if self._scored else None

    def _score_one(self, query: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], bool]:
        emb = self.encoder.encode([query])
        conf, best = self._confidence(emb.vectors)
        conf.flags.writeable = best.flags.writeable = False  # shared through the cache
        return conf[0], best[0], bool(emb.truncated[0])

    def route_batch(self, queries: Sequence[str], *, batch_size: int = 256) -> list[Decision]:
        """Route many queries, encoding them in batches. Each decision's latency is its share."""
        out: list[Decision] = []
        for start in range(0, len(queries), batch_size):
            chunk = queries[start : start + batch_size]
            started = time.perf_counter()
            s = self.score(chunk)
            share = (time.perf_counter() - started) * 1000 / len(chunk)
            out.extend(
                self._empty(started, share)
                if s.empty[i]
                else self._decision(
                    s.confidence[i], s.best[i], bool(s.truncated[i]), started, share
                )
                for i in range(len(chunk))
            )
        return out

    def score(self, queries: Sequence[str]) -> Scores:
        """Every route's confidence for each query, without deciding (see :mod:`semroute.scoring`)."""
        for q in queries:
            _check_query(q)
        n, routes = len(queries), len(self.index.routes)
        conf = np.zeros((n, routes), dtype=np.float32)
        best = np.zeros((n, routes), dtype=np.int64)
        truncated = np.zeros(n, dtype=bool)
        empty = np.array([not q.strip() for q in queries], dtype=bool)
        live = np.flatnonzero(~empty)
        if len(live):
            emb = self.encoder.encode([queries[int(i)] for i in live])
            truncated[live] = emb.truncated
            # In slices, so the (queries x examples) similarity matrix stays a few MB.
            for start in range(0, len(live), SCORE_CHUNK):
                rows = live[start : start + SCORE_CHUNK]
                part = emb.vectors[start : start + SCORE_CHUNK]
                conf[rows], best[rows] = self._confidence(part)
        return Scores(conf, best, truncated, empty)

    def _similarities(self, queries: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Cosine similarity of each query to every example (all vectors are unit length)."""
        if len(queries) > 1:
            return queries @ self._vectors.T  # BLAS: best for throughput
        # One query: FAISS's single-threaded SIMD kernel. numpy's multi-threaded BLAS would
        # have to wake a worker thread after the encoder ran, which costs milliseconds when
        # the other core is busy.
        import faiss

        n, dim = self._vectors.shape
        out = np.empty((1, n), dtype=np.float32)
        query = np.ascontiguousarray(queries[0], dtype=np.float32)
        faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
            faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(self._vectors), dim, n
        )
        return out

    def _confidence(
        self, queries: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if self._owner is not None:
            # Approximate index: only the query's nearest examples are scored.
            sims, ids = self.index.faiss.search(queries, NEIGHBOURS)
            n = len(self.index.routes)
            nearest, best = from_neighbours(sims, ids, self._owner, n)
            top5 = None
            if self.scorer == "top5":
                top5 = from_neighbours(sims, ids, self._owner, n, 5, self._sizes)[0]
        else:
            sims = self._similarities(queries)
            nearest, best = best_per_route(sims, self._starts)
            top5 = top_k_mean(sims, self._starts, 5) if self.scorer == "top5" else None
        if self.scorer == "nearest":
            return nearest, best
        if top5 is not None:
            return top5, best
        if self.scorer == "centroid":
            assert self._centroids is not None
            return queries @ self._centroids.T, best
        assert self._head is not None
        probabilities = self._head.probabilities(queries)
        if self.scorer == "head":
            return probabilities, best
        return hybrid(probabilities, nearest), best

    def _decision(
        self,
        conf: npt.NDArray[np.float32],
        best: npt.NDArray[np.int64],
        truncated: bool,
        started: float,
        latency_ms: float | None = None,
    ) -> Decision:
        """The decision for one query's confidences; ``latency_ms`` defaults to the time since
        ``started``."""
        choice, reason, margin, order = decide(conf, self._thresholds, self.min_margin)
        routes = self.index.routes
        utterances = self.index.utterances

        def explain() -> tuple[RouteScore, ...]:
            return tuple(
                RouteScore(
                    route=routes[r].name,
                    confidence=float(conf[r]),
                    threshold=routes[r].threshold,
                    utterance=utterances[best[r]] if best[r] >= 0 else None,
                    model=routes[r].model,
                )
                for r in order
            )

        return Decision(
            route=routes[choice].name if choice >= 0 else None,
            model=routes[choice].model if choice >= 0 else self.default_model,
            confidence=float(conf[order[0]]),
            margin=margin,
            reason=reason,
            scores=explain,  # type: ignore[arg-type]  # built on first access
            latency_ms=_elapsed_ms(started) if latency_ms is None else latency_ms,
            truncated=truncated,
        )

    # --- dispatch (semroute.dispatch does the work; LiteLLM loads on the first call) ---

    @functools.cached_property
    def dispatch_config(self) -> DispatchConfig:
        """Declared models, fallback chains, dispatch and conversation settings of the index."""
        return DispatchConfig.from_dict(self.index.manifest.get("dispatch") or {})

    @overload
    def complete(
        self, messages: str | Sequence[Message], *, stream: Literal[False] = ..., **kwargs: Any
    ) -> DispatchResult: ...
    @overload
    def complete(
        self, messages: str | Sequence[Message], *, stream: Literal[True], **kwargs: Any
    ) -> DispatchStream: ...
    def complete(
        self, messages: str | Sequence[Message], *, stream: bool = False, **kwargs: Any
    ) -> DispatchResult | DispatchStream:
        """Route ``messages`` and send them to the chosen model; see :func:`semroute.complete`."""
        from semroute.dispatch import complete

        return complete(self, messages, stream=stream, **kwargs)

    @overload
    async def acomplete(
        self, messages: str | Sequence[Message], *, stream: Literal[False] = ..., **kwargs: Any
    ) -> DispatchResult: ...
    @overload
    async def acomplete(
        self, messages: str | Sequence[Message], *, stream: Literal[True], **kwargs: Any
    ) -> AsyncDispatchStream: ...
    async def acomplete(
        self, messages: str | Sequence[Message], *, stream: bool = False, **kwargs: Any
    ) -> DispatchResult | AsyncDispatchStream:
        """The asynchronous :meth:`complete`; see :func:`semroute.acomplete`."""
        from semroute.dispatch import acomplete

        return await acomplete(self, messages, stream=stream, **kwargs)

    def _empty(self, started: float, latency_ms: float | None = None) -> Decision:
        routes = self.index.routes

        def explain() -> tuple[RouteScore, ...]:
            return tuple(RouteScore(r.name, 0.0, r.threshold, None, r.model) for r in routes)

        return Decision(
            route=None,
            model=self.default_model,
            confidence=0.0,
            margin=0.0,
            reason=Reason.EMPTY_QUERY,
            scores=explain,  # type: ignore[arg-type]  # built on first access
            latency_ms=_elapsed_ms(started) if latency_ms is None else latency_ms,
        )


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _check_query(query: object) -> None:
    if not isinstance(query, str):
        raise InvalidQueryError(f"a query must be a string, not {type(query).__name__}")


def _encoder_for(index: RouteIndex) -> Encoder:
    info = index.encoder_info
    if info.kind in ("onnx", "static"):
        from semroute.errors import EncoderError

        try:
            if info.kind == "static":
                return StaticEncoder.load(encoder_path(index))
            return OnnxEncoder.load(encoder_path(index), threads=1)
        except EncoderError as exc:
            raise CorruptIndexError(
                f"its encoder files are unusable ({exc}); run `semroute build-index`",
                path=index.path,
            ) from exc
    if info.kind == "fake":
        from semroute.testing import FakeEncoder

        return FakeEncoder(dim=info.dim, max_tokens=info.max_tokens)
    raise CorruptIndexError(f"unknown encoder kind {info.kind!r}", path=index.path)


def default_index_path() -> Path:
    return Path(os.environ.get(INDEX_ENV) or DEFAULT_INDEX)


_routers: dict[Path, Router] = {}
_routers_lock = threading.Lock()


def default_router() -> Router:
    """The router for ``$SEMROUTE_INDEX`` (or ``indexes/default``), loaded once per process."""
    path = default_index_path().resolve()
    router = _routers.get(path)
    if router is None:
        with _routers_lock:
            router = _routers.get(path)
            if router is None:
                router = _routers[path] = Router.load(path)
    return router


def route(query: str | Sequence[Message]) -> Decision:
    """Route ``query`` with the default router (see :func:`default_router`)."""
    return default_router().route(query)


@overload
def complete(
    messages: str | Sequence[Message], *, stream: Literal[False] = ..., **kwargs: Any
) -> DispatchResult: ...
@overload
def complete(
    messages: str | Sequence[Message], *, stream: Literal[True], **kwargs: Any
) -> DispatchStream: ...
def complete(
    messages: str | Sequence[Message], *, stream: bool = False, **kwargs: Any
) -> DispatchResult | DispatchStream:
    """Route ``messages`` with the default router and dispatch them through LiteLLM.

    ``model=`` pins a model (no routing); ``stream=True`` returns a stream of chunks; every
    other keyword goes to LiteLLM. See :func:`semroute.dispatch.complete`.
    """
    return default_router().complete(messages, stream=stream, **kwargs)  # type: ignore[call-overload,no-any-return]


@overload
async def acomplete(
    messages: str | Sequence[Message], *, stream: Literal[False] = ..., **kwargs: Any
) -> DispatchResult: ...
@overload
async def acomplete(
    messages: str | Sequence[Message], *, stream: Literal[True], **kwargs: Any
) -> AsyncDispatchStream: ...
async def acomplete(
    messages: str | Sequence[Message], *, stream: bool = False, **kwargs: Any
) -> DispatchResult | AsyncDispatchStream:
    """The asynchronous :func:`complete`."""
    return await default_router().acomplete(messages, stream=stream, **kwargs)  # type: ignore[call-overload,no-any-return]
