"""Observing a server or a fleet: OpenTelemetry traces (an optional extra) and the live dashboard at /ui.

The same two sections sit in a serve spec and a fleet spec (`tracing:`, `ui:`); a fleet hands its
`tracing:` to every replica and to the router, so one trace follows a request through both.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from modelfleet.config.base import SpecModel

DEFAULT_TRACES_PATH = "/v1/traces"


class TracingConfig(SpecModel):
    """OpenTelemetry spans for each inference, exported with OTLP over HTTP (protobuf).

    Needs the `otel` extra (`pip install modelfleet[otel]`). Off by default; when off nothing of
    OpenTelemetry is imported and the request path pays one `is None` check per request.
    """

    enabled: bool = Field(
        default=False,
        description="Record a span tree per inference (route, decode, queue, batch, compute, encode) and "
        "export it; needs the `otel` extra.",
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces. Unset: the standard "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else "
        "http://localhost:4318/v1/traces.",
    )
    service_name: str | None = Field(
        default=None,
        description="service.name resource attribute; unset: OTEL_SERVICE_NAME, else modelfleet-server or "
        "modelfleet-router.",
    )
    sample_percent: float = Field(
        default=100.0,
        ge=0,
        le=100,
        description="Share of new traces recorded, in percent (parent-based: a request whose traceparent "
        "says sampled is always recorded).",
    )
    export_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Longest time a finished span waits before it is exported."
    )
    export_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest time one export POST to the collector may take."
    )
    max_queue_spans: int = Field(
        default=2048,
        ge=64,
        le=1_000_000,
        description="Finished spans held for export at most; beyond it new spans are dropped (a collector "
        "that is down never grows the server's memory).",
    )


class UiConfig(SpecModel):
    """The live dashboard page at /ui and the JSON it polls at /ui/data (auth like /fleet/status)."""

    enabled: bool = Field(default=True, description="Serve /ui and /ui/data.")
    refresh_s: float = Field(
        default=1.0, ge=0.2, le=60, description="How often the page polls /ui/data, in seconds."
    )
    max_events: int = Field(
        default=50, ge=0, le=1000, description="Events and alerts shown in the page's feed at most."
    )
    reports_dir: Path | None = Field(
        default=None,
        description="Folder of saved reports (relative to the spec): the page links the newest "
        "bench*.html, tune*.html and review*.html in it, served at /ui/reports/NAME.",
    )
    replica_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="Router only: longest wait for one replica's figures (queue wait, memory) per poll; a "
        "replica slower than this is shown without them.",
    )

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "reports_dir")
