"""The gateway's HTTP protocol: a response's head goes out with its body in one send, and is
never held past the event loop's turn."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.server import protocol
from semroute.server.protocol import HeadWithBody, HeadWithBodyProtocol
from semroute.testing import FakeProvider
from tests.gateway_kit import Served, build, free_port

pytestmark = pytest.mark.usefixtures("provider_key")

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    """A transport that records what is sent on it."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        if self.inner is not None:
            self.inner.write(data)

    def is_closing(self) -> bool:
        return self.closed if self.inner is None else bool(self.inner.is_closing())

    def close(self) -> None:
        self.closed = True
        if self.inner is not None:
            self.inner.close()

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrapped() -> tuple[HeadWithBody, Recorder]:
    recorder = Recorder()
    return HeadWithBody(recorder, asyncio.get_running_loop()), recorder  # type: ignore[arg-type]


def test_a_head_and_a_body_written_in_one_turn_go_out_in_one_send() -> None:
    asyncio.run(_test_a_head_and_a_body_written_in_one_turn_go_out_in_one_send())


async def _test_a_head_and_a_body_written_in_one_turn_go_out_in_one_send() -> None:
    transport, sent = wrapped()
    transport.write(HEAD)
    assert sent.sent == []
    transport.write(b"ok")
    assert sent.sent == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert sent.sent == [HEAD + b"ok"]  # nothing held, nothing sent twice


def test_a_head_alone_goes_out_when_the_loops_turn_ends() -> None:
    asyncio.run(_test_a_head_alone_goes_out_when_the_loops_turn_ends())


async def _test_a_head_alone_goes_out_when_the_loops_turn_ends() -> None:
    transport, sent = wrapped()
    transport.write(HEAD)
    assert transport.get_write_buffer_size() == len(HEAD)
    await asyncio.sleep(0)
    assert sent.sent == [HEAD]
    transport.write(b"data: 1\n\n")  # a stream's chunk, later: sent at once
    assert sent.sent == [HEAD, b"data: 1\n\n"]


def test_writes_that_are_not_a_head_are_sent_at_once() -> None:
    asyncio.run(_test_writes_that_are_not_a_head_are_sent_at_once())


async def _test_writes_that_are_not_a_head_are_sent_at_once() -> None:
    transport, sent = wrapped()
    transport.write(b"5\r\nhello\r\n")
    transport.writelines([memoryview(b"0\r\n"), b"\r\n"])
    assert sent.sent == [b"5\r\nhello\r\n", b"0\r\n\r\n"]


def test_closing_sends_a_held_head_first_and_aborting_drops_it() -> None:
    asyncio.run(_test_closing_sends_a_held_head_first_and_aborting_drops_it())


async def _test_closing_sends_a_held_head_first_and_aborting_drops_it() -> None:
    transport, sent = wrapped()
    transport.write(HEAD)
    transport.close()
    assert sent.sent == [HEAD] and sent.closed
    await asyncio.sleep(0)
    assert sent.sent == [HEAD]

    transport, sent = wrapped()
    transport.write(HEAD)
    transport.abort()
    await asyncio.sleep(0)
    assert sent.sent == [] and sent.aborted


def test_a_head_held_for_a_client_that_has_gone_is_dropped() -> None:
    asyncio.run(_test_a_head_held_for_a_client_that_has_gone_is_dropped())


async def _test_a_head_held_for_a_client_that_has_gone_is_dropped() -> None:
    transport, sent = wrapped()
    transport.write(HEAD)
    sent.closed = True  # the connection was lost before the turn ended
    await asyncio.sleep(0)
    assert sent.sent == []


def test_the_gateway_answers_in_one_send(tmp_path: Path, provider: FakeProvider) -> None:
    sends = _sends(tmp_path, provider, [("/v1/chat/completions", {"model": "auto"})])
    ((answer,),) = sends
    head, body = answer.split(b"\r\n\r\n", 1)  # the head, then the body, in the one send
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(body)["choices"][0]["message"]["content"]


def test_a_streams_last_events_and_its_end_go_in_one_send(
    tmp_path: Path, provider: FakeProvider
) -> None:
    openai_stream, anthropic_stream = _sends(
        tmp_path,
        provider,
        [
            ("/v1/chat/completions", {"model": "auto", "stream": True}),
            ("/v1/messages", {"model": "auto", "stream": True, "max_tokens": 50}),
        ],
    )
    assert len(openai_stream) > 2
    # [DONE] and the end of the chunked body together (they were two sends).
    assert openai_stream[-1].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert openai_stream[-1].count(b"data: ") == 1
    last = anthropic_stream[-1]
    assert last.endswith(b"\r\n0\r\n\r\n")
    assert b"event: message_delta" in last and b"event: message_stop" in last
    # What one chunk makes goes in one send: message_start and ping for the first, the
    # text block's start and its first delta for the first with text.
    (first,) = [s for s in anthropic_stream if b"event: message_start" in s]
    assert b"event: ping" in first
    (text,) = [s for s in anthropic_stream if b"event: content_block_start" in s]
    assert b"event: content_block_delta" in text


def _sends(
    tmp_path: Path, provider: FakeProvider, requests: list[tuple[str, dict[str, Any]]]
) -> list[list[bytes]]:
    """Each request on a connection of its own to a gateway on a real server; what the
    gateway sent on each connection, send by send."""
    recorders: list[Recorder] = []
    made = HeadWithBody.__init__

    def recording(self: HeadWithBody, transport: Any, loop: Any) -> None:
        recorders.append(Recorder(transport))
        made(self, recorders[-1], loop)  # type: ignore[arg-type]

    messages = [{"role": "user", "content": "will it rain today"}]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol.HeadWithBody, "__init__", recording)
        with Served(build(tmp_path, provider)) as served:
            for path, body in requests:
                with httpx.Client() as client:
                    answer = client.post(
                        served.url + path, json=body | {"messages": messages}, timeout=30
                    )
                    assert answer.status_code == 200, answer.text
    return [r.sent for r in recorders if r.sent]


def test_semroute_serve_runs_uvicorn_with_the_protocol(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    options: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: options.update(kw))
    index = build(tmp_path, provider)
    result = CliRunner().invoke(main, ["serve", "--index", str(index), "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    assert options["http"] is HeadWithBodyProtocol
