"""Every file's ``cascade:``, ``accept:`` and ``shadow:`` settings, checked against the models
the files declare, into one :class:`~semroute.config.quality.QualityConfig`.

Each problem is a one-line :class:`RouteConfigError` naming the file, line, route or rule and
field: a cascade without ``accept:`` (or ``accept:`` without a cascade), a cascade beside a
``model:``, a model named twice in a cascade, an unknown model, a shadow setting that ends up
without a reference or judge model.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from semroute.config.deployments import ModelDeployment
from semroute.config.policy import Policy
from semroute.config.pricing import price_of
from semroute.config.quality import (
    Acceptance,
    AcceptSpec,
    Cascade,
    QualityConfig,
    RouterShadowSpec,
    Scope,
    Shadow,
    ShadowLimits,
    ShadowSpec,
)
from semroute.config.routefile import ParsedFile
from semroute.config.tiers import known_model
from semroute.config.yamlsafe import line_of
from semroute.errors import RouteConfigError

__all__ = ["quality_of"]


class _Place:
    """Where a setting was written, to name it in an error."""

    def __init__(self, p: ParsedFile, scope: Scope, loc: tuple[Any, ...]) -> None:
        self.p, self.scope, self.loc = p, scope, loc

    def error(self, message: str, *path: Any) -> RouteConfigError:
        kind, name = self.scope
        loc = (*self.loc, *path)
        inner = loc[2:] if kind in ("route", "rule") else loc
        field = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in inner).lstrip(".")
        return RouteConfigError(
            message,
            file=self.p.source,
            route=name if kind == "route" else None,
            rule=name if kind == "rule" else None,
            field=field or None,
            line=line_of(self.p.node, loc),
        )


def quality_of(
    parsed: Sequence[ParsedFile],
    *,
    models: Collection[str] | None,
    deployments: Sequence[ModelDeployment],
    policy: Policy,
) -> tuple[QualityConfig, list[str]]:
    """The cascades and shadow settings of ``parsed``, and warnings (a shadow model with no
    known price, whose calls the cost cap cannot count). ``models``: the names a cascade, judge
    or reference may use (None: not checked)."""
    home = next((p for p in parsed if p.spec.router is not None), parsed[0])
    router = home.spec.router
    base = router.shadow if router is not None else None
    if base is not None:
        _models_known(_Place(home, ("router", ""), ("router", "shadow")), base, models)
    cascades: dict[Scope, Cascade] = {}
    shadows: dict[Scope, Shadow] = {}
    for p in parsed:
        for i, route in enumerate(p.spec.routes):
            place = _Place(p, ("route", route.name), ("routes", i))
            if route.cascade and route.model:
                raise place.error(
                    "give `cascade:` or `model:`, not both (the cascade's first model "
                    "answers first)",
                    "model",
                )
            _collect(
                place, route.cascade, route.accept, route.shadow, base, models, cascades, shadows
            )
        for i, rule in enumerate(p.spec.rules):
            place = _Place(p, ("rule", rule.name), ("rules", i))
            _collect(place, rule.cascade, rule.accept, rule.shadow, base, models, cascades, shadows)
    for name, tier in (router.tiers if router is not None else {}).items():
        if isinstance(tier, list):
            continue
        place = _Place(home, ("tier", name), ("router", "tiers", name))
        _collect(place, tier.cascade, tier.accept, tier.shadow, base, models, cascades, shadows)
    config = QualityConfig(
        cascades=cascades,
        shadows=shadows,
        shadow=_merged(_Place(home, ("router", ""), ("router", "shadow")), None, base),
        limits=ShadowLimits(base.max_cost_usd_per_day, base.max_concurrent, base.max_queued)
        if base is not None
        else ShadowLimits(),
        rule_tiers={r.name: r.tier for r in policy.rules if r.tier},
    )
    return config, _price_warnings(home.source, config, deployments)


def _collect(
    place: _Place,
    cascade: list[str] | None,
    accept: AcceptSpec | None,
    shadow: ShadowSpec | None,
    base: RouterShadowSpec | None,
    models: Collection[str] | None,
    cascades: dict[Scope, Cascade],
    shadows: dict[Scope, Shadow],
) -> None:
    if cascade is not None:
        if accept is None:
            raise place.error(
                "a cascade needs `accept:` checks (min_logprob, json, json_schema, regex or "
                "judge) to decide when to escalate",
                "cascade",
            )
        for j, model in enumerate(cascade):
            if model in cascade[:j]:
                raise place.error(
                    f"model {model!r} is already in this cascade; list it once", "cascade", j
                )
            _known(place, model, models, "cascade", j)
        if accept.judge is not None:
            _known(place, accept.judge, models, "accept", "judge")
        cascades[place.scope] = Cascade(tuple(cascade), Acceptance.from_spec(accept))
    elif accept is not None:
        raise place.error("checks a cascade's answers; add `cascade:` or remove it", "accept")
    if shadow is not None:
        _models_known(_Place(place.p, place.scope, (*place.loc, "shadow")), shadow, models)
        merged = _merged(_Place(place.p, place.scope, (*place.loc, "shadow")), shadow, base)
        shadows[place.scope] = merged or Shadow(0.0, "", "")


def _merged(place: _Place, own: ShadowSpec | None, base: ShadowSpec | None) -> Shadow | None:
    """``own`` over ``base``; None when neither says anything. A sampled setting needs both
    models."""
    if own is None and base is None:
        return None

    def pick(name: str) -> Any:
        value = getattr(own, name, None) if own is not None else None
        return value if value is not None else getattr(base, name, None)

    sample = pick("sample") or 0.0
    for name in ("reference", "judge"):
        if sample > 0 and pick(name) is None:
            raise place.error(
                f"needs `{name}:` (here or under router.shadow) to shadow a sampled share", name
            )
    return Shadow(float(sample), pick("reference") or "", pick("judge") or "")


def _models_known(place: _Place, shadow: ShadowSpec, models: Collection[str] | None) -> None:
    for name in ("reference", "judge"):
        value = getattr(shadow, name)
        if value is not None:
            _known(place, value, models, name)


def _known(place: _Place, model: str, models: Collection[str] | None, *path: Any) -> None:
    if models is not None and not known_model(model, models):
        raise place.error(
            f"unknown model {model!r}; declare it under `models:`, use a route's model, "
            "or write a LiteLLM name with its provider (e.g. openai/gpt-4o-mini)",
            *path,
        )


def _price_warnings(
    source: str, config: QualityConfig, deployments: Sequence[ModelDeployment]
) -> list[str]:
    if not deployments:
        return []
    named = [config.shadow, *config.shadows.values()]
    unpriced = {
        m
        for s in named
        if s is not None and s.sample > 0
        for m in (s.reference, s.judge)
        if price_of(m, deployments) is None
    }
    return [
        f"{source}: shadow model {m!r} has no known price, so the shadow cost cap cannot count "
        "its calls; add input_cost_per_token and output_cost_per_token to its litellm_params"
        for m in sorted(unpriced)
    ]
