"""Shadow evaluation: a sampled share of requests also goes, in the background, to a reference
model, and a judge compares the two answers.

    router:
      shadow: {sample: 0.05, reference: strong, judge: strong, max_cost_usd_per_day: 2}

Whether a request is sampled depends only on its request id (a hash), so it is reproducible.
The shadow job starts after the answer has been returned (for a stream: after it ended) and
runs on the dispatcher's background loop, never on the caller's: it cannot delay or fail the
answer. At most ``max_concurrent`` jobs run and ``max_queued`` wait; one more is dropped. Once
the day's (UTC) shadow calls have cost ``max_cost_usd_per_day``, jobs are dropped until the next
day (checked as each job starts: jobs already running may take the spend a little past it).

The judge sees the two answers twice, in both orders, to cancel its bias for a position (see
:func:`~semroute.dispatch.judge.preference_of`). Each job writes one quality record into the
decision log: ``{"kind": "quality", "request_id": ..., "status": "judged" | "dropped" |
"failed", "verdict": "win" | "tie" | "loss" | null, ...}``, the verdict being the answer's
against the reference.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from semroute.dispatch.cascade import side_params
from semroute.dispatch.judge import pairwise_messages, parse_preference, preference_of
from semroute.dispatch.result import text_of
from semroute.records import Usage

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from semroute.config.quality import Shadow, ShadowLimits
    from semroute.dispatch.call import Call
    from semroute.dispatch.log import DecisionLog
    from semroute.dispatch.loop import BackgroundLoop

__all__ = ["DailySpend", "LocalDailySpend", "ShadowRunner", "sampled"]

_DROPPED_KWARGS = ("stream", "stream_options", "logprobs")


def sampled(request_id: str, share: float) -> bool:
    """Whether the request ``request_id`` is in a ``share`` (0..1) of all requests: the first
    8 bytes of its SHA-256 read as a fraction of 2**64, compared with ``share``."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


class DailySpend(Protocol):
    """Where the shadow calls' cost of the day (UTC) is counted, against the cap."""

    def spent_today(self) -> float:
        """USD spent today."""
        ...

    def add(self, usd: float) -> None:
        """Add ``usd`` to today's spend."""
        ...


class LocalDailySpend:
    """Spend of the day counted in this object (the default: one per dispatcher)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, float] = {}

    def spent_today(self) -> float:
        with self._lock:
            return self._spent.get(_today(), 0.0)

    def add(self, usd: float) -> None:
        with self._lock:
            day = _today()
            self._spent = {day: self._spent.get(day, 0.0) + usd}


class ShadowRunner:
    """One dispatcher's shadow jobs: sampling, the queue bound, the daily cost cap.

    ``spend`` counts the shadow calls' cost against the cap: by default this runner's own; a
    gateway passes one that outlives a reload of its index (and lives in Redis when replicas
    share state), so that neither a reload nor another replica starts the cap afresh.
    """

    def __init__(
        self, limits: ShadowLimits, loop: BackgroundLoop, spend: DailySpend | None = None
    ) -> None:
        self.limits = limits
        self._loop = loop
        self._lock = threading.Condition()
        self._pending = 0
        self.spend: DailySpend = spend or LocalDailySpend()
        self._semaphore: asyncio.Semaphore | None = None
        self.counts: Counter[str] = Counter()
        """Jobs by outcome: ``judged``, ``failed``, ``dropped_cost_cap``, ``dropped_queue_full``."""

    def hook(
        self, shadow: Shadow | None, request_id: str
    ) -> Callable[[Call, str | None, str], None] | None:
        """What a request calls with its answer (see :attr:`Call.after`), or None when it is
        not shadowed."""
        if shadow is None or not shadow.reference or not sampled(request_id, shadow.sample):
            return None

        def after(call: Call, answer: str | None, model: str) -> None:
            self.submit(call, shadow, answer, model)

        return after

    def spent_today(self) -> float:
        return self.spend.spent_today()

    def submit(self, call: Call, shadow: Shadow, answer: str | None, model: str) -> None:
        """Start a job for ``call``'s answer, or drop it (counted) when the queue is full."""
        record = _record(call, shadow, model)
        with self._lock:
            full = self._pending >= self.limits.max_concurrent + self.limits.max_queued
            if not full:
                self._pending += 1
        if full:
            self._write(call.decision_log, record, "dropped", detail="queue_full")
            return
        future = self._loop.submit(self._job(call, shadow, answer, record))
        future.add_done_callback(lambda f: self._done(f, call.decision_log, record))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no shadow job is queued or running; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def _done(self, future: Future[None], log: DecisionLog | None, record: dict[str, Any]) -> None:
        # A job's own failures are written by the job; this catches what it could not (a bug,
        # the loop shutting down), so that no job ends without its record.
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            why = "cancelled" if error is None else f"{type(error).__name__}: {error}"[:200]
            self._write(log, record, "failed", detail=why)
        with self._lock:
            self._pending -= 1
            self._lock.notify_all()

    async def _job(
        self, call: Call, shadow: Shadow, answer: str | None, record: dict[str, Any]
    ) -> None:
        import asyncio

        if self._semaphore is None:  # made on the loop the jobs run on
            self._semaphore = asyncio.Semaphore(self.limits.max_concurrent)
        async with self._semaphore:
            # The spend may live in Redis: asked from a worker thread, off this loop.
            spent = await asyncio.to_thread(self.spend.spent_today)
            if spent >= self.limits.max_cost_usd_per_day:
                self._write(call.decision_log, record, "dropped", detail="cost_cap")
                return
            await self._evaluate(call, shadow, answer, record)

    async def _evaluate(
        self, call: Call, shadow: Shadow, answer: str | None, record: dict[str, Any]
    ) -> None:
        log = call.decision_log
        if answer is None:
            self._write(log, record, "failed", detail="the answer has no text to compare")
            return
        # The same request (its tools, response_format, ...), answered in one piece.
        kwargs = {k: v for k, v in call.kwargs.items() if k not in _DROPPED_KWARGS}
        ours = side_params(call, shadow.reference, call.messages, "shadow_reference")
        metadata = {**(kwargs.get("metadata") or {}), **ours["metadata"]}
        params = {**kwargs, **ours, "metadata": metadata}
        reference, cost = await self._ask(call, shadow.reference, params)
        record["reference_cost_usd"] = cost
        if isinstance(reference, str):
            self._write(log, record, "failed", detail=f"reference: {reference}")
            return
        ref_text = text_of(reference)
        if ref_text is None:
            self._write(log, record, "failed", detail="the reference answer has no text")
            return
        verdicts = []
        judge_cost: float | None = 0.0
        for first, second in ((answer, ref_text), (ref_text, answer)):
            messages = pairwise_messages(call.messages, first, second)
            reply, spent = await self._ask(
                call, shadow.judge, side_params(call, shadow.judge, messages, "shadow_judge")
            )
            judge_cost = None if judge_cost is None or spent is None else judge_cost + spent
            said = reply if isinstance(reply, str) else text_of(reply)
            verdict = None if isinstance(reply, str) else parse_preference(said)
            if verdict is None:
                record["judge_cost_usd"] = judge_cost
                what = reply if isinstance(reply, str) else f"answered {(said or '')[:60]!r}"
                self._write(log, record, "failed", detail=f"judge_error: {what}")
                return
            verdicts.append(verdict)
        record["judge_cost_usd"] = judge_cost
        record["verdicts"] = verdicts
        self._write(log, record, "judged", verdict=preference_of(verdicts[0], verdicts[1]))

    async def _ask(
        self, call: Call, model: str, params: dict[str, Any]
    ) -> tuple[Any, float | None]:
        """The model's response (or the error's text) and its cost, added to the day's spend."""
        try:
            response = await call.provider.acompletion(params)
        except call.provider.errors as exc:
            return call.provider.describe(exc, model, params), 0.0
        cost = call.cost(model, response, Usage.of(response))
        if cost:
            import asyncio

            await asyncio.to_thread(self.spend.add, cost)
        return response, cost

    def _write(
        self,
        log: DecisionLog | None,
        record: dict[str, Any],
        status: str,
        *,
        verdict: str | None = None,
        detail: str | None = None,
    ) -> None:
        key = f"dropped_{detail}" if status == "dropped" else status
        with self._lock:
            self.counts[key] += 1
        if log is None:
            return
        parts = [record[k] for k in ("reference_cost_usd", "judge_cost_usd") if k in record]
        total = None if None in parts else float(sum(parts))
        log.write(
            {
                **record,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "status": status,
                "verdict": verdict,
                "detail": detail,
                "cost_usd": total,
            }
        )


def _record(call: Call, shadow: Shadow, model: str) -> dict[str, Any]:
    """The fields every quality record of ``call`` holds."""
    decision = call.decision
    return {
        "kind": "quality",
        "request_id": call.request_id,
        "route": decision.route,
        "rule": decision.rule,
        "tier": call.provider.config.quality.tier_of(decision.rule),
        "model": model,
        "reference": shadow.reference,
        "judge": shadow.judge,
    }


def _today() -> str:
    return datetime.now(UTC).date().isoformat()
