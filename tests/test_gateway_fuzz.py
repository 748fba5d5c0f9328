"""Hostile bodies and headers against a real gateway: every answer is a status the API
documents, in OpenAI's error shape when it is an error; never a 500, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semroute.testing import FakeProvider
from tests.fuzz_support import fuzz
from tests.gateway_kit import Served, build

pytestmark = pytest.mark.usefixtures("provider_key")

DOCUMENTED = {200, 400, 402, 403, 413, 502, 504}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]) | values},
        optional={"content": st.text(max_size=60) | values, "name": values},
    ),
    max_size=3,
)
bodies = (
    st.fixed_dictionaries(
        {"model": st.sampled_from(["auto", "frontier", "backup", "unknown-model"]) | values},
        optional={
            "messages": messages | values,
            "stream": st.booleans() | values,
            "temperature": values,
            "max_tokens": st.integers(-5, 10**6) | values,
            "tools": values,
            "tool_choice": values,
            "response_format": values,
            "metadata": values,
            "stream_options": values,
            "n": values,
            "stop": values,
            "api_base": values,
        },
    )
    | values
)
headers = st.dictionaries(
    st.sampled_from(["X-Task-Type", "X-User-Tier", "X-Max-Cost-USD"]),
    # HTTP clients refuse to send a value with whitespace at either end (RFC 9110 field-value).
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.strip),
)


def _check(response: httpx.Response, text: str) -> None:
    assert response.status_code in DOCUMENTED, (response.status_code, text[:500])
    if response.status_code == 200:
        return
    error = json.loads(text)["error"]
    assert isinstance(error["message"], str) and "\n" not in error["message"]
    assert "Traceback" not in text


def test_no_body_or_header_makes_the_gateway_fail(tmp_path: Path, provider: FakeProvider) -> None:
    with Served(build(tmp_path, provider)) as served, httpx.Client(timeout=60) as http:

        @fuzz(80)
        @given(body=bodies, extra=headers)
        def check(body: Any, extra: dict[str, str]) -> None:
            for path in ("/v1/chat/completions", "/v1/route"):
                with http.stream("POST", served.url + path, json=body, headers=extra) as response:
                    text = response.read().decode("utf-8", "replace")
                _check(response, text)

        check()
        assert httpx.get(served.url + "/healthz").status_code == 200
