"""A real local HTTP server speaking the OpenAI chat-completions API, for tests and benchmarks.

Point a LiteLLM deployment at it (``model: openai/<name>``, ``api_base: provider.url``) and tell
it, per model name, how to behave: answer, fail with a status (500, 429 with ``Retry-After``,
401, ...), hang past the client's timeout, send malformed JSON, break a stream after some chunks,
or fail a share of requests at random; answers may come after a fixed delay, like a model's
time to first token, and a streamed answer's words may come one at a time at a fixed pace. It records every request (model, ``Authorization`` header, streamed or not, status it
answered) so tests can assert which deployment was hit and with which key.

    with FakeProvider() as provider:
        provider.error("primary", status=500)
        provider.answer("backup", text="hello")
        provider.answer("slow", delay=0.05)  # every answer starts 50 ms after the request
        provider.answer("typing", text=long_text, chunk_delay=0.02)  # a word every 20 ms
        ...  # litellm_params: {model: openai/primary, api_base: provider.url}

It binds 127.0.0.1 on a free port (or the ``host`` and ``port`` given) and serves each connection in its own thread (the standard
library's ``ThreadingHTTPServer``), so hundreds of concurrent requests are fine.

The pieces: :mod:`~semroute.testing.behaviour` (the scripted behaviours and recorded requests),
:mod:`~semroute.testing.fake_server` (the HTTP handler), :mod:`~semroute.testing.openai_payloads`
(the response bodies).
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType

from semroute.testing.behaviour import ANY_MODEL, Behaviour, RecordedRequest, Script, check_delay
from semroute.testing.fake_server import start_server

__all__ = ["ANY_MODEL", "Behaviour", "FakeProvider", "RecordedRequest"]


class FakeProvider:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 with scripted behaviour."""

    def __init__(
        self,
        *,
        seed: int = 0,
        hang_seconds: float = 30.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Scripted per model name (``"*"``: every model not scripted by name); it listens on
        ``host``:``port`` once started (port 0: a free one)."""
        self._script = Script(seed=seed, hang_seconds=hang_seconds)
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        ``chunk_delay``, send each event (the role, then a word each) that many seconds after
        the one before, like a model generating."""
        behaviour = Behaviour(
            "answer",
            text=text,
            delay=check_delay(delay),
            logprob=logprob,
            gate=gate,
            chunk_delay=check_delay(chunk_delay),
        )
        self._script.set(model, behaviour)

    def script(self, model: str, texts: list[str]) -> None:
        """Answer ``texts`` in turn, one per request; the last one repeats."""
        self._script.set(model, Behaviour("answer", texts=tuple(texts)))

    def error(self, model: str, status: int = 500, retry_after: float | None = None) -> None:
        self._script.set(model, Behaviour("error", status=status, retry_after=retry_after))

    def hang(self, model: str) -> None:
        """Accept the request and send nothing until the client gives up (or the server stops)."""
        self._script.set(model, Behaviour("hang"))

    def malformed(self, model: str) -> None:
        """Answer 200 with a body that is not valid JSON (or, streamed, an invalid event)."""
        self._script.set(model, Behaviour("malformed"))

    def break_stream(self, model: str, after: int = 1, text: str | None = None) -> None:
        """Stream ``after`` events of the answer, then drop the connection mid-body.

        The first event carries the role, each later one a word of ``text``. A request that
        does not stream gets the whole answer.
        """
        if after < 0:
            raise ValueError(f"after must be 0 or more, not {after}")
        self._script.set(model, Behaviour("break", text=text, after=after))

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
        self._script.set(
            model, Behaviour("flaky", text=text, status=status, rate=rate, delay=check_delay(delay))
        )

    # --- what happened -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._script.requests()

    def hits(self, model: str, status: int | None = None) -> int:
        """How many requests reached ``model`` (optionally: answered with ``status``)."""
        return sum(
            1 for r in self.requests if r.model == model and (status is None or r.status == status)
        )

    def clear(self) -> None:
        self._script.clear()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ``api_base`` to give LiteLLM (``http://127.0.0.1:PORT/v1``)."""
        if self._server is None:
            raise RuntimeError("the provider is not running; call start() or use `with`")
        # A wildcard address listens on every interface; clients on this machine use loopback.
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._server.server_address[1]}/v1"

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        self._script.release.clear()
        self._server, self._thread = start_server(self._script, self._host, self._port)
        return self

    def stop(self) -> None:
        self._script.release.set()  # let hanging handlers finish
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
