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
from semroute.encoders import Encoder, OnnxEncoder
from semroute.errors import CorruptIndexError, InvalidQueryError
from semroute.index import IndexedRoute, RouteIndex, encoder_path
from semroute.models import DispatchConfig
from semroute.scoring import best_per_route, decide

if TYPE_CHECKING:
    import numpy.typing as npt

    from semroute.dispatch import AsyncDispatchStream, DispatchResult, DispatchStream

__all__ = ["DEFAULT_INDEX", "Router", "acomplete", "complete", "default_router", "route"]

DEFAULT_INDEX = Path("indexes") / "default"
INDEX_ENV = "SEMROUTE_INDEX"


class Router:
    """Routes queries with a loaded :class:`RouteIndex` and the encoder it was built with.

    Build one with :meth:`Router.load`. A router is immutable and safe to share between threads.
    """

    def __init__(self, index: RouteIndex, encoder: Encoder) -> None:
        index.check_encoder(encoder.info)
        self.index = index
        self.encoder = encoder
        settings = index.settings
        self.default_model: str = settings["default_model"]
        self.min_margin = float(settings.get("min_margin", 0.0))
        self._starts = np.array([r.start for r in index.routes], dtype=np.int64)
        self._thresholds = np.array([r.threshold for r in index.routes], dtype=np.float32)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        encoder: Encoder | None = None,
        check_routes: bool = True,
    ) -> Router:
        """Load the index at ``path`` (default ``$SEMROUTE_INDEX`` or ``indexes/default``).

        Nothing is re-embedded. Raises :class:`~semroute.errors.IndexLoadError` subclasses for a
        missing, corrupt or stale index, or one built with another encoder than ``encoder``.
        """
        index = RouteIndex.load(path or default_index_path(), check_routes=check_routes)
        return cls(index, encoder or _encoder_for(index))

    @property
    def routes(self) -> tuple[IndexedRoute, ...]:
        return self.index.routes

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
        emb = self.encoder.encode([query])
        sims = self.index.vectors @ emb.vectors[0]
        conf, best = best_per_route(sims[None, :], self._starts)
        return self._decision(conf[0], best[0], bool(emb.truncated[0]), started)

    def route_batch(self, queries: Sequence[str], *, batch_size: int = 256) -> list[Decision]:
        """Route many queries, encoding them in batches. Each decision's latency is its share."""
        out: list[Decision] = []
        for start in range(0, len(queries), batch_size):
            out.extend(self._route_chunk(queries[start : start + batch_size]))
        return out

    def _route_chunk(self, queries: Sequence[str]) -> list[Decision]:
        started = time.perf_counter()
        for q in queries:
            _check_query(q)
        live = [i for i, q in enumerate(queries) if q.strip()]
        results = [self._empty(started)] * len(queries)
        if live:
            emb = self.encoder.encode([queries[i] for i in live])
            sims = emb.vectors @ self.index.vectors.T
            conf, best = best_per_route(sims, self._starts)
            for row, i in enumerate(live):
                results[i] = self._decision(conf[row], best[row], bool(emb.truncated[row]), started)
        share = (time.perf_counter() - started) * 1000 / len(queries)
        return [dataclasses.replace(d, latency_ms=share) for d in results]

    def _decision(
        self,
        conf: npt.NDArray[np.float32],
        best: npt.NDArray[np.int64],
        truncated: bool,
        started: float,
    ) -> Decision:
        choice, reason, margin, order = decide(conf, self._thresholds, self.min_margin)
        routes = self.index.routes
        scores = tuple(
            RouteScore(
                route=routes[r].name,
                confidence=float(conf[r]),
                threshold=routes[r].threshold,
                utterance=self.index.utterances[best[r]],
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
            scores=scores,
            latency_ms=(time.perf_counter() - started) * 1000,
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

    def _empty(self, started: float) -> Decision:
        scores = tuple(
            RouteScore(r.name, 0.0, r.threshold, None, r.model) for r in self.index.routes
        )
        return Decision(
            route=None,
            model=self.default_model,
            confidence=0.0,
            margin=0.0,
            reason=Reason.EMPTY_QUERY,
            scores=scores,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def _check_query(query: object) -> None:
    if not isinstance(query, str):
        raise InvalidQueryError(f"a query must be a string, not {type(query).__name__}")


def _encoder_for(index: RouteIndex) -> Encoder:
    info = index.encoder_info
    if info.kind == "onnx":
        from semroute.errors import EncoderError

        try:
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
