"""Cascades: a request tries a cheap model first and escalates when its answer is rejected.

    routes:
      - name: extract
        cascade: [cheap, strong]
        accept: {json: true, judge: strong}

The cascade's models are the front of the request's chain; the route's fallbacks (if any)
follow. Each model is tried as any model of a chain is: health may pass it over, and a model
that fails is failed over. An answer from any model but the last of the cascade is checked
(:mod:`semroute.dispatch.accept`, then the judge); a rejected answer escalates to the next
model. Judge failures never fail a request: they reject the answer (``judge_error``), which
escalates. When every later model fails, the last rejected answer is returned rather than none
(its step still says ``rejected``). A streamed request cannot be checked before it is shown, so
it goes straight to the cascade's last model (the log line says ``streamed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semroute.decision import Reason
from semroute.dispatch.accept import Verdict, local_verdict
from semroute.dispatch.judge import acceptance_messages, parse_acceptance
from semroute.dispatch.result import CascadeStep, text_of
from semroute.dispatch.spans import answer_attributes
from semroute.records import Usage
from semroute.tracing import end_span, start_span, use_span

if TYPE_CHECKING:
    from semroute.config.quality import Cascade, QualityConfig, Scope
    from semroute.decision import Decision
    from semroute.dispatch.call import Call

__all__ = ["Escalation", "plan", "side_params"]


class Escalation:
    """One request's way down a cascade: the steps so far and the last rejected answer."""

    def __init__(
        self, scope: Scope, cascade: Cascade, steps: tuple[str, ...], *, streamed: bool
    ) -> None:
        self.scope = scope
        self.cascade = cascade
        self.checked = () if streamed else steps[:-1]
        """The models whose answers are checked: every step but the last."""
        self.streamed = streamed
        self.steps: list[CascadeStep] = []
        self._rejected: tuple[str, Any] | None = None
        self._decided = False

    def params(self, model: str) -> dict[str, Any]:
        """What a checked model is asked for besides the request (its logprobs, if checked)."""
        if model in self.checked and self.cascade.accept.min_logprob is not None:
            return {"logprobs": True}
        return {}

    def failed(self, model: str, error: str | None) -> None:
        self.steps.append(CascadeStep(model, "failed", detail=error))

    async def accepts(self, call: Call, model: str, response: Any) -> bool:
        """Whether ``model``'s answer is kept; a rejected one is remembered (see
        :meth:`take_rejected`) and the next model is tried."""
        if model not in self.checked:
            return True
        accept = self.cascade.accept
        usage = Usage.of(response)
        cost = call.cost(model, response, usage)
        text = text_of(response)
        span = start_span("semroute.cascade.check", {"semroute.cascade.model": model})
        verdict = local_verdict(accept, text, response)
        judge_cost: float | None = 0.0
        if verdict is None and accept.judge is not None:
            with use_span(span):
                verdict, judge_cost = await _judge(call, accept.judge, text or "")
        verdict = verdict or Verdict("accepted")
        end_span(
            span,
            {
                "semroute.cascade.verdict": verdict.verdict,
                "semroute.cascade.check": verdict.check,
                "semroute.cascade.detail": verdict.detail,
            },
        )
        total = None if cost is None or judge_cost is None else cost + judge_cost
        self.steps.append(
            CascadeStep(model, verdict.verdict, verdict.check, verdict.detail, total, usage)
        )
        if verdict.accepted:
            self._decided = True
            return True
        self._rejected = (model, response)
        return False

    def take_rejected(self) -> tuple[Any, str] | None:
        """The last rejected answer and its model, when no later model answered."""
        if self._rejected is None:
            return None
        self._decided = True
        model, response = self._rejected
        return response, model

    def finish(self, model: str, response: Any, cost: float | None) -> float | None:
        """Record the answer returned (unless a step already holds it) and the cost of every
        answer and judge call (None when one of them has no known price)."""
        if not self._decided:
            self.steps.append(CascadeStep(model, "final", cost_usd=cost, usage=Usage.of(response)))
        costs = [s.cost_usd for s in self.steps if s.verdict != "failed"]
        return None if any(c is None for c in costs) else float(sum(c or 0.0 for c in costs))

    @property
    def escalated(self) -> bool:
        return any(s.verdict not in ("accepted", "final") for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        kind, name = self.scope
        return {
            "scope": kind,
            "name": name,
            "models": list(self.cascade.models),
            "streamed": self.streamed,
            "escalated": self.escalated,
            "steps": [s.to_dict() for s in self.steps],
        }


def plan(
    config: QualityConfig, decision: Decision, chain: tuple[str, ...], stream: bool
) -> tuple[Escalation | None, tuple[str, ...]]:
    """The cascade ``decision`` takes (None: none) and the chain to walk: the cascade's models
    (those routing did not pass over; for a stream, only the last), then the rest of ``chain``."""
    # A session stays on the model that answered it last (see dispatch.sessions).
    if decision.reason in (Reason.PINNED, Reason.SESSION, Reason.BLOCKED, Reason.OVER_BUDGET):
        return None, chain
    found = config.cascade_for(decision.route, decision.rule)
    if found is None:
        return None, chain
    scope, cascade = found
    passed = {s.model for s in decision.skipped}
    steps = tuple(m for m in cascade.models if m not in passed)
    if not steps:
        return None, chain
    if stream:
        steps = steps[-1:]
    rest = tuple(m for m in chain if m not in cascade.models)
    return Escalation(scope, cascade, steps, streamed=stream), (*steps, *rest)


def side_params(
    call: Call, model: str, messages: list[dict[str, Any]], purpose: str
) -> dict[str, Any]:
    """A call made for ``call`` that is not its answer (a judge's, a reference model's)."""
    return {
        "model": model,
        "messages": messages,
        "disable_fallbacks": True,
        "metadata": {"semroute_request_id": call.request_id, "semroute_purpose": purpose},
    }


async def _judge(call: Call, judge: str, text: str) -> tuple[Verdict, float | None]:
    """The judge's verdict on ``text`` and what asking cost; a judge that fails or answers
    neither ACCEPT nor REJECT gives ``judge_error``."""
    span = start_span(f"chat {judge}", call.span_attributes(judge, "judge"), kind="client")
    try:
        reply = await call.provider.acompletion(
            side_params(call, judge, acceptance_messages(call.messages, text), "judge")
        )
    except call.provider.errors as exc:
        error = call.provider.describe(exc, judge, {})
        end_span(span, {"error.type": type(exc).__name__}, error=error)
        return Verdict("judge_error", "judge", error), 0.0
    end_span(span, answer_attributes(call.provider.config, judge, reply))
    cost = call.cost(judge, reply, Usage.of(reply))
    verdict = parse_acceptance(text_of(reply))
    if verdict is None:
        said = (text_of(reply) or "")[:60]
        return Verdict(
            "judge_error", "judge", f"the judge answered {said!r}, not ACCEPT or REJECT"
        ), cost
    if not verdict:
        return Verdict("rejected", "judge", "the judge said REJECT"), cost
    return Verdict("accepted"), cost
