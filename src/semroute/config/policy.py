"""Rules and tiers: the top-level ``rules:`` list and ``router.tiers``, validated into a frozen
:class:`Policy`.

    router:
      tiers: {budget: [gemini-flash, claude-haiku]}
    rules:
      - {name: no-secrets, when: {text_matches: '(?i)\\bpassword\\b'}, action: block}
      - {name: free-users, when: {user_tier: free}, tier: budget}

A condition (``when:``) maps signal names to tests, all of which must hold. A test is a value
(equality), ``{in: [...]}``, ``{gt|gte|lt|lte: number}`` (several are all required), or
``{not: test}``; ``any: [condition, ...]`` holds when one of its conditions does and
``not: condition`` when it does not. ``text_matches`` is a regular expression searched in the
user text, run by RE2 in linear time (see :mod:`semroute.config.regex`). ``metadata.KEY`` tests the caller's metadata.
``pii`` is the list of kinds of personal data found (``{any: [email, api_key]}``, ``{all:
[...]}``, or one kind), from the built-in detectors and ``router.pii.detectors`` (see
:mod:`semroute.config.pii`). A rule's ``redact: [kinds]`` replaces those kinds' matches before
the request leaves; beside ``model:`` or ``tier:`` it is part of that rule's action, and alone
(only ``when`` and ``redact``) it redacts and lets the request go on to the next rules. Everything is checked here, once: a
problem is a one-line :class:`RouteConfigError` naming the file, line, rule and field. Applying a
policy is :mod:`semroute.routing.policy`'s job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from semroute.config.conditions import (
    SIGNALS,
    Condition,
    Test,
    Where,
    compile_condition,
    tests_signal,
)
from semroute.config.pii import BUILTIN_KINDS, compile_detectors, redact_kinds
from semroute.config.regex import UserPattern
from semroute.config.routefile import DEFAULT_EXPECTED_OUTPUT, ParsedFile
from semroute.config.tiers import check_tiers, is_ceiling, known_model, split_tiers
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = [
    "SIGNALS",
    "Condition",
    "Policy",
    "Rule",
    "Test",
    "compile_policy",
    "known_model",
    "policy_of",
]

RULE_EXTRAS = ("max_cost_usd", "cascade", "accept", "shadow", "cache", "redact")
"""A rule's keys beside its condition and action."""


@dataclass(frozen=True)
class Rule:
    """A validated rule: when ``condition`` holds, block, or send to ``model`` or ``tier``."""

    name: str
    condition: Condition
    when: Mapping[str, Any]
    """The condition as written (JSON data), kept for the manifest."""
    block: bool = False
    model: str | None = None
    tier: str | None = None
    max_cost_usd: float | None = None
    """The cost ceiling (USD) of the requests this rule sends (None: none of its own)."""
    redact: tuple[str, ...] = ()
    """The kinds of personal data replaced by placeholders before the request leaves."""

    @property
    def redacts_only(self) -> bool:
        """Whether the rule only redacts: the request goes on to the next rules."""
        return not (self.block or self.model or self.tier)


@dataclass(frozen=True)
class Policy:
    """A router's rules (tried in order, first match wins) and its tiers."""

    rules: tuple[Rule, ...] = ()
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tier_limits: Mapping[str, float] = field(default_factory=dict)
    """Cost ceilings (USD) of the tiers written as `{models: [...], max_cost_usd: X}`."""
    route_limits: Mapping[str, float] = field(default_factory=dict)
    """Cost ceilings (USD) set on routes (`max_cost_usd:` on a route)."""
    expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT
    """Output tokens assumed, for a cost estimate, when a request sets no max_tokens."""
    pii: Mapping[str, UserPattern] = field(default_factory=dict)
    """The user's detectors (`router.pii.detectors`): kind → pattern."""

    def __bool__(self) -> bool:
        custom = self.expected_output_tokens != DEFAULT_EXPECTED_OUTPUT
        return bool(self.rules or self.tiers or self.route_limits or custom or self.pii)

    @property
    def scans_pii(self) -> bool:
        """Whether a request's personal data must be looked for: a rule tests ``pii``."""
        return self.uses("pii") is not None

    def uses(self, signal: str) -> Rule | None:
        """The first rule that tests ``signal`` (None: no rule does)."""
        return next((r for r in self.rules if tests_signal(r.condition, signal)), None)

    def ceiling(self, rule: Rule | None, route: str | None) -> float | None:
        """The strictest cost ceiling the rule (and its tier) and the route set (None: none)."""
        limits = [self.route_limits.get(route) if route is not None else None]
        if rule is not None:
            limits += [rule.max_cost_usd, self.tier_limits.get(rule.tier) if rule.tier else None]
        return min((x for x in limits if x is not None), default=None)

    def to_dict(self) -> dict[str, Any]:
        rules = []
        for r in self.rules:
            action: dict[str, Any] = (
                {"action": "block"}
                if r.block
                else {"tier": r.tier}
                if r.tier
                else {"model": r.model}
                if r.model
                else {}
            )
            limit = {"max_cost_usd": r.max_cost_usd} if r.max_cost_usd is not None else {}
            redact = {"redact": list(r.redact)} if r.redact else {}
            rules.append({"name": r.name, "when": dict(r.when), **action, **limit, **redact})
        tiers: dict[str, Any] = {
            k: {"models": list(v), "max_cost_usd": self.tier_limits[k]}
            if k in self.tier_limits
            else list(v)
            for k, v in self.tiers.items()
        }
        out: dict[str, Any] = {"rules": rules, "tiers": tiers}
        if self.route_limits:
            out["route_limits"] = dict(self.route_limits)
        if self.expected_output_tokens != DEFAULT_EXPECTED_OUTPUT:
            out["expected_output_tokens"] = self.expected_output_tokens
        if self.pii:
            out["pii"] = {"detectors": {k: p.source for k, p in self.pii.items()}}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> Policy:
        """A policy stored by :meth:`to_dict`, checked again (but not its models)."""
        raw_tiers = data.get("tiers") or {}
        if not isinstance(raw_tiers, dict):
            raise RouteConfigError("tiers should map names to lists of models", file=source)
        tiers, tier_limits, _ = split_tiers(raw_tiers, source)
        rules = data.get("rules") or []
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            raise RouteConfigError("rules should be a list of mappings", file=source)
        limits = data.get("route_limits") or {}
        expected = data.get("expected_output_tokens", DEFAULT_EXPECTED_OUTPUT)
        if not isinstance(limits, dict) or not all(is_ceiling(v) for v in limits.values()):
            raise RouteConfigError(
                "route_limits should map routes to positive numbers", file=source
            )
        if not isinstance(expected, int) or isinstance(expected, bool) or expected <= 0:
            raise RouteConfigError(
                "expected_output_tokens should be a positive integer", file=source
            )
        pii = data.get("pii") or {}
        if not isinstance(pii, dict) or not isinstance(pii.get("detectors", {}), dict):
            raise RouteConfigError("pii should map detectors to patterns", file=source)
        policy = compile_policy(
            rules,
            tiers,
            source=source,
            node=None,
            models=None,
            routes=None,
            pii=pii.get("detectors") or {},
            check_ranges=False,  # checked when the index was built, perhaps by an older version
        )
        return dataclasses.replace(
            policy,
            tier_limits=tier_limits,
            route_limits={str(k): float(v) for k, v in limits.items()},
            expected_output_tokens=expected,
        )


def policy_of(
    parsed: Sequence[ParsedFile],
    tiers: Mapping[str, Any],
    *,
    models: Collection[str] | None,
    routes: Collection[str],
    pii: Mapping[str, str] | None = None,
) -> Policy:
    """Every file's rules (in file order) and the `router:` block's tiers and `pii` detectors,
    checked (see :func:`compile_policy`); a rule name used twice is an error."""
    home = next((p for p in parsed if p.spec.router is not None), parsed[0])
    tiers, tier_limits, mapped = split_tiers(tiers, home.source)
    detectors = compile_policy(
        [],
        tiers,
        source=home.source,
        node=home.node,
        models=models,
        routes=routes,
        mapped=mapped,
        pii=pii or {},
    ).pii
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for p in parsed:
        for i, rule in enumerate(p.spec.rules):
            if rule.name in seen:
                raise RouteConfigError(
                    f"rule name already used in {seen[rule.name]}; names must be unique",
                    file=p.source,
                    rule=rule.name,
                    field="name",
                    line=line_of(p.node, ("rules", i, "name")),
                )
            seen[rule.name] = p.source
        raw = [{k: v for k, v in dict(r).items() if v is not None} for r in p.spec.rules]
        own = compile_policy(
            raw,
            tiers,
            source=p.source,
            node=p.node,
            models=models,
            routes=routes,
            pii=pii or {},
            checked_pii=detectors,
        )
        for i, compiled in enumerate(own.rules):  # against the earlier files' rules
            where = Where(p.source, p.node, compiled.name, ("rules", i))
            _check_reachable([*rules, compiled], where)
        rules += own.rules
    router = home.spec.router
    return Policy(
        tuple(rules),
        {k: tuple(v) for k, v in tiers.items()},
        tier_limits=tier_limits,
        route_limits={
            r.name: r.max_cost_usd for p in parsed for r in p.spec.routes if r.max_cost_usd
        },
        expected_output_tokens=router.expected_output_tokens
        if router is not None
        else DEFAULT_EXPECTED_OUTPUT,
        pii=detectors,
    )


# --- compiling ---------------------------------------------------------------------------------


def compile_policy(
    rules: Sequence[Mapping[str, Any]],
    tiers: Mapping[str, Sequence[str]],
    *,
    source: str,
    node: yaml.Node | None,
    models: Collection[str] | None,
    routes: Collection[str] | None,
    tiers_source: tuple[str, yaml.Node | None] | None = None,
    mapped: Mapping[str, str] | None = None,
    pii: Mapping[str, Any] | None = None,
    checked_pii: Mapping[str, UserPattern] | None = None,
    check_ranges: bool = True,
) -> Policy:
    """Check ``rules`` (each: name, when, and one of action: block / model / tier / cascade)
    and ``tiers``.

    ``models``: the names a rule or tier may send to (None: not checked; a provider-prefixed
    LiteLLM name like ``openai/x`` is always accepted); ``routes``: the route names ``route``
    may test (None: not checked); ``pii``: the user's detectors (name → pattern; compiled
    unless ``checked_pii`` holds them compiled already); ``check_ranges``: whether a test that
    can never hold (``confidence: {gt: 1}``, ``{gt: 10, lt: 5}``) is refused.
    """
    tsource, tnode = tiers_source or (source, node)
    detectors = checked_pii
    if detectors is None:

        def pii_error(message: str, name: str) -> RouteConfigError:
            at = ("router", "pii", "detectors", *((name,) if name else ()))
            return RouteConfigError(
                message, file=tsource, field=".".join(at), line=line_of(tnode, at)
            )

        detectors = compile_detectors(pii or {}, pii_error)
    kinds = (*BUILTIN_KINDS, *detectors)
    check_tiers(tiers, models, tsource, tnode, mapped)
    out: list[Rule] = []
    for i, raw in enumerate(rules):
        name = str(raw.get("name", f"#{i + 1}"))
        where = Where(source, node, name, ("rules", i), pii_kinds=kinds, check_ranges=check_ranges)
        out.append(_rule(raw, where, tiers, models, routes))
        _check_reachable(out, where)
    return Policy(tuple(out), {k: tuple(v) for k, v in tiers.items()}, pii=detectors)


def _rule(
    raw: Mapping[str, Any],
    where: Where,
    tiers: Mapping[str, Sequence[str]],
    models: Collection[str] | None,
    routes: Collection[str] | None,
) -> Rule:
    when = raw.get("when") or {}
    condition = compile_condition(when, where, ("when",), routes)
    model, tier, cascade = raw.get("model"), raw.get("tier"), raw.get("cascade")
    unknown = sorted(set(raw) - {"name", "when", "action", "model", "tier", *RULE_EXTRAS})
    if unknown:
        raise where.error(f"unknown key {unknown[0]!r}", unknown[0])
    actions = [k for k in ("action", "model", "tier", "cascade") if raw.get(k) is not None]
    redact = redact_kinds(raw.get("redact"), where.pii_kinds, where.error)
    if len(actions) != 1 and not (redact and not actions):
        raise where.error(
            "needs exactly one of `action: block`, `model:`, `tier:` or `cascade:` "
            "(or only `redact:`)",
            "name",
        )
    if redact and raw.get("action") is not None:
        raise where.error("`redact` has no use on a blocking rule: no model is called", "redact")
    if not actions and any(raw.get(k) is not None for k in RULE_EXTRAS if k != "redact"):
        extra = next(k for k in RULE_EXTRAS if k != "redact" and raw.get(k) is not None)
        raise where.error(f"`{extra}` needs `model:`, `tier:` or `cascade:` beside it", extra)
    if cascade is not None:  # checked with the other cascades (semroute.config.quality_check)
        model = str(cascade[0])
    if tier is not None and tier not in tiers:
        known = ", ".join(sorted(tiers)) or "none declared under router.tiers"
        raise where.error(f"unknown tier {tier!r} (tiers: {known})", "tier")
    limit = raw.get("max_cost_usd")
    if limit is not None and (not is_ceiling(limit) or raw.get("action") is not None):
        why = (
            "has no use on a blocking rule" if is_ceiling(limit) else "should be a positive number"
        )
        raise where.error(f"max_cost_usd {why} (got {limit!r})", "max_cost_usd")
    if (
        cascade is None
        and model is not None
        and models is not None
        and not known_model(model, models)
    ):
        raise where.error(
            f"unknown model {model!r}; declare it under `models:`, use a route's model, "
            "or write a LiteLLM name with its provider (e.g. openai/gpt-4o-mini)",
            "model",
        )
    return Rule(
        name=where.rule,
        condition=condition,
        when=json.loads(json.dumps(when)),
        block=raw.get("action") == "block",
        model=model,
        tier=tier,
        max_cost_usd=float(limit) if limit is not None else None,
        redact=redact,
    )


def _check_reachable(rules: list[Rule], where: Where) -> None:
    last = rules[-1]
    for earlier in rules[:-1]:
        if earlier.redacts_only:  # the request goes on past it
            continue
        if earlier.condition.always or _canonical(earlier.when) == _canonical(last.when):
            why = "matches everything" if earlier.condition.always else "has the same condition"
            raise where.error(
                f"can never match: rule {earlier.name!r} before it {why}; "
                "reorder the rules or remove one",
                "when",
            )


def _canonical(when: Mapping[str, Any]) -> str:
    return json.dumps(when, sort_keys=True)
