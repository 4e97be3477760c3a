"""OpenTelemetry traces of inferences (the optional `otel` extra), exported with OTLP over HTTP.

A server records one span tree per inference: ``route`` (the whole request, kind SERVER, a child of
the caller's W3C ``traceparent`` when it sends one) over ``decode``, ``queue``, ``batch`` (with its
``compute`` child) and ``encode``. The spans are made after the answer is sent, from timestamps taken
along the way (``InferTiming``, filled by the route and the batcher), so the request path holds no span
object and calls no OpenTelemetry code while it runs. The router records a ``router`` span per attempt
(kind SERVER, a retry is a second one) and sends the replica a ``traceparent`` naming that span, so
client, router and replica share one trace id.

When tracing is off OpenTelemetry is never imported (this module imports it only inside ``Tracer``), no timestamps are taken and the route pays an ``is None`` check on its tracer
(benchmarks/tracing_overhead.py measures it). No global tracer provider is set: each Tracer owns its
provider, so two servers in one process (tests) never share one.
"""

from __future__ import annotations

import time
from typing import Any

from modelfleet.config.observe import TracingConfig
from modelfleet.errors import SpecError
from modelfleet.observe.timing import InferTiming

_TRACEPARENT = b"traceparent"
_EXPORT_BATCH_SPANS = 512  # the SDK's default spans per export; it must not exceed the queue
# Attribute names (modelfleet's own; the HTTP ones follow OpenTelemetry's semantic conventions).
MODEL = "modelfleet.model"
VERSION = "modelfleet.model_version"
BATCH_ITEMS = "modelfleet.batch_size"
BATCH_REQUESTS = "modelfleet.batch_requests"
QUEUE_MS = "modelfleet.queue_time_ms"
REPLICA = "modelfleet.replica"
STATUS = "http.response.status_code"


def _import_sdk() -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        raise SpecError(
            "tracing.enabled needs OpenTelemetry: pip install 'modelfleet[otel]' (opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-http), or set tracing.enabled: false"
        ) from None
    return (trace, OTLPSpanExporter, Resource, TracerProvider, BatchSpanProcessor, ParentBased,
            TraceIdRatioBased, TraceContextTextMapPropagator)  # fmt: skip


class Tracer:
    """One process's spans and their OTLP exporter; made only when ``tracing.enabled``."""

    def __init__(self, config: TracingConfig, default_service: str) -> None:
        (trace, exporter_class, resource_class, provider_class, processor_class, parent_based, ratio,
         propagator_class) = _import_sdk()  # fmt: skip
        import os

        service = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or default_service
        self._trace = trace
        self._provider = provider_class(
            resource=resource_class.create({"service.name": service}),
            sampler=parent_based(ratio(config.sample_percent / 100)),
        )
        exporter = exporter_class(endpoint=config.endpoint, timeout=config.export_timeout_s)
        self._provider.add_span_processor(
            processor_class(
                exporter,
                max_queue_size=config.max_queue_spans,
                max_export_batch_size=min(_EXPORT_BATCH_SPANS, config.max_queue_spans),
                schedule_delay_millis=config.export_interval_s * 1000,
                export_timeout_millis=config.export_timeout_s * 1000,
            )
        )
        self._tracer = self._provider.get_tracer("modelfleet")
        self._propagator = propagator_class()
        self._server_kind = trace.SpanKind.SERVER
        self._router_spans: dict[int, Any] = {}

    def shutdown(self) -> None:
        """Export what is left and stop the exporter's thread."""
        self._provider.shutdown()

    def _parent(self, traceparent: str | None) -> Any:
        return None if traceparent is None else self._propagator.extract({"traceparent": traceparent})

    # server -------------------------------------------------------------------------------------------

    def inference(
        self,
        timing: InferTiming,
        traceparent: str | None,
        model: str,
        version: str | None,
        status: int,
        error: str | None = None,
    ) -> None:
        """The span tree of one finished inference, from its timestamps (time.monotonic seconds)."""
        offset_ns = time.time_ns() - time.monotonic_ns()

        def ns(at: float) -> int:
            return int(at * 1e9) + offset_ns

        attributes: dict[str, Any] = {MODEL: model, STATUS: status}
        if version is not None:
            attributes[VERSION] = version
        end = timing.encoded or timing.batch_done or timing.decoded or time.monotonic()
        root = self._tracer.start_span(
            "route",
            context=self._parent(traceparent),
            kind=self._server_kind,
            start_time=ns(timing.received),
            attributes={**attributes, "http.route": "/v2/models/{model}/infer"},
        )
        if not root.is_recording():  # not sampled: its children would not be either
            return
        if error is not None:
            root.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        inside = self._trace.set_span_in_context(root)

        def child(name: str, start: float, stop: float, extra: dict[str, Any], context: Any = inside) -> Any:
            span = self._tracer.start_span(
                name, context=context, start_time=ns(start), attributes={**attributes, **extra}
            )
            span.end(end_time=ns(stop))
            return span

        if timing.decoded:
            child("decode", timing.received, timing.decoded, {})
            if timing.batch_started:
                child("queue", timing.decoded, timing.batch_started, {QUEUE_MS: timing.queue_ms})
                batch_extra = {BATCH_ITEMS: timing.batch_items, BATCH_REQUESTS: timing.batch_requests}
                batch = self._tracer.start_span(
                    "batch",
                    context=inside,
                    start_time=ns(timing.batch_started),
                    attributes={**attributes, **batch_extra},
                )
                if timing.run_finished:
                    child("compute", timing.run_started, timing.run_finished, batch_extra,
                          self._trace.set_span_in_context(batch))  # fmt: skip
                batch.end(end_time=ns(timing.batch_done or timing.run_finished or end))
            if timing.encoded and timing.answered:
                child("encode", timing.answered, timing.encoded, {})
        root.end(end_time=ns(end))

    # router -------------------------------------------------------------------------------------------

    def attempt(self, key: int, traceparent: bytes | None, model: str, replica: str) -> bytes:
        """Start the router's span for one attempt; the ``traceparent`` to send the replica."""
        parent = None if traceparent is None else self._parent(traceparent.decode("latin-1"))
        span = self._tracer.start_span(
            "router", context=parent, kind=self._server_kind, attributes={MODEL: model, REPLICA: replica}
        )
        self._router_spans[key] = span
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier.get("traceparent", "").encode("latin-1")

    def attempt_done(self, key: int, status: int) -> None:
        span = self._router_spans.pop(key, None)
        if span is not None:
            span.set_attribute(STATUS, status)
            span.end()


def tracer_for(config: TracingConfig, default_service: str) -> Tracer | None:
    """A Tracer when ``config.enabled``, else None (and nothing of OpenTelemetry imported)."""
    return Tracer(config, default_service) if config.enabled else None


def with_traceparent(headers: list[tuple[bytes, bytes]], value: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` with their traceparent replaced by ``value`` (the router's span is the replica's parent)."""
    kept = [(name, field) for name, field in headers if name.lower() != _TRACEPARENT]
    if value:
        kept.append((_TRACEPARENT, value))
    return kept
