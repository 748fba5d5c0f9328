"""A direct stream's chunks assembled into one answer (semroute.dispatch.chunks.Assembly),
checked against LiteLLM's own assembler on the shapes OpenAI streams."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from semroute.dispatch.chunks import Assembly, RawChunk, response_of
from semroute.dispatch.providers import import_litellm

BASE = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1700, "model": "m-1"}
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def _chunk(*choices: dict[str, Any], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**BASE, "choices": list(choices)} | ({"usage": usage} if usage else {})


def _delta(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


TEXT = [
    _chunk(_delta(role="assistant", content="")),
    _chunk(_delta(content="Sunny ")),
    _chunk(_delta(content="all day.")),
    _chunk(_delta(finish="stop")),
    _chunk({"index": 0, "delta": {}}, usage=USAGE),  # as semroute's direct client reads it
]
TWO_CHOICES = [
    _chunk(_delta(0, role="assistant", content="One"), _delta(1, role="assistant", content="Two")),
    _chunk(_delta(1, content=" more"), _delta(0, content=" more")),
    _chunk(_delta(0, finish="stop"), _delta(1, finish="length")),
    _chunk(usage=USAGE),
]
TOOLS = [
    _chunk(_delta(role="assistant", content=None)),
    _chunk(
        _delta(
            tool_calls=[
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather"}}
            ]
        )
    ),
    _chunk(_delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}])),
    _chunk(_delta(tool_calls=[{"index": 0, "function": {"arguments": '"Oslo"}'}}])),
    _chunk(
        _delta(
            tool_calls=[
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "time", "arguments": "{}"},
                }
            ]
        )
    ),
    _chunk(_delta(finish="tool_calls")),
    _chunk(usage=USAGE),
]
REFUSAL = [
    _chunk(_delta(role="assistant", refusal="I can't ")),
    _chunk(_delta(refusal="help with that.")),
    _chunk(_delta(finish="stop"), usage=USAGE),
]


def assemble(chunks: list[RawChunk]) -> dict[str, Any] | None:
    """``chunks`` taken in one by one, as a stream takes them, then the answer they make up."""
    assembly = Assembly()
    for chunk in chunks:
        assembly.add(chunk)
    return assembly.whole()


def _essentials(response: Any) -> dict[str, Any]:
    dumped = response.model_dump()
    return {
        "id": dumped["id"],
        "model": dumped["model"],
        "created": dumped["created"],
        "usage": {k: dumped["usage"][k] for k in USAGE},
        "choices": [
            {
                "index": c["index"],
                "finish_reason": c["finish_reason"],
                "role": c["message"]["role"],
                "content": c["message"]["content"],
                "tool_calls": [
                    (t["id"], t["type"], t["function"]["name"], t["function"]["arguments"])
                    for t in c["message"].get("tool_calls") or ()
                ],
            }
            for c in dumped["choices"]
        ],
    }


@pytest.mark.parametrize("chunks", [TEXT, TOOLS], ids=["text", "tools"])
def test_the_answer_is_the_one_litellms_assembler_makes(chunks: list[dict[str, Any]]) -> None:
    litellm = import_litellm()
    whole = assemble([RawChunk(c) for c in chunks])
    assert whole is not None
    ours = _essentials(litellm.ModelResponse(**whole))
    theirs = _essentials(litellm.stream_chunk_builder(chunks, messages=[]))
    assert ours == theirs


def test_texts_tool_calls_and_refusals_in_their_places() -> None:
    text = assemble([RawChunk(c) for c in TEXT])
    assert text is not None and text["usage"] == USAGE
    assert text["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Sunny all day."},
            "finish_reason": "stop",
        }
    ]
    tools = assemble([RawChunk(c) for c in TOOLS])
    assert tools is not None
    (choice,) = tools["choices"]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    # Every choice of an n=2 answer (LiteLLM's assembler keeps only the first).
    two = assemble([RawChunk(c) for c in TWO_CHOICES])
    assert two is not None
    assert [(c["message"]["content"], c["finish_reason"]) for c in two["choices"]] == [
        ("One more", "stop"),
        ("Two more", "length"),
    ]
    refusal = assemble([RawChunk(c) for c in REFUSAL])
    assert refusal is not None
    assert refusal["choices"][0]["message"]["refusal"] == "I can't help with that."


@pytest.mark.parametrize(
    "chunks",
    [
        TEXT[:-1],  # no usage chunk: LiteLLM counts the tokens
        [_chunk(_delta(content="hi", reasoning_content="because"), usage=USAGE)],
        [_chunk({**_delta(content="hi"), "logprobs": {"content": []}}, usage=USAGE)],
        [_chunk(_delta(content=5), usage=USAGE)],  # not text
        [_chunk(_delta(tool_calls={"index": 0}), usage=USAGE)],
        [_chunk(_delta(tool_calls=[{"index": 0, "custom": {"name": "x"}}]), usage=USAGE)],
        [_chunk(_delta(tool_calls=[{"index": 0, "function": {"arguments": 3}}]), usage=USAGE)],
        [_chunk("not a choice", usage=USAGE)],  # type: ignore[arg-type]
        [_chunk({"index": "0", "delta": {"content": "hi"}}, usage=USAGE)],
        [],
    ],
    ids=[
        "no-usage",
        "reasoning",
        "logprobs",
        "number",
        "tool-calls-not-a-list",
        "custom-tool",
        "arguments-not-text",
        "choice-not-an-object",
        "index-not-a-number",
        "no-chunks",
    ],
)
def test_what_it_does_not_read_is_left_to_litellm(chunks: list[dict[str, Any]]) -> None:
    assert assemble([RawChunk(c) for c in chunks]) is None


REASONING = [
    _chunk(_delta(role="assistant", content="Sunny")),  # folded in; the next is not plain
    _chunk(_delta(content=" today", reasoning_content="the forecast says so")),
    _chunk(_delta(finish="stop"), usage=USAGE),
]


@pytest.mark.parametrize(
    ("chunks", "text"),
    [(TEXT[:-1], "Sunny all day."), (REASONING, "Sunny today"), (TOOLS[:-1], None)],
    ids=["no-usage", "not-plain-after-a-plain-one", "tools-no-usage"],
)
def test_a_stream_left_to_litellm_gives_it_every_chunk_as_it_came(
    chunks: list[dict[str, Any]], text: str | None
) -> None:
    assembly = Assembly()
    for c in chunks:
        assembly.add(RawChunk(c, json.dumps(c).encode()))  # as a direct stream's: with its bytes
    assert assembly.whole() is None and assembly.direct
    assert assembly.chunks() == chunks
    response = response_of(assembly, [], import_litellm())
    assert response is not None and response.choices[0].message.content == text


def _retained(make: Callable[[], Any]) -> int:
    """The bytes ``make`` allocates that are still held once it returns what it made."""
    tracemalloc.start()
    try:
        made = make()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del made
    return size


def test_a_folded_chunk_keeps_its_text_and_bytes_not_its_parsed_json() -> None:
    raws = [json.dumps(_chunk(_delta(content=f" word{i}"))).encode() for i in range(5000)]

    def folded() -> Assembly:
        assembly = Assembly()
        for raw in raws:
            assembly.add(RawChunk(json.loads(raw), raw))
        return assembly

    def kept_whole() -> list[RawChunk]:  # every chunk as it was parsed
        return [RawChunk(json.loads(raw), raw) for raw in raws]

    assert _retained(folded) * 4 < _retained(kept_whole)
    assembly = folded()
    assembly.add(RawChunk(_chunk(usage=USAGE)))
    answer = assembly.whole()
    assert answer is not None
    assert answer["choices"][0]["message"]["content"] == "".join(f" word{i}" for i in range(5000))
