"""Keys never leak: not from the provider variables LiteLLM reads for plain model strings, not
from headers or keywords a caller passes, not past the cut of a long error, and never into a
route file's index (a literal secret anywhere in a model entry is refused).

Providers are real HTTP servers on 127.0.0.1 (FakeProvider), which echo the Authorization
header they were sent in their 401 answers, as some real providers do.
"""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from semroute import (
    Dispatcher,
    DispatchError,
    InvalidQueryError,
    RouteConfigError,
    Router,
    load_routes,
)
from semroute.cli.main import main
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.provider_kit import KEY, KEY_ENV, deployment

OPENAI_KEY = "sk-plain-openai-7Hq2Lw9Zx4Rt6Yb1Nc8V"
# (model string, the variable LiteLLM takes its key from, the variable naming its endpoint)
PLAIN_MODELS = [
    ("openai/gpt-4o-mini", "OPENAI_API_KEY", "OPENAI_API_BASE"),
    ("mistral/codestral-latest", "MISTRAL_API_KEY", "MISTRAL_AZURE_API_BASE"),
]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    for var in ("OPENAI_BASE_URL", "MISTRAL_AZURE_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def plain_router(
    folder: Path,
    provider: FakeProvider,
    model: str,
    *,
    models: list[dict[str, Any]] | None = None,
) -> tuple[Router, Dispatcher]:
    """Route `weather` goes to ``model`` (a plain LiteLLM string unless declared in ``models``),
    then to the declared `backup`; everything else to `backup`. The router and its dispatcher."""
    spec = {
        "router": {
            "default_model": "backup",
            "encoder": "fake",
            "threshold": 0.5,
            "dispatch": {"timeout": 5.0, "log": str(folder / "decisions.jsonl")},
        },
        "models": [deployment(provider, "backup"), *(models or [])],
        "routes": [
            {
                "name": "weather",
                "model": model,
                "fallbacks": ["backup"] if model != "backup" else [],
                "utterances": ["what is the weather forecast for tomorrow", "will it rain today"],
            },
            {"name": "greeting", "utterances": ["hello there", "good morning friend"]},
        ],
    }
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    (routes / "routes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build_index(routes, folder / "index", encoder=FakeEncoder())
    router = Router.load(folder / "index")
    return router, Dispatcher.for_index(router.index)


def serve_plain(
    monkeypatch: pytest.MonkeyPatch, provider: FakeProvider, key_var: str, base_var: str, key: str
) -> None:
    monkeypatch.setenv(key_var, key)
    monkeypatch.setenv(base_var, provider.url)


def bare(model: str) -> str:
    return model.partition("/")[2]


# --- the provider variables LiteLLM reads for plain model strings -----------------------------


@pytest.mark.parametrize(("model", "key_var", "base_var"), PLAIN_MODELS)
def test_a_plain_model_strings_key_is_masked_in_the_result_and_the_log(
    tmp_path: Path,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    key_var: str,
    base_var: str,
) -> None:
    serve_plain(monkeypatch, provider, key_var, base_var, OPENAI_KEY)
    provider.error(bare(model), status=401)
    router, dispatcher = plain_router(tmp_path, provider, model)
    result = dispatcher.complete("will it rain today", router=router)
    assert provider.requests[0].authorization == f"Bearer {OPENAI_KEY}"  # it was sent ...
    assert result.model == "backup" and result.fallbacks == (model,)
    error = result.attempts[0].error or ""
    assert "Incorrect API key provided" in error and "***" in error
    assert OPENAI_KEY not in json.dumps(result.to_dict())  # ... and echoed, but never shown
    log = (tmp_path / "decisions.jsonl").read_text()
    assert "***" in log and OPENAI_KEY not in log


def test_a_plain_model_strings_key_is_masked_in_dispatch_error(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, key_var, base_var = PLAIN_MODELS[0]
    serve_plain(monkeypatch, provider, key_var, base_var, OPENAI_KEY)
    provider.error(bare(model), status=401)
    provider.error("backup", status=401)
    router, dispatcher = plain_router(tmp_path, provider, model)
    with pytest.raises(DispatchError) as caught:
        dispatcher.complete("will it rain today", router=router)
    assert OPENAI_KEY not in str(caught.value)
    assert all(OPENAI_KEY not in (a.error or "") for a in caught.value.attempts)
    assert OPENAI_KEY not in (tmp_path / "decisions.jsonl").read_text()


def test_a_key_longer_than_the_error_cut_leaves_no_prefix_behind(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The provider's message runs past the cut: masking after cutting leaves the key's first
    # few hundred characters in the error.
    long_key = "sk-long-" + "".join(f"{i:04d}" for i in range(100))
    model, key_var, base_var = PLAIN_MODELS[0]
    serve_plain(monkeypatch, provider, key_var, base_var, long_key)
    provider.error(bare(model), status=401)
    router, dispatcher = plain_router(tmp_path, provider, model)
    result = dispatcher.complete("will it rain today", router=router)
    assert provider.requests[0].authorization == f"Bearer {long_key}"
    error = result.attempts[0].error or ""
    assert long_key[:12] not in error and long_key[-12:] not in error
    assert "***" in error and len(error) <= 300
    assert long_key[:12] not in (tmp_path / "decisions.jsonl").read_text()


def test_semroute_chat_never_prints_a_plain_model_strings_key(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, key_var, base_var = PLAIN_MODELS[0]
    serve_plain(monkeypatch, provider, key_var, base_var, OPENAI_KEY)
    provider.error(bare(model), status=401)
    plain_router(tmp_path, provider, model)
    index = str(tmp_path / "index")
    runner = CliRunner()
    human = runner.invoke(main, ["chat", "will it rain today", "--index", index])
    as_json = runner.invoke(main, ["chat", "will it rain today", "--index", index, "--json"])
    assert human.exit_code == 0 and as_json.exit_code == 0, human.output + as_json.output
    assert "Hello from backup." in human.stdout
    assert json.loads(as_json.stdout)["attempts"][0]["error"].count("***") >= 1
    for shown in (human.stdout, human.stderr, as_json.stdout, as_json.stderr):
        assert OPENAI_KEY not in shown
    provider.error("backup", status=401)
    failed = runner.invoke(main, ["chat", "will it rain today", "--index", index])
    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: no model answered") and failed.stderr.count("\n") == 1
    assert OPENAI_KEY not in failed.stderr and OPENAI_KEY not in failed.stdout


# --- what the caller passes ----------------------------------------------------------------------


def test_extra_headers_passed_to_complete_are_masked(
    tmp_path: Path, provider: FakeProvider
) -> None:
    token = "tok-caller-9c1e55a0d3f74b21"
    provider.error("backup", status=401)
    router, dispatcher = plain_router(tmp_path, provider, "backup")
    with pytest.raises(DispatchError) as caught:
        dispatcher.complete(
            "will it rain today", router=router, extra_headers={"Authorization": token}
        )
    assert provider.requests[0].authorization == token
    assert token not in str(caught.value)
    assert "***" in (caught.value.attempts[0].error or "")
    assert token not in (tmp_path / "decisions.jsonl").read_text()


def test_a_numeric_api_key_is_refused_without_quoting_it(
    tmp_path: Path, provider: FakeProvider
) -> None:
    router, dispatcher = plain_router(tmp_path, provider, "backup")
    with pytest.raises(InvalidQueryError) as caught:
        dispatcher.complete("will it rain today", router=router, api_key=98765432109876)
    message = str(caught.value)
    assert "98765432109876" not in message and "api_key" in message and "\n" not in message
    assert provider.requests == []


def test_a_header_declared_as_a_reference_is_sent_resolved_and_masked(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LiteLLM resolves `os.environ/VAR` only in top-level litellm_params; a header is resolved by
    # semroute, so that writing one as a reference (which validation demands) works.
    monkeypatch.setenv("GATEWAY_AUTH", "gw-token-5be0c7a2e91f")
    declared = deployment(provider, "gateway")
    declared["litellm_params"]["extra_headers"] = {"Authorization": "os.environ/GATEWAY_AUTH"}
    provider.error("gateway", status=401)
    provider.error("backup", status=401)
    router, dispatcher = plain_router(tmp_path, provider, "gateway", models=[declared])
    with pytest.raises(DispatchError) as caught:
        dispatcher.complete("will it rain today", router=router)
    assert provider.requests[0].authorization == "gw-token-5be0c7a2e91f"
    assert "gw-token-5be0c7a2e91f" not in str(caught.value)
    manifest = (tmp_path / "index" / "manifest.json").read_text()
    assert "os.environ/GATEWAY_AUTH" in manifest and "gw-token" not in manifest


# --- literal secrets in files ------------------------------------------------------------------

ROUTER = """\
router:
  default_model: gpt-4o
routes:
  - name: code
    model: gpt-4o
    utterances: [fix this TypeError]
"""

LITERALS = {
    "header": (
        "litellm_params: {model: openai/gpt-4o, extra_headers: {Authorization: sk-live-12345678}}",
        "litellm_params.extra_headers.Authorization",
    ),
    "bearer_header": (
        "litellm_params: {model: openai/gpt-4o, extra_headers: {X-Auth: Bearer abcdefgh12345}}",
        "litellm_params.extra_headers.X-Auth",
    ),
    "api_key_header": (
        "litellm_params: {model: openai/gpt-4o, extra_headers: {x-api-key: abcdefgh12345}}",
        "litellm_params.extra_headers.x-api-key",
    ),
    "url_userinfo": (
        "litellm_params: {model: openai/gpt-4o, api_base: 'https://me:hunter22@llm.example/v1'}",
        "litellm_params.api_base",
    ),
    "numeric_key": (
        "litellm_params: {model: openai/gpt-4o, api_key: 12345678901234}",
        "litellm_params.api_key",
    ),
    "model_info_key": (
        "litellm_params: {model: openai/gpt-4o}\n    model_info: {api_key: sk-live-12345678}",
        "model_info.api_key",
    ),
    "nested_credentials": (
        "litellm_params: {model: vertex_ai/gemini, vertex_credentials: {private_key: abc123}}",
        "litellm_params.vertex_credentials.private_key",
    ),
    "aws_secret": (
        "litellm_params: {model: bedrock/claude, aws_secret_access_key: wJalrXUtnFEMI}",
        "litellm_params.aws_secret_access_key",
    ),
}


@pytest.mark.parametrize("case", sorted(LITERALS))
def test_a_literal_secret_anywhere_in_a_model_entry_is_refused(tmp_path: Path, case: str) -> None:
    entry, field = LITERALS[case]
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(ROUTER + f"models:\n  - model_name: gpt-4o\n    {entry}\n")
    with pytest.raises(RouteConfigError) as caught:
        load_routes(route_file)
    err = caught.value
    assert err.file == str(route_file) and err.field == f"models[0].{field}"
    assert "'gpt-4o'" in err.message and "os.environ/VAR" in err.message
    assert err.line is not None and "\n" not in str(err)
    cli = CliRunner().invoke(main, ["validate", str(route_file)])
    assert cli.exit_code == 1 and cli.stderr.count("\n") == 1
    assert f"models[0].{field}" in cli.stderr and "os.environ/VAR" in cli.stderr


def test_a_literal_secret_in_a_litellm_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "litellm" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        textwrap.dedent("""\
            model_list:
              - model_name: gpt-4o
                litellm_params:
                  model: openai/gpt-4o
                  api_key: os.environ/OPENAI_API_KEY
                  extra_headers:
                    Authorization: Bearer sk-live-0123456789
            """)
    )
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(ROUTER + "models: litellm/config.yaml\n")
    with pytest.raises(RouteConfigError) as caught:
        load_routes(route_file)
    err = caught.value
    assert err.file == str(config) and err.line == 7
    assert err.field == "model_list[0].litellm_params.extra_headers.Authorization"
    assert "sk-live" not in str(err)


def test_references_and_ordinary_headers_are_accepted(tmp_path: Path) -> None:
    route_file = tmp_path / "routes.yaml"
    route_file.write_text(
        ROUTER
        + textwrap.dedent("""\
            models:
              - model_name: gpt-4o
                litellm_params:
                  model: openai/gpt-4o
                  api_key: os.environ/OPENAI_API_KEY
                  api_base: https://llm.example/v1
                  input_cost_per_token: 0.0000025
                  output_cost_per_token: 0.00001
                  extra_headers: {Authorization: os.environ/GATEWAY_AUTH, anthropic-version: '1'}
            """)
    )
    (model,) = load_routes(route_file).models
    assert model.env_vars() == ["OPENAI_API_KEY", "GATEWAY_AUTH"]


# --- the rule itself ---------------------------------------------------------------------------


def test_every_credential_variable_litellm_reads_is_masked() -> None:
    from semroute.config.secrets import Masker

    # Every variable LiteLLM's own code reads a key, token, secret or password from (its source
    # is read, not imported: importing LiteLLM outside semroute's seam changes its set-up).
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).parent
    reads = re.compile(
        r"""(?:get_secret(?:_str)?|os\.environ\.get|os\.getenv)\(\s*["']([A-Z0-9_]+)["']"""
    )
    credential = re.compile(r"(?:API_?KEY|TOKEN|SECRET|SECRET_KEY|PASSWORD|CREDENTIALS|JWT)$")
    names = {
        name
        for file in source.rglob("*.py")
        for name in reads.findall(file.read_text(encoding="utf-8", errors="replace"))
        if credential.search(name)
    }
    assert {"OPENAI_API_KEY", "MISTRAL_API_KEY", "ANTHROPIC_API_KEY", "AZURE_AD_TOKEN"} <= names
    names |= {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET"}  # via SDKs
    environ = {name: f"value-of-{name}-x9" for name in names}
    masker = Masker.collect(environ=environ)
    unmasked = [n for n in sorted(names) if masker.mask(f"echo {environ[n]}") != "echo ***"]
    assert unmasked == []


def test_masking_covers_json_credentials_urls_and_spares_ordinary_settings() -> None:
    from semroute.config.secrets import Masker

    private_key = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END"
    environ = {
        "VERTEXAI_CREDENTIALS": json.dumps({"type": "service_account", "private_key": private_key}),
        "WATSONX_APIKEY": "wx-abcdefgh1234",
        "AWS_REGION_NAME": "eu-west-3x",
    }
    masker = Masker.collect({"api_base": "https://user:pa55word@h.example/v1"}, environ=environ)
    text = masker.mask(
        f"bad key {private_key} / wx-abcdefgh1234 in eu-west-3x at "
        "https://user:pa55word@h.example/v1 and https://ok@other.example sent Bearer abcdefgh123"
    )
    assert "MIIEvQ" not in text and "wx-abcdefgh1234" not in text and "pa55word" not in text
    assert "abcdefgh123" not in text and "ok@" not in text
    assert "eu-west-3x" in text  # a region is not a credential
