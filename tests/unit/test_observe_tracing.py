"""The tracer's pieces that need no collector: construction limits, propagation headers, off means None."""

from __future__ import annotations

import pytest

from modelfleet.config.observe import TracingConfig
from modelfleet.observe.timing import InferTiming
from modelfleet.observe.tracing import tracer_for, with_traceparent

pytest.importorskip(
    "opentelemetry.sdk", reason="tracing needs the otel extra: pip install 'modelfleet[otel]'"
)

_NOWHERE = "http://127.0.0.1:9/v1/traces"  # refuses: the one span made here fails its export at shutdown


def test_off_is_no_tracer_at_all() -> None:
    assert tracer_for(TracingConfig(), "modelfleet-server") is None


def test_the_smallest_span_queue_is_accepted() -> None:
    config = TracingConfig(enabled=True, endpoint=_NOWHERE, max_queue_spans=64, export_timeout_s=0.1)
    tracer = tracer_for(config, "modelfleet-server")
    assert tracer is not None
    tracer.shutdown()


def test_the_router_hands_the_replica_its_own_span_as_parent() -> None:
    tracer = tracer_for(
        TracingConfig(enabled=True, endpoint=_NOWHERE, sample_percent=0, export_timeout_s=0.1),
        "modelfleet-router",
    )
    assert tracer is not None
    client = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parent = tracer.attempt(1, client, "alpha", "g-0")
    version, trace_id, span_id, flags = parent.decode().split("-")
    assert (version, trace_id, flags) == (
        "00",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "01",
    )  # sampled: the caller said so
    assert span_id != "00f067aa0ba902b7"
    tracer.attempt_done(1, 200)
    headers = [(b"Content-Type", b"application/json"), (b"TraceParent", client)]
    assert with_traceparent(headers, parent) == [
        (b"Content-Type", b"application/json"),
        (b"traceparent", parent),
    ]
    # An unsampled inference (sample_percent 0, no traceparent) records nothing and raises nothing.
    tracer.inference(InferTiming(0.0), None, "alpha", "1", 200)
    tracer.shutdown()
