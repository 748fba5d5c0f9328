"""What a model costs: prices in a config that cannot be right are refused by `semroute
validate` in one line, and token counts a provider reports that cannot be true are not believed
(the usage is unknown, so is the cost, with one warning per model, and the log says nothing)."""

from __future__ import annotations

import itertools
import json
import math
import textwrap
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from semroute import Dispatcher, Router
from semroute.cli.main import main
from semroute.config.deployments import ModelDeployment
from semroute.config.pricing import price_of
from semroute.dispatch.spans import reported_cost
from semroute.records import MAX_TOKENS, UnbelievableUsageWarning
from semroute.testing import FakeEncoder
from semroute.testing.openai_payloads import answer_events, chunk, completion, new_id
from semroute.tuning.build import build_index
from tests.provider_kit import KEY_ENV, log_lines

# --- `semroute validate` on prices and parameters -----------------------------------------------

ROUTER = "router: {default_model: m, encoder: fake}\nroutes: [{name: a, utterances: [hello]}]\n"


def validate(folder: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", str(folder)])
    return result.exit_code, result.stderr.strip()


def models_file(tmp_path: Path, params: str, info: str = "") -> Path:
    """A route folder whose one model `m` has ``params`` as its litellm_params (line 6 on)."""
    folder = tmp_path / "routes"
    folder.mkdir()
    text = "models:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n"
    text += "      api_base: http://127.0.0.1:9/v1\n"
    text += textwrap.indent(params, " " * 6)
    if info:
        text += "    model_info:\n" + textwrap.indent(info, " " * 6)
    (folder / "routes.yaml").write_text(text + ROUTER)
    return folder


PRICE_OK = "output_cost_per_token: 0.000002\n"

BAD_PRICES = [
    ("-0.001", "(got -0.001)"),
    ("cheap", "(got the text 'cheap')"),
    ('"0.000001"', "(got the text '0.000001'; write it without quotes)"),
    ("1e400", "(got the text '1e400')"),
    ("1e-06", "(got the text '1e-06'; write it unquoted, with a dot and a signed exponent"),
    ("true", "(got true)"),
    ("", "(got nothing)"),
]


@pytest.mark.parametrize(("value", "got"), BAD_PRICES)
def test_a_price_that_is_not_a_number_0_or_more_is_refused(
    tmp_path: Path, value: str, got: str
) -> None:
    code, err = validate(models_file(tmp_path, f"input_cost_per_token: {value}\n" + PRICE_OK))
    assert code == 1
    assert err.startswith(
        f"error: {tmp_path}/routes/routes.yaml:6: field "
        "'models[0].litellm_params.input_cost_per_token': model 'm': input_cost_per_token "
        f"should be a number, 0 or more {got}"
    ), err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("params", "info", "field", "line"),
    [
        ("input_cost_per_token: 0.000001\noutput_cost_per_token: -1.0\n", "", "litellm_params", 7),
        ("", "input_cost_per_token: 0.000001\noutput_cost_per_token: cheap\n", "model_info", 8),
        ("input_cost_per_second: -2\n", "", "litellm_params", 6),
    ],
)
def test_every_price_field_is_checked_in_litellm_params_and_model_info(
    tmp_path: Path, params: str, info: str, field: str, line: int
) -> None:
    code, err = validate(models_file(tmp_path, params, info))
    assert code == 1
    name = (params or info).splitlines()[-1].split(":")[0]  # the bad one is the last
    assert f"routes.yaml:{line}: field 'models[0].{field}.{name}': model 'm': {name} " in err
    assert "should be a number, 0 or more" in err


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("input_cost_per_token", "output_cost_per_token"),
        ("output_cost_per_token", "input_cost_per_token"),
    ],
)
def test_half_a_price_is_refused(tmp_path: Path, given: str, missing: str) -> None:
    code, err = validate(models_file(tmp_path, f"{given}: 0.000001\n"))
    assert code == 1
    assert err == (
        f"error: {tmp_path}/routes/routes.yaml:6: field 'models[0].litellm_params.{given}': "
        f"model 'm': litellm_params gives {given} but not {missing}; add {missing} (0 if that "
        "side is free): a price needs both"
    )


def test_a_whole_price_passes(tmp_path: Path) -> None:
    folder = models_file(tmp_path, "input_cost_per_token: 0.000001\noutput_cost_per_token: 0\n")
    assert validate(folder)[0] == 0


@pytest.mark.parametrize(
    ("key", "meant"),
    [("api_bse", "api_base"), ("API_BASE", "api_base"), ("api_kye", "api_key"), ("rpn", "rpm")],
)
def test_a_typo_of_a_parameter_that_says_where_requests_go_is_refused(
    tmp_path: Path, key: str, meant: str
) -> None:
    code, err = validate(models_file(tmp_path, f"{key}: x\n"))
    assert code == 1
    assert err == (
        f"error: {tmp_path}/routes/routes.yaml:6: field 'models[0].litellm_params.{key}': "
        f"model 'm': unknown field {key!r}; did you mean {meant!r}?"
    )


def test_other_parameters_litellm_may_know_pass(tmp_path: Path) -> None:
    # Close to a parameter semroute reads, but LiteLLM's own (itpm), or too far to be a typo of
    # one (node is two edits from model, one of six letters or fewer).
    params = "itpm: 5\notpm: 5\ntop_k: 3\nvertex_project: p\nsafe_prompt: true\nnode: a\n"
    assert validate(models_file(tmp_path, params)) == (0, "")


def proxy_folder(tmp_path: Path, config: str) -> Path:
    (tmp_path / "litellm").mkdir()
    (tmp_path / "litellm" / "config.yaml").write_text(config)
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "routes.yaml").write_text("models: ../litellm/config.yaml\n" + ROUTER)
    return folder


PROXY = "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '      input_cost_per_token: "0.000001"\n      output_cost_per_token: 0\n',
            "field 'model_list[0].litellm_params.input_cost_per_token': model 'm': "
            "input_cost_per_token should be a number, 0 or more (got the text '0.000001'; "
            "write it without quotes)",
        ),
        (
            "      api_bse: http://x\n",
            "field 'model_list[0].litellm_params.api_bse': model 'm': unknown field 'api_bse'; "
            "did you mean 'api_base'?",
        ),
        (
            "      output_cost_per_token: 0.000001\n",
            "field 'model_list[0].litellm_params.output_cost_per_token': model 'm': "
            "litellm_params gives output_cost_per_token but not input_cost_per_token",
        ),
    ],
)
def test_a_litellm_config_named_by_models_is_checked_alike(
    tmp_path: Path, extra: str, message: str
) -> None:
    code, err = validate(proxy_folder(tmp_path, PROXY + extra))
    assert code == 1
    assert err.startswith(f"error: {tmp_path}/routes/../litellm/config.yaml:5: {message}"), err


@pytest.mark.parametrize(
    ("model_list", "got"),
    [("{big: 1}", "a mapping"), ("gpt-4o", "the text 'gpt-4o'"), ("[]", "an empty list")],
)
def test_a_model_list_that_is_not_a_list_says_so(tmp_path: Path, model_list: str, got: str) -> None:
    code, err = validate(
        proxy_folder(tmp_path, f"litellm_settings: {{}}\nmodel_list: {model_list}\n")
    )
    assert code == 1
    assert err.startswith(
        f"error: {tmp_path}/routes/../litellm/config.yaml:2: field 'model_list': model_list "
        f"should be a list of deployments (got {got})"
    ), err


def test_a_declared_price_that_cannot_be_right_is_not_used() -> None:
    """An index built before `validate` refused it may still hold one."""
    declared = {"model": "openai/x", "input_cost_per_token": -0.001, "output_cost_per_token": 0}
    assert price_of("x", [ModelDeployment("x", declared)]) is None


# --- token counts a provider reports -----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model, usage = body["model"], self.server.usage  # type: ignore[attr-defined]
        if body.get("stream"):
            ident = new_id()
            events = [*answer_events(ident, model, "hi"), chunk(ident, model, {}, "stop")]
            events.append({**chunk(ident, model, {}, None), "choices": [], "usage": usage})
            data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
            data += b"data: [DONE]\n\n"
            kind = "text/event-stream"
        else:
            data, kind = json.dumps(completion(model, "hi", usage)).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    """An OpenAI-compatible server answering every request with ``server.usage`` as its usage."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.usage = {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _key(provider_key: None) -> None:
    """The upstream's key in the environment, no $SEMROUTE_LOG (see tests/conftest.py)."""


def dispatcher(
    tmp_path: Path, server: ThreadingHTTPServer, name: str, **dispatch: Any
) -> Dispatcher:
    """A dispatcher whose default model ``name`` (priced $1/$2 per M tokens) is ``server``."""
    spec = {
        "router": {
            "default_model": name,
            "encoder": "fake",
            "dispatch": {"log": str(tmp_path / "decisions.jsonl"), "timeout": 10.0, **dispatch},
        },
        "models": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": f"http://127.0.0.1:{server.server_address[1]}/v1",
                    "api_key": f"os.environ/{KEY_ENV}",
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6,
                },
            }
        ],
        "routes": [{"name": "a", "utterances": ["hello there"]}],
    }
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "routes.yaml").write_text(yaml.safe_dump(spec))
    build_index(tmp_path / "routes", tmp_path / "index", encoder=FakeEncoder())
    return Dispatcher.for_index(Router.load(tmp_path / "index").index)


def test_usage_a_provider_reports_sanely_is_priced(
    tmp_path: Path, upstream: ThreadingHTTPServer
) -> None:
    with dispatcher(tmp_path, upstream, "sane") as d:
        result = d.complete("hi", model="sane")
    assert result.usage is not None and result.usage.prompt_tokens == 1
    assert result.cost_usd == pytest.approx(1e-6 + 3 * 2e-6)
    (line,) = log_lines(tmp_path)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (1, 3)
    assert line["cost_usd"] == pytest.approx(7e-6)


@pytest.mark.parametrize(
    ("usage", "shown"),
    [
        ({"prompt_tokens": -1000000, "completion_tokens": -5}, "prompt_tokens=-1000000"),
        ({"prompt_tokens": 10**30, "completion_tokens": 1}, f"prompt_tokens={10**30}"),
        ({"prompt_tokens": 1, "completion_tokens": MAX_TOKENS + 1}, "completion_tokens=1000000001"),
        ({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": -2}, "total_tokens=-2"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_usage_that_cannot_be_true_is_unknown_with_one_warning_per_model(
    tmp_path: Path, upstream: ThreadingHTTPServer, usage: dict[str, Any], shown: str, stream: bool
) -> None:
    upstream.usage = usage  # type: ignore[attr-defined]
    name = f"liar-{next(_names)}"  # a warning is shown once per model: a new one each time
    with dispatcher(tmp_path, upstream, name) as d:
        with pytest.warns(UnbelievableUsageWarning) as caught:
            results = [_answer(d, name, stream)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second answer: no warning again
            results.append(_answer(d, name, stream))
    (warning,) = [w for w in caught if w.category is UnbelievableUsageWarning]
    assert str(warning.message) == (
        f"model {name!r} reported {shown}, which cannot be true (a token count is a whole "
        "number from 0 to 1,000,000,000); its usage is treated as unknown, so cost_usd is None"
    )
    assert [(r.usage, r.cost_usd) for r in results] == [(None, None), (None, None)]
    for line in log_lines(tmp_path):
        assert line["error"] is None and line["model"] == name
        assert (line["prompt_tokens"], line["completion_tokens"]) == (None, None)
        assert (line["cost_usd"], line["default_cost_usd"]) == (None, None)


_names = itertools.count()


def _answer(d: Dispatcher, name: str, stream: bool) -> Any:
    if not stream:
        return d.complete("hi", model=name)
    with d.complete("hi", model=name, stream=True) as s:
        assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == "hi"
    return s


def test_usage_that_cannot_be_true_is_not_believed_through_litellm_either(
    tmp_path: Path, upstream: ThreadingHTTPServer
) -> None:
    """Through LiteLLM, its own cost (``response_cost``, reckoned from the same counts) is
    not believed either: -1,000,000 tokens would make it negative, 10**30 absurd."""
    upstream.usage = {"prompt_tokens": 10**30, "completion_tokens": 1}  # type: ignore[attr-defined]
    d = dispatcher(tmp_path, upstream, "liar-via-litellm", direct=False)
    with d, pytest.warns(UnbelievableUsageWarning, match="'liar-via-litellm'"):
        result = d.complete("hi", model="liar-via-litellm")
    assert (result.usage, result.cost_usd) == (None, None)
    (line,) = log_lines(tmp_path)
    assert (line["cost_usd"], line["default_cost_usd"], line["prompt_tokens"]) == (None, None, None)


@pytest.mark.parametrize("cost", [-1.0, math.inf, math.nan, 0, True, "1", 10**400])
def test_a_cost_litellm_reports_that_cannot_be_right_is_not_believed(cost: Any) -> None:
    import litellm

    response = litellm.ModelResponse(usage={"prompt_tokens": 1, "completion_tokens": 1})
    response._hidden_params["response_cost"] = cost
    assert reported_cost(response) is None
    response._hidden_params["response_cost"] = 0.25
    assert reported_cost(response) == 0.25
