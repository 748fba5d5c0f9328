"""PII and secret signals through the gateway, with the official `openai` client: a rule that
tests `pii` blocks or routes, `redact:` replaces matches before the request leaves (checked by
what the FakeProvider received, streamed or not), a redact-only rule lets routing go on, and
the log holds kinds and counts, never the values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, log_lines

pytestmark = pytest.mark.usefixtures("provider_key")

CARD = "4111 1111 1111 1111"
EMAIL = "ana.lopez@example.com"
EMPLOYEE = "E123456"
KEY = "sk-proj-Zq8XbN2mV7pL4kR9tY6wA1sD3fG5hJ0c"
RULES: list[dict[str, Any]] = [
    {"name": "no-keys", "when": {"pii": {"any": ["api_key", "private_key"]}}, "action": "block"},
    {
        "name": "scrub",
        "when": {"pii": {"any": ["email", "employee_id"]}},
        "redact": ["email", "employee_id"],
    },
    {"name": "cards", "when": {"pii": "credit_card"}, "model": "backup", "redact": ["credit_card"]},
]
ROUTER = {"pii": {"detectors": {"employee_id": r"\bE\d{6}\b"}}}


@pytest.fixture
def gateway(tmp_path: Path, provider: FakeProvider) -> Iterator[Served]:
    index = build(tmp_path, provider, rules=RULES, router=ROUTER, server={})
    with Served(index) as served:
        yield served


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def sent_text(provider: FakeProvider) -> str:
    """Everything the last request to the provider carried in its messages."""
    return json.dumps(provider.requests[-1].body["messages"])


def test_redact_only_rule_scrubs_and_lets_the_route_decide(
    gateway: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    messages: Any = [
        {"role": "system", "content": f"The user is {EMPLOYEE}."},
        {"role": "user", "content": f"write to {EMAIL} or {EMAIL}"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "will it rain today"},
    ]
    with client(gateway) as c:
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert raw.headers["x-semroute-route"] == "weather"  # routing went on past the rule
    assert raw.headers["x-semroute-model"] == "weather-model"
    sent = sent_text(provider)
    assert EMAIL not in sent and EMPLOYEE not in sent
    assert "write to [EMAIL] or [EMAIL]" in sent and "The user is [EMPLOYEE_ID]." in sent
    line = log_lines(tmp_path)[-1]
    assert line["redacted"] == {"email": 2, "employee_id": 1}
    assert line["signals"]["pii"] == ["email", "employee_id"]
    assert line["rule"] is None
    assert EMAIL not in json.dumps(line) and EMPLOYEE not in json.dumps(line)


def test_a_rule_routes_and_redacts_a_stream(gateway: Served, provider: FakeProvider) -> None:
    messages: Any = [{"role": "user", "content": f"charge card {CARD} please"}]
    with (
        client(gateway) as c,
        c.chat.completions.with_streaming_response.create(
            model="auto", messages=messages, stream=True
        ) as raw,
    ):
        assert raw.headers["x-semroute-rule"] == "cards"
        assert raw.headers["x-semroute-model"] == "backup"
        text = "".join(raw.iter_text())
    assert "[DONE]" in text
    assert provider.requests[-1].model == "backup"
    assert provider.requests[-1].stream
    sent = sent_text(provider)
    assert CARD not in sent and "charge card [CREDIT_CARD] please" in sent


def test_a_pinned_request_is_redacted_too(gateway: Served, provider: FakeProvider) -> None:
    messages: Any = [{"role": "user", "content": f"hello {EMAIL}"}]
    with client(gateway) as c:
        c.chat.completions.create(model="frontier", messages=messages)
    assert provider.requests[-1].model == "frontier"
    assert EMAIL not in sent_text(provider)


def test_a_secret_is_blocked_and_no_model_is_called(
    gateway: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    messages: Any = [{"role": "user", "content": f"why is {KEY} refused?"}]
    with client(gateway) as c, pytest.raises(openai.PermissionDeniedError) as caught:
        c.chat.completions.create(model="auto", messages=messages)
    assert "no-keys" in str(caught.value)
    assert provider.requests == []
    line = log_lines(tmp_path)[-1]
    assert line["signals"]["pii"] == ["api_key"]
    assert KEY not in json.dumps(line)


def test_look_alikes_are_not_redacted(gateway: Served, provider: FakeProvider) -> None:
    text = "order 4111111111111112, build 2024-01-15, v1.2.3.4, id 123e4567-e89b-12d3-a456-426614174000"
    with client(gateway) as c:
        c.chat.completions.create(model="auto", messages=[{"role": "user", "content": text}])
    assert provider.requests[-1].body["messages"][-1]["content"] == text


def test_a_messages_api_request_is_redacted_the_same_way(
    gateway: Served, provider: FakeProvider
) -> None:
    blocks: Any = [
        {"type": "tool_result", "tool_use_id": "t1", "content": f"card on file: {CARD}"},
        {"type": "text", "text": f"send the receipt to {EMAIL}"},
    ]
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        c.messages.create(
            model="auto",
            max_tokens=20,
            system=f"Agent {EMPLOYEE}.",
            messages=[{"role": "user", "content": blocks}],
        )
    assert provider.requests[-1].model == "backup"  # the cards rule decided
    sent = sent_text(provider)
    assert CARD not in sent and EMAIL not in sent and EMPLOYEE not in sent
    assert "card on file: [CREDIT_CARD]" in sent and "[EMAIL]" in sent


def test_the_python_api_redacts_too(tmp_path: Path, provider: FakeProvider) -> None:
    from semroute import Dispatcher, Router

    router = Router.load(build(tmp_path, provider, rules=RULES, router=ROUTER))
    with Dispatcher.for_index(router.index) as dispatcher:
        result = dispatcher.complete(f"badge {EMPLOYEE}, mail {EMAIL}", router=router)
    assert result.decision.redact == ("email", "employee_id")
    assert sent_text(provider) == json.dumps(
        [{"role": "user", "content": "badge [EMPLOYEE_ID], mail [EMAIL]"}]
    )
