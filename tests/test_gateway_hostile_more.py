"""What a hostile client found at the gateway's edges, each through a real gateway with the
official clients: two different keys in one request, messages OpenAI would refuse, validation
messages that name the field (and OpenAI's ``param``) without pydantic's union branches,
integers no upstream parses, Anthropic's error types, unreadable rate counts in Redis, and the
headers each kind of response carries. Never a traceback in the server's log."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis as redis_py

from semroute.server.anthropic import anthropic_error
from semroute.server.errors import ApiError
from semroute.server.headers import MAX_HINT, hint
from semroute.server.spend import key_id
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build
from tests.provider_kit import KEY, KEY_ENV
from tests.redis_kit import running_redis

APP_KEY = "sk-hostile-app-4e1f0c"
TPM_KEY = "sk-hostile-tpm-9a27d3"
PIN_KEY = "sk-hostile-pin-51b8e0"
MAX_BODY = 4096
SERVER: dict[str, Any] = {
    "keys": [
        "os.environ/HOSTILE_APP_KEY",
        {"key": "os.environ/HOSTILE_TPM_KEY", "tpm": 1000},
        {"key": "os.environ/HOSTILE_PIN_KEY", "models": ["backup"]},
    ],
    "max_body_bytes": MAX_BODY,
}
ENV = {"HOSTILE_APP_KEY": APP_KEY, "HOSTILE_TPM_KEY": TPM_KEY, "HOSTILE_PIN_KEY": PIN_KEY}
RULES = [{"name": "no-secrets", "when": {"text_matches": "(?i)password"}, "action": "block"}]
HELLO: Any = [{"role": "user", "content": "hello there"}]
ROUTED = ("route", "model", "reason", "rule", "confidence", "skipped")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, FakeProvider]]:
    """One gateway for the module (its keys, a block rule, a 4 KiB body limit)."""
    with pytest.MonkeyPatch.context() as env, FakeProvider() as provider:
        for name, value in {**ENV, KEY_ENV: KEY}.items():
            env.setenv(name, value)
        env.delenv("SEMROUTE_LOG", raising=False)
        folder = tmp_path_factory.mktemp("hostile")
        with Served(build(folder, provider, server=SERVER, rules=RULES)) as served:
            yield served, provider


@pytest.fixture
def gateway(running: tuple[Served, FakeProvider]) -> Served:
    return running[0]


@pytest.fixture
def provider(running: tuple[Served, FakeProvider]) -> FakeProvider:
    return running[1]


@pytest.fixture(autouse=True)
def no_traceback(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The server's log (semroute's and uvicorn's) holds no traceback after the test."""
    uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate to the root logger
    uvicorn_log.addHandler(caplog.handler)
    try:
        yield
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


def openai_client(served: Served, key: str = APP_KEY, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0, **kw)


def anthropic_client(served: Served, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("api_key", APP_KEY)
    return anthropic.Anthropic(base_url=served.url, max_retries=0, **kw)


def chat_error(served: Served, body: dict[str, Any]) -> openai.BadRequestError:
    """The 400 the official client raises for ``body`` (sent as it is, through extra_body)."""
    with openai_client(served) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    return caught.value


def messages_error(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    """The error of a Messages API 400 for ``body``, as Anthropic's client reads it."""
    with anthropic_client(served) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**body)
    error: Any = caught.value.body
    assert error["type"] == "error"
    return dict(error["error"])


def semroute_headers(response: httpx.Response) -> set[str]:
    return {k.removeprefix("x-semroute-") for k in response.headers if k.startswith("x-semroute-")}


# --- 1. two different keys ------------------------------------------------------------------


def test_two_different_keys_in_one_request_are_401(gateway: Served, provider: FakeProvider) -> None:
    reached = len(provider.requests)
    conflict = "the request carries two different API keys"
    with (
        openai_client(gateway, default_headers={"x-api-key": "sk-wrong"}) as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.chat.completions.create(model="auto", messages=HELLO)
    body: Any = caught.value.body
    assert body["message"] == (
        "the request carries two different API keys (in its Authorization and x-api-key "
        "headers); send one key, as `Authorization: Bearer KEY` or `x-api-key: KEY` (the same "
        "key in both is fine)"
    )
    assert (body["type"], body["code"], body["param"]) == (
        "authentication_error",
        "invalid_api_key",
        None,
    )
    url = gateway.url + "/v1/chat/completions"
    chat = {"model": "auto", "messages": HELLO}
    for headers in (
        [("authorization", f"Bearer {APP_KEY}"), ("authorization", "Bearer sk-wrong")],
        [("authorization", "Bearer sk-wrong"), ("authorization", f"Bearer {APP_KEY}")],
        [("authorization", "Bearer sk-wrong"), ("x-api-key", APP_KEY)],
        [("api-key", APP_KEY), ("x-api-key", TPM_KEY)],  # two valid keys: still two
    ):
        response = httpx.post(url, json=chat, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["message"].startswith(conflict)
    # The Messages API: Anthropic's shape.
    wrong = {"x-api-key": "sk-wrong"}  # besides the client's own key
    with (
        anthropic_client(gateway, default_headers=wrong) as client,
        pytest.raises(anthropic.AuthenticationError) as refused,
    ):
        client.messages.create(model="auto", max_tokens=20, messages=HELLO)
    error: Any = refused.value.body
    assert error["error"]["type"] == "authentication_error"
    assert error["error"]["message"].startswith(conflict)
    assert len(provider.requests) == reached  # nothing reached a model


def test_the_same_key_in_two_headers_is_one_key(gateway: Served) -> None:
    with anthropic_client(gateway, default_headers={"x-api-key": APP_KEY}) as client:
        message = client.messages.create(model="auto", max_tokens=20, messages=HELLO)
    assert message.content[0].type == "text"
    chat = {"model": "auto", "messages": HELLO}
    same = [("authorization", f"Bearer {APP_KEY}"), ("authorization", f"Bearer {APP_KEY}")]
    for headers in (same, [("authorization", f"Bearer {APP_KEY}"), ("x-api-key", APP_KEY)]):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=chat, headers=headers)
        assert response.status_code == 200, response.text


# --- 2. a message's structure ---------------------------------------------------------------


def test_a_tool_message_needs_its_call_id_and_a_users_message_its_content(
    gateway: Served, provider: FakeProvider
) -> None:
    reached = len(provider.requests)
    tool = [*HELLO, {"role": "tool", "content": "hi"}]
    error = chat_error(gateway, {"model": "auto", "messages": tool})
    assert error.param == "messages[1].tool_call_id"
    assert error.body["message"] == (  # type: ignore[index]
        "messages[1].tool_call_id: is required on a tool message (the id of the tool call it "
        "answers)"
    )
    assert (error.type, error.code) == ("invalid_request_error", "invalid_request")
    for role in ("user", "system", "developer", "tool"):
        message = {"role": role, "content": None, "tool_call_id": "call_1"}
        error = chat_error(gateway, {"model": "auto", "messages": [message]})
        assert error.param == "messages[0].content"
        assert error.body["message"] == (  # type: ignore[index]
            f"messages[0].content: is required on a {role} message: a string or a list of "
            "content parts, not null"
        )
    left_out = chat_error(gateway, {"model": "auto", "messages": [*HELLO, {"role": "user"}]})
    assert left_out.param == "messages[1].content"
    assert len(provider.requests) == reached


def test_an_agents_turns_and_any_content_part_type_still_pass(
    gateway: Served, provider: FakeProvider
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    # A part type OpenAI does not define (vLLM's video_url) goes to the model as it is.
    video = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}
    messages: Any = [
        {"role": "user", "content": [{"type": "text", "text": "hello there"}, video]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    with openai_client(gateway) as client:
        answer = client.chat.completions.create(model="auto", messages=messages)
    assert answer.choices[0].message.content
    sent = provider.requests[-1].body["messages"]
    assert sent[0]["content"][1] == video
    assert sent[2]["tool_call_id"] == "call_1"


# --- 3. hint headers (the rule that failed) -------------------------------------------------


def test_a_hint_header_says_which_rule_it_breaks() -> None:
    # Starlette reads header bytes as latin-1: UTF-8 "débogage☃" arrives as "dÃ©bogageâ\x98\x83".
    utf8 = "débogage☃".encode().decode("latin-1")
    with pytest.raises(ApiError) as caught:
        hint({"x-task-type": utf8}, "x-task-type")
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
    assert caught.value.message == (
        "header x-task-type: should be printable ASCII text (letters, digits, punctuation, "
        "spaces); byte 2 is 0xc3"
    )
    # Latin-1 text that reads as printable (UTF-8 "é" read as "Ã©") is refused too: it would
    # match no rule.
    with pytest.raises(ApiError, match="printable ASCII"):
        hint({"x-task-type": "débogage".encode().decode("latin-1")}, "x-task-type")
    with pytest.raises(ApiError) as long:
        hint({"x-user-tier": "a" * (MAX_HINT + 1)}, "x-user-tier")
    assert long.value.message == "header x-user-tier: should be at most 200 characters, not 201"
    assert hint({"x-task-type": "  debugging "}, "x-task-type") == "debugging"
    assert hint({"x-task-type": "   "}, "x-task-type") is None
    assert hint({}, "x-task-type") is None


def test_the_gateway_refuses_a_hint_header_naming_the_rule(gateway: Served) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
    auth = {"Authorization": f"Bearer {APP_KEY}"}
    for path in ("/v1/chat/completions", "/v1/route"):
        refused = httpx.post(
            gateway.url + path,
            json=body,
            headers={**auth, "X-Task-Type": "d\u00e9bogage".encode()},  # UTF-8 bytes
            timeout=30,
        )
        assert refused.status_code == 400, path
        error = refused.json()["error"]
        assert error["message"] == (
            "header x-task-type: should be printable ASCII text (letters, digits, punctuation, "
            "spaces); byte 2 is 0xc3"
        )
    kept = httpx.post(
        gateway.url + "/v1/route", json=body, headers={**auth, "X-Task-Type": "qa"}, timeout=30
    )
    assert kept.status_code == 200 and kept.json()["signals"]["task"] == "qa"


# --- 5. Anthropic's error types -------------------------------------------------------------


def test_no_client_error_on_the_messages_api_is_typed_api_error(gateway: Served) -> None:
    auth = {"x-api-key": APP_KEY}
    for method, path in (("GET", "/v1/messages"), ("PUT", "/v1/messages/count_tokens")):
        response = httpx.request(method, gateway.url + path, headers=auth)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json() == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": f"{method} is not allowed on {path}",
            },
        }
    rain: Any = [{"role": "user", "content": "will it rain today"}]
    secret: Any = [{"role": "user", "content": "my password is hunter2"}]
    cases: list[tuple[int, str, dict[str, Any], Any]] = [
        (400, "invalid_request_error", auth, {"model": "auto", "messages": rain}),
        (401, "authentication_error", {"x-api-key": "sk-wrong"}, {}),
        (403, "permission_error", auth, {"model": "auto", "max_tokens": 9, "messages": secret}),
        (403, "permission_error", {"x-api-key": PIN_KEY}, {"model": "frontier", "max_tokens": 9}),
        (413, "request_too_large", auth, "x" * (MAX_BODY + 1)),
        (429, "rate_limit_error", {"x-api-key": TPM_KEY}, {"model": "auto", "max_tokens": 5000}),
    ]
    for status, kind, headers, body in cases:
        if isinstance(body, dict):
            body = json.dumps({"messages": rain, **body})
        response = httpx.post(gateway.url + "/v1/messages", content=body, headers=headers)
        assert (response.status_code, response.json()["error"]["type"]) == (status, kind)
    missing = httpx.post(gateway.url + "/v1/messages/batches", headers=auth)
    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "not_found_error")
    # Every other status: a 4xx is the client's (invalid_request_error), a 5xx the server's.
    for status in range(400, 600):
        kind = anthropic_error(status, "x")["error"]["type"]
        assert (kind == "api_error") == (status >= 500 and status not in (503, 504, 529))


# --- 6, 7 and 8: messages name the field, once, as OpenAI's param ---------------------------


@pytest.mark.parametrize(
    ("field", "value", "param", "message"),
    [
        (
            "api_base",
            "http://evil",
            "api_base",
            "is not a chat-completions field this gateway accepts",
        ),
        ("temperature", "hot", "temperature", "Input should be a valid number"),
        ("tool_choice", 5, "tool_choice", "should be a string or an object"),
        ("function_call", [1], "function_call", "should be a string or an object"),
        ("stop", 5, "stop", "should be a string or a list of strings"),
        ("stop", [5], "stop[0]", "Input should be a valid string"),
        ("max_tokens", 10**29, "max_tokens", "Input should be less than or equal to 2147483647"),
        (
            "max_completion_tokens",
            2**31,
            "max_completion_tokens",
            "Input should be less than or equal to 2147483647",
        ),
        ("seed", 10**29, "seed", "Input should be less than or equal to 9223372036854775807"),
        (
            "seed",
            -(2**63) - 1,
            "seed",
            "Input should be greater than or equal to -9223372036854775808",
        ),
        ("top_logprobs", 2**40, "top_logprobs", "Input should be less than or equal to 2147483647"),
    ],
)
def test_a_bad_field_is_one_line_naming_it_and_its_param(
    gateway: Served, field: str, value: Any, param: str, message: str
) -> None:
    error = chat_error(gateway, {"model": "auto", "messages": HELLO, "extra_body": {field: value}})
    assert error.body["message"] == f"{param}: {message}"  # type: ignore[index]
    assert error.param == param
    assert (error.type, error.code) == ("invalid_request_error", "invalid_request")


@pytest.mark.parametrize(
    ("messages", "param", "message"),
    [
        ([{"content": "hi"}], "messages[0].role", "Field required"),
        (
            [{"role": "user", "content": 5}],
            "messages[0].content",
            "should be a string or a list of content parts (objects)",
        ),
        ([{"role": "user", "content": [5]}], "messages[0].content[0]", "Input should be an object"),
    ],
)
def test_a_bad_message_names_its_place(
    gateway: Served, messages: Any, param: str, message: str
) -> None:
    error = chat_error(gateway, {"model": "auto", "messages": messages})
    assert error.body["message"] == f"{param}: {message}"  # type: ignore[index]
    assert error.param == param


def test_a_body_that_is_not_json_blames_no_field(gateway: Served) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {APP_KEY}"},
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] is None
    assert error["message"].startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("system", 5, "system: should be a string or a list of text blocks"),
        ("max_tokens", 10**29, "max_tokens: Input should be less than or equal to 2147483647"),
        (
            "messages",
            [{"role": "user", "content": 5}],
            "messages[0].content: should be a string or a list of content blocks",
        ),
        (
            "messages",
            [{"role": "user", "content": [{"type": "text"}]}],
            "messages[0].content[0].text: Field required",
        ),
        (
            "messages",
            [{"role": "user", "content": [{"type": "document", "source": {}}]}],
            "messages[0].content[0].type: should be one of 'text', 'image', 'tool_use', "
            "'tool_result', 'thinking', 'redacted_thinking', not 'document'",
        ),
        (
            "messages",
            [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}],
                }
            ],
            "messages[0].content[0].content: should be a string or a list of text and image blocks",
        ),
    ],
)
def test_a_bad_messages_field_is_one_line_without_union_branches(
    gateway: Served, field: str, value: Any, message: str
) -> None:
    body = {"model": "auto", "max_tokens": 50, "messages": HELLO, field: value}
    raw = httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": APP_KEY})
    assert raw.status_code == 400
    assert raw.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_realistic_integers_reach_the_model_unchanged(
    gateway: Served, provider: FakeProvider
) -> None:
    with openai_client(gateway) as client:
        for seed in (2**63 - 1, -(2**63), 0):
            client.chat.completions.create(
                model="auto", messages=HELLO, seed=seed, max_completion_tokens=128_000
            )
            sent = provider.requests[-1].body
            assert sent["seed"] == seed
    with anthropic_client(gateway) as messages:
        messages.messages.create(model="auto", max_tokens=20_000, messages=HELLO)
    assert provider.requests[-1].body["max_tokens"] == 20_000


# --- 4. an unreadable rate count in Redis ---------------------------------------------------


LIMITED_KEY = "sk-hostile-limited-0c4d"
UNREADABLE: list[tuple[str, Any]] = [
    ("requests", "garbage"),
    ("tokens", "1.5"),  # a number INCRBY cannot add to
    ("tokens", ["a list"]),  # a key of another type
    ("requests", "99999999999999999999"),  # past a 64-bit integer
]


def spoil(store: redis_py.Redis, count: str, garbage: Any) -> None:
    """Put ``garbage`` at the key's ``count`` of this minute and the next (a request sent at a
    minute's end is counted in the next)."""
    store.flushdb()
    minute = int(time.time() // 60)
    for m in (minute, minute + 1):
        key = f"semroute:rate:{key_id(LIMITED_KEY)}:{m}:{count}"
        if isinstance(garbage, list):
            store.rpush(key, *garbage)
        else:
            store.set(key, garbage)


def test_an_unreadable_rate_count_names_the_count_it_could_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {KEY_ENV: KEY, "HOSTILE_LIMITED_KEY": LIMITED_KEY}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
    with running_redis() as redis, FakeProvider() as provider:
        monkeypatch.setenv("HOSTILE_REDIS_URL", redis.url)
        server = {
            "keys": [{"key": "os.environ/HOSTILE_LIMITED_KEY", "rpm": 100, "tpm": 100_000}],
            "redis_url": "os.environ/HOSTILE_REDIS_URL",
        }
        store = redis_py.Redis.from_url(redis.url)
        with (
            Served(build(tmp_path, provider, server=server)) as served,
            openai_client(served, LIMITED_KEY) as client,
        ):
            client.chat.completions.create(model="auto", messages=HELLO)  # counted in Redis
            for count, garbage in UNREADABLE:
                spoil(store, count, garbage)
                with pytest.raises(openai.RateLimitError) as caught:
                    client.chat.completions.create(model="auto", messages=HELLO)
                body: Any = caught.value.body
                assert (body["type"], body["code"]) == (count, "rate_limit_exceeded"), garbage
                assert body["message"] == (
                    f"the count of {count} per minute of the API key HOSTILE_LIMITED_KEY cannot "
                    "be read (the server log says why); its requests are refused until it can"
                )
        store.close()
        assert provider.hits("frontier") == 1
    assert "cannot be read" in caplog.text


# --- 9. which headers come on which response ------------------------------------------------


def test_each_kind_of_response_carries_the_headers_the_readme_names(gateway: Served) -> None:
    url = gateway.url + "/v1/chat/completions"
    auth = {"authorization": f"Bearer {APP_KEY}"}
    answer = httpx.post(url, json={"model": "auto", "messages": HELLO}, headers=auth)
    assert answer.status_code == 200
    assert semroute_headers(answer) >= {"request-id", *ROUTED, "fallbacks", "cost-usd"}
    secret = [{"role": "user", "content": "my password is hunter2"}]
    blocked = httpx.post(url, json={"model": "auto", "messages": secret}, headers=auth)
    assert blocked.status_code == 403  # refused after routing: the decision's headers
    assert semroute_headers(blocked) >= {"request-id", *ROUTED, "fallbacks"}
    route = httpx.post(gateway.url + "/v1/route", json={"messages": HELLO}, headers=auth)
    assert semroute_headers(route) == {"request-id", *ROUTED}
    before_routing = [
        httpx.post(url, json={"model": "auto", "messages": []}, headers=auth),  # 400
        httpx.post(url, json={"model": "nope", "messages": HELLO}, headers=auth),  # 400
        httpx.post(url, json={"model": "auto", "messages": HELLO}),  # 401
        httpx.post(  # 403 model_not_allowed
            url,
            json={"model": "frontier", "messages": HELLO},
            headers={"authorization": f"Bearer {PIN_KEY}"},
        ),
        httpx.post(url, content=b"x" * (MAX_BODY + 1), headers=auth),  # 413
    ]
    assert [r.status_code for r in before_routing] == [400, 400, 401, 403, 413]
    for response in before_routing:
        assert semroute_headers(response) == {"request-id"}, response.text
    assert declared_too_large(gateway, "/v1/chat/completions") == {"request-id"}
    # A request whose estimate alone is over the key's tpm: a 429 with no Retry-After.
    with (
        openai_client(gateway, TPM_KEY) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.chat.completions.create(model="auto", messages=HELLO, max_tokens=5000)
    assert "retry-after" not in caught.value.response.headers
    assert semroute_headers(caught.value.response) == {"request-id"}
    count = httpx.post(
        gateway.url + "/v1/messages/count_tokens",
        json={"model": "auto", "messages": HELLO},
        headers={"x-api-key": APP_KEY},
    )
    assert count.status_code == 200 and semroute_headers(count) == set()


def declared_too_large(served: Served, path: str) -> set[str]:
    """The x-semroute-* headers of the 413 for a body declared over the limit (never sent)."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {APP_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {MAX_BODY * 100}\r\n\r\n".encode()
        )
        head = conn.recv(65536).decode("latin-1").split("\r\n\r\n", 1)[0].lower()
    assert head.startswith("http/1.1 413"), head
    lines = [line.split(":", 1)[0] for line in head.split("\r\n")[1:]]
    return {n.removeprefix("x-semroute-") for n in lines if n.startswith("x-semroute-")}
