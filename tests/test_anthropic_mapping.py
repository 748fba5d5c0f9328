"""The Messages API's mapping, piece by piece: a request onto chat completions (images, tool
results, structured output), a completion with tool calls back to Anthropic's blocks, and a
streamed tool call as Anthropic's events, accumulated by the official client's own code."""

from __future__ import annotations

import asyncio
import json
import re
import types
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from litellm.types.utils import ModelResponse, ModelResponseStream

from semroute.server.anthropic import MessageEvents, message_of
from semroute.server.anthropic_schemas import MessagesRequest, to_chat
from semroute.server.errors import ApiError


def request(**body: Any) -> MessagesRequest:
    base: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return MessagesRequest.model_validate({**base, **body})


def test_a_request_maps_onto_chat_completions() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
    }
    chat = to_chat(
        request(
            system="Be brief.",
            metadata={"user_id": "u-1"},
            tool_choice={"type": "any"},
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": True,
                            "content": [{"type": "text", "text": "no such city"}, image],
                        },
                        {"type": "text", "text": "and this?"},
                    ],
                }
            ],
        )
    )
    assert chat["user"] == "u-1"
    assert chat["tool_choice"] == "required"
    assert chat["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "tool", "tool_call_id": "t1", "content": "Error: no such city"},
        {
            "role": "user",
            "content": [  # the tool result's image, then the turn's text
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "and this?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"output_config": {"format": {"type": "text"}}}, "output_config.format"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}
                ]
            },
            "messages[0].content[0].source",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_what_cannot_map_is_refused_naming_it(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as caught:
        to_chat(request(**body))
    assert caught.value.status == 400
    assert caught.value.message.startswith(field + ":")


def test_tool_calls_come_back_as_tool_use_blocks() -> None:
    response = ModelResponse(
        choices=[
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "forecast", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
            }
        ],
        usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    )
    message = message_of(response, "msg_x", "frontier")
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "forecast", "input": {"city": "Oslo"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ModelResponseStream:
    return ModelResponseStream(
        choices=[{"index": 0, "delta": delta, "finish_reason": finish}], **extra
    )


def test_a_streamed_tool_call_accumulates_into_anthropics_message() -> None:
    sent: list[bytes] = []

    async def send(message: Any) -> None:
        sent.append(message.get("body", b""))

    stream: Any = types.SimpleNamespace(model="frontier", request_id="r1")
    events = MessageEvents(stream, {}, usage=True, done=None)  # type: ignore[arg-type]
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "forecast", "arguments": ""},
    }
    chunks = [
        _chunk({"role": "assistant", "content": "Let me look."}),
        _chunk({"tool_calls": [call]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        _chunk({}, "tool_calls"),
        _chunk({}, usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}),
    ]

    async def run() -> None:
        for chunk in chunks:
            await events._send_chunk(send, chunk)
        await events._end(send, None)

    asyncio.run(run())
    events_sent = b"".join(sent).split(b"\n\n")
    payloads = [json.loads(e.split(b"data: ", 1)[1]) for e in events_sent if e]
    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for payload in payloads:
        if payload["type"] != "ping":
            snapshot = accumulate_event(event=payload, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot.id == "msg_r1" and snapshot.model == "frontier"
    assert [b.type for b in snapshot.content] == ["text", "tool_use"]
    assert snapshot.content[0].text == "Let me look."
    assert snapshot.content[1].name == "forecast"
    assert snapshot.content[1].input == {"city": "Oslo"}
    assert snapshot.stop_reason == "tool_use"
    assert snapshot.usage.output_tokens == 4


def test_what_one_chunk_makes_and_the_streams_end_are_one_message_each() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def raw() -> Any:
        yield _chunk({"role": "assistant", "content": "Hi"})
        yield _chunk({}, "stop")  # makes no event of its own

    stream: Any = types.SimpleNamespace(model="frontier", request_id="r1", raw=raw)
    events = MessageEvents(stream, {}, usage=True, done=None)  # type: ignore[arg-type]
    asyncio.run(events._pump(send, raw()))
    kinds = [re.findall(rb"^event: (\w+)", m["body"], re.M) for m in sent]
    assert kinds == [
        [b"message_start", b"ping", b"content_block_start", b"content_block_delta"],
        [b"content_block_stop", b"message_delta", b"message_stop"],
    ]
    assert [m["more_body"] for m in sent] == [True, False]  # the last one ends the body
