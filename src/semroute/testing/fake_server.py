"""The HTTP side of the fake provider: a threaded server whose handler answers each
``/chat/completions`` request the way its :class:`~semroute.testing.behaviour.Script` says."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from semroute.testing.behaviour import Behaviour, RecordedRequest, Script
from semroute.testing.openai_payloads import (
    answer_events,
    chunk,
    completion,
    error_body,
    error_for_status,
    new_id,
)

__all__ = ["start_server"]


def start_server(
    script: Script, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``script`` on ``host``:``port`` (0: a free port), in a daemon thread."""
    handler = type("_BoundHandler", (_Handler,), {"script": script})
    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), handler, bind_and_activate=False)
    server.daemon_threads = True
    # The default backlog (5) makes a burst of concurrent clients wait for SYN retries.
    server.request_queue_size = 1024
    server.allow_reuse_address = True
    try:
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-provider"
    )
    thread.daemon = True
    thread.start()
    return server, thread


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timed out, closed its stream) resets the connection: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    script: Script
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
            self.script.record(replace(self._pending, status=code))
            self._pending = None
        super().send_response(code, message)

    def do_POST(self) -> None:
        self._pending = None
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, error_body("request body is not JSON", "invalid_request_error"))
            return
        if not self.path.rstrip("/").endswith("/chat/completions") or not isinstance(body, dict):
            self._json(404, error_body(f"no route {self.path}", "invalid_request_error"))
            return
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        behaviour, fails = self.script.plan(model)
        self._pending = RecordedRequest(model, self.headers.get("Authorization"), stream, 0, body)
        status = self._respond(model, body, stream, behaviour, fails)
        if self._pending is not None:  # no response was started
            self.script.record(replace(self._pending, status=status))
            self._pending = None

    def _respond(
        self, model: str, body: dict[str, Any], stream: bool, behaviour: Behaviour, fails: bool
    ) -> int:
        kind = behaviour.kind
        if kind == "hang" or behaviour.gate is not None:
            if self._pending is not None:  # recorded now: it is answered late or never
                self.script.record(self._pending)
                self._pending = None
            if behaviour.gate is not None:
                behaviour.gate.wait(self.script.hang_seconds)
            else:
                self.script.release.wait(self.script.hang_seconds)
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
            self._json(200, completion(model, text, usage, logprob))
        return 200

    def _error(self, behaviour: Behaviour) -> int:
        headers = {}
        if behaviour.retry_after is not None:
            headers["Retry-After"] = f"{behaviour.retry_after:g}"
        payload = error_for_status(behaviour.status, self.headers.get("Authorization", ""))
        self._json(behaviour.status, payload, headers)
        return behaviour.status

    def _stream(
        self,
        model: str,
        text: str,
        usage: dict[str, int],
        include_usage: bool,
        chunk_delay: float,
    ) -> None:
        self._sse_start()
        ident = new_id()
        # Without a chunk delay the answer is all there once the delay is over: its events
        # leave together. With one, each leaves on its own, that long after the one before.
        for i, event in enumerate(answer_events(ident, model, text)):
            if chunk_delay > 0 and i > 0:
                time.sleep(chunk_delay)
            self._event(event, flush=chunk_delay > 0)
        self._event(chunk(ident, model, {}, "stop"), flush=False)
        if include_usage:
            usage_event = {**chunk(ident, model, {}, None), "choices": [], "usage": usage}
            self._event(usage_event, flush=False)
        self._chunk(b"data: [DONE]\n\n", flush=False)
        self._chunk(b"")

    def _broken_stream(self, model: str, text: str, after: int) -> None:
        """Send ``after`` events, then close the socket without ending the chunked body: to the
        client this is a connection lost mid-answer, not an answer that ended."""
        self._sse_start()
        ident = new_id()
        for event in answer_events(ident, model, text)[:after]:
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
