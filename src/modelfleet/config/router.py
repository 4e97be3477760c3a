"""The fleet spec's `router` section: the one endpoint clients call, and the limits it holds them to."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from modelfleet.config.base import DNS_SUBDOMAIN, MAX_SECRET_NAME_CHARS, SpecModel


class RouterLimits(SpecModel):
    """What a router allows a client and a replica: sizes, timeouts, connections, retries, holds.

    The fleet spec's `router` section and the router process's own settings (fleet/router_config.py)
    both carry these fields, so they are declared once, here.
    """

    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    max_url_bytes: int = Field(default=8192, ge=256, description="Longer request targets get 414.")
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Request headers larger than this in all get 431."
    )
    max_header_count: int = Field(default=100, ge=8, description="More request headers than this get 431.")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request whose headers are not complete this long after its first byte gets 408 (slowloris).",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request whose body is not complete this long after its headers gets 408 (a client "
        "trickling the body); a body of max_body_bytes must arrive at max_body_bytes / body_timeout_s at least.",
    )
    idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A keep-alive connection with nothing in progress this long is closed.",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open client connections per router process; a new one beyond gets 503 and is closed.",
    )
    max_pipelined_requests: int = Field(
        default=32,
        ge=1,
        description="Parsed requests waiting per connection before the router stops reading it.",
    )
    max_upstream_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="A larger answer from a replica is dropped and answered 502.",
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
    max_degraded_wait_s: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="While a model has a replica down (not ready, or back for under 2 s) and no ready one has "
        "room for a request (each refuses it as overloaded, or is at its window or limit), the request waits "
        "on the router in the model's queue, first come first served, and is sent when one has room (a "
        "resend after a replica's refusal costs one retry of the retry budget), for at most this long from "
        "its arrival and never past its deadline; 0 answers 503 at once.",
    )
    max_overload_hold_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="After a replica answers 503 with retry_after_s (overloaded), the router answers that "
        "model's requests for it itself (503, or another replica) for that long, at most this; 0 forwards all.",
    )

    def limit_fields(self) -> dict[str, object]:
        """These settings alone, to build the router's settings from the fleet spec."""
        return self.model_dump(include=set(RouterLimits.model_fields))


class RouterConfig(RouterLimits):
    """The one endpoint clients call; it routes by model name to a ready replica."""

    port: int = Field(default=8080, ge=0, le=65535, description="Local router port; 0 picks a free one.")
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="V2 gRPC port of the router (0 picks a free one locally); set, every server replica "
        "serves gRPC too and the router forwards to it. On Kubernetes the gRPC container and Service port of "
        "servers and router (appProtocol grpc, gRPC probes); 0 there means 8001. None: REST only.",
    )
    host: str = Field(
        default="127.0.0.1", description="Local router address. 0.0.0.0 to accept remote clients."
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Longest the router waits for an upstream answer; defaults to the largest model timeout_s plus 1 s.",
    )
    health_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="How often the router polls each replica's /v2/health/ready."
    )
    max_in_flight_per_replica: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight to one replica at most; when every ready replica is at it the router "
        "answers 503 at once. Default: 4 × Σ(max_batch_size × instances) × workers of the replica, at least 8.",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (relative to the spec); with tls_key_file the local router serves HTTPS.",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key for tls_cert_file.")
    tls_secret_name: str | None = Field(
        default=None,
        description="Kubernetes: a kubernetes.io/tls Secret (keys tls.crt, tls.key) mounted into the router "
        "pods, which then serve HTTPS. Never rendered with data.",
    )

    @field_validator("tls_secret_name")
    @classmethod
    def _tls_secret_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > MAX_SECRET_NAME_CHARS or not DNS_SUBDOMAIN.match(value)):
            raise ValueError(
                f"tls_secret_name {value!r} must be a Kubernetes object name: lower-case letters, digits, "
                f"'-' and '.', at most {MAX_SECRET_NAME_CHARS} characters"
            )
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("router: tls_cert_file and tls_key_file go together: give both or neither")
        return self

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "tls_cert_file", "tls_key_file")
