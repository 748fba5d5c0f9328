"""Properties of the gateway's HTTP surface under hostile bodies, headers and numbers: never a
500, every error in OpenAI's shape, and never a change to any model's breaker from a client's
error. (Pinned model names are covered in their own suite.)"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semroute.testing import FakeProvider
from tests.fuzz_support import INVISIBLE, LONE_SURROGATES, fuzz, hostile_text
from tests.gateway_kit import Served, build

pytestmark = pytest.mark.usefixtures("provider_key")

MODELS = ("frontier", "weather-model", "backup", "last-resort")
DOCUMENTED = {200, 400, 402, 403, 413, 502, 504}
ASK_WEATHER = [{"role": "user", "content": "will it rain today"}]
NUMERIC = ("temperature", "top_p", "frequency_penalty", "presence_penalty")

# A number as the client writes it: any float Python prints (NaN and Infinity included, which
# Python's json writes and reads), or a literal too large for a float.
numbers = st.floats().map(json.dumps) | st.sampled_from(
    ["1e400", "-1e400", "1E999", "-0.0", "1e-400", "123456789012345678901234567890"]
)
places = st.sampled_from(
    [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("frequency_penalty", "frequency_penalty"),
        ("tools", "tools[0].function.parameters.minimum"),
        ("messages", "messages[0].score"),
        ("response_format", "response_format.json_schema.x[0]"),
    ]
)


def body_with(place: str, number: str) -> str:
    """A chat body (as text) with ``number`` written, unchanged, at ``place``."""
    token = "__NUMBER__"
    body: dict[str, Any] = {"model": "auto", "messages": ASK_WEATHER}
    if place in NUMERIC:
        body[place] = token
    elif place == "tools":
        fn = {"name": "f", "parameters": {"type": "object", "minimum": token}}
        body["tools"] = [{"type": "function", "function": fn}]
    elif place == "messages":
        body["messages"] = [{**ASK_WEATHER[0], "score": token}]
    else:
        body["response_format"] = {"type": "json_schema", "json_schema": {"x": [token]}}
    return json.dumps(body).replace(f'"{token}"', number)


def finite(number: str) -> bool:
    return math.isfinite(json.loads(number))


@pytest.fixture
def served(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    with Served(build(tmp_path, provider)) as gateway:
        yield gateway


def post(http: httpx.Client, served: Served, raw: bytes, path: str, **kw: Any) -> httpx.Response:
    headers = {"content-type": "application/json", **kw.get("headers", {})}
    return http.post(served.url + path, content=raw, headers=headers)


def check_shape(response: httpx.Response) -> None:
    assert response.status_code in DOCUMENTED, (response.status_code, response.text[:500])
    if response.status_code != 200:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and "\n" not in error["message"]
        assert "Traceback" not in response.text


def breakers(served: Served) -> dict[str, float]:
    prefix = "semroute_breaker_state{model="
    lines = httpx.get(served.url + "/metrics").text.splitlines()
    return {
        line[len(prefix) + 1 : line.index('"}')]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix)
    }


def assert_untouched(served: Served, provider: FakeProvider) -> None:
    """Every breaker closed, and the routed model still answers an ordinary request itself."""
    assert breakers(served) == dict.fromkeys(MODELS, 0.0)
    provider.answer("weather-model")
    answer = httpx.post(
        served.url + "/v1/chat/completions",
        json={"model": "auto", "messages": ASK_WEATHER},
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["x-semroute-model"] == "weather-model"
    assert answer.headers["x-semroute-fallbacks"] == ""
    assert answer.headers.get("x-semroute-skipped", "") == ""


def test_any_number_anywhere_is_answered_or_a_400_naming_it(
    served: Served, provider: FakeProvider
) -> None:
    with httpx.Client(timeout=60) as http:

        @fuzz(60)
        @given(number=numbers, place=places)
        def check(number: str, place: tuple[str, str]) -> None:
            field, where = place
            before = len(provider.requests)
            for path in ("/v1/chat/completions", "/v1/route"):
                response = post(http, served, body_with(field, number).encode(), path)
                check_shape(response)
                if finite(number):
                    assert response.status_code == 200, response.text[:500]
                else:
                    assert response.status_code == 400
                    message = response.json()["error"]["message"]
                    assert message.startswith(f"{where}: should be a finite number"), message
            if not finite(number):
                assert len(provider.requests) == before  # never sent to a model

        check()
    assert_untouched(served, provider)


strings = hostile_text | st.sampled_from(LONE_SURROGATES) | st.sampled_from(INVISIBLE)
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "weather-model", "frontier"])},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant"]), "content": strings}
            ),
            max_size=3,
        ),
        "temperature": st.floats() | strings,
        "max_tokens": st.integers(-(2**70), 2**70),
        "n": st.integers(-3, 300),
        "stop": strings | st.lists(strings, max_size=3),
        "user": strings,
        "metadata": st.dictionaries(strings, strings, max_size=3),
        "tools": st.lists(st.dictionaries(strings, strings | st.floats(), max_size=2), max_size=2),
        "stream": st.booleans(),
    },
)
headers = st.dictionaries(
    st.sampled_from(["X-Task-Type", "X-User-Tier", "X-Max-Cost-USD", "Content-Type"]),
    st.sampled_from(["nan", "inf", "-1", "1e400", "0", "1e-9", "0.05", "text/plain", ""])
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
)


def test_no_body_or_header_gives_a_500_or_moves_a_breaker(
    served: Served, provider: FakeProvider
) -> None:
    """Bodies with lone surrogates, control characters, NaN, huge integers and wrong types,
    with hostile hint headers, while the models reject malformed requests as real providers
    do (400, 422): answers or 4xx errors, never a 500, and every breaker stays closed."""
    provider.error("weather-model", status=400)
    provider.error("frontier", status=422)
    with httpx.Client(timeout=60) as http:

        @fuzz(60)
        @given(body=bodies, extra=headers)
        def check(body: dict[str, Any], extra: dict[str, str]) -> None:
            raw = json.dumps(body).encode()  # lone surrogates travel as \ud800 escapes
            for path in ("/v1/chat/completions", "/v1/route"):
                check_shape(post(http, served, raw, path, headers=extra))

        check()
    assert provider.hits("backup") == provider.hits("last-resort") == 0  # no failover
    assert_untouched(served, provider)


def test_any_bytes_in_a_message_are_answered_or_a_400(
    served: Served, provider: FakeProvider
) -> None:
    """Bytes spliced into a message's text as they are: invalid UTF-8, broken escapes (a lone
    surrogate among them), quotes and control characters."""
    head = b'{"model": "auto", "messages": [{"role": "user", "content": "'
    with httpx.Client(timeout=60) as http:

        @fuzz(40)
        @given(
            raw=st.binary(max_size=40) | st.sampled_from([b"\\ud800", b"\\udc00\\ud800", b"\\u"])
        )
        def check(raw: bytes) -> None:
            response = post(http, served, head + raw + b'"}]}', "/v1/chat/completions")
            check_shape(response)
            try:
                text = json.loads(b'"' + raw + b'"')
            except UnicodeDecodeError:
                assert response.status_code == 400
                assert " is not UTF-8" in response.json()["error"]["message"]
            except ValueError:
                pass
            else:
                if any("\ud800" <= c <= "\udfff" for c in text):
                    message = response.json()["error"]["message"]
                    assert message.startswith("messages[0].content: holds a lone UTF-16 surrogate")

        check()
    assert_untouched(served, provider)
