"""Numbers in route files, through the real CLI: every number must be finite wherever it is
written (the index is JSON, which has no infinity or NaN), and a rule's tests of a number signal
must be able to hold (a bound inside the signal's range, a range that is not empty).

Each refusal is one line naming the file, line, route or rule, and field, from `semroute
validate` as from `semroute build-index`; values at the edge of what is allowed pass `validate`
and build (with the FakeEncoder, through the library: the CLI has no fake encoder).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from semroute.cli.main import main
from semroute.config.policy import Policy
from semroute.config.routes import parse_routes
from semroute.errors import RouteConfigError
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from semroute.tuning.difficulty import train_difficulty
from tests.conftest import one_error_line

OUTCOMES = Path(__file__).parent / "data" / "difficulty" / "outcomes.jsonl"
HINT = (
    "write a finite number or leave the field out (the index is stored as JSON, and JSON has "
    "no NaN or infinity)"
)

# One slot per line, so every case knows its line: 4 (router), 6 (the route), 7 (the rest).
TEMPLATE = """\
router:
  default_model: gpt-4o
  encoder: fake
  {router}
routes:
  - {{name: code, utterances: [write a function]{route}}}
{rest}
"""


def write(folder: Path, router: str = "threshold: 0.5", route: str = "", rest: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routes.yaml").write_text(TEMPLATE.format(router=router, route=route, rest=rest))
    return folder


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def validate_refuses(folder: Path) -> str:
    return one_error_line(run("validate", folder))


def builds(folder: Path, out: Path) -> None:
    """`validate` says ok, and the index is built and written (its manifest is where a number
    that is not finite used to be found); with the FakeEncoder, which `encoder: fake` names."""
    checked = run("validate", folder)
    assert checked.exit_code == 0 and checked.stdout.rstrip().endswith(": ok"), checked.output
    build_index(folder, out, encoder=FakeEncoder())
    assert (out / "manifest.json").is_file()


# --- 1 and 2: numbers that are not finite -------------------------------------------------------

# (id, slots, where the message puts it: line, route or rule, field, how it shows the value)
NOT_FINITE = [
    (
        "health-cooldown",
        {"router": "health: {cooldown_s: .inf}"},
        "4: field 'router.health.cooldown_s': ",
        ".inf",
    ),
    (
        "health-p95",
        {"router": "health: {max_p95_ms: .inf}"},
        "4: field 'router.health.max_p95_ms': ",
        ".inf",
    ),
    (
        "shadow-budget",
        {"router": "shadow: {reference: gpt-4o, judge: gpt-4o, max_cost_usd_per_day: .inf}"},
        "4: field 'router.shadow.max_cost_usd_per_day': ",
        ".inf",
    ),
    (
        "tier-ceiling",
        {"router": "tiers: {budget: {models: [gpt-4o], max_cost_usd: .inf}}"},
        "4: field 'router.tiers.budget.max_cost_usd': ",
        ".inf",
    ),
    (
        "route-ceiling",
        {"route": ", max_cost_usd: .inf"},
        "6: route 'code': field 'max_cost_usd': ",
        ".inf",
    ),
    (
        "route-cascade-accept",
        {"route": ", cascade: [gpt-4o-mini, gpt-4o], accept: {min_logprob: -.inf}"},
        "6: route 'code': field 'accept.min_logprob': ",
        "-.inf",
    ),
    (
        "rule-cascade-accept",
        {
            "rest": "rules: [{name: r1, cascade: [gpt-4o-mini, gpt-4o], accept: {min_logprob: -.inf}}]"
        },
        "7: rule 'r1': field 'accept.min_logprob': ",
        "-.inf",
    ),
    (
        "rule-confidence",
        {"rest": "rules: [{name: r1, when: {confidence: {gte: .inf}}, model: gpt-4o}]"},
        "7: rule 'r1': field 'when.confidence.gte': ",
        ".inf",
    ),
    (
        "rule-nan",
        {"rest": "rules: [{name: r1, when: {input_tokens: {gt: .nan}}, model: gpt-4o}]"},
        "7: rule 'r1': field 'when.input_tokens.gt': ",
        ".nan",
    ),
    (
        "rule-max-cost",
        {"rest": "rules: [{name: r1, model: gpt-4o, max_cost_usd: .inf}]"},
        "7: rule 'r1': field 'max_cost_usd': ",
        ".inf",
    ),
    # Fields that refused such numbers before, with another message: now the same one.
    ("threshold-nan", {"router": "threshold: .nan"}, "4: field 'router.threshold': ", ".nan"),
    ("cache-ttl", {"router": "cache: {ttl_s: .inf}"}, "4: field 'router.cache.ttl_s': ", ".inf"),
    (
        "metadata",
        {"route": ", metadata: {w: [1, .NaN]}"},
        "6: route 'code': field 'metadata': w[1] ",
        ".NaN",
    ),
    (
        "model-params",
        {
            "rest": "models: [{model_name: gpt-4o, litellm_params: {model: openai/gpt-4o, temperature: .nan}}]"
        },
        "7: field 'models[0].litellm_params': temperature ",
        ".nan",
    ),
    (
        "server",
        {"rest": "server: {drain_timeout_s: .inf}"},
        "7: field 'server.drain_timeout_s': ",
        ".inf",
    ),
    # Every spelling YAML reads as infinity or NaN.
    (
        "spelled-Inf",
        {"router": "health: {cooldown_s: .Inf}"},
        "4: field 'router.health.cooldown_s': ",
        ".Inf",
    ),
    (
        "spelled-INF",
        {"router": "health: {cooldown_s: +.INF}"},
        "4: field 'router.health.cooldown_s': ",
        "+.INF",
    ),
    (
        "spelled-exponent",
        {"router": "health: {cooldown_s: 1.0e+400}"},
        "4: field 'router.health.cooldown_s': ",
        "1.0e+400, which YAML reads as .inf",
    ),
    (
        "spelled-tag",
        {"router": "health: {cooldown_s: !!float -1e999}"},
        "4: field 'router.health.cooldown_s': ",
        "-1e999, which YAML reads as -.inf",
    ),
    (
        "spelled-tag-nan",
        {"rest": "rules: [{name: r1, when: {input_tokens: {gt: !!float .NAN}}, model: gpt-4o}]"},
        "7: rule 'r1': field 'when.input_tokens.gt': ",
        ".NAN",
    ),
]


@pytest.mark.parametrize(
    ("slots", "where", "shown"), [pytest.param(*case[1:], id=case[0]) for case in NOT_FINITE]
)
def test_a_number_that_is_not_finite_is_one_line_naming_its_place(
    tmp_path: Path, slots: dict[str, str], where: str, shown: str
) -> None:
    folder = write(tmp_path / "routes", **slots)
    expected = (
        f"error: {folder / 'routes.yaml'}:{where}should be a finite number, not {shown}; {HINT}"
    )
    assert validate_refuses(folder) == expected
    # build-index stops at the same line, before anything is embedded or written.
    assert one_error_line(run("build-index", folder, "--out", tmp_path / "index")) == expected
    assert not (tmp_path / "index").exists()


def test_validate_lists_every_number_that_is_not_finite(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "routes",
        router="health: {cooldown_s: .inf, max_p95_ms: -.inf}",
        rest="rules: [{name: r1, when: {confidence: {lt: .nan}}, model: gpt-4o}]",
    )
    result = run("validate", folder)
    assert result.exit_code == 1, result.output
    file = folder / "routes.yaml"
    assert result.stderr.splitlines() == [
        f"error: {file}:4: field 'router.health.cooldown_s': should be a finite number, not .inf; {HINT}",
        f"error: {file}:4: field 'router.health.max_p95_ms': should be a finite number, not -.inf; {HINT}",
        f"error: {file}:7: rule 'r1': field 'when.confidence.lt': should be a finite number, not .nan; {HINT}",
        f"{folder}: 3 problems in 1 file",
    ]


def test_a_number_deep_in_free_form_data_is_found_on_its_own_line(tmp_path: Path) -> None:
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "routes.yaml").write_text(
        "router: {default_model: gpt-4o, encoder: fake}\n"
        "routes:\n"
        "  - name: code\n"
        "    utterances: [write a function]\n"
        "    metadata:\n"
        "      limits:\n"
        "        soft: 1.0e+308\n"
        "        hard: -.inf\n"
    )
    assert validate_refuses(folder) == (
        f"error: {folder / 'routes.yaml'}:8: route 'code': field 'metadata': limits.hard should "
        f"be a finite number, not -.inf; {HINT}"
    )


def test_a_field_that_wants_text_or_a_known_key_says_so_instead(tmp_path: Path) -> None:
    """Where a value is wrong for a reason other than being a number, that reason is given."""
    text = write(tmp_path / "a", route=", description: .inf")
    assert validate_refuses(text) == (
        f"error: {text / 'routes.yaml'}:6: route 'code': field 'description': should be text, "
        "not .inf; put it in quotes"
    )
    typo = write(tmp_path / "b", router="health: {cooldwn_s: .inf}")
    assert validate_refuses(typo) == (
        f"error: {typo / 'routes.yaml'}:4: field 'router.health.cooldwn_s': unknown field; "
        "did you mean 'cooldown_s'?"
    )


def test_numbers_given_in_memory_are_checked_too() -> None:
    data = {
        "router": {"default_model": "gpt-4o", "health": {"cooldown_s": math.inf}},
        "routes": [{"name": "code", "utterances": ["write a function"]}],
    }
    with pytest.raises(RouteConfigError) as info:
        parse_routes(data)
    assert str(info.value) == (
        f"<routes>: field 'router.health.cooldown_s': should be a finite number, not .inf; {HINT}"
    )


@pytest.mark.parametrize(
    "slots",
    [
        pytest.param(
            {"router": "health: {cooldown_s: 1.0e+308, max_p95_ms: 1.0e+308}"}, id="health"
        ),
        pytest.param({"route": ", max_cost_usd: 1.0e+308"}, id="route-ceiling"),
        pytest.param(
            {"router": "tiers: {budget: {models: [gpt-4o], max_cost_usd: 1.7e+308}}"}, id="tier"
        ),
        pytest.param({"route": ", metadata: {w: [-1.0e+308, 5.0e-324]}"}, id="metadata"),
        pytest.param(
            {"route": ", cascade: [gpt-4o-mini, gpt-4o], accept: {min_logprob: -1.0e+308}"},
            id="accept",
        ),
        pytest.param(
            {"rest": "rules: [{name: r1, when: {input_tokens: {gt: 1.0e+308}}, model: gpt-4o}]"},
            id="rule",
        ),
        pytest.param({"rest": "server: {drain_timeout_s: 1.0e+308}"}, id="server"),
    ],
)
def test_a_huge_finite_number_is_fine(tmp_path: Path, slots: dict[str, str]) -> None:
    builds(write(tmp_path / "routes", **slots), tmp_path / "index")


# --- 3: rule tests that can never hold -----------------------------------------------------------

NEVER = [
    (
        "confidence: {gte: 2}",
        "when.confidence.gte",
        "confidence is never at least 2 (it lies in [0, 1])",
    ),
    (
        "confidence: {gte: 1.0000001}",
        "when.confidence.gte",
        "confidence is never at least 1.0000001 (it lies in [0, 1])",
    ),
    (
        "confidence: {gt: 1}",
        "when.confidence.gt",
        "confidence is never above 1 (it lies in [0, 1])",
    ),
    (
        "confidence: {lt: 0}",
        "when.confidence.lt",
        "confidence is never below 0 (it lies in [0, 1])",
    ),
    (
        "confidence: {lte: -0.0000001}",
        "when.confidence.lte",
        "confidence is never at most -0.0000001 (it lies in [0, 1])",
    ),
    ("confidence: 1.5", "when.confidence", "confidence is never 1.5 (it lies in [0, 1])"),
    (
        "confidence: {in: [2, 3]}",
        "when.confidence.in",
        "confidence is never 2 or 3 (it lies in [0, 1])",
    ),
    (
        "difficulty: {gt: 1.5}",
        "when.difficulty.gt",
        "difficulty is never above 1.5 (it lies in [0, 1])",
    ),
    (
        "input_tokens: {lt: 0}",
        "when.input_tokens.lt",
        "input_tokens is never below 0 (it is 0 or more)",
    ),
    (
        "system_prompt_tokens: {lte: -1}",
        "when.system_prompt_tokens.lte",
        "system_prompt_tokens is never at most -1 (it is 0 or more)",
    ),
    (
        "input_tokens: {gt: 10, lt: 5}",
        "when.input_tokens",
        "no input_tokens is above 10 and below 5; fix the bounds",
    ),
    (
        "input_tokens: {gte: 5, lt: 5}",
        "when.input_tokens",
        "no input_tokens is at least 5 and below 5; fix the bounds",
    ),
    (
        "input_tokens: {gt: 5, lte: 5}",
        "when.input_tokens",
        "no input_tokens is above 5 and at most 5; fix the bounds",
    ),
    (
        "input_tokens: {gte: 4, gt: 5, lte: 5}",
        "when.input_tokens",
        "no input_tokens is above 5 and at most 5; fix the bounds",
    ),
    (
        "input_tokens: {gte: 5, gt: 5, lte: 5}",
        "when.input_tokens",
        "no input_tokens is above 5 and at most 5; fix the bounds",
    ),
    (
        "input_tokens: {gt: 5, gte: 5, lte: 5}",
        "when.input_tokens",
        "no input_tokens is above 5 and at most 5; fix the bounds",
    ),
    (
        "input_tokens: {gt: 10, lt: 5, lte: 20}",
        "when.input_tokens",
        "no input_tokens is above 10 and below 5; fix the bounds",
    ),
    (
        "input_tokens: {gte: 5, lte: 5, lt: 5}",
        "when.input_tokens",
        "no input_tokens is at least 5 and below 5; fix the bounds",
    ),
    (
        "confidence: {gt: 0.50, lt: 0.5}",
        "when.confidence",
        "no confidence is above 0.50 and below 0.5; fix the bounds",
    ),
    (
        "confidence: {in: [1.5, 2.0e+0]}",
        "when.confidence.in",
        "confidence is never 1.5 or 2.0e+0 (it lies in [0, 1])",
    ),
    (
        "max_tokens: {gte: 100, lte: 99.5}",
        "when.max_tokens",
        "no max_tokens is at least 100 and at most 99.5; fix the bounds",
    ),
    (
        "metadata.score: {gt: 0.5, lt: 0.5}",
        "when.metadata.score",
        "no metadata.score is above 0.5 and below 0.5; fix the bounds",
    ),
    (
        "any: [{route: code}, {confidence: {gt: 2}}]",
        "when.any.1.confidence.gt",
        "confidence is never above 2 (it lies in [0, 1])",
    ),
]


@pytest.fixture(scope="module")
def difficulty_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("difficulty") / "model"
    train_difficulty(OUTCOMES, out, encoder=FakeEncoder(), runtime="fake", strong_share=0.45)
    return out


@pytest.mark.parametrize(
    ("when", "field", "why"), [pytest.param(*case, id=case[0]) for case in NEVER]
)
def test_a_rule_test_that_can_never_hold_is_one_line(
    tmp_path: Path, difficulty_model: Path, when: str, field: str, why: str
) -> None:
    folder = write(
        tmp_path / "routes",
        router=f"difficulty: {difficulty_model}",
        rest=f"rules: [{{name: r1, when: {{{when}}}, model: gpt-4o}}]",
    )
    expected = (
        f"error: {folder / 'routes.yaml'}:7: rule 'r1': field '{field}': can never match: {why}"
    )
    assert validate_refuses(folder) == expected
    assert one_error_line(run("build-index", folder, "--out", tmp_path / "index")) == expected


@pytest.mark.parametrize(
    "when",
    [
        "confidence: {gte: 1.0}",
        "confidence: {gte: 1}",
        "confidence: {lte: 0}",
        "confidence: {gt: 0.9999999, lt: 1.0}",
        "confidence: 1",
        "confidence: {in: [2, 0.5]}",
        "difficulty: {gte: 1.0}",
        "difficulty: {lte: 0.0}",
        "input_tokens: {lte: 0}",
        "input_tokens: {gte: 5, lte: 5}",
        "input_tokens: {gt: 4.5, lt: 5}",
        "input_tokens: {gt: 1.0e+308}",
        "max_tokens: {lt: 0}",
        "metadata.score: {gte: -1.0e+308, lte: -1.0e+308}",
        # A test that can never hold under `not` makes it always hold: a waste, not a dead rule.
        "confidence: {not: {gt: 2}}",
        "not: {input_tokens: {gt: 10, lt: 5}}",
    ],
)
def test_a_rule_test_that_can_hold_builds(
    tmp_path: Path, difficulty_model: Path, when: str
) -> None:
    folder = write(
        tmp_path / "routes",
        router=f"difficulty: {difficulty_model}",
        rest=f"rules: [{{name: r1, when: {{{when}}}, model: gpt-4o}}]",
    )
    builds(folder, tmp_path / "index")


def test_an_index_holding_such_a_rule_still_loads() -> None:
    """An index built before these checks keeps loading: its rules are not judged again."""
    stored = {"rules": [{"name": "r1", "when": {"confidence": {"gte": 2}}, "model": "gpt-4o"}]}
    (rule,) = Policy.from_dict(stored, "indexes/default").rules
    assert rule.name == "r1"
