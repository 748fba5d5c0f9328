"""The ``litellm_params`` (and ``model_info``) of a deployment that cannot be right: a price
that is not a number 0 or more, half a price, and a typo of a parameter that decides where
requests go. Checked for `models:` and for a LiteLLM config alike
(:func:`semroute.config.deployments.load_proxy_config`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import yaml

from semroute.config.yamlsafe import field_path, line_of
from semroute.errors import RouteConfigError


class Deployment(Protocol):
    """What is checked of a deployment (:class:`semroute.config.deployments.ModelDeployment`)."""

    @property
    def model_name(self) -> str: ...

    @property
    def litellm_params(self) -> Mapping[str, Any]: ...

    @property
    def model_info(self) -> Mapping[str, Any]: ...


__all__ = ["PRICE_FIELDS", "READ_PARAMS", "check_params", "is_price"]

PRICE_FIELDS = ("input_cost_per_token", "output_cost_per_token")
"""The prices semroute reads (in ``litellm_params`` or ``model_info``); any other
``*_cost_per_*`` number there (LiteLLM's, e.g. ``input_cost_per_second``) is checked alike."""

READ_PARAMS = (
    "model",
    "api_base",
    "api_key",
    "api_version",
    "base_url",
    "timeout",
    "stream_timeout",
    "max_retries",
    "num_retries",
    "organization",
    "extra_headers",
    "headers",
    *PRICE_FIELDS,
    "rpm",
    "tpm",
    "region_name",
    "aws_region_name",
    "vertex_project",
    "vertex_location",
    "custom_llm_provider",
    "weight",
    "order",
)
"""The ``litellm_params`` that decide where a request goes, with what key, and at what price.
A key LiteLLM does not know that is an edit from one of these (two, from one of more than six
letters) is a typo (``api_bse``): LiteLLM would ignore it, and the request go elsewhere (e.g.
through LiteLLM to the provider's own endpoint, not to ``api_base``). LiteLLM's parameters are
open-ended, so other unknown keys pass. Fixed here rather than read from LiteLLM, so that
validating does not import it."""

_NEAR_KNOWN = frozenset({"itpm", "otpm"})
"""LiteLLM's parameters (1.102) that close to one of :data:`READ_PARAMS`: only these need
listing, the others can never look like a typo of one."""


def is_price(value: Any) -> bool:
    """Whether ``value`` is a price a config may give: a number, 0 or more, that a float can
    hold (not true or false, not text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value)) and value >= 0
    except OverflowError:  # an int past float's range
        return False


def check_params(
    deployments: Iterable[Deployment],
    source: str,
    *,
    prefix: str = "models",
    node: yaml.Node | None = None,
) -> None:
    """Refuse a price that is not a number 0 or more, half a price (one of
    :data:`PRICE_FIELDS` without the other), and a typo of a parameter that decides where
    requests go (see :data:`READ_PARAMS`)."""
    for i, d in enumerate(deployments):
        for where, problem, key in _param_problems(d):
            loc = (prefix, i, where, *([key] if key else []))
            raise RouteConfigError(
                f"model {d.model_name!r}: {problem}",
                file=source,
                field=field_path(loc),
                line=line_of(node, loc),
            )


def _param_problems(d: Deployment) -> Iterable[tuple[str, str, str | None]]:
    """(section, problem, the key to point at) for each problem of ``d``'s parameters."""
    for where, params in (("litellm_params", d.litellm_params), ("model_info", d.model_info)):
        for key, value in params.items():
            prices = key in PRICE_FIELDS or (
                "_cost_per_" in str(key) and not isinstance(value, dict)
            )
            if prices and not is_price(value):
                yield where, f"{key} should be a number, 0 or more (got {_shown(value)})", key
        given = [f for f in PRICE_FIELDS if f in params]
        if len(given) == 1:
            (has,) = given
            (lacks,) = set(PRICE_FIELDS) - {has}
            yield (
                where,
                f"{where} gives {has} but not {lacks}; add {lacks} (0 if that side is free): a "
                "price needs both",
                has,
            )
    for key in d.litellm_params:
        meant = _misspelled(key) if isinstance(key, str) else None
        if meant is not None:
            yield "litellm_params", f"unknown field {key!r}; did you mean {meant!r}?", key


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str):
        shown = repr(value)
        return shown if len(shown) <= 40 else shown[:40] + "..."
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        return f"the text {value[:40]!r}"
    if "e" in value.lower():  # PyYAML reads 1e-6 as text: YAML 1.1 wants 1.0e-6
        return (
            f"the text {value!r}; write it unquoted, with a dot and a signed exponent "
            "(1.0e-6, 2.5e-07) or none (0.000001)"
        )
    return f"the text {value!r}; write it without quotes"


def _misspelled(key: str) -> str | None:
    """The parameter of :data:`READ_PARAMS` that ``key`` is a typo of (None: none)."""
    if key in READ_PARAMS or key in _NEAR_KNOWN:
        return None
    lowered = key.lower()
    best: tuple[int, str] | None = None
    for name in READ_PARAMS:
        most = 1 if len(name) <= 6 else 2  # two edits make `node` of `model`
        if abs(len(name) - len(lowered)) > most:
            continue
        edits = _edits(lowered, name)
        if edits <= most and (best is None or edits < best[0]):
            best = (edits, name)
    return best[1] if best else None


def _edits(a: str, b: str) -> int:
    """Letters inserted, deleted, replaced or swapped with a neighbour to make ``a`` into ``b``
    (the optimal string alignment distance; difflib's ratio misses typos of short names such as
    ``rpn`` for ``rpm``)."""
    before: list[int] = []
    last = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            edits = min(last[j] + 1, row[j - 1] + 1, last[j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                edits = min(edits, before[j - 2] + 1)
            row.append(edits)
        before, last = last, row
    return last[-1]
