"""The gateway's HTTP protocol: a response's head leaves with its body in one send, a burst of a
stream's events in one send, and nothing is held past the event loop's turn."""

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
from semroute.server.protocol import Coalescing, CoalescingProtocol
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


def recorder_of(transport: Coalescing) -> Recorder:
    return transport._transport  # type: ignore[return-value]


def turns(*steps: Any) -> Recorder:
    """Run each of ``steps`` (a function of the wrapped transport) in a turn of its own, one
    after the other on one event loop; what the transport underneath was sent."""
    recorder = Recorder()

    async def run() -> None:
        transport = Coalescing(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        for step in steps:
            step(transport)
            await asyncio.sleep(0)  # the turn ends

    asyncio.run(run())
    return recorder


def test_a_head_leaves_with_its_body_in_one_send_as_soon_as_the_body_is_written() -> None:
    def head_and_body(transport: Coalescing) -> None:
        transport.write(HEAD)
        assert recorder_of(transport).sent == []  # the head waits for its body
        assert transport.get_write_buffer_size() == len(HEAD)
        transport.writelines([memoryview(b"o"), b"k"])
        assert recorder_of(transport).sent == [HEAD + b"ok"]  # at once, not at the turn's end

    assert turns(head_and_body).sent == [HEAD + b"ok"]


def test_a_turns_first_write_leaves_at_once_and_the_rest_of_a_burst_at_the_turns_end() -> None:
    def burst(transport: Coalescing) -> None:
        for event in (b"1\r\na\r\n", b"1\r\nb\r\n", b"1\r\nc\r\n"):
            transport.write(event)
        assert recorder_of(transport).sent[-1] == b"1\r\na\r\n"

    sent = turns(
        lambda t: t.write(HEAD),  # a stream's head, its model silent so far: at the turn's end
        lambda t: t.write(b"5\r\nhello\r\n"),  # an event that came alone: at once
        lambda t: t.write(b""),  # nothing to send: no send
        burst,
    )
    assert sent.sent == [HEAD, b"5\r\nhello\r\n", b"1\r\na\r\n", b"1\r\nb\r\n1\r\nc\r\n"]


def test_closing_sends_what_is_held_first_and_aborting_drops_it() -> None:
    def close(transport: Coalescing) -> None:
        transport.write(HEAD)
        transport.close()
        assert recorder_of(transport).sent == [HEAD]

    closed = turns(close)
    assert closed.sent == [HEAD] and closed.closed  # and not again when the turn ends

    aborted = turns(lambda t: (t.write(HEAD), t.abort()))
    assert aborted.sent == [] and aborted.aborted


def test_what_is_held_for_a_client_that_has_gone_is_dropped() -> None:
    def lost(transport: Coalescing) -> None:
        transport.write(HEAD)
        recorder_of(transport).closed = True  # the connection was lost before the turn ended

    assert turns(lost).sent == []


def test_the_gateway_answers_in_one_send(tmp_path: Path, provider: FakeProvider) -> None:
    sends = _sends(tmp_path, provider, [("/v1/chat/completions", {"model": "auto"})])
    ((answer,),) = sends
    head, body = answer.split(b"\r\n\r\n", 1)  # the head, then the body, in the one send
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(body)["choices"][0]["message"]["content"]


def test_a_burst_of_a_streams_events_goes_in_one_send_and_a_paced_stream_is_not_held(
    tmp_path: Path, provider: FakeProvider
) -> None:
    stream = ("/v1/chat/completions", {"model": "auto", "stream": True})
    # The model's whole answer at once: the head, its first event, then everything else in
    # one send (it was one send per event).
    (burst,) = _sends(tmp_path / "burst", provider, [stream])
    assert len(burst) <= 3, [len(s) for s in burst]
    assert b"".join(burst).endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    # A word every 50 ms: each word leaves as it comes, in a send of its own.
    words = ["amber", "birch", "cedar", "dunes"]
    provider.answer("weather-model", " ".join(words), chunk_delay=0.05)
    (paced,) = _sends(tmp_path / "paced", provider, [stream])
    carrying = [[w for w in words if w.encode() in s] for s in paced]
    assert sorted(c for c in carrying if c) == [[w] for w in words]


def test_a_burst_leaves_with_the_head_in_one_send_before_the_answer_is_logged(
    tmp_path: Path, provider: FakeProvider
) -> None:
    # The model sends its whole answer at once. Its events came in one read, so they leave in
    # one send with the head: the first words wait neither for a later turn of the loop nor
    # for the answer to be assembled and logged; `[DONE]` follows once it is.
    (sends,) = _sends(
        tmp_path, provider, [("/v1/chat/completions", {"model": "auto", "stream": True})]
    )
    assert sends[0].startswith(b"HTTP/1.1 200 OK\r\n") and len(sends) == 2, sends
    events = [json.loads(line[6:]) for line in sends[0].split(b"\n") if line.startswith(b"data: ")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    # the role, a word each, the finish: every event of the answer
    assert text and len(events) == text.count(" ") + 3, events
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert sends[1].count(b"data: ") == 1 and b"data: [DONE]" in sends[1]


def _sends(
    tmp_path: Path, provider: FakeProvider, requests: list[tuple[str, dict[str, Any]]]
) -> list[list[bytes]]:
    """Each request on a connection of its own to a gateway on a real server; what the
    gateway sent on each connection, send by send."""
    recorders: list[Recorder] = []
    made = Coalescing.__init__

    def recording(self: Coalescing, transport: Any, loop: Any) -> None:
        recorders.append(Recorder(transport))
        made(self, recorders[-1], loop)  # type: ignore[arg-type]

    messages = [{"role": "user", "content": "will it rain today"}]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol.Coalescing, "__init__", recording)
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
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: options.update(kw, app=app))
    index = build(tmp_path, provider)
    result = CliRunner().invoke(main, ["serve", "--index", str(index), "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    assert options["http"] is CoalescingProtocol
    # The server is the process's one job: what it loaded is frozen once it starts.
    import gc

    from starlette.testclient import TestClient

    try:
        with TestClient(options["app"]):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
