"""OpenTelemetry: a `semroute serve` process with OTEL_EXPORTER_OTLP_ENDPOINT set sends a trace
per request to an OTLP/HTTP receiver in the test; without it, OpenTelemetry is not even imported.

Each test runs semroute in its own process: whether tracing is on is decided once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.gateway_kit import build, serve_process
from tests.otlp_kit import OtlpReceiver, ReceivedSpan
from tests.provider_kit import KEY, KEY_ENV
from tests.quality_kit import EXTRACT
from tests.quality_kit import spec as quality_spec

SERVER, CLIENT = 2, 3  # OTLP's span kinds
ERROR = 2  # OTLP's status code
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
ASK_WEATHER = [{"role": "user", "content": "will it rain today"}]


def otel_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        KEY_ENV: KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "semroute-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: export soon
        **extra,
    }


def post(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def by_name(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def test_a_request_is_one_trace_under_the_callers_traceparent(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.error("weather-model", status=503)
    index = build(tmp_path, provider)
    with OtlpReceiver() as receiver, serve_process(index, env=otel_env(receiver)) as (_, url):
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        answer = post(url, {"model": "auto", "messages": ASK_WEATHER}, traceparent=traceparent)
        assert answer.status_code == 200
        assert answer.headers["x-semroute-model"] == "backup"
        spans = receiver.wait_for(4)
    assert {s.trace_id for s in spans} == {TRACE_ID}
    server = by_name(spans, "POST /v1/chat/completions")
    assert server.kind == SERVER and server.parent_id == PARENT_ID
    assert server.service == "semroute-under-test"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["semroute.request_id"] == answer.headers["x-semroute-request-id"]
    route = by_name(spans, "semroute.route")
    assert route.parent_id == server.span_id
    assert route.attributes["semroute.route"] == "weather"
    assert route.attributes["semroute.reason"] == "matched"
    assert route.attributes["semroute.confidence"] > 0.5
    failed = by_name(spans, "chat weather-model")
    assert failed.kind == CLIENT and failed.parent_id == server.span_id
    assert failed.status == ERROR
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["gen_ai.request.model"] == "weather-model"
    answered = by_name(spans, "chat backup")
    assert answered.parent_id == server.span_id and answered.status != ERROR
    attrs = answered.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "backup"
    assert attrs["gen_ai.response.model"]
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["semroute.cost_usd"] > 0
    assert attrs["semroute.request_id"] == answer.headers["x-semroute-request-id"]


def test_a_stream_and_a_request_without_traceparent_get_traces_of_their_own(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider)
    with OtlpReceiver() as receiver, serve_process(index, env=otel_env(receiver)) as (_, url):
        body = {"model": "auto", "messages": ASK_WEATHER, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as raw:
            assert raw.status_code == 200
            list(raw.iter_lines())
        assert post(url, {"model": "auto", "messages": ASK_WEATHER}).status_code == 200
        assert httpx.get(url + "/nowhere").status_code == 404
        spans = receiver.wait_for(7)
    servers = [s for s in spans if s.kind == SERVER]
    assert sorted(s.name for s in servers) == ["GET", *["POST /v1/chat/completions"] * 2]
    assert len({s.trace_id for s in servers}) == 3
    assert all(s.parent_id == "" for s in servers)  # roots: no traceparent came
    streamed = [
        s for s in spans if s.name == "chat weather-model" and s.attributes["semroute.stream"]
    ]
    [stream_span] = streamed
    assert stream_span.attributes["gen_ai.usage.output_tokens"] > 0  # ended with the stream


def test_cascade_and_judge_steps_are_spans(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("judge", "REJECT")
    data = quality_spec(
        provider, tmp_path, extract={"cascade": ["cheap", "strong"], "accept": {"judge": "judge"}}
    )
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "routes.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    build_index(routes, tmp_path / "index", encoder=FakeEncoder())
    index = tmp_path / "index"
    with OtlpReceiver() as receiver, serve_process(index, env=otel_env(receiver)) as (_, url):
        ask = {"model": "auto", "messages": [{"role": "user", "content": EXTRACT}]}
        answer = post(url, ask)
        assert answer.headers["x-semroute-model"] == "strong"
        spans = receiver.wait_for(6)
    server = by_name(spans, "POST /v1/chat/completions")
    check = by_name(spans, "semroute.cascade.check")
    assert check.parent_id == server.span_id
    assert check.attributes["semroute.cascade.model"] == "cheap"
    assert check.attributes["semroute.cascade.verdict"] == "rejected"
    judge = by_name(spans, "chat judge")
    assert judge.parent_id == check.span_id and judge.kind == CLIENT
    assert judge.attributes["semroute.purpose"] == "judge"
    assert judge.attributes["gen_ai.usage.input_tokens"] > 0
    assert [s.name for s in spans if s.name in ("chat cheap", "chat strong")] == [
        "chat cheap",
        "chat strong",
    ]


ROUTE_ONE = """
import sys
from semroute import Router
router = Router.load(sys.argv[1])
router.route("will it rain today")
router.route([{"role": "user", "content": "hello there"}])
print(sys.modules.get("opentelemetry") is not None)
"""


def _route_in_a_process(index: Path, env: dict[str, str], prelude: str = "") -> tuple[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", prelude + ROUTE_ONE, str(index)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip(), done.stderr


def test_without_the_variables_opentelemetry_is_never_imported(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider)
    assert _route_in_a_process(index, {}) == ("False", "")
    with OtlpReceiver() as receiver:
        off = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SDK_DISABLED": "true"}
        assert _route_in_a_process(index, off)[0] == "False"
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        assert _route_in_a_process(index, on)[0] == "True"
        assert [s.name for s in receiver.wait_for(2)] == ["semroute.route"] * 2
        assert receiver.posts >= 1


def test_the_variables_without_the_extra_are_one_warning(
    tmp_path: Path, provider: FakeProvider
) -> None:
    index = build(tmp_path, provider)
    hide = "import sys\nsys.modules['opentelemetry'] = None\n"  # as if not installed
    out, err = _route_in_a_process(index, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, hide)
    assert out == "False"
    assert err.count("pip install 'semroute[otel]'") == 1


@pytest.mark.parametrize("sampler", ["always_off"])
def test_the_sampler_variable_is_honoured(
    tmp_path: Path, provider: FakeProvider, sampler: str
) -> None:
    index = build(tmp_path, provider)
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": sampler}
        assert _route_in_a_process(index, env)[0] == "True"
        assert receiver.spans == []
