"""The serve spec: which models one server process group loads and how it batches and protects them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, model_validator

from modelfleet.config.base import SpecModel
from modelfleet.config.drift import DriftConfig
from modelfleet.config.observe import TracingConfig, UiConfig
from modelfleet.config.residency import ResidencyConfig


class BatchingConfig(SpecModel):
    """Dynamic batching for one model. A batch closes when full or `max_delay_s` after its first request."""

    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most items (rows) in one model run.")
    max_delay_s: float = Field(
        default=0.002,
        ge=0.0,
        le=1.0,
        description="Longest a request waits for others to join its batch. 0 runs whatever is queued at once.",
    )
    dispatch_when_idle: bool = Field(
        default=True,
        description=(
            "Start a run at once when the model is idle instead of waiting max_delay_s; batches still form "
            "from requests that arrive during a run. False trades latency at low load for fuller batches (GPUs)."
        ),
    )
    max_queue_items: int = Field(
        default=2048,
        ge=1,
        description=(
            "Hard memory bound: items allowed to wait for a run; beyond this the server answers 503 with "
            "Retry-After. Admission by expected wait (max_queue_wait_s) usually refuses well before it."
        ),
    )
    max_queue_wait_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "Queue-wait target: a request expected to have its answer later than this (its queue wait and "
            "its own run, from the batch-aware cost of the runs ahead) is refused at once with 503. Unset: "
            "queue_wait_runs × the measured compute time of a run that held one request (plus max_delay_s "
            "when dispatch_when_idle is off)."
        ),
    )
    queue_wait_runs: float = Field(
        default=4.0,
        gt=0,
        le=1000,
        description=(
            "With max_queue_wait_s unset, the queue-wait target in unshared runs' compute time (at least "
            "10 ms). Smaller keeps admitted latency nearer the unloaded one; larger gives fuller batches "
            "and more throughput under overload (docs/serve.md, Overload and admission)."
        ),
    )
    max_items_per_request: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Most items (first-dimension rows) one request may carry; more get 400. "
            "Unset: 4 × max_batch_size (a request is split into at most 4 runs' worth of work)."
        ),
    )

    def items_per_request_limit(self) -> int:
        """max_items_per_request, or its default of 4 × max_batch_size."""
        return self.max_items_per_request or 4 * self.max_batch_size


class ModelRuntimeConfig(SpecModel):
    """How a server runs one model: shared by the serve spec and the fleet spec's model entries."""

    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Dynamic batching for this model."
    )
    instances: int = Field(
        default=1, ge=1, le=64, description="Model runs that may execute at once in one process."
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime threads per run; 0 lets the server pick (cores ÷ workers)."
    )
    timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline per request, queue and compute together (504 after)."
    )
    length_grouping: bool = Field(
        default=True,
        description="Text models: split each batch into runs of similar token length so padding stays "
        "small. False pads the whole batch to its longest text in one run (accelerators whose run costs "
        "about the same at any length); `modelfleet tune` can search both.",
    )
    prepack_weights: bool = Field(
        default=True,
        description="ONNX Runtime keeps a repacked copy of every MatMul weight, laid out for its kernels: "
        "MiniLM fp32 here ran batch 1 in 6.8 ms instead of 10.0 and batch 32 up to 1.3x faster, and a loaded "
        "and warmed MiniLM added 118 MiB of resident memory with it against 117 MiB without (ONNX Runtime "
        "frees the unpacked copy). False gives up the speed for the unpacked layout (kept for comparison).",
    )
    warmup_runs: int = Field(
        default=2,
        ge=0,
        description="Runs through the model's batcher before it reports ready, alternating max_batch_size and "
        "batch 1 (verification sentences for text models, inputs generated from the specs otherwise).",
    )
    drift: DriftConfig = Field(
        default_factory=DriftConfig,
        description="Sampling of served items and drift detection (docs/drift.md).",
    )

    def runtime_fields(self) -> dict[str, object]:
        """These settings alone, to build another spec's model entry from this one."""
        return self.model_dump(include=set(ModelRuntimeConfig.model_fields))


class ModelConfig(ModelRuntimeConfig):
    """One model to serve."""

    path: Path | None = Field(default=None, description="Artifact folder written by `modelfleet build`.")
    ref: str | None = Field(default=None, description="Registry reference NAME, NAME:VERSION or NAME@ALIAS.")
    name: str | None = Field(default=None, description="Name clients use; defaults to the artifact's name.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.ref is None):
            raise ValueError(
                "give exactly one of `path` (an artifact folder) or `ref` (a registry reference)"
            )
        return self

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "path")
        self.drift.resolve_paths(base)


class ServerConfig(SpecModel):
    host: str = Field(
        default="127.0.0.1", description="Address to listen on. 0.0.0.0 to accept remote clients."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="TCP port of V2 gRPC (Triton's inference.GRPCInferenceService and grpc.health.v1), "
        "same models, queues, auth, limits and TLS as HTTP; 0 picks a free one. Unset: no gRPC port "
        "(Triton's is 8001; a fleet sets one per replica).",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Processes sharing the port (SO_REUSEPORT) for CPU scaling."
    )
    cpu_cores: float | None = Field(
        default=None,
        gt=0,
        le=512,
        description="CPU cores this server may use: automatic ONNX Runtime thread counts (a model's "
        "intra_op_threads 0) divide these by workers. A fleet sets it from its pool's CPU limit. "
        "Default: the CPUs the process may run on, capped by its cgroup's CPU limit.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    max_element_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Largest BYTES element (one text, one blob) after decoding; larger get 413.",
    )
    max_tensor_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description=(
            "Decoded tensor bytes one request may hold, all inputs together (BYTES elements count 4 + "
            "their length); more get 413. Checked from the shape before anything is allocated."
        ),
    )
    max_url_bytes: int = Field(
        default=8 * 1024, ge=256, description="Longest request target (path and query); longer get 414."
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Most bytes of request line and headers together; more get 431.",
    )
    max_headers: int = Field(default=100, ge=8, description="Most header fields per request; more get 431.")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Time a connection gets to send a whole request head; slower ones get 408 and are closed.",
    )
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Open connections per process; a request on a connection beyond this gets 503 and is closed.",
    )
    graceful_shutdown_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, time allowed for in-flight requests."
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate; with tls_key_file turns on HTTPS."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key for tls_cert_file.")
    access_log: bool = Field(
        default=False, description="Log every request. Off by default: it costs throughput."
    )

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "tls_cert_file", "tls_key_file")


class AuthConfig(SpecModel):
    """API keys with scopes (`infer:<model or glob>`, `read`, `admin`); see docs/security.md."""

    enabled: bool = Field(
        default=False, description="Require an API key on every route but the health probes."
    )
    keys_file: Path | None = Field(default=None, description="Key store written by `modelfleet keys create`.")
    audit_log: Path | None = Field(
        default=None,
        description="JSON-lines audit log of admin actions and auth failures, with client addresses; `-` writes to stdout.",
    )
    protect_metrics: bool = Field(
        default=True, description="Require the `read` scope for /metrics when auth is on."
    )

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthConfig:
        if self.enabled and self.keys_file is None:
            raise ValueError("auth.enabled needs auth.keys_file (create keys with `modelfleet keys create`)")
        return self

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "keys_file")
        if self.audit_log is not None and str(self.audit_log) != "-":  # `-` is stdout, not a file here
            self.resolve_path_fields(base, "audit_log")


REGISTRY_ENV = "MODELFLEET_REGISTRY"
DEFAULT_REGISTRY_ROOT = Path("~") / ".modelfleet" / "registry"


def registry_root(root: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The registry folder: ``root``, else $MODELFLEET_REGISTRY, else ~/.modelfleet/registry (user-expanded).

    The one place the default is spelled: the `registry` commands, `serve --ref` and library users
    (`Registry(registry_root())`) all find the same store.
    """
    environ = os.environ if env is None else env
    chosen = root if root is not None else Path(environ[REGISTRY_ENV]) if environ.get(REGISTRY_ENV) else None
    return (chosen or DEFAULT_REGISTRY_ROOT).expanduser()


class RegistryConfig(SpecModel):
    """Where `ref:` models come from, and how far to trust them."""

    root: Path | None = Field(
        default=None, description="Registry folder; default $MODELFLEET_REGISTRY or ~/.modelfleet/registry."
    )
    encryption_key_file: Path | None = Field(
        default=None, description="AES-256 key of an encrypted registry."
    )
    trusted_public_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM). When given, a model loads only with a valid signature by one of them.",
    )
    watch_interval_s: float = Field(
        default=2.0,
        ge=0,
        description="How often to check whether an alias moved (0: never; load the alias once).",
    )

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "root", "encryption_key_file", "trusted_public_keys")


class ServeSpec(SpecModel):
    server: ServerConfig = Field(
        default_factory=ServerConfig, description="Listener, workers, limits and TLS."
    )
    models: list[ModelConfig] = Field(min_length=1, description="Models this server loads.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys and audit log.")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="Registry for `ref:` models."
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry spans per inference (docs/observe.md)."
    )
    ui: UiConfig = Field(default_factory=UiConfig, description="The live dashboard at /ui (docs/observe.md).")
    residency: ResidencyConfig = Field(
        default_factory=ResidencyConfig,
        description="Memory budget, lazy loading and shared weights (docs/serve.md, Many models).",
    )

    def resolve_paths(self, base: Path) -> None:
        self.server.resolve_paths(base)
        self.ui.resolve_paths(base)
        self.auth.resolve_paths(base)
        self.registry.resolve_paths(base)
        for model in self.models:
            model.resolve_paths(base)
