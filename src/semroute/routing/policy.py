"""Applying a :class:`~semroute.config.policy.Policy`: the first rule whose condition holds for a
request's :class:`~semroute.routing.signals.Signals` decides. Pure: no I/O, no state.

A request that names its model (a :class:`Pin`) goes through the same steps: a blocking rule
blocks it whatever it names; otherwise the pin replaces the rule's (or the route's) chain, and
the capability and cost checks run on the pinned chain, under every ceiling that would have
applied (the request's, the matching rule's and its tier's, the route's) and the pinned tier's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semroute.config.conditions import tests_signal
from semroute.config.policy import Condition, Policy, Rule, Test
from semroute.decision import Decision, Reason
from semroute.errors import InvalidQueryError
from semroute.routing.candidates import Candidates
from semroute.routing.signals import Signals

__all__ = ["Held", "Pin", "apply", "first_match", "holds", "tier_models"]


@dataclass(frozen=True)
class Pin:
    """The models a caller named instead of letting the router choose: ``chain`` (a model and
    its fallbacks, or a tier's models), and ``tier`` when the name was a tier (whose cost
    ceiling then applies)."""

    chain: tuple[str, ...]
    tier: str | None = None

    def __post_init__(self) -> None:
        if not self.chain or not all(isinstance(m, str) and m for m in self.chain):
            raise InvalidQueryError("a pinned chain must name at least one model")


@dataclass(frozen=True)
class Held:
    """The chain a session (a multi-step agent run) is on, and the route that first chose it:
    routing's answer unless a rule matches (see :mod:`semroute.dispatch.sessions`)."""

    chain: tuple[str, ...]
    route: str | None = None


def holds(condition: Condition, signals: Signals) -> bool:
    """Whether ``condition`` holds for ``signals``."""
    return (
        all(_passes(t, signals) for t in condition.tests)
        and all(any(holds(c, signals) for c in group) for group in condition.any_of)
        and not any(holds(c, signals) for c in condition.none_of)
    )


def first_match(policy: Policy, signals: Signals) -> Rule | None:
    """The first rule that holds and decides (rules that only redact are passed)."""
    return next(
        (r for r in policy.rules if not r.redacts_only and holds(r.condition, signals)), None
    )


def redactions(policy: Policy, signals: Signals, rule: Rule | None) -> tuple[str, ...]:
    """The kinds to redact: those of the redacting rules that hold before ``rule`` (the
    deciding rule, None: every rule) and ``rule``'s own."""
    kinds: list[str] = []
    for r in policy.rules:
        if r is rule:
            kinds += r.redact
            break
        if r.redact and holds(r.condition, signals):
            kinds += r.redact
    return tuple(dict.fromkeys(kinds))


def tier_models(policy: Policy, user_tier: str) -> tuple[str, ...] | None:
    """The models a request of ``user_tier`` is sent to, when the policy says: the tier of that
    name, else the chain of the first rule that tests ``user_tier`` and holds for a request
    with nothing but that tier (``{when: {user_tier: free}, tier: budget}``: budget's models).
    None: the policy gives ``user_tier`` no models of its own."""
    chain = policy.tiers.get(user_tier)
    if chain:
        return tuple(chain)
    bare = Signals(user_tier=user_tier)
    for rule in policy.rules:
        if rule.block or rule.redacts_only or not tests_signal(rule.condition, "user_tier"):
            continue
        if holds(rule.condition, bare):
            if rule.tier:
                return tuple(policy.tiers[rule.tier])
            return (rule.model,) if rule.model else None
    return None


def apply(
    policy: Policy,
    signals: Signals,
    decision: Decision,
    candidates: Candidates | None = None,
    pin: Pin | None = None,
    held: Held | None = None,
) -> Decision:
    """``decision`` (the semantic router's) after the first matching rule: blocked, or sent to
    the rule's model or tier chain (or, given a ``pin``, to the pinned chain: reason
    ``pinned``; else, given a session's ``held`` chain, to it: reason ``session``); then, given ``candidates``, after the capability and cost checks
    (:mod:`semroute.routing.candidates`). The signals are recorded either way."""
    signals = signals.with_decision(decision.route, decision.confidence, decision.reason.value)
    rule = first_match(policy, signals)
    changes: dict[str, Any] = {"signals": signals.to_dict(), "recommended_model": decision.model}
    if rule is not None and rule.block:
        return decision.evolve(**changes, reason=Reason.BLOCKED, rule=rule.name, chain=())
    redact = redactions(policy, signals, rule)
    if redact:
        changes["redact"] = redact
    chain: tuple[str, ...] | None = None
    if pin is not None:  # the caller's chain replaces the rule's; the rule's ceiling holds
        chain = pin.chain
        changes.update(model=chain[0], reason=Reason.PINNED, route=None, chain=chain)
    elif rule is not None:
        chain = policy.tiers[rule.tier] if rule.tier else (rule.model or decision.model,)
        changes.update(model=chain[0], reason=Reason.RULE, rule=rule.name, chain=chain)
    elif held is not None:
        chain = held.chain
        changes.update(model=chain[0], reason=Reason.SESSION, route=held.route, chain=chain)
    if candidates is not None:  # one evolve for all: each copy of a decision costs microseconds
        pinned_tier = policy.tier_limits.get(pin.tier) if pin and pin.tier else None
        limits = (policy.ceiling(rule, decision.route), signals.max_cost_usd, pinned_tier)
        ceiling = min((x for x in limits if x is not None), default=None)
        candidates_of = candidates.chain(decision.model, decision.route, chain)
        changes.update(candidates.check(candidates_of, signals, ceiling))
    return decision.evolve(**changes)


def _passes(test: Test, signals: Signals) -> bool:
    value = signals.get(test.signal)
    return _check(test, value) != test.negate


def _check(test: Test, value: Any) -> bool:
    op = test.op
    if op == "regex":
        return test.pattern is not None and test.pattern.search(value) is not None
    if isinstance(value, tuple):  # a list signal (pii): holds what is tested?
        if op == "all":
            return all(v in value for v in test.value)
        return any(v in value for v in (test.value if op == "any" else (test.value,)))
    if op in ("any", "all"):  # a list signal not read (None)
        return False
    if op == "eq":
        return _same(value, test.value)
    if op == "in":
        return any(_same(value, v) for v in test.value)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if op == "gt":
        return bool(value > test.value)
    if op == "gte":
        return bool(value >= test.value)
    if op == "lt":
        return bool(value < test.value)
    return bool(value <= test.value)


def _same(a: Any, b: Any) -> bool:
    # true is not 1: a boolean equals only a boolean.
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)
