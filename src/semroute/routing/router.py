"""The router: a loaded index plus its encoder, turning queries into :class:`Decision` values."""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.config.deployments import DispatchConfig
from semroute.decision import Decision, Reason, RouteScore
from semroute.encoders.base import Encoder
from semroute.errors import REBUILD_HINT, CorruptIndexError, InvalidQueryError
from semroute.index.store import IndexedRoute, RouteIndex
from semroute.index.vectors import NEIGHBOURS
from semroute.routing.candidates import Candidates
from semroute.routing.challenger import shared_encoder
from semroute.routing.conversation import Message, route_messages, user_turns
from semroute.routing.difficulty import difficulty
from semroute.routing.encoder_load import encoder_for
from semroute.routing.inputs import check_query, kind_of, messages_of
from semroute.routing.language import english_only, language_warning
from semroute.routing.pii import Detectors, message_texts
from semroute.routing.policy import Held, Pin, apply
from semroute.routing.query import CHARS_PER_TOKEN, QueryCache, Scored, fit
from semroute.routing.rule import decide
from semroute.routing.scoring import (
    Evidence,
    best_per_route,
    centroids,
    from_neighbours,
    scorer_for,
    top_k_mean,
)
from semroute.routing.signals import Hints, extract
from semroute.text import clean, is_blank
from semroute.tracing import clock, decision_attributes, record_span

if TYPE_CHECKING:
    import numpy.typing as npt

    from semroute.config.conversation import ConversationSettings

__all__ = [
    "DEFAULT_INDEX",
    "Router",
    "Scores",
    "default_index_path",
]

DEFAULT_INDEX = Path("indexes") / "default"
DEFAULT_CACHE_SIZE = 4096
SCORE_CHUNK = 256
ENCODE_CHUNK = 1024
INDEX_ENV = "SEMROUTE_INDEX"


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
    vectors: npt.NDArray[np.float32] | None = None
    """(queries, dim): the embeddings, when asked for (zero for empty queries)."""


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
        self.policy = index.manifest.rules(index.path)
        self._dispatch_settings = index.manifest.dispatch
        self._candidates: Candidates | None = None
        # Computed only when a rule tests it, from the embedding routing already made.
        self._difficulty = index.difficulty if self.policy.uses("difficulty") else None
        # Looked for only when a rule tests the `pii` signal.
        self._pii = Detectors(self.policy.pii) if self.policy.scans_pii else None
        self._scorer = scorer_for(self.scorer)
        self._english_only = english_only(encoder.info.name)
        self._store = index.store
        self._starts = np.array([r.start for r in index.routes], dtype=np.int64)
        self._stop = index.routes[-1].stop
        self._thresholds = np.array([r.threshold for r in index.routes], dtype=np.float32)
        self._head = index.head
        if self._scorer.needs_head and self._head is None:
            raise CorruptIndexError(
                f"scorer {self.scorer!r} needs a learned head and the index has none; {REBUILD_HINT}",
                path=index.path,
            )
        self._centroids = (
            centroids(index.route_vectors, self._starts) if self._scorer.needs_centroids else None
        )
        self._owner = None
        self._sizes = np.array([r.stop - r.start for r in index.routes], dtype=np.int64)
        if index.approximate and not exact:
            self._owner = np.full(self._store.count, -1, dtype=np.int64)
            for i, r in enumerate(index.routes):
                self._owner[r.start : r.stop] = i
        self._window = encoder.info.max_tokens * CHARS_PER_TOKEN
        # Repeated queries skip the encoder and the similarity search.
        self._scored = QueryCache(cache_size, self._score_one) if cache_size > 0 else None
        self._challenger: Router | None = None

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
        return cls(index, encoder or encoder_for(index), cache_size=cache_size, exact=exact)

    @property
    def routes(self) -> tuple[IndexedRoute, ...]:
        return self.index.routes

    @property
    def thresholds(self) -> npt.NDArray[np.float32]:
        return self._thresholds.copy()

    def route(
        self,
        query: str | Sequence[Message],
        *,
        request: Mapping[str, Any] | None = None,
        task: str | None = None,
        user_tier: str | None = None,
        max_cost_usd: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        pin: Pin | None = None,
        held: Held | None = None,
    ) -> Decision:
        """Decide which model should answer ``query``. Low confidence is a value, not an error.

        ``query`` is a string or an OpenAI-style message list (see :mod:`semroute.routing.conversation`).
        ``request`` (an OpenAI chat-completions body: messages, tools, response_format,
        max_tokens, n) and the hints feed the signals the index's rules test (see
        :mod:`semroute.routing.signals`); the first matching rule decides, then the candidates
        that cannot serve the request or break its cost ceiling are passed over (see
        :mod:`semroute.routing.candidates`). Without rules, route ceilings, request or hints,
        neither step runs. ``pin`` (the models a caller named) takes both steps too: it is
        blocked by a blocking rule, else checked as its chain (see :mod:`semroute.routing.policy`).
        ``held``: a session's chain, kept unless a rule matches (reason ``session``). With a
        challenger (see :meth:`with_challenger`), the decision carries the challenger's. With
        tracing on (see :mod:`semroute.tracing`), a ``semroute.route`` span records it.
        """
        start = clock()
        hints = Hints(task, user_tier, max_cost_usd, metadata or {})
        decision = self._route(query, request, hints, pin, held)
        if self._challenger is not None:
            rival = self._challenger._route(query, request, hints, pin, None)
            decision = decision.evolve(challenger=rival)
        if start:
            record_span("semroute.route", start, decision_attributes(decision))
        return decision

    def with_challenger(self, challenger: Router | None) -> Router:
        """This router, also routing every query with ``challenger`` in the same thread (its
        decision only: no model is called for it); ``None``: without one. When both embed
        alike, the challenger reuses the query's embedding (see :mod:`semroute.routing.challenger`)."""
        twin = copy.copy(self)
        twin._challenger = challenger
        shared = shared_encoder(self.encoder, challenger.encoder) if challenger else None
        if shared is not None and challenger is not None:
            twin._challenger = challenger = copy.copy(challenger)
            for router in (twin, challenger):
                router.encoder = shared
                if router._scored is not None:  # its cache computes with its own encoder
                    router._scored = QueryCache(router._scored.maxsize, router._score_one)
        return twin

    def _route(
        self,
        query: str | Sequence[Message],
        request: Mapping[str, Any] | None,
        hints: Hints,
        pin: Pin | None,
        held: Held | None,
    ) -> Decision:
        decision, hard = self._semantic(query)
        checked = self.policy.rules or self.policy.route_limits
        if not checked and request is None and not hints and pin is None and held is None:
            return decision
        started = time.perf_counter()
        messages = messages_of(query, request)
        signals = extract(messages, request, hints).with_difficulty(hard)
        if self._pii is not None:
            found = self._pii.kinds(message_texts(messages))
            signals = dataclasses.replace(signals, pii=found)
        out = apply(self.policy, signals, decision, self.candidates, pin, held)
        return out.evolve(latency_ms=out.latency_ms + _elapsed_ms(started))

    @property
    def candidates(self) -> Candidates:
        """The capability and cost checks of this index's models (built on first use)."""
        if self._candidates is None:
            self._candidates = Candidates(
                self._dispatch_settings, self.default_model, self.policy.expected_output_tokens
            )
        return self._candidates

    def _semantic(self, query: str | Sequence[Message]) -> tuple[Decision, float | None]:
        """The semantic decision, and the query's difficulty when a rule tests it."""
        if not isinstance(query, str):
            decision = route_messages(query, self.conversation, self._route_windows)
            if self._difficulty is None:
                return decision, None
            # The last user turn's difficulty: one more (cached) encode, only when tested.
            turns = user_turns(query)
            return decision, self._semantic(turns[-1] if turns else "")[1]
        started = time.perf_counter()
        text, cut = self._prepare(query)
        if not text:
            return self._empty(started), None
        conf, best, truncated, hard, vector = (
            self._scored(text) if self._scored else self._score_one(text)
        )
        warning = language_warning(text) if self._english_only else None
        cut = truncated or cut
        return self._decision(conf, best, cut, started, vector=vector, warning=warning), hard

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
        text, cut = fit(query, self._window)
        text = clean(text)
        return ("", False) if is_blank(text) else (text, cut)

    def _score_one(self, query: str) -> Scored:
        emb = self.encoder.encode([query])
        conf, best = self._confidence(emb.vectors)
        conf.flags.writeable = best.flags.writeable = False  # shared through the cache
        hard = float(difficulty(self._difficulty, emb.vectors)[0]) if self._difficulty else None
        vector = emb.vectors[0]
        vector.flags.writeable = False
        return conf[0], best[0], bool(emb.truncated[0]), hard, vector

    def _route_windows(self, windows: Sequence[str]) -> list[Decision]:
        """:meth:`route_batch` for a conversation's few windows, each decision keeping the
        embedding of its window (the cache compares the last one's)."""
        return self.route_batch(windows, keep_vectors=True)

    def route_batch(
        self, queries: Sequence[str], *, batch_size: int = 256, keep_vectors: bool = False
    ) -> list[Decision]:
        """Route many queries, encoding them in batches. Each decision's latency is its share.

        ``queries`` is a list (or any iterable) of strings; a single string is refused with
        :class:`~semroute.errors.InvalidQueryError`, as is an item that is not a string.
        ``keep_vectors``: each decision keeps its query's embedding (:attr:`Decision.vector`).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidQueryError(f"batch_size must be a positive integer, not {batch_size!r}")
        prepared = self._prepare_all(queries, "route_batch")
        out: list[Decision] = []
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            started = time.perf_counter()
            s = self._score_prepared(chunk, keep_vectors=keep_vectors)
            share = (time.perf_counter() - started) * 1000 / len(chunk)
            vectors = s.vectors
            out.extend(
                self._empty(started, share)
                if s.empty[i]
                else self._decision(
                    s.confidence[i],
                    s.best[i],
                    bool(s.truncated[i]),
                    started,
                    share,
                    vector=None if vectors is None else vectors[i],
                    warning=language_warning(chunk[i][0]) if self._english_only else None,
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
                f"{caller} takes a list of query strings, not {kind_of(queries)}; "
                "route a single query with route()"
            )
        prepared = []
        for i, query in enumerate(queries):
            check_query(query, f"query {i} of the batch")
            prepared.append(self._prepare(query))
        return prepared

    def _score_prepared(
        self, prepared: Sequence[tuple[str, bool]], *, keep_vectors: bool = False
    ) -> Scores:
        n, routes = len(prepared), len(self.index.routes)
        vectors = np.zeros((n, self.encoder.info.dim), dtype=np.float32) if keep_vectors else None
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
            if vectors is not None:
                vectors[chunk] = emb.vectors
            # In slices, so the (queries x examples) similarity matrix stays a few MB.
            for offset in range(0, len(chunk), SCORE_CHUNK):
                rows = chunk[offset : offset + SCORE_CHUNK]
                part = emb.vectors[offset : offset + SCORE_CHUNK]
                conf[rows], best[rows] = self._confidence(part)
        if vectors is not None:
            vectors.flags.writeable = False
        return Scores(conf, best, truncated, empty, vectors)

    def _confidence(
        self, queries: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Every route's confidence for each query vector, and each route's closest example."""
        top_k: Callable[[int], npt.NDArray[np.float32]]
        if self._owner is not None:
            # Approximate index: only the query's nearest examples are scored.
            sims, ids = self._store.search(queries, NEIGHBOURS)
            owner, n, sizes = self._owner, len(self._starts), self._sizes
            nearest, best = from_neighbours(sims, ids, owner, n)

            def top_k(k: int) -> npt.NDArray[np.float32]:
                return from_neighbours(sims, ids, owner, n, k, sizes)[0]
        else:
            sims = self._store.similarities(queries, self._stop)
            nearest, best = best_per_route(sims, self._starts)

            def top_k(k: int) -> npt.NDArray[np.float32]:
                return top_k_mean(sims, self._starts, k)

        evidence = Evidence(queries, nearest, top_k, self._head, self._centroids)
        return self._scorer.confidence(evidence), best

    def _decision(
        self,
        conf: npt.NDArray[np.float32],
        best: npt.NDArray[np.int64],
        truncated: bool,
        started: float,
        latency_ms: float | None = None,
        *,
        vector: npt.NDArray[np.float32] | None = None,
        warning: str | None = None,
    ) -> Decision:
        """The decision for one query's confidences; ``latency_ms`` defaults to the time since
        ``started``; ``vector``: the query's embedding, kept in the decision; ``warning``: the
        query's language warning."""
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
            language_warning=warning,
        ).with_vector(vector)

    @functools.cached_property
    def conversation(self) -> ConversationSettings:
        """How message lists are routed: the index's `router.conversation` settings."""
        return DispatchConfig.from_dict(self.index.manifest.dispatch).conversation

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


def default_index_path() -> Path:
    return Path(os.environ.get(INDEX_ENV) or DEFAULT_INDEX)
