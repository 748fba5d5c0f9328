"""OpenTelemetry traces: a no-op unless OpenTelemetry is set up, called by routing and dispatch.

Tracing is on in a process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and the ``semroute[otel]`` extra is installed:
spans then go to that OTLP/HTTP endpoint, configured by the standard ``OTEL_*`` variables
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off, ``OTEL_TRACES_EXPORTER=console`` prints spans). A
program that set its own tracer provider before semroute's first span gets semroute's spans in
it, with no variable set.

Off, every function here returns at once: OpenTelemetry is never imported, and a span costs
one call that finds the cached answer. Which it is is decided once, on the first call.

The spans follow OpenTelemetry's GenAI conventions where they apply: a model call is a CLIENT
span named ``chat <model>`` with ``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model`` and ``gen_ai.usage.*``; semroute's own
attributes start with ``semroute.``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semroute.decision import Decision

__all__ = [
    "Span",
    "add_event",
    "clock",
    "decision_attributes",
    "enabled",
    "end_span",
    "record_span",
    "shutdown",
    "start_span",
    "use_span",
]

log = logging.getLogger(__name__)

SCOPE = "semroute"
"""The instrumentation scope of every span."""
ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

Span = Any
"""An OpenTelemetry span (typed loosely: OpenTelemetry is an optional dependency)."""
Attributes = Mapping[str, Any]

_lock = threading.Lock()
_on: bool | None = None  # None: not decided yet
_tracer: Any = None
_provider: Any = None  # the provider semroute made (None: none, or the program's own)


def enabled() -> bool:
    """Whether spans are recorded in this process (decided on the first call)."""
    on = _on
    return _decide() if on is None else on


def clock() -> int:
    """Now in nanoseconds since the epoch when tracing is on (a span's start), else 0."""
    if _on is False:  # the off path: one global read
        return 0
    return time.time_ns() if enabled() else 0


def start_span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: str = "internal",
    start: int = 0,
    carrier: Mapping[str, str] | None = None,
) -> Span | None:
    """A started span, child of the current one (None when tracing is off); end it with
    :func:`end_span`. ``kind``: ``internal``, ``client`` or ``server``. ``carrier``: an
    incoming request's headers, whose ``traceparent`` (W3C trace context, or what
    ``OTEL_PROPAGATORS`` names) gives the parent instead."""
    if not enabled():
        return None
    from opentelemetry.trace import SpanKind

    context = None
    if carrier is not None:
        from opentelemetry.propagate import extract

        context = extract(carrier)
    return _tracer.start_span(
        name,
        context=context,
        kind=SpanKind[kind.upper()],
        attributes=_clean(attributes),
        start_time=start or None,
    )


def end_span(
    span: Span | None, attributes: Attributes | None = None, *, error: str | None = None
) -> None:
    """Set ``attributes`` on ``span`` and end it; ``error`` (what went wrong, for a person)
    marks it failed. Nothing when ``span`` is None."""
    if span is None or not span.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode

    if attributes:
        span.set_attributes(_clean(attributes))
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error[:500]))
    span.end()


def record_span(
    name: str, start: int, attributes: Attributes | None = None, *, error: str | None = None
) -> None:
    """A span from ``start`` (:func:`clock`'s value) to now, child of the current span."""
    end_span(start_span(name, attributes, start=start), error=error)


def add_event(name: str, attributes: Attributes | None = None) -> None:
    """An event on the current span (nothing when tracing is off or no span is current)."""
    if not enabled():
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, _clean(attributes))


def use_span(span: Span | None) -> Any:
    """A context manager making ``span`` the current span (a null one for None)."""
    if span is None:
        import contextlib

        return contextlib.nullcontext()
    from opentelemetry import trace

    return trace.use_span(span, end_on_exit=False)


def shutdown(timeout_s: float = 5.0) -> None:
    """Send the spans still buffered and stop (at the process's end); nothing when semroute
    did not make the tracer provider."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))
        _provider.shutdown()


def decision_attributes(decision: Decision) -> dict[str, Any]:
    """A routing decision as span attributes."""
    return {
        "semroute.route": decision.route,
        "semroute.reason": decision.reason.value,
        "semroute.confidence": decision.confidence,
        "semroute.margin": decision.margin,
        "semroute.rule": decision.rule,
        "semroute.model": decision.model,
        "semroute.chain": list(decision.chain) if decision.chain else None,
        "semroute.skipped": [s.model for s in decision.skipped] or None,
        "semroute.estimated_cost_usd": decision.estimated_cost_usd,
    }


def _clean(attributes: Attributes | None) -> dict[str, Any] | None:
    """The attributes OpenTelemetry takes: None values dropped."""
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


def _decide() -> bool:
    global _on, _tracer, _provider
    with _lock:
        if _on is None:
            _tracer, _provider = _setup()
            _on = _tracer is not None
    return _on


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _setup() -> tuple[Any, Any]:
    """The tracer to use and the provider semroute made for it (None, None: tracing off)."""
    configured = any(os.environ.get(name, "").strip() for name in ENDPOINTS)
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if _truthy("OTEL_SDK_DISABLED") or exporter_name == "none":
        return None, None
    if not configured and exporter_name != "console":
        return _programs_own(), None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "semroute: OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed, "
            "so no trace is sent; pip install 'semroute[otel]'"
        )
        return None, None
    exporter = _exporter(exporter_name)
    if exporter is None:
        return None, None
    # The SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER itself.
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or SCOPE})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # the program's own, when it set one, stays
    return provider.get_tracer(SCOPE), provider


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if name != "otlp" or protocol not in ("http/protobuf", "grpc"):
        log.warning(
            "semroute: OTEL_TRACES_EXPORTER=%s with protocol %s is not supported, so no trace "
            "is sent; use otlp with http/protobuf (or grpc), console or none",
            name,
            protocol,
        )
        return None
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        package = f"opentelemetry-exporter-otlp-proto-{'grpc' if protocol == 'grpc' else 'http'}"
        log.warning("semroute: the %s exporter is not installed, so no trace is sent", package)
        return None
    # The exporter reads the endpoint, headers, timeout and compression from OTEL_*.
    return OTLPSpanExporter()


def _programs_own() -> Any:
    """The tracer of a provider the program set itself before semroute's first span (without
    importing OpenTelemetry when the program did not)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    return trace.get_tracer(SCOPE)
