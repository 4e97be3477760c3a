"""What a router process needs to know: where it listens and which upstream serves which model.

Written as JSON by the supervisor (local) or into a ConfigMap (Kubernetes) and read by
``modelfleet fleet router CONFIG``. Kept apart from the router so rendering never imports aiohttp.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator

from modelfleet.config.base import SpecModel, parse_spec
from modelfleet.errors import NotFound, SpecError
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
    max_in_flight: int = Field(
        default=DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        description="Requests the router keeps in flight to this upstream at most; beyond it the router "
        "picks another replica or sheds with 503.",
    )


class RouterSettings(SpecModel):
    """The router's whole configuration."""

    fleet: str = Field(description="Fleet name, for metrics and the server metadata answer.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on.")
    request_timeout_s: float = Field(
        default=11.0, gt=0, description="Longest wait for one upstream answer (504 after)."
    )
    health_interval_s: float = Field(
        default=0.5, gt=0, description="How often each upstream's readiness is polled."
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
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
    max_url_bytes: int = Field(default=8192, ge=256, description="Longer request targets get 414.")
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Request headers larger than this in all get 431."
    )
    max_header_count: int = Field(default=100, ge=8, description="More request headers than this get 431.")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request whose headers are not complete this long after its first byte gets 408.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request whose body is not complete this long after its headers gets 408.",
    )
    idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A keep-alive connection with nothing in progress this long is closed.",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open client connections at most; a new one beyond gets 503 and is closed.",
    )
    max_pipelined_requests: int = Field(
        default=32,
        ge=1,
        description="Parsed requests waiting per connection before the router stops reading it.",
    )
    max_upstream_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="A larger upstream response is dropped and answered 502.",
    )
    retry_budget_percent: float = Field(
        default=20.0,
        ge=0,
        le=100,
        description="Retries (after a failed connection or a replica's 503) allowed as a share of requests over 10 s.",
    )
    retry_budget_min_per_s: float = Field(
        default=10.0, ge=0, description="Retries per second allowed on top of retry_budget_percent."
    )
    max_overload_hold_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Longest the router answers a model's requests itself (503) for a replica that refused "
        "the model as overloaded: it holds that replica for the replica's retry_after_s, capped at this; "
        "0 forwards every request.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate; with tls_key_file the router serves HTTPS only."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key for tls_cert_file.")

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
) -> RouterSettings:
    """The router of ``plan``'s fleet; ``keys_file`` (None while auth is off) is where the router reads keys,
    ``tls_files`` (certificate, key) where it reads its TLS pair (None: plain HTTP)."""
    spec = plan.fleet
    router = spec.router
    return RouterSettings(
        fleet=spec.name,
        host=host,
        port=port,
        request_timeout_s=spec.request_timeout_s,
        health_interval_s=router.health_interval_s,
        max_body_bytes=router.max_body_bytes,
        upstreams=upstreams,
        keys_file=keys_file,
        protect_metrics=spec.auth.protect_metrics,
        max_url_bytes=router.max_url_bytes,
        max_header_bytes=router.max_header_bytes,
        max_header_count=router.max_header_count,
        header_timeout_s=router.header_timeout_s,
        body_timeout_s=router.body_timeout_s,
        idle_timeout_s=router.idle_timeout_s,
        max_connections=router.max_connections,
        max_pipelined_requests=router.max_pipelined_requests,
        max_upstream_response_bytes=router.max_upstream_response_bytes,
        retry_budget_percent=router.retry_budget_percent,
        retry_budget_min_per_s=router.retry_budget_min_per_s,
        max_overload_hold_s=router.max_overload_hold_s,
        tls_cert_file=None if tls_files is None else tls_files[0],
        tls_key_file=None if tls_files is None else tls_files[1],
    )


def write_router_settings(settings: RouterSettings, path: Path) -> None:
    path.write_text(settings.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_router_settings(path: Path) -> RouterSettings:
    if not path.is_file():
        raise NotFound(f"router config {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"router config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"router config {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_spec(data, RouterSettings, str(path))
