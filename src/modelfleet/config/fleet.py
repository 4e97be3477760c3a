"""The fleet spec: many distinct models, the server pools that host them, and how they are deployed.

A *model* entry mirrors :class:`modelfleet.config.serve.ModelConfig` (path or ref, name, batching,
instances, timeout) and adds what the fleet needs to place it (pool, replicas, memory estimate, SLO).
A *pool* describes one kind of server: processes per replica, resources, hardware, autoscaling.
Settings that every model in one process must share (workers, resources, node selector) live on the
pool, not on the model, so a spec cannot ask for two values the same process cannot honour.
The planner (``modelfleet.fleet.plan``) bin-packs each pool's models into server groups.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from modelfleet.config.base import DNS_SUBDOMAIN, MAX_SECRET_NAME_CHARS, SpecModel
from modelfleet.config.observe import TracingConfig, UiConfig
from modelfleet.config.operate import AlertsConfig, NotificationsConfig
from modelfleet.config.residency import ResidencyConfig
from modelfleet.config.retrain import RetrainConfig
from modelfleet.config.review import ReviewConfig
from modelfleet.config.router import RouterConfig
from modelfleet.config.serve import ModelRuntimeConfig
from modelfleet.types import ModelRef

# Kubernetes object names: DNS-1123 labels. Group names get a suffix, so keep room for it.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_FLEET_NAME_CHARS = 40
_MAX_POOL_NAME_CHARS = 16
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Secret names are DNS-1123 subdomains; keys within a Secret are [-._a-zA-Z0-9]+.
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _check_dns_label(value: str, what: str, max_chars: int) -> str:
    if len(value) > max_chars or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be lower-case letters, digits and '-', start and end with a letter or "
            f"digit, at most {max_chars} characters (it becomes part of Kubernetes object names)"
        )
    return value


class ResourcesConfig(SpecModel):
    """What one server replica (one pod, or one local process group) asks for and may use."""

    cpu_cores: float = Field(default=1.0, gt=0, le=512, description="CPU cores requested per replica.")
    cpu_limit_cores: float | None = Field(
        default=None,
        gt=0,
        le=512,
        description="CPU cores a replica may use at most; defaults to `cpu_cores` (guaranteed QoS, no noisy neighbours).",
    )
    memory_mib: int = Field(
        default=2048,
        ge=128,
        description="Memory per replica in MiB, requested and limited alike. Also the bin size for placing models.",
    )
    ephemeral_storage_mib: int = Field(
        default=1024,
        ge=64,
        description="Scratch disk per replica in MiB (the /tmp volume), requested and limited.",
    )
    accelerator_count: int = Field(
        default=0, ge=0, le=16, description="Accelerators per replica (GPUs, Neuron devices)."
    )
    accelerator_resource: str = Field(
        default="nvidia.com/gpu",
        description="Kubernetes extended resource name of the accelerator, e.g. nvidia.com/gpu or aws.amazon.com/neuron.",
    )

    @property
    def effective_cpu_limit_cores(self) -> float:
        return self.cpu_limit_cores if self.cpu_limit_cores is not None else self.cpu_cores

    @model_validator(mode="after")
    def _limit_not_below_request(self) -> ResourcesConfig:
        if self.cpu_limit_cores is not None and self.cpu_limit_cores < self.cpu_cores:
            raise ValueError(
                f"cpu_limit_cores ({self.cpu_limit_cores}) is below cpu_cores ({self.cpu_cores}); "
                "a limit must be at least the request"
            )
        return self


class AutoscalingConfig(SpecModel):
    """Horizontal autoscaling of a pool's server groups (a HorizontalPodAutoscaler on Kubernetes)."""

    enabled: bool = Field(default=True, description="Render a HorizontalPodAutoscaler for each server group.")
    min_replicas: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Fewest replicas; 2 or more keeps a model up through a node drain.",
    )
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most replicas the autoscaler may run.")
    target_cpu_utilization_percent: int = Field(
        default=70,
        ge=10,
        le=100,
        description="Average CPU use (of the request) the autoscaler steers towards.",
    )
    scale_down_stabilization_s: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="How long load must stay low before replicas are removed; avoids flapping on bursty traffic.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        return self


class PoolConfig(SpecModel):
    """One kind of model server. Its models are packed into server groups of this shape."""

    name: str = Field(description="Pool name (lower-case, digits, '-'); server groups are named POOL-N.")
    replicas: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Replicas of each server group (separate processes locally, pods on Kubernetes). "
        "With autoscaling on, the autoscaler's minimum is the larger of this and autoscaling.min_replicas.",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Server processes per replica sharing one port (SO_REUSEPORT)."
    )
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="CPU, memory and accelerators per replica."
    )
    server_overhead_mib: int = Field(
        default=256,
        ge=0,
        description="Memory a server needs before any model loads (Python, runtime, buffers); "
        "subtracted from resources.memory_mib when packing models.",
    )
    max_models_per_server: int = Field(
        default=64, ge=1, le=4096, description="Most models one server group hosts, however small they are."
    )
    instance_type: str | None = Field(
        default=None,
        description="Cloud instance type for this pool, e.g. c7g.4xlarge; becomes a node selector on "
        "node.kubernetes.io/instance-type.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra Kubernetes node labels the pods require."
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description="Kubernetes tolerations (key/operator/value/effect), e.g. for tainted GPU nodes.",
    )
    autoscaling: AutoscalingConfig = Field(
        default_factory=AutoscalingConfig, description="Horizontal autoscaling bounds and target."
    )
    residency: ResidencyConfig = Field(
        default_factory=ResidencyConfig,
        description="Each replica's memory budget for loaded models (the serve spec's `residency`, passed "
        "to every server of the pool); unset, every model loads at start and stays loaded.",
    )

    @model_validator(mode="after")
    def _budget_fits(self) -> PoolConfig:
        budget = self.residency.memory_budget_bytes
        room = (self.resources.memory_mib - self.server_overhead_mib) * 2**20
        if budget is not None and budget > room:
            raise ValueError(
                f"pool {self.name!r}: residency.memory_budget_bytes {budget} is over the {room} bytes a "
                "replica has for models (resources.memory_mib - server_overhead_mib)"
            )
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_dns_label(value, "pool name", _MAX_POOL_NAME_CHARS)


class SloConfig(SpecModel):
    """The latency objective a model is held to; bench, review and alerts read it."""

    latency_ms: float = Field(
        default=100.0, gt=0, description="Latency target in milliseconds at `percentile`."
    )
    percentile: float = Field(
        default=99.0, gt=0, lt=100, description="Percentile the target applies to, e.g. 99."
    )
    error_rate_percent: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Most failed requests (5xx) tolerated, in percent of all requests.",
    )


class FleetModelConfig(ModelRuntimeConfig):
    """One model of the fleet. Mirrors the serve spec's model entry, plus placement and objectives."""

    name: str = Field(description="Name clients use in /v2/models/NAME; unique in the fleet.")
    path: Path | None = Field(
        default=None, description="Artifact folder written by `modelfleet build` (relative to the spec)."
    )
    ref: str | None = Field(default=None, description="Registry reference NAME, NAME:VERSION or NAME@ALIAS.")
    pool: str | None = Field(
        default=None, description="Pool that hosts the model; defaults to the first pool."
    )
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Replicas this model needs at least; its server group runs the largest such figure of its models.",
    )
    memory_mib: int | None = Field(
        default=None,
        ge=1,
        description="Estimated memory of the loaded model in MiB; when absent it is estimated from the artifact's files.",
    )
    demand_per_s: float = Field(
        default=0.0,
        ge=0,
        description="Expected requests per second; the planner puts a model in the least-demanded server "
        "group it fits in, so busy models spread out (0 for all: plain first-fit).",
    )
    slo: SloConfig = Field(
        default_factory=SloConfig, description="Latency and error objective for this model."
    )
    retrain: RetrainConfig | None = Field(
        default=None, description="Retraining hook, triggers and gates (docs/drift.md)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        ModelRef.parse(value)  # same alphabet as registry names, so a name is always a valid reference
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None:
            ModelRef.parse(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FleetModelConfig:
        if (self.path is None) == (self.ref is None):
            raise ValueError(
                f"model {self.name!r}: give exactly one of `path` (an artifact folder) or `ref` (a registry reference)"
            )
        return self

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "path")
        self.drift.resolve_paths(base)


class AuthConfig(SpecModel):
    """API-key authentication of inference requests. The key store itself is managed by `modelfleet keys`."""

    enabled: bool = Field(
        default=True,
        description="Require an API key on every route of the router and the servers but the health probes.",
    )
    keys_file: Path | None = Field(
        default=None,
        description="Key store from `modelfleet keys create` that local servers read (relative to the spec); "
        "needed by `fleet up` while auth is on. On Kubernetes the store comes from `secret_name` instead.",
    )
    secret_name: str | None = Field(
        default=None,
        description="Kubernetes Secret holding the key store (key `keys`); defaults to FLEET-auth. Never rendered with data.",
    )
    protect_metrics: bool = Field(
        default=True,
        description="Require the `read` scope for /metrics on the router and the servers while auth is on.",
    )

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "keys_file")


class AuditConfig(SpecModel):
    """The servers' audit log: admin actions (repository load/unload) and auth failures, with client addresses."""

    enabled: bool = Field(
        default=True,
        description="Keep an audit log: locally one JSON-lines file per server process in the fleet's state "
        "folder (`audit/PROCESS.jsonl`), on Kubernetes each server's stdout (collected with its logs).",
    )


class ImageConfig(SpecModel):
    """The model-server container image (built from `modelfleet image context`)."""

    repository: str = Field(
        default="ghcr.io/modelfleet/modelfleet", description="Image repository without tag or digest."
    )
    tag: str = Field(default="0.1.0", description="Image tag; ignored for pulling when `digest` is given.")
    digest: str | None = Field(
        default=None,
        description="Image digest sha256:...; when given the image is pinned by it (recommended).",
    )

    @field_validator("tag")
    @classmethod
    def _no_latest(cls, value: str) -> str:
        if value == "latest":
            raise ValueError("tag 'latest' is not reproducible: give a version tag, and a digest to pin it")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _DIGEST.match(value):
            raise ValueError(f"digest {value!r} must look like sha256:<64 hex digits>")
        return value

    @property
    def reference(self) -> str:
        if self.digest is not None:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}"


class MonitoringConfig(SpecModel):
    """Prometheus Operator objects to render next to the fleet."""

    service_monitor: bool = Field(
        default=False, description="Render ServiceMonitors for the servers and the router."
    )
    prometheus_rule: bool = Field(
        default=False, description="Render a PrometheusRule with SLO and availability alerts."
    )
    grafana_dashboard: bool = Field(
        default=False,
        description='Render the fleet\'s Grafana dashboard as a ConfigMap labelled grafana_dashboard: "1" '
        "for Grafana's dashboard sidecar (a local fleet writes it to dashboard.json in its state folder).",
    )
    scrape_interval_s: int = Field(
        default=15, ge=1, le=600, description="Prometheus scrape interval in seconds."
    )
    namespace: str = Field(
        default="monitoring",
        description="Namespace Prometheus runs in; the NetworkPolicy lets it reach /metrics.",
    )
    scrape_secret_name: str | None = Field(
        default=None,
        description="Secret in the fleet's namespace holding a `read`-scoped API key that Prometheus sends "
        "as a bearer token to /metrics; the ServiceMonitor needs it while auth is on with "
        "`auth.protect_metrics`. Never rendered with data.",
    )
    scrape_secret_key: str = Field(
        default="api-key", description="Key within `scrape_secret_name` that holds the API key."
    )
    router_ca_secret_name: str | None = Field(
        default=None,
        description="With `router.tls_secret_name`: Secret in the fleet's namespace holding the CA certificate "
        "(PEM) Prometheus verifies the router's certificate with. Default: the router's own TLS Secret, "
        "trusting its `tls.crt` itself (a self-signed certificate, or a leaf Prometheus pins). Never rendered "
        "with data.",
    )
    router_ca_secret_key: str = Field(
        default="ca.crt", description="Key within `router_ca_secret_name` that holds the CA certificate."
    )
    router_server_name: str | None = Field(
        default=None,
        description="Name Prometheus checks the router's certificate against (it scrapes pod addresses, "
        "which certificates seldom name). Default: the router Service's name FLEET-router.NAMESPACE.svc.",
    )
    router_insecure_skip_verify: bool = Field(
        default=False,
        description="Scrape the TLS router without verifying its certificate. Only if you accept scrapes "
        "that could be intercepted; excludes `router_ca_secret_name`.",
    )

    @field_validator("scrape_secret_name", "router_ca_secret_name")
    @classmethod
    def _secret_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and (len(value) > MAX_SECRET_NAME_CHARS or not DNS_SUBDOMAIN.match(value)):
            raise ValueError(
                f"{info.field_name} {value!r} must be a Kubernetes object name: lower-case letters, digits, "
                f"'-' and '.', start and end with a letter or digit, at most {MAX_SECRET_NAME_CHARS} characters"
            )
        return value

    @field_validator("scrape_secret_key", "router_ca_secret_key")
    @classmethod
    def _secret_key(cls, value: str, info: ValidationInfo) -> str:
        if len(value) > MAX_SECRET_NAME_CHARS or not _SECRET_KEY.match(value):
            raise ValueError(
                f"{info.field_name} {value!r} must be a Secret key: letters, digits, '-', '_' and '.', "
                f"at most {MAX_SECRET_NAME_CHARS} characters"
            )
        return value

    @field_validator("router_server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > MAX_SECRET_NAME_CHARS or not DNS_SUBDOMAIN.match(value)):
            raise ValueError(
                f"router_server_name {value!r} must be a DNS name: lower-case letters, digits, '-' and '.', "
                f"at most {MAX_SECRET_NAME_CHARS} characters"
            )
        return value

    @model_validator(mode="after")
    def _one_router_trust(self) -> MonitoringConfig:
        if self.router_insecure_skip_verify and self.router_ca_secret_name is not None:
            raise ValueError(
                "router_insecure_skip_verify skips the check router_ca_secret_name is for: give one or the other"
            )
        return self


class KubernetesConfig(SpecModel):
    """How the fleet is rendered for Kubernetes."""

    namespace: str = Field(default="modelfleet", description="Namespace of every rendered object.")
    create_namespace: bool = Field(
        default=False,
        description="Render the Namespace too, labelled for the `restricted` Pod Security Standard.",
    )
    port: int = Field(
        default=8000, ge=1024, le=65535, description="Container and Service port of servers and router."
    )
    router_replicas: int = Field(default=2, ge=1, le=100, description="Replicas of the router Deployment.")
    router_resources: ResourcesConfig = Field(
        default_factory=lambda: ResourcesConfig(cpu_cores=0.5, memory_mib=256),
        description="Resources of one router pod.",
    )
    client_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose pods may call the router; empty allows every namespace in the cluster. "
        "Servers only ever accept the router and Prometheus.",
    )
    termination_grace_s: int = Field(
        default=45,
        ge=5,
        le=600,
        description="Pod termination grace period; longer than the server's graceful_shutdown_s plus the pre-stop pause.",
    )
    pre_stop_pause_s: int = Field(
        default=5,
        ge=0,
        le=60,
        description="Pause before SIGTERM so endpoints are removed from Services before the server drains.",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets for pulling the image from a private registry."
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="ServiceMonitor and PrometheusRule."
    )


class LocalConfig(SpecModel):
    """The local supervisor that runs the fleet as processes on this machine."""

    health_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="How often each server is health-checked."
    )
    startup_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest a server may take to become ready before it is restarted."
    )
    unhealthy_after_checks: int = Field(
        default=5,
        ge=1,
        description="Failed liveness checks in a row after which a running server is restarted.",
    )
    restart_backoff_initial_s: float = Field(
        default=0.1,
        gt=0,
        description="Wait before the first restart of a crashed server (systemd's RestartSec default): a "
        "server that ran well is back as soon as it can be; one that keeps crashing waits ever longer.",
    )
    restart_backoff_max_s: float = Field(
        default=30.0, gt=0, description="Cap on the doubling wait between restarts."
    )
    stable_after_s: float = Field(
        default=60.0, gt=0, description="A server ready this long has its back-off reset to the initial wait."
    )
    stop_grace_s: float = Field(
        default=10.0, ge=0, description="`fleet down` waits this long after SIGTERM before SIGKILL."
    )
    server_nice: int = Field(
        default=5,
        ge=0,
        le=19,
        description="Niceness added to model servers (the router keeps the supervisor's): when the servers "
        "saturate the machine's cores the router still gets the CPU to route and to answer 503 at once. "
        "0 runs them at the supervisor's priority.",
    )


class FleetSpec(SpecModel):
    """Many models behind one endpoint: run locally by a supervisor, or rendered for Kubernetes."""

    name: str = Field(
        description="Fleet name (lower-case, digits, '-'); prefixes every process and object name."
    )
    models: list[FleetModelConfig] = Field(min_length=1, description="The models of the fleet.")
    pools: list[PoolConfig] = Field(
        default_factory=lambda: [PoolConfig(name="cpu")],
        description="Server pools; models go to their `pool`, or to the first pool.",
    )
    router: RouterConfig = Field(default_factory=RouterConfig, description="The fleet's single endpoint.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API-key authentication.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="The servers' audit log.")
    image: ImageConfig = Field(default_factory=ImageConfig, description="Model-server container image.")
    kubernetes: KubernetesConfig = Field(
        default_factory=KubernetesConfig, description="Kubernetes rendering settings."
    )
    local: LocalConfig = Field(default_factory=LocalConfig, description="Local supervisor settings.")
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig,
        description="Where availability events are sent (sinks, filters, grouping, retries).",
    )
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig,
        description="SLO burn-rate and symptom alerts (PrometheusRule, and the local evaluator).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on every Kubernetes object."
    )
    review: ReviewConfig = Field(
        default_factory=ReviewConfig,
        description="What `modelfleet review` expects (evidence age, drills) and whether drills are refused.",
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig,
        description="OpenTelemetry spans in the router and every replica (docs/observe.md).",
    )
    ui: UiConfig = Field(default_factory=UiConfig, description="The router's live dashboard at /ui.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_dns_label(value, "fleet name", _MAX_FLEET_NAME_CHARS)

    @model_validator(mode="after")
    def _consistent(self) -> FleetSpec:
        pool_names = [pool.name for pool in self.pools]
        if len(pool_names) == 0:
            raise ValueError("pools: give at least one pool")
        duplicates = sorted({n for n in pool_names if pool_names.count(n) > 1})
        if duplicates:
            raise ValueError(f"pools: names must be unique, repeated: {', '.join(duplicates)}")
        model_names = [model.name for model in self.models]
        duplicates = sorted({n for n in model_names if model_names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models: names must be unique, repeated: {', '.join(duplicates)}")
        for model in self.models:
            if model.pool is not None and model.pool not in pool_names:
                raise ValueError(
                    f"model {model.name!r} names pool {model.pool!r}, which is not defined (pools: {', '.join(pool_names)})"
                )
        return self

    def pool_of(self, model: FleetModelConfig) -> PoolConfig:
        wanted = model.pool or self.pools[0].name
        return next(pool for pool in self.pools if pool.name == wanted)

    @property
    def request_timeout_s(self) -> float:
        if self.router.request_timeout_s is not None:
            return self.router.request_timeout_s
        return max(model.timeout_s for model in self.models) + 1.0

    def resolve_paths(self, base: Path) -> None:
        for model in self.models:
            model.resolve_paths(base)
        self.auth.resolve_paths(base)
        self.router.resolve_paths(base)
        self.notifications.resolve_paths(base)
        self.ui.resolve_paths(base)
