"""A real local HTTP server speaking the OpenAI chat-completions API, for tests and benchmarks.

Point a LiteLLM deployment at it (``model: openai/<name>``, ``api_base: provider.url``) and tell
it, per model name, how to behave: answer, fail with a status (500, 429 with ``Retry-After``,
401, ...), hang past the client's timeout, send malformed JSON, break a stream after some chunks,
or fail a share of requests at random; answers may come after a fixed delay, like a model's
time to first token. It records every request (model, ``Authorization`` header, streamed or not, status it
answered) so tests can assert which deployment was hit and with which key.

    with FakeProvider() as provider:
        provider.error("primary", status=500)
        provider.answer("backup", text="hello")
        provider.answer("slow", delay=0.05)  # every answer starts 50 ms after the request
        ...  # litellm_params: {model: openai/primary, api_base: provider.url}

It binds 127.0.0.1 on a free port and serves each connection in its own thread (the standard
library's ``ThreadingHTTPServer``), so hundreds of concurrent requests are fine.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Behaviour", "FakeProvider", "RecordedRequest"]


@dataclass(frozen=True)
class Behaviour:
    """What the server does for one model name."""

    kind: str = "answer"
    """``answer``, ``error``, ``hang``, ``malformed``, ``break`` or ``flaky``."""
    text: str | None = None
    """The answer (default: ``"Hello from <model>."``)."""
    status: int = 500
    retry_after: float | None = None
    rate: float = 0.0
    """For ``flaky``: the share of requests that fail with ``status``."""
    after: int = 0
    """For ``break``: the stream events sent before the connection is dropped."""
    texts: tuple[str, ...] = ()
    """For ``answer``: answers given in turn (the last one repeats); overrides ``text``."""
    logprob: float | None = None
    """For ``answer``: each token's logprob, sent when the request asks for ``logprobs``."""
    gate: threading.Event | None = None
    """For ``answer``: wait until this is set (or the server stops) before answering."""
    delay: float = 0.0
    """Seconds to wait before the response starts (``answer`` and ``flaky``, streamed or not)."""
    chunk_delay: float = 0.0
    """For a streamed ``answer``: seconds between its events (each is sent as it is ready)."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    model: str
    authorization: str | None
    stream: bool
    status: int
    """The status it answered with (0 for a request left hanging)."""
    body: dict[str, Any]


class FakeProvider:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 with scripted behaviour."""

    def __init__(self, *, seed: int = 0, hang_seconds: float = 30.0) -> None:
        self._behaviours: dict[str, Behaviour] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._release = threading.Event()
        self._hang_seconds = hang_seconds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._served: dict[str, int] = {}

    # --- scripting ---------------------------------------------------------------------------

    def answer(
        self,
        model: str,
        text: str | None = None,
        delay: float = 0.0,
        *,
        logprob: float | None = None,
        gate: threading.Event | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        """Answer ``text``, ``delay`` seconds after each request arrives; with ``logprob``, send
        logprobs when asked; with ``gate``, answer only once it is set; streamed, with
        ``chunk_delay`` seconds between events."""
        behaviour = Behaviour("answer", text=text, delay=_delay(delay), logprob=logprob, gate=gate)
        self._set(model, replace(behaviour, chunk_delay=_delay(chunk_delay)))

    def script(self, model: str, texts: list[str]) -> None:
        """Answer ``texts`` in turn, one per request; the last one repeats."""
        self._set(model, Behaviour("answer", texts=tuple(texts)))

    def error(self, model: str, status: int = 500, retry_after: float | None = None) -> None:
        self._set(model, Behaviour("error", status=status, retry_after=retry_after))

    def hang(self, model: str) -> None:
        """Accept the request and send nothing until the client gives up (or the server stops)."""
        self._set(model, Behaviour("hang"))

    def malformed(self, model: str) -> None:
        """Answer 200 with a body that is not valid JSON (or, streamed, an invalid event)."""
        self._set(model, Behaviour("malformed"))

    def break_stream(self, model: str, after: int = 1, text: str | None = None) -> None:
        """Stream ``after`` events of the answer, then drop the connection mid-body.

        The first event carries the role, each later one a word of ``text``. A request that
        does not stream gets the whole answer.
        """
        if after < 0:
            raise ValueError(f"after must be 0 or more, not {after}")
        self._set(model, Behaviour("break", text=text, after=after))

    def flaky(
        self,
        model: str,
        rate: float,
        status: int = 500,
        text: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Fail ``rate`` of the requests for ``model`` at random (seeded), answer the rest.

        Failures and answers alike start ``delay`` seconds after the request arrives.
        """
        self._set(
            model, Behaviour("flaky", text=text, status=status, rate=rate, delay=_delay(delay))
        )

    def _set(self, model: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[model] = behaviour

    # --- what happened -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def hits(self, model: str, status: int | None = None) -> int:
        """How many requests reached ``model`` (optionally: answered with ``status``)."""
        return sum(
            1 for r in self.requests if r.model == model and (status is None or r.status == status)
        )

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ``api_base`` to give LiteLLM (``http://127.0.0.1:PORT/v1``)."""
        if self._server is None:
            raise RuntimeError("the provider is not running; call start() or use `with`")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"provider": self})
        server = _Server(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.daemon_threads = True
        # The default backlog (5) makes a burst of concurrent clients wait for SYN retries.
        server.request_queue_size = 1024
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-provider"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- used by the handler -----------------------------------------------------------------

    def _plan(self, model: str) -> tuple[Behaviour, bool]:
        """The behaviour for ``model`` and, for ``flaky``, whether this request fails."""
        with self._lock:
            behaviour = self._behaviours.get(model, Behaviour())
            fails = behaviour.kind == "flaky" and self._random.random() < behaviour.rate
            if behaviour.texts:  # the next scripted answer
                turn = self._served[model] = self._served.get(model, -1) + 1
                behaviour = replace(
                    behaviour, text=behaviour.texts[min(turn, len(behaviour.texts) - 1)]
                )
        return behaviour, fails

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timed out, closed its stream) resets the connection: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm the body would wait for
    # the client's delayed ACK (~40 ms) and every request would look that much slower.
    disable_nagle_algorithm = True
    # Buffered writes: a response leaves in one send when the handler returns (or when a stream
    # flushes), not one per header line and body piece. Each send gives up and takes back the
    # interpreter lock; with dozens of connections' threads waiting for it, most of a request's
    # time would go there, and a benchmark's baseline would measure this server, not the network.
    wbufsize = 1 << 16

    # The request being answered: recorded as its response starts, so a client that has its
    # answer always finds the request in FakeProvider.requests.
    _pending: RecordedRequest | None = None

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr lines
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._pending is not None:
            self.provider._record(replace(self._pending, status=code))
            self._pending = None
        super().send_response(code, message)

    def do_POST(self) -> None:
        self._pending = None
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, _error_body("request body is not JSON", "invalid_request_error"))
            return
        if not self.path.rstrip("/").endswith("/chat/completions") or not isinstance(body, dict):
            self._json(404, _error_body(f"no route {self.path}", "invalid_request_error"))
            return
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        behaviour, fails = self.provider._plan(model)
        self._pending = RecordedRequest(model, self.headers.get("Authorization"), stream, 0, body)
        status = self._respond(model, body, stream, behaviour, fails)
        if self._pending is not None:  # no response was started
            self.provider._record(replace(self._pending, status=status))
            self._pending = None

    def _respond(
        self, model: str, body: dict[str, Any], stream: bool, behaviour: Behaviour, fails: bool
    ) -> int:
        kind = behaviour.kind
        if kind == "hang" or behaviour.gate is not None:
            if self._pending is not None:  # recorded now: it is answered late or never
                self.provider._record(self._pending)
                self._pending = None
            if behaviour.gate is not None:
                behaviour.gate.wait(self.provider._hang_seconds)
            else:
                self.provider._release.wait(self.provider._hang_seconds)
                self.close_connection = True
                return 0
        if behaviour.delay > 0:
            # Sleeping releases the GIL: concurrent requests wait their delays side by side.
            time.sleep(behaviour.delay)
        if kind == "error" or fails:
            return self._error(behaviour)
        if kind == "malformed":
            if stream:
                self._sse_start()
                self._chunk(b'data: {"id": "broken", "choices": [{"delta": {"content": \n\n')
                self._chunk(b"")
            else:
                self._raw(200, b'{"id": "chatcmpl-broken", "choices": [{"message": ')
            return 200
        text = behaviour.text or f"Hello from {model}."
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        if stream and kind == "break":
            self._broken_stream(model, text, behaviour.after)
        elif stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(model, text, usage, include_usage, behaviour.chunk_delay)
        else:
            logprob = behaviour.logprob if body.get("logprobs") else None
            self._json(200, _completion(model, text, usage, logprob))
        return 200

    def _error(self, behaviour: Behaviour) -> int:
        status = behaviour.status
        headers = {}
        if behaviour.retry_after is not None:
            headers["Retry-After"] = f"{behaviour.retry_after:g}"
        if status == 401:
            # Like some real providers, echo the key back: callers must keep it out of logs.
            message = f"Incorrect API key provided: {self.headers.get('Authorization', '')}"
            kind = "invalid_request_error"
        elif status == 429:
            message, kind = "Rate limit reached; try again later.", "rate_limit_exceeded"
        else:
            message, kind = f"The server had an error ({status}).", "server_error"
        self._json(status, _error_body(message, kind), headers)
        return status

    def _stream(
        self, model: str, text: str, usage: dict[str, int], include_usage: bool, pause: float
    ) -> None:
        self._sse_start()
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        # The answer is all there once the delay is over: its events leave together, unless
        # they are paced (``pause`` seconds apart).
        for i, event in enumerate(_answer_events(ident, model, text)):
            if pause and i:
                time.sleep(pause)
            self._event(event, flush=bool(pause))
        self._event(_chunk(ident, model, {}, "stop"), flush=False)
        if include_usage:
            usage_event = {**_chunk(ident, model, {}, None), "choices": [], "usage": usage}
            self._event(usage_event, flush=False)
        self._chunk(b"data: [DONE]\n\n", flush=False)
        self._chunk(b"")

    def _broken_stream(self, model: str, text: str, after: int) -> None:
        """Send ``after`` events, then close the socket without ending the chunked body: to the
        client this is a connection lost mid-answer, not an answer that ended."""
        self._sse_start()
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        for event in _answer_events(ident, model, text)[:after]:
            self._event(event)
        self.wfile.flush()
        self.close_connection = True
        # A FIN, not a reset: the client reads every event sent, then finds the body cut short.
        # (Shutting down both ways can send a reset, which makes the client's kernel drop events
        # it has received but not yet read, so what arrives before the break would vary.)
        self.connection.shutdown(socket.SHUT_WR)

    # --- HTTP plumbing -----------------------------------------------------------------------

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._raw(status, json.dumps(payload).encode(), headers)

    def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _event(self, payload: dict[str, Any], flush: bool = True) -> None:
        self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n", flush)

    def _chunk(self, data: bytes, flush: bool = True) -> None:
        """One piece of a chunked body, sent now unless ``flush`` is off; an empty one ends it."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        if flush:
            self.wfile.flush()


def _delay(seconds: float) -> float:
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"delay must be 0 or more seconds, not {seconds}")
    return float(seconds)


def _completion(
    model: str, text: str, usage: dict[str, int], logprob: float | None = None
) -> dict[str, Any]:
    logprobs: dict[str, Any] | None = None
    if logprob is not None:  # one entry per word, each with the scripted logprob
        tokens: list[dict[str, Any]] = [
            {"token": w, "logprob": logprob, "bytes": None, "top_logprobs": []}
            for w in text.split()
        ]
        logprobs = {"content": tokens}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": usage,
    }


def _answer_events(ident: str, model: str, text: str) -> list[dict[str, Any]]:
    """A streamed answer's events before the final one: the role, then one per word."""
    events = [_chunk(ident, model, {"role": "assistant", "content": ""}, None)]
    for i, word in enumerate(text.split(" ")):
        events.append(_chunk(ident, model, {"content": word if i == 0 else " " + word}, None))
    return events


def _chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
