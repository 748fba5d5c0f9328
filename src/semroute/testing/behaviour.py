"""What the fake provider does for each model name, and what it was asked: the scripted state
that :class:`~semroute.testing.FakeProvider` and its HTTP handler share."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ANY_MODEL", "Behaviour", "RecordedRequest", "Script", "check_delay"]

ANY_MODEL = "*"
"""The model name whose behaviour applies to every model not scripted by its own name."""


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
    """For ``answer``, streamed: seconds between one event of the answer and the next."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    model: str
    authorization: str | None
    stream: bool
    status: int
    """The status it answered with (0 for a request left hanging)."""
    body: dict[str, Any]


class Script:
    """The behaviours set per model and the requests received, behind one lock (the server
    answers each connection in its own thread)."""

    def __init__(self, *, seed: int, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds
        self.release = threading.Event()
        """Set when the server stops, so that hanging handlers finish."""
        self._behaviours: dict[str, Behaviour] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._served: dict[str, int] = {}

    def set(self, model: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[model] = behaviour

    def plan(self, model: str) -> tuple[Behaviour, bool]:
        """The behaviour for ``model`` and, for ``flaky``, whether this request fails."""
        with self._lock:
            behaviour = self._behaviours.get(model) or self._behaviours.get(ANY_MODEL, Behaviour())
            fails = behaviour.kind == "flaky" and self._random.random() < behaviour.rate
            if behaviour.texts:  # the next scripted answer
                turn = self._served[model] = self._served.get(model, -1) + 1
                behaviour = replace(
                    behaviour, text=behaviour.texts[min(turn, len(behaviour.texts) - 1)]
                )
        return behaviour, fails

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


def check_delay(seconds: float) -> float:
    """``seconds`` as a float, or a ValueError if it is negative, infinite or NaN."""
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"delay must be 0 or more seconds, not {seconds}")
    return float(seconds)
