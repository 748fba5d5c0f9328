"""The router: a loaded index plus its encoder, turning queries into :class:`Decision` values."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from semroute.config.deployments import DispatchConfig
from semroute.decision import Decision, Reason, RouteScore
from semroute.encoders.base import Encoder, OnnxEncoder, StaticEncoder
from semroute.errors import CorruptIndexError, InvalidQueryError
from semroute.index.store import IndexedRoute, RouteIndex, encoder_path
from semroute.index.vectors import NEIGHBOURS
from semroute.routing.conversation import Message, route_messages
from semroute.routing.scoring import (
    best_per_route,
    centroids,
    decide,
    from_neighbours,
    hybrid,
    top_k_mean,
)
from semroute.text import clean, is_blank

if TYPE_CHECKING:
    import numpy.typing as npt

    from semroute.dispatch.dispatcher import AsyncDispatchStream, DispatchResult, DispatchStream

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
ENCODE_CHUNK = 1024
INDEX_ENV = "SEMROUTE_INDEX"

CHARS_PER_TOKEN = 128
"""Characters a query may hold per token of the encoder's window before it is cut.

A WordPiece tokenizer (BERT's, which sentence-transformers models use) reads a word of up to
``max_input_chars_per_word`` (100) characters as at least one token, so with its separator a
token covers at most 101 characters; SentencePiece and BPE pieces are shorter still. A cut text
of ``max_tokens * CHARS_PER_TOKEN`` characters, with whitespace runs and invisible characters
squeezed out, therefore still fills the window when it is cut at a space, and the encoder sees
exactly the tokens it would have seen in the whole text. Only words longer than 100 characters,
which WordPiece reads as one unknown token, can defeat the bound: such a query is routed on its
start and says it was truncated."""

READ_WINDOWS = 16
"""How many windows' worth of characters a long query is read for words before it is cut: a
query padded with more than that much whitespace or invisible characters is routed on its start
(and says it was truncated), so padding cannot make routing slow."""

# What BERT's normaliser drops (C0/C1 controls, zero-width, bidi and invisible format characters,
# the byte-order mark) and whitespace runs, which its pre-tokeniser reads as one separator.
# Squeezing them out of a long query lets padding neither push words past the cut nor cost time.
_DROPPED = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff]+"
)
_ASCII_DROPPED = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_SPACES = re.compile(r"\s{2,}|[^\S ]")


@dataclasses.dataclass(frozen=True)
class Scores:
    """Raw per-route confidences for many queries (what evaluation and calibration work on)."""

    confidence: npt.NDArray[np.float32]
    """(queries, routes); zero for empty queries."""
    best: npt.NDArray[np.int64]
    """(queries, routes): index of each route's closest example in ``index.utterances``."""
    truncated: npt.NDArray[np.bool_]
    """The query was longer than the encoder's window: only its start counted."""
    empty: npt.NDArray[np.bool_]
    """The query shows no visible character (see :func:`semroute.text.is_blank`)."""


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
        self._window = encoder.info.max_tokens * CHARS_PER_TOKEN
        # Repeated queries skip the encoder and the similarity search.
        self._scored = _QueryCache(cache_size, self._score_one) if cache_size > 0 else None

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

        ``query`` is a string or an OpenAI-style message list (see :mod:`semroute.routing.conversation`).
        """
        if not isinstance(query, str):
            return route_messages(query, self.dispatch_config.conversation, self.route_batch)
        started = time.perf_counter()
        text, cut = self._prepare(query)
        if not text:
            return self._empty(started)
        conf, best, truncated = self._scored(text) if self._scored else self._score_one(text)
        return self._decision(conf, best, truncated or cut, started)

    def cache_info(self) -> functools._CacheInfo | None:
        """Hits, misses and size of the query cache (None when it is off)."""
        return self._scored.info() if self._scored else None

    def _prepare(self, query: str) -> tuple[str, bool]:
        """The text the encoder gets for ``query`` ("" when it shows nothing), and whether
        visible text was cut off its end.

        Lone surrogates become U+FFFD (see :mod:`semroute.text`). A query longer than the
        window can hold is cut cheaply first (see :data:`CHARS_PER_TOKEN`), so a megabyte of
        text costs no more to tokenise than a page.
        """
        if type(query) is not str:
            query = str.__str__(query)  # a subclass's own methods are not ours to call
        text, cut = _fit(query, self._window)
        text = clean(text)
        return ("", False) if is_blank(text) else (text, cut)

    def _score_one(self, query: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], bool]:
        emb = self.encoder.encode([query])
        conf, best = self._confidence(emb.vectors)
        conf.flags.writeable = best.flags.writeable = False  # shared through the cache
        return conf[0], best[0], bool(emb.truncated[0])

    def route_batch(self, queries: Sequence[str], *, batch_size: int = 256) -> list[Decision]:
        """Route many queries, encoding them in batches. Each decision's latency is its share.

        ``queries`` is a list (or any iterable) of strings; a single string is refused with
        :class:`~semroute.errors.InvalidQueryError`, as is an item that is not a string.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidQueryError(f"batch_size must be a positive integer, not {batch_size!r}")
        prepared = self._prepare_all(queries, "route_batch")
        out: list[Decision] = []
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            started = time.perf_counter()
            s = self._score_prepared(chunk)
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
        """Every route's confidence for each query, without deciding (see :mod:`semroute.routing.scoring`).

        Queries are prepared as :meth:`route` prepares them (cleaned, cut to the window).
        """
        return self._score_prepared(self._prepare_all(queries, "score"))

    def _prepare_all(self, queries: object, caller: str) -> list[tuple[str, bool]]:
        """:meth:`_prepare` for every query of a batch, refusing a batch that is not one."""
        if isinstance(queries, str | bytes | bytearray | Mapping) or not isinstance(
            queries, Iterable
        ):
            raise InvalidQueryError(
                f"{caller} takes a list of query strings, not {_kind(queries)}; "
                "route a single query with route()"
            )
        prepared = []
        for i, query in enumerate(queries):
            _check_query(query, f"query {i} of the batch")
            prepared.append(self._prepare(query))
        return prepared

    def _score_prepared(self, prepared: Sequence[tuple[str, bool]]) -> Scores:
        n, routes = len(prepared), len(self.index.routes)
        conf = np.zeros((n, routes), dtype=np.float32)
        best = np.zeros((n, routes), dtype=np.int64)
        truncated = np.array([cut for _, cut in prepared], dtype=bool)
        empty = np.array([not text for text, _ in prepared], dtype=bool)
        live = np.flatnonzero(~empty)
        # Encoded in chunks, so a long batch holds a bounded number of vectors at a time.
        for start in range(0, len(live), ENCODE_CHUNK):
            chunk = live[start : start + ENCODE_CHUNK]
            emb = self.encoder.encode([prepared[int(i)][0] for i in chunk])
            truncated[chunk] |= emb.truncated
            # In slices, so the (queries x examples) similarity matrix stays a few MB.
            for offset in range(0, len(chunk), SCORE_CHUNK):
                rows = chunk[offset : offset + SCORE_CHUNK]
                part = emb.vectors[offset : offset + SCORE_CHUNK]
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

    # --- dispatch (semroute.dispatch.dispatcher does the work; LiteLLM loads on the first call) ---

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
        from semroute.dispatch.dispatcher import complete

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
        from semroute.dispatch.dispatcher import acomplete

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


def _check_query(query: object, what: str = "a query") -> None:
    if not isinstance(query, str):
        hint = "; decode it first" if isinstance(query, bytes | bytearray) else ""
        raise InvalidQueryError(f"{what} must be a string, not {_kind(query)}{hint}")


def _kind(value: object) -> str:
    if value is None:
        return "None"
    return "a single string" if isinstance(value, str) else type(value).__name__


def _fit(text: str, window: int) -> tuple[str, bool]:
    """``text`` cut to at most ``window`` characters, and whether anything visible was cut.

    A longer text first loses what BERT's normaliser and pre-tokeniser would ignore anyway
    (:data:`_DROPPED`, whitespace runs), chunk by chunk and only as far as the cut needs (at most
    :data:`READ_WINDOWS` chunks), then is cut at the last space before ``window`` so no word is
    split.
    """
    if len(text) <= window:
        return text, False
    kept: list[str] = []
    size = pos = 0
    after_space = True  # a leading space is kept only once, as a separator would be
    while pos < len(text) and size <= window + 1 and pos < READ_WINDOWS * window:
        part = _squeeze(text[pos : pos + window])
        pos += window
        if after_space and part.startswith(" "):
            part = part[1:]  # the rest of a whitespace run that straddled two chunks
        if part:
            kept.append(part)
            size += len(part)
            after_space = part.endswith(" ")
    squeezed = "".join(kept).rstrip(" ")
    if len(squeezed) <= window:
        # All read; or the read limit was hit, and what is left may hold words.
        rest = text[pos:]
        return squeezed, bool(rest) and not rest.isspace()
    space = squeezed.rfind(" ", window // 2, window + 1)
    return squeezed[: space if space > 0 else window], True


def _squeeze(text: str) -> str:
    if text.isascii():  # the common case, at C speed: a regex class tests every character
        text = text.encode("ascii").translate(None, _ASCII_DROPPED).decode("ascii")
    else:
        text = _DROPPED.sub("", text)
    return _SPACES.sub(" ", text)


class _QueryCache:
    """The scores of recent queries, least recently used first out.

    Keyed by a digest of the text the encoder saw, so an entry is a few hundred bytes (one
    float and one int per route) however long the query was. Thread-safe; two threads missing
    the same query at once both compute it, as with :func:`functools.lru_cache`.
    """

    def __init__(
        self,
        maxsize: int,
        compute: Callable[[str], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], bool]],
    ) -> None:
        self._maxsize = maxsize
        self._compute = compute
        self._entries: OrderedDict[
            bytes, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], bool]
        ] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def __call__(self, text: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], bool]:
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return found
            self._misses += 1
        value = self._compute(text)
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return value

    def info(self) -> functools._CacheInfo:
        with self._lock:
            return functools._CacheInfo(self._hits, self._misses, self._maxsize, len(self._entries))


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
        from semroute.encoders.hashing import FakeEncoder

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
    other keyword goes to LiteLLM. See :func:`semroute.dispatch.dispatcher.complete`.
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
