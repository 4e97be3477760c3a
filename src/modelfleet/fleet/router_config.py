"""What a router process needs to know: where it listens and which upstream serves which model.

Written as JSON by the supervisor (local) or into a ConfigMap (Kubernetes) and read by
``modelfleet fleet router CONFIG``. Kept apart from the router so rendering never imports aiohttp.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator

from modelfleet import fileio
from modelfleet.config.base import SpecModel, parse_spec
from modelfleet.config.observe import TracingConfig, UiConfig
from modelfleet.config.router import RouterLimits
from modelfleet.errors import NotFound, SpecError
from modelfleet.fleet.buckets import LATENCY_BUCKETS_S, latency_edges_s
from modelfleet.fleet.plan import FleetPlan, ServerGroup

DEFAULT_MAX_IN_FLIGHT = 256
# Requests in flight per batch slot (max_batch_size × instances): one batch running, one forming, and
# slack for bursts and the network. Fewer starves the batcher under bursty arrivals; more only queues
# in the server where the router can no longer send the request elsewhere.
_IN_FLIGHT_PER_BATCH_SLOT = 4
_MIN_IN_FLIGHT = 8


class Upstream(SpecModel):
    """One model-server replica (or one Kubernetes Service in front of a group's replicas)."""

    name: str = Field(description="Replica id, e.g. cpu-0/1; shown in status and metrics.")
    group: str = Field(description="Server group the replica belongs to.")
    url: str = Field(description="Base URL, e.g. http://127.0.0.1:41234.")
    models: list[str] = Field(min_length=1, description="Models this upstream serves.")
    grpc_address: str | None = Field(
        default=None,
        description="HOST:PORT of the upstream's V2 gRPC port (its server.grpc_port), where the router's "
        "gRPC front forwards; None: the upstream takes no gRPC.",
    )
    max_in_flight: int = Field(
        default=DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        description="Requests the router keeps in flight to this upstream at most; beyond it the router "
        "picks another replica or sheds with 503.",
    )


class RouterSettings(RouterLimits):
    """The router's whole configuration."""

    fleet: str = Field(description="Fleet name, for metrics and the server metadata answer.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on.")
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the router's V2 gRPC front (forwards to the upstreams' grpc_address); 0 picks "
        "a free one. None: no gRPC front.",
    )
    request_timeout_s: float = Field(
        default=11.0, gt=0, description="Longest wait for one upstream answer (504 after)."
    )
    health_interval_s: float = Field(
        default=0.5, gt=0, description="How often each upstream's readiness is polled."
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After sent with 503 when no replica is ready."
    )
    upstreams: list[Upstream] = Field(min_length=1, description="Every replica the router may send to.")
    keys_file: Path | None = Field(
        default=None,
        description="API key store (from `modelfleet keys create`). When set, the routes the router answers "
        "itself need a key with the `read` scope, as on a server: /v2, /v2/repository/index, /fleet/status, "
        "and /metrics with protect_metrics. Health probes stay open; model routes are checked by the servers.",
    )
    protect_metrics: bool = Field(
        default=True, description="With keys_file: /metrics needs the `read` scope too."
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate; with tls_key_file the router serves HTTPS only."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key for tls_cert_file.")
    latency_buckets_s: list[float] = Field(
        default_factory=lambda: list(LATENCY_BUCKETS_S),
        min_length=1,
        description="Edges of the router's request-duration histograms: the defaults plus every model's "
        "latency SLO threshold, so the latency alerts count slow requests at the threshold itself.",
    )
    split_file: Path | None = Field(
        default=None,
        description="Traffic split (TrafficSplit JSON) the router watches: canary upstreams and their weights, "
        "re-read within health_interval_s of a change, so a rollout moves traffic without a restart.",
    )
    state_dir: Path | None = Field(
        default=None,
        description="A local fleet's state folder: the dashboard at /ui reads its processes, restarts, "
        "events and SLOs from it. Unset (Kubernetes): the page shows what the router itself knows.",
    )
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="OpenTelemetry spans.")
    ui: UiConfig = Field(default_factory=UiConfig, description="The live dashboard at /ui.")

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        return self

    @property
    def model_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for upstream in self.upstreams:
            for model in upstream.models:
                seen.setdefault(model)
        return list(seen)


class CanaryRoute(SpecModel):
    """One model's split: a share of its requests goes to the canary upstreams serving its new version."""

    model: str = Field(description="Fleet model name whose traffic is split.")
    baseline_version: str = Field(description="Version the fleet's own replicas serve (label in metrics).")
    canary_version: str = Field(description="Version the canary upstreams serve (label in metrics).")
    canary_percent: float = Field(
        ge=0, le=100, description="Share of the model's requests sent to the canary, in percent."
    )
    shadow_percent: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Share of the baseline's requests also mirrored to the canary, in percent; the "
        "canary's answer is compared with the baseline's and never returned.",
    )
    upstreams: list[Upstream] = Field(min_length=1, description="Canary replicas serving canary_version.")


class TrafficSplit(SpecModel):
    """The router's split file: at most one canary route per model."""

    routes: list[CanaryRoute] = Field(default_factory=list, description="Canary routes, one per model.")

    @model_validator(mode="after")
    def _one_per_model(self) -> TrafficSplit:
        models = [route.model for route in self.routes]
        if len(models) != len(set(models)):
            raise ValueError("at most one canary route per model")
        return self


def write_traffic_split(split: TrafficSplit, path: Path) -> None:
    """Replace the split file atomically, so the router never reads half of it."""
    fileio.write_atomic(path, (split.model_dump_json(indent=2) + "\n").encode("utf-8"))


def read_traffic_split(path: Path) -> TrafficSplit:
    """The split at ``path``; no file means no split."""
    if not path.is_file():
        return TrafficSplit()
    return parse_spec(_read_json(path, "traffic split"), TrafficSplit, str(path))


def replica_in_flight_limit(plan: FleetPlan, group: ServerGroup) -> int:
    """Requests in flight the router allows one replica of ``group``: ``router.max_in_flight_per_replica``,
    or 4 × the batch slots of its processes (Σ max_batch_size × instances, times workers), at least 8."""
    configured = plan.fleet.router.max_in_flight_per_replica
    if configured is not None:
        return configured
    slots = (
        sum(model.batching.max_batch_size * model.instances for model in group.models) * group.pool.workers
    )
    return max(_MIN_IN_FLIGHT, _IN_FLIGHT_PER_BATCH_SLOT * slots)


def router_settings(
    plan: FleetPlan,
    host: str,
    port: int,
    upstreams: list[Upstream],
    keys_file: Path | None = None,
    tls_files: tuple[Path, Path] | None = None,
    split_file: Path | None = None,
    grpc_port: int | None = None,
    state_dir: Path | None = None,
) -> RouterSettings:
    """The router of ``plan``'s fleet; ``keys_file`` (None while auth is off) is where the router reads keys,
    ``tls_files`` (certificate, key) where it reads its TLS pair (None: plain HTTP), ``split_file`` the
    traffic split it watches (None: no canaries), ``grpc_port`` its V2 gRPC front's (None: none)."""
    spec = plan.fleet
    router = spec.router
    return RouterSettings(
        fleet=spec.name,
        host=host,
        port=port,
        grpc_port=grpc_port,
        request_timeout_s=spec.request_timeout_s,
        health_interval_s=router.health_interval_s,
        upstreams=upstreams,
        keys_file=keys_file,
        protect_metrics=spec.auth.protect_metrics,
        **router.limit_fields(),
        tls_cert_file=None if tls_files is None else tls_files[0],
        tls_key_file=None if tls_files is None else tls_files[1],
        split_file=split_file,
        latency_buckets_s=list(latency_edges_s(model.slo.latency_ms / 1000 for model in spec.models)),
        state_dir=state_dir,
        tracing=spec.tracing,
        ui=spec.ui,
    )


def write_router_settings(settings: RouterSettings, path: Path) -> None:
    path.write_text(settings.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_router_settings(path: Path) -> RouterSettings:
    if not path.is_file():
        raise NotFound(f"router config {path} does not exist")
    return parse_spec(_read_json(path, "router config"), RouterSettings, str(path))


def _read_json(path: Path, what: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{what} {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
