"""Hostile input, fuzzed over every surface semroute reads without trusting it: route files, the
LiteLLM config named by `models:`, queries and message lists, labelled JSON lines, decision-log
lines and records, and built indexes.

Every call returns a value or raises a SemrouteError whose message is one printable line; never
another exception, a hang, or memory without bound (see tests/fuzz_support.py). The @example
cases pin what a hostile probe found (issue 14), so they run on every CI run whatever Hypothesis
draws.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import assume, example, given
from hypothesis import strategies as st

from semroute.cli.main import main
from semroute.config.routes import SCORERS, load_routes
from semroute.decision import Decision, Reason
from semroute.dispatch.log import DecisionLog, summarise
from semroute.errors import CorruptIndexError, IndexLoadError
from semroute.routing.router import Router
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from semroute.tuning.evaluate import evaluate, load_labelled
from semroute.tuning.importers import import_file
from tests.conftest import ROUTES_YAML, write_routes
from tests.fuzz_support import (
    WORDS,
    StrictEncoder,
    alias_bomb,
    attempt,
    check_cli,
    check_message,
    copy_tree,
    deep_json,
    deep_list,
    dumps,
    fuzz,
    hostile_text,
    huge_text,
    invisible_only,
    json_scalars,
    json_values,
    run_bounded,
    strict_json,
    time_bound,
)

ROUTER_YAML = """\
router:
  default_model: frontier-model
  encoder: fake
  threshold: 0.5
  conversation: {turns: 2, sticky: true}
"""
# The same shape (routes, counts, dimension) with other texts: its files fit this index's sizes.
OTHER_ROUTES_YAML = ROUTES_YAML.replace("      - ", "      - other ")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    routes = write_routes(root / "routes", router=ROUTER_YAML)
    other = write_routes(root / "other-routes", OTHER_ROUTES_YAML, router=ROUTER_YAML)
    build_index(routes, root / "index", encoder=FakeEncoder())
    build_index(other, root / "other-index", encoder=FakeEncoder())
    return {"root": root, "routes": routes, "index": root / "index", "other": root / "other-index"}


@pytest.fixture(scope="module")
def router(built: dict[str, Path]) -> Router:
    return Router.load(built["index"], encoder=StrictEncoder())


@pytest.fixture
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """A fresh folder per Hypothesis example (tmp_path is one folder per test)."""
    return lambda: tmp_path_factory.mktemp("example")


def check_decision(decision: object, router: Router) -> Decision:
    """A decision a caller can act on: a known route or none, a model, finite numbers."""
    assert isinstance(decision, Decision), f"got {type(decision).__name__}, not a Decision"
    names = {r.name for r in router.routes}
    assert decision.route is None or decision.route in names, decision.route
    assert isinstance(decision.model, str) and decision.model.strip(), decision.model
    assert math.isfinite(decision.confidence) and 0.0 <= decision.confidence <= 1.0, decision
    assert math.isfinite(decision.margin), decision
    json.dumps(decision.to_dict(), allow_nan=False)
    return decision


def same(a: Decision, b: Decision) -> tuple[Any, ...]:
    return (a.route, a.model, a.reason)


# --- queries ------------------------------------------------------------------------------------


@fuzz(120)
@given(query=hostile_text)
@example(query="fix \ud800 this")  # issue 14.4: a lone surrogate reached the tokenizer
@example(query="\ud83d")
@example(query="will it rain \udfff tomorrow")
@example(query="\u200b\u200b\ufeff")  # issue 14.6: invisible text was routed as `matched`
@example(query="\x00")
@example(query="\x1b[2J\x1b]0;owned\x07weather")
def test_any_text_gets_the_same_decision_alone_in_a_batch_and_as_a_message(
    router: Router, query: str
) -> None:
    alone = attempt(router.route, query)
    batch = attempt(router.route_batch, [query])
    conversation = attempt(router.route, [{"role": "user", "content": query}])
    assert alone.error is None, f"route() refused a string: {alone.error}"
    assert batch.error is None, f"route_batch() refused a list of one string: {batch.error}"
    assert conversation.error is None, f"route() refused one user message: {conversation.error}"
    d = check_decision(alone.value, router)
    assert len(batch.value) == 1
    b = check_decision(batch.value[0], router)
    c = check_decision(conversation.value, router)
    assert same(d, b) == same(d, c), (same(d, b), same(d, c))
    assert d.reason == b.reason == c.reason


@fuzz(40)
@given(query=invisible_only)
@example(query="\u200b\u200b\ufeff")  # issue 14.6
@example(query="\x00")
@example(query="\u2060\u00ad\u202e")
def test_text_with_nothing_visible_is_an_empty_query(router: Router, query: str) -> None:
    for decision in (
        router.route(query),
        router.route_batch([query])[0],
        router.route([{"role": "user", "content": query}]),
    ):
        assert decision.reason == Reason.EMPTY_QUERY, (query, decision.reason, decision.route)
        assert decision.model == router.default_model


@fuzz(8)
@given(query=huge_text)
def test_huge_text_routes(router: Router, query: str) -> None:
    check_decision(attempt(router.route, query).value, router)
    check_decision(attempt(router.route_batch, [query, "hello"]).value[0], router)


def test_the_query_cache_does_not_keep_huge_queries(built: dict[str, Path]) -> None:
    """Issue 14.5: cache keys were the full texts (4,096 entries of 1 MB held ~4 GB)."""
    router = Router.load(built["index"], encoder=FakeEncoder())
    router.route("warm up")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(12):
            router.route(f"weather {i} " + "x" * 1_000_000)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 4_000_000, f"routing 12 distinct 1 MB queries left {held:,} bytes held"


_not_a_batch = st.one_of(
    hostile_text,
    json_scalars,
    st.binary(max_size=20),
    st.lists(json_values, min_size=1, max_size=4).filter(
        lambda xs: not all(isinstance(x, str) for x in xs)
    ),
    st.dictionaries(hostile_text, hostile_text, max_size=3),
)


@fuzz(60)
@given(queries=_not_a_batch)
@example(queries="hello")  # issue 14.10: routed five one-character queries
@example(queries=None)  # issue 14.10: a bare TypeError
@example(queries=b"hello")
@example(queries=["hello", 3])
@example(queries={"role": "user", "content": "hello"})
def test_route_batch_takes_only_a_sequence_of_strings(router: Router, queries: Any) -> None:
    out = attempt(router.route_batch, queries)
    if out.error is None:
        # A string may be taken as one query, never as one query per character.
        assert isinstance(queries, str) and len(out.value) == 1, (
            f"route_batch({queries!r:.200}) returned {len(out.value)} decisions"
        )
        check_decision(out.value[0], router)


_content = st.one_of(
    hostile_text,
    st.none(),
    json_values,
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url", "input_text"])},
                optional={"text": st.one_of(hostile_text, json_values)},
            ),
            json_values,
        ),
        max_size=4,
    ),
)
_message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), json_values)},
        optional={"content": _content, "name": hostile_text},
    ),
    json_values,
)
_messages = st.one_of(st.lists(_message, max_size=10), st.lists(_message, max_size=3).map(tuple))


@fuzz(100)
@given(messages=_messages)
@example(messages=[{"role": "user", "content": "fix \ud800 this"}])  # issue 14.4
@example(messages=[{"role": "user", "content": [{"type": "text", "text": "a \udc80 b"}]}])
@example(messages=[{"role": "user", "content": "\u200b\ufeff"}])  # issue 14.6
@example(messages=[{"role": "user", "content": [{"type": "text", "text": deep_list(50_000)}]}])
@example(messages=[deep_list(50_000)])
@example(messages=[{"role": "user", "content": "weather"}, {"role": "user", "content": None}])
@example(messages=[])
def test_message_lists_route_or_are_refused(router: Router, messages: Any) -> None:
    out = attempt(router.route, messages)
    if out.error is None:
        check_decision(out.value, router)


@fuzz(40)
@given(query=hostile_text.filter(bool))
@example(query="\x1b[2J\x1b[1A\x1b[2Kweather")  # issue 14.10: escapes echoed into the table
@example(query="[/bold] tomorrow")
@example(query="[link=file:///etc/passwd]rain[/link]")
@example(query="fix \ud800 this")  # issue 14.4: a traceback on the CLI
@example(query="\u200b")
def test_cli_route_prints_any_query_safely(built: dict[str, Path], query: str) -> None:
    index = str(built["index"])
    for extra in ([], ["--json"]):
        with time_bound():
            result = CliRunner().invoke(main, ["route", "--index", index, *extra, "--", query])
        check_cli(result)
        assert result.exit_code == 0, result.stderr
        if extra:
            for line in result.stdout.splitlines():
                strict_json(line)


# --- route files ------------------------------------------------------------------------------


class Raw(str):
    """YAML text placed in a document as it is."""


class Pairs(list[tuple[Any, Any]]):
    """A YAML mapping that may repeat a key."""


YAML_RAW = st.sampled_from(
    [
        Raw("!!python/object/apply:os.system ['echo owned']"),
        Raw("!!python/name:os.system"),
        Raw("!!binary aGVsbG8="),
        Raw("!!set {a, b}"),
        Raw("!!timestamp 2001-12-14"),
        Raw("!!float .nan"),
        Raw("!!str"),
        Raw("!custom x"),
        Raw(".nan"),
        Raw(".inf"),
        Raw("-.inf"),
        Raw("1e400"),
        Raw("0x1F"),
        Raw("0o17"),
        Raw("yes"),
        Raw("no"),
        Raw("~"),
        Raw("2001-12-14"),
        Raw("&anchor [hello, world]"),
        Raw("*anchor"),
        Raw("*undefined"),
        Raw("&loop [*loop]"),
        Raw(deep_json(1000)),
        Raw(deep_json(1000, "{a: ", "}")),
        Raw("'unterminated"),
        Raw("[unclosed"),
        Raw("|\n    block\n    text"),
        Raw("\ufeffbom"),
        Raw("\t"),
    ]
)

DUPLICABLE_KEYS = [Raw("a"), Raw("a"), Raw("<<"), Raw("name")]
yaml_values = st.recursive(
    st.one_of(json_scalars, YAML_RAW),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(WORDS), inner, max_size=3),
        st.lists(st.tuples(st.sampled_from(DUPLICABLE_KEYS), inner), max_size=3).map(Pairs),
    ),
    max_leaves=6,
)


def render(node: Any) -> str:
    """Flow-style YAML for ``node`` (JSON-like, so any nesting fits on a line)."""
    if isinstance(node, Raw):
        return str(node)
    if isinstance(node, Pairs):
        return "{" + ", ".join(f"{render(k)}: {render(v)}" for k, v in node) + "}"
    if isinstance(node, dict):
        return "{" + ", ".join(f"{render(k)}: {render(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list | tuple):
        return "[" + ", ".join(render(v) for v in node) + "]"
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, float) and not math.isfinite(node):
        return ".nan" if math.isnan(node) else (".inf" if node > 0 else "-.inf")
    if isinstance(node, int | float):
        return repr(node)
    return json.dumps(node)  # a double-quoted YAML scalar: JSON's escapes are YAML's


_utterance = st.one_of(st.sampled_from(WORDS).map(lambda w: f"{w} please"), hostile_text)
_route = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["weather", "billing", "code"]), hostile_text),
        "utterances": st.one_of(st.lists(_utterance, min_size=1, max_size=4), yaml_values),
    },
    optional={
        "model": st.one_of(st.just("small-model"), yaml_values),
        "threshold": st.one_of(st.floats(), yaml_values),
        "metadata": yaml_values,
        "description": hostile_text,
        "fallbacks": yaml_values,
        "utterence": yaml_values,
    },
)
_router = st.fixed_dictionaries(
    {"default_model": st.one_of(st.just("frontier-model"), yaml_values)},
    optional={
        "encoder": st.just("fake"),
        "threshold": st.one_of(st.floats(0, 1), yaml_values),
        "min_margin": st.one_of(st.floats(), yaml_values),
        "scorer": st.one_of(st.sampled_from(SCORERS), yaml_values),
        "conversation": st.one_of(
            st.fixed_dictionaries({"turns": st.integers(-5, 50), "sticky": st.booleans()}),
            yaml_values,
        ),
    },
)
route_documents = st.fixed_dictionaries(
    {"router": _router, "routes": st.lists(_route, min_size=1, max_size=3)},
    optional={"out_of_scope": st.one_of(st.lists(_utterance, max_size=3), yaml_values)},
)


def check_route_folder(folder: Path, out: Path) -> None:
    """validate (library and CLI); when the routes are valid, build, load and route them."""
    loaded = attempt(load_routes, folder)
    with time_bound():
        result = CliRunner().invoke(main, ["validate", str(folder)])
    check_cli(result, each_problem=True)
    if loaded.error is not None:
        return
    built = attempt(build_index, folder, out, encoder=FakeEncoder())
    assert built.error is None, f"valid routes failed to build: {built.error}"
    loaded_router = attempt(Router.load, out, encoder=StrictEncoder())
    assert loaded_router.error is None, f"a fresh build failed to load: {loaded_router.error}"
    router = loaded_router.value
    for query in ("weather please", "", "hello \ud800"):
        check_decision(attempt(router.route, query).value, router)


@fuzz(50)
@given(doc=route_documents)
@example(
    doc={
        "router": {"default_model": "frontier-model", "encoder": "fake"},
        "routes": [{"name": "weather", "utterances": ["rain \ud800 tomorrow"]}],
    }
)
@example(
    doc={
        "router": {"default_model": "frontier-model", "encoder": "fake"},
        "routes": [{"name": "weather", "utterances": ["rain"], "metadata": {"x": math.nan}}],
    }
)
def test_route_files_validate_or_are_refused_in_one_line(scratch: Any, doc: dict[str, Any]) -> None:
    root = scratch()
    (root / "routes").mkdir()
    (root / "routes" / "routes.yaml").write_text(
        render(doc), encoding="utf-8", errors="surrogatepass"
    )
    check_route_folder(root / "routes", root / "index")


_fragments = st.one_of(
    YAML_RAW.map(str),
    st.sampled_from(
        [
            "\n  - name: weather\n    utterances: [again]",
            "\nrouter: {default_model: x}",
            "\n    threshold: 0.7\n    threshold: 0.2",
            "\n<<: *a",
            ": :",
            "- -",
            "\x00",
            "\x1b[2J",
            "\ud800",
            "%YAML 1.1\n---\n",
            "\n---\nmore: docs",
            "\n...\n",
            "@",
            "`",
            "\u2028",
        ]
    ),
    hostile_text,
)


@fuzz(60)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 20), _fragments), min_size=1, max_size=4
    )
)
@example(edits=[(0, 0, f"{alias_bomb(5, 9)}\n")])
@example(edits=[(0, 0, "x: &a [*a]\n")])
def test_edited_route_files_validate_or_are_refused_in_one_line(
    scratch: Any, edits: list[tuple[int, int, str]]
) -> None:
    text = ROUTER_YAML + ROUTES_YAML
    for at, cut, fragment in edits:
        at %= len(text) + 1
        text = text[:at] + fragment + text[at + cut :]
    root = scratch()
    (root / "routes").mkdir()
    (root / "routes" / "routes.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    check_route_folder(root / "routes", root / "index")


@pytest.mark.parametrize(
    "text", [deep_json(100_000), deep_json(100_000, "{a: ", "}")], ids=["lists", "mappings"]
)
def test_a_deeply_nested_route_file_is_refused_without_a_crash(tmp_path: Path, text: str) -> None:
    """libyaml composes nested collections recursively in C: deep enough, it overflows the stack
    and the process dies (a child process here, so that the suite survives to report it)."""
    write_routes(tmp_path / "routes", router=ROUTER_YAML)
    (tmp_path / "routes" / "deep.yaml").write_text(text)
    message = run_bounded(
        f"from semroute.config.routes import load_routes; folder = {str(tmp_path / 'routes')!r}",
        "load_routes(folder)",
    )
    assert "deep.yaml" in message, message


# --- the LiteLLM config named by `models:` ------------------------------------------------------

_deployment = st.one_of(
    st.fixed_dictionaries(
        {
            "model_name": st.one_of(st.just("frontier-model"), yaml_values),
            "litellm_params": st.one_of(
                st.fixed_dictionaries(
                    {"model": st.one_of(st.just("openai/gpt-4o"), yaml_values)},
                    optional={
                        "api_key": st.one_of(st.just("os.environ/OPENAI_API_KEY"), yaml_values),
                        "api_base": st.one_of(st.just("http://u:p@localhost:1"), yaml_values),
                        "extra_headers": yaml_values,
                        "input_cost_per_token": yaml_values,
                    },
                ),
                yaml_values,
            ),
        },
        optional={"model_info": yaml_values},
    ),
    yaml_values,
)
litellm_configs = st.one_of(
    st.fixed_dictionaries(
        {"model_list": st.one_of(st.lists(_deployment, max_size=3), yaml_values)},
        optional={"litellm_settings": yaml_values, "router_settings": yaml_values},
    ).map(render),
    YAML_RAW.map(lambda raw: f"model_list: {raw}"),
    YAML_RAW.map(str),
    hostile_text,
)


@fuzz(50)
@given(config=litellm_configs)
@example(config="model_list: !!python/object/apply:os.system ['echo owned']")
@example(config="model_list: " + deep_json(5000))
@example(config='model_list: [{model_name: a, litellm_params: {model: "x\\ud800"}}]')
@example(config="{model_list: [], model_list: []}")
@example(config="\x00")
def test_litellm_configs_load_or_are_refused_in_one_line(scratch: Any, config: str) -> None:
    root = scratch()
    # Outside the route folder, so that it is read only as the file `models:` names.
    (root / "litellm.cfg").write_bytes(config.encode("utf-8", "surrogatepass"))
    folder = write_routes(root / "routes", router=ROUTER_YAML + "models: ../litellm.cfg\n")
    check_route_folder(folder, root / "index")


_BOMB_SETUP = """
from pathlib import Path
from semroute.tuning.build import build_index
from semroute.config.routes import load_routes
from semroute.testing import FakeEncoder
root = Path({root!r})
"""


@pytest.mark.parametrize(
    "config",
    [
        # issue 14.3: `validate` said ok and `build-index` grew to gigabytes
        alias_bomb()
        + "\nmodel_list:\n  - model_name: m\n    litellm_params: {model: x, bomb: *a9}\n",
        alias_bomb()
        + "\nmodel_list: [{model_name: m, litellm_params: {model: x}, model_info: *a9}]\n",
        alias_bomb() + "\nmodel_list: *a9\n",
    ],
    ids=["in-litellm-params", "in-model-info", "as-model-list"],
)
def test_alias_bomb_in_the_litellm_config_stays_bounded(tmp_path: Path, config: str) -> None:
    write_routes(tmp_path / "routes", router=ROUTER_YAML + "models: ../litellm.cfg\n")
    (tmp_path / "litellm.cfg").write_text(config)
    run_bounded(
        _BOMB_SETUP.format(root=str(tmp_path)),
        "load_routes(root / 'routes'); "
        "build_index(root / 'routes', root / 'index', encoder=FakeEncoder())",
    )


# --- labelled JSON lines: load, eval, import ----------------------------------------------------

_row = st.one_of(
    st.fixed_dictionaries(
        {
            "text": st.one_of(hostile_text, st.sampled_from(WORDS), json_values),
            "label": st.one_of(st.sampled_from(["weather", "billing", "oos"]), json_values),
        },
        optional={"extra": json_values},
    ).map(dumps),
    json_values.map(dumps),
    st.sampled_from([deep_json(100_000), deep_json(100_000, '{"a":', "}"), "{", "\x00", "NaN"]),
    hostile_text,
)


@fuzz(60)
@given(rows=st.lists(_row, min_size=1, max_size=8))
@example(rows=[dumps({"text": "fix \ud800 this", "label": "weather"})])  # issue 14.4
@example(
    rows=[dumps({"text": "rain \udfff", "label": "weather"}), dumps({"text": "x", "label": "oos"})]
)
@example(rows=[deep_json(100_000)])  # issue 14.10: a deeply nested line
@example(rows=[dumps({"text": "rain", "label": "weather"}), deep_json(100_000, '{"a":', "}")])
@example(rows=[dumps({"text": "\u200b", "label": "weather"})])
@example(rows=[dumps({"text": "rain", "label": math.nan})])
def test_labelled_rows_load_evaluate_and_import_or_are_refused(
    scratch: Any, router: Router, rows: list[str]
) -> None:
    root = scratch()
    data = root / "rows.jsonl"
    data.write_bytes("\n".join(rows).encode("utf-8", "surrogatepass"))
    loaded = attempt(load_labelled, data)
    if loaded.error is None:
        attempt(evaluate, router, loaded.value)
    out = root / "routes" / "imported.yaml"
    imported = attempt(import_file, data, out, default_model="frontier-model")
    if imported.error is None:
        again = attempt(load_routes, out)
        assert again.error is None, (
            f"`semroute import` wrote a file that does not load: {again.error}"
        )
    with time_bound():
        result = CliRunner().invoke(
            main, ["import", str(data), "--out", str(root / "cli.yaml"), "--default-model", "m"]
        )
    check_cli(result)


# --- the decision log ---------------------------------------------------------------------------

_LOG_KEYS = (
    "request_id",
    "route",
    "model",
    "routing_ms",
    "model_ms",
    "cost_usd",
    "fallbacks",
    "error",
)
_record = st.fixed_dictionaries(
    {"request_id": st.one_of(st.just("r1"), json_values)},
    optional={key: json_values for key in _LOG_KEYS[1:]},
)
_log_line = st.one_of(
    _record.map(dumps),
    json_values.map(dumps),
    st.sampled_from([deep_json(100_000), deep_json(100_000, '{"a":', "}"), "{", "NaN"]),
    hostile_text,
)


@fuzz(50)
@given(lines=st.lists(_log_line, min_size=1, max_size=8))
@example(lines=[dumps({"request_id": "r", "routing_ms": "fast"})])  # issue 14.10
@example(lines=[dumps({"request_id": "r", "route": ["a", "list"]})])  # issue 14.10
@example(lines=[dumps({"request_id": "r", "model": {"a": 1}})])
@example(lines=[deep_json(100_000)])  # issue 14.10: a deeply nested line
@example(lines=[dumps({"request_id": "r", "routing_ms": math.nan, "cost_usd": math.inf})])
@example(lines=[dumps({"request_id": "r", "cost_usd": 10**400})])
@example(lines=[dumps({"request_id": "r", "route": "\x1b[2J\x1b]0;owned\x07"})])
def test_decision_log_lines_summarise_into_valid_json(scratch: Any, lines: list[str]) -> None:
    stats = attempt(summarise, lines).value
    counted = sum(1 for line in lines if line.strip())
    assert stats.requests + stats.quality_records + stats.malformed_lines == counted, (
        stats,
        counted,
    )
    json.dumps(stats.to_dict(), allow_nan=False)
    log = scratch() / "decisions.jsonl"
    log.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    for extra in (["--json"], []):
        with time_bound():
            result = CliRunner().invoke(main, ["stats", str(log), *extra])
        check_cli(result)
        assert result.exit_code == 0, result.stderr
        if extra:
            strict_json(result.stdout)


@fuzz(40)
@given(
    record=st.dictionaries(st.sampled_from(_LOG_KEYS), json_values).map(
        lambda r: {"request_id": "r1", **r}
    ),
    answer=hostile_text,
)
@example(record={"request_id": "r1"}, answer="an answer with \ud800 in it")  # issue 14.4
@example(record={"request_id": "r1", "cost_usd": math.nan}, answer="ok")
@example(record={"request_id": "r1", "messages": deep_list(50_000)}, answer="ok")
def test_decision_log_writes_any_record_as_one_valid_line(
    scratch: Any, record: dict[str, Any], answer: str
) -> None:
    log_file = scratch() / "decisions.jsonl"
    log = DecisionLog(log_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with time_bound():
            log.write(
                {**record, "messages": [{"role": "user", "content": answer}], "answer": answer}
            )
            log.write({"request_id": "r2", "answer": answer, "routing_ms": 1.0})
    log.close()
    # Split as `semroute stats` reads the file: on "\n" alone (U+0085 inside a string is text).
    lines = log_file.read_bytes().decode("utf-8").split("\n")
    assert lines.pop() == "", "the last line is not terminated"
    for line in lines:
        strict_json(line)
    # A record of plain strings and finite numbers is always written (an answered request).
    assert lines and json.loads(lines[-1])["request_id"] == "r2", (lines, caught)
    assert summarise(lines[-1:]).requests == 1


def test_a_fifo_as_the_decision_log_does_not_block(tmp_path: Path) -> None:
    """Issue 14.10: opening a FIFO for writing waited for a reader, and every request with it."""
    fifo = tmp_path / "decisions.jsonl"
    os.mkfifo(fifo)
    log = DecisionLog(fifo)
    with warnings.catch_warnings(record=True), time_bound(5):
        warnings.simplefilter("always")
        log.write({"request_id": "r1"})
    log.close()
    # `semroute stats` named a FIFO on purpose (`stats <(zcat log.gz)`) reads what is written into it.
    line = json.dumps({"request_id": "r2", "route": "weather", "model": "m"}) + "\n"
    writer = threading.Thread(target=lambda: fifo.write_text(line), daemon=True)
    writer.start()
    with time_bound(5):
        result = CliRunner().invoke(main, ["stats", str(fifo), "--json"])
    writer.join(5)
    check_cli(result)
    assert json.loads(result.output)["requests"] == 1


# --- built indexes ------------------------------------------------------------------------------


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, (*prefix, i))


def edit(doc: Any, path: tuple[Any, ...], op: str, value: Any = None) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def check_router(router: Router) -> None:
    """A router loaded from a damaged index must still make sense, or it should not have loaded."""
    index = router.index
    assert router.scorer in SCORERS, f"unknown scorer {router.scorer!r} accepted"
    assert isinstance(router.default_model, str) and router.default_model.strip()
    assert 0.0 <= router.min_margin <= 1.0, router.min_margin
    assert all(isinstance(u, str) for u in index.utterances), "non-string utterances accepted"
    assert len(index.utterances) == len(index.vectors)
    names = [r.name for r in router.routes]
    assert names and len(set(names)) == len(names), names
    stop = 0
    for r in router.routes:
        assert isinstance(r.name, str) and r.name, r
        assert isinstance(r.model, str) and r.model.strip(), r
        assert 0.0 <= r.threshold <= 1.0, r
        assert r.start == stop < r.stop <= len(index.vectors), r
        stop = r.stop
    for query in ("will it rain tomorrow", "cancel my subscription plan", "", "fix \ud800 this"):
        decision = attempt(router.route, query)
        assert decision.error is None, f"a loaded router refused {query!r}: {decision.error}"
        check_decision(decision.value, router)
    check_decision(attempt(router.route_batch, ["hello there", "x"]).value[1], router)
    check_decision(attempt(router.route, [{"role": "user", "content": "rain"}]).value, router)


_manifest_values = st.one_of(
    json_values,
    st.sampled_from(
        ["magic", "", [0, 10**6], [5, 2], [-3, 1], [0], 10**6, -1, "0.5", "high", math.nan]
    ),
)


@fuzz(80)
@given(data=st.data())
def test_edited_manifests_load_into_a_sane_router_or_are_refused(
    scratch: Any, built: dict[str, Path], data: st.DataObject
) -> None:
    manifest = json.loads((built["index"] / "manifest.json").read_text())
    paths = sorted(json_paths(manifest), key=repr)
    edits = data.draw(st.integers(1, 3), label="number of edits")
    for _ in range(edits):
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(st.sampled_from(["delete", "replace"]) if path else st.just("replace"))
        value = data.draw(_manifest_values, label="value") if op == "replace" else None
        try:
            manifest = edit(manifest, path, op, value)
        except (KeyError, IndexError, TypeError):  # an earlier edit removed this path
            continue
        paths = sorted(json_paths(manifest), key=repr)
    load_damaged(scratch(), built, manifest=dumps(manifest))


def load_damaged(root: Path, built: dict[str, Path], **files: str | bytes) -> Router | None:
    index = copy_tree(built["index"], root / "index")
    for name, content in files.items():
        target = index / {"manifest": "manifest.json", "utterances": "utterances.json"}.get(
            name, name
        )
        if isinstance(content, str):
            target.write_bytes(content.encode("utf-8", "surrogatepass"))
        else:
            target.write_bytes(content)
    loaded = attempt(Router.load, index, encoder=StrictEncoder())
    if loaded.error is not None:
        return None
    check_router(loaded.value)
    return loaded.value  # type: ignore[no-any-return]


def _manifest(built: dict[str, Path]) -> dict[str, Any]:
    return json.loads((built["index"] / "manifest.json").read_text())  # type: ignore[no-any-return]


DAMAGE = {
    # issue 14.7: KeyError / IndexError / ValueError tracebacks
    "no index count": (("index", "count"), "delete", None),
    "no dimension": (("encoder", "dim"), "delete", None),
    "a route without a name": (("routes", 0, "name"), "delete", None),
    "no default model": (("settings", "default_model"), "delete", None),
    "a non-numeric threshold": (("routes", 1, "threshold"), "replace", "high"),
    "a NaN threshold": (("routes", 1, "threshold"), "replace", math.nan),
    "a vector span past the end": (("routes", 2, "vectors"), "replace", [6, 10**6]),
    "a reversed vector span": (("routes", 0, "vectors"), "replace", [3, 0]),
    "a span of one number": (("routes", 0, "vectors"), "replace", [0]),
    "no routes": (("routes",), "replace", []),
    "routes that are not a list": (("routes",), "replace", {"weather": 1}),
    "settings that are not a mapping": (("settings",), "replace", "x"),
    # issue 14.7: accepted silently, routing wrong
    "an unknown scorer": (("scorer",), "replace", "magic"),
    "an out-of-scope span inside the routes": (("out_of_scope", "vectors"), "replace", [2, 8]),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_manifest_is_refused(tmp_path: Path, built: dict[str, Path], damage: str) -> None:
    path, op, value = DAMAGE[damage]
    manifest = edit(_manifest(built), path, op, value)
    index = copy_tree(built["index"], tmp_path / "index")
    (index / "manifest.json").write_text(dumps(manifest))
    with pytest.raises(IndexLoadError) as raised, time_bound():
        Router.load(index, encoder=StrictEncoder())
    check_message(raised.value)


_INDEX_FILES = ("index.faiss", "utterances.json", "head.npz")


@fuzz(60)
@given(
    name=st.sampled_from(_INDEX_FILES),
    op=st.sampled_from(["truncate", "flip", "append", "swap", "json"]),
    at=st.integers(0, 10**6),
    value=json_values,
)
@example(name="index.faiss", op="swap", at=0, value=None)  # issue 14.7: same size, other vectors
@example(name="utterances.json", op="json", at=0, value=list(range(8)))  # issue 14.7: integers
@example(name="utterances.json", op="swap", at=0, value=None)
@example(name="head.npz", op="swap", at=0, value=None)
@example(name="index.faiss", op="flip", at=2000, value=None)
def test_a_changed_index_file_is_refused(
    scratch: Any, built: dict[str, Path], name: str, op: str, at: int, value: Any
) -> None:
    """Every index file's checksum is in the manifest: a file changed since the build is caught."""
    original = (built["index"] / name).read_bytes()
    at %= len(original)
    if op == "truncate":
        changed = original[:at]
    elif op == "flip":
        changed = original[:at] + bytes([original[at] ^ 0x55]) + original[at + 1 :]
    elif op == "append":
        changed = original + b"\x00" * (at % 64 + 1)
    elif op == "swap":
        changed = (built["other"] / name).read_bytes()
    else:
        changed = dumps(value).encode("utf-8", "surrogatepass")
    assume(changed != original)
    root = scratch()
    index = copy_tree(built["index"], root / "index")
    (index / name).write_bytes(changed)
    loaded = attempt(Router.load, index, encoder=StrictEncoder())
    assert loaded.error is not None, f"{name} changed ({op}) and the index still loaded"
    assert isinstance(loaded.error, CorruptIndexError), loaded.error


# --- the environment ----------------------------------------------------------------------------


def test_semroute_cache_naming_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14.10: $SEMROUTE_CACHE pointing at a file gave NotADirectoryError."""
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv("SEMROUTE_CACHE", str(cache))
    folder = write_routes(tmp_path / "routes", router=ROUTER_YAML.replace("  encoder: fake\n", ""))
    out = attempt(build_index, folder, tmp_path / "index")
    assert out.error is not None, "built an index with an unusable cache"
    assert str(cache) in str(out.error), out.error
