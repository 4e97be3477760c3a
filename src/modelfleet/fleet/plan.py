"""Fleet spec → desired state. Pure: no files, no processes, no clock.

Each pool's models are packed into *server groups* (one serve spec each) by first-fit decreasing on
estimated memory: a group's models must fit in the pool's replica memory minus the server's own
overhead, and at most ``max_models_per_server`` share a group. Every group then runs as ``replicas``
identical servers: processes locally, a Deployment on Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelfleet.config.fleet import FleetModelConfig, FleetSpec, PoolConfig
from modelfleet.config.observe import TracingConfig
from modelfleet.config.serve import AuthConfig as ServeAuthConfig
from modelfleet.config.serve import ModelConfig, ServerConfig, ServeSpec
from modelfleet.errors import SpecError


@dataclass(frozen=True, slots=True)
class ServerGroup:
    """Models that share one server process (group); run as ``replicas`` identical copies."""

    name: str
    pool: PoolConfig
    models: tuple[FleetModelConfig, ...]
    model_memory_mib: tuple[int, ...]
    replicas: int

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(model.name for model in self.models)

    @property
    def estimated_memory_mib(self) -> int:
        """Models plus the server's own overhead: what one replica is expected to use."""
        return sum(self.model_memory_mib) + self.pool.server_overhead_mib

    def serve_spec(
        self,
        host: str,
        port: int,
        artifact_path: Callable[[FleetModelConfig], Path] | None = None,
        graceful_shutdown_s: float | None = None,
        keys_file: Path | None = None,
        protect_metrics: bool = True,
        tracing: TracingConfig | None = None,
    ) -> ServeSpec:
        """The serve spec one replica runs. ``artifact_path`` rewrites paths (e.g. to /models/NAME in an image);
        with ``keys_file`` every route but the health probes needs an API key from that key store (/metrics
        only with ``protect_metrics``); ``tracing``: the fleet's, so a trace follows a request into the replica."""
        models = []
        for model in self.models:
            path = model.path if artifact_path is None or model.path is None else artifact_path(model)
            models.append(ModelConfig(path=path, ref=model.ref, name=model.name, **model.runtime_fields()))
        shutdown = {} if graceful_shutdown_s is None else {"graceful_shutdown_s": graceful_shutdown_s}
        server = ServerConfig(
            host=host,
            port=port,
            workers=self.pool.workers,
            cpu_cores=self.pool.resources.effective_cpu_limit_cores,
            **shutdown,
        )
        auth = (
            ServeAuthConfig()
            if keys_file is None
            else ServeAuthConfig(enabled=True, keys_file=keys_file, protect_metrics=protect_metrics)
        )
        return ServeSpec(server=server, models=models, auth=auth, tracing=tracing or TracingConfig())


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """The desired state of a fleet: which models run in which server group, and how many replicas."""

    fleet: FleetSpec
    groups: tuple[ServerGroup, ...]

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(model.name for model in self.fleet.models)

    def summary(self) -> list[dict[str, object]]:
        """One row per server group, for `fleet validate` and `--json` output."""
        return [
            {
                "group": group.name,
                "pool": group.pool.name,
                "replicas": group.replicas,
                "workers": group.pool.workers,
                "models": list(group.model_names),
                "estimated_memory_mib": group.estimated_memory_mib,
                "memory_mib": group.pool.resources.memory_mib,
            }
            for group in self.groups
        ]


def plan_fleet(spec: FleetSpec, model_memory_mib: Mapping[str, int]) -> FleetPlan:
    """Pack every pool's models into server groups. ``model_memory_mib`` maps model name → estimate."""
    groups: list[ServerGroup] = []
    for pool in spec.pools:
        members = [model for model in spec.models if spec.pool_of(model).name == pool.name]
        groups.extend(_pack_pool(pool, members, model_memory_mib))
    return FleetPlan(fleet=spec, groups=tuple(groups))


def _pack_pool(
    pool: PoolConfig, models: list[FleetModelConfig], model_memory_mib: Mapping[str, int]
) -> list[ServerGroup]:
    capacity_mib = pool.resources.memory_mib - pool.server_overhead_mib
    if capacity_mib <= 0:
        raise SpecError(
            f"pool {pool.name!r}: resources.memory_mib ({pool.resources.memory_mib}) leaves no room for models "
            f"after server_overhead_mib ({pool.server_overhead_mib})"
        )
    memory = {}
    for model in models:
        if model.name not in model_memory_mib:
            raise SpecError(f"model {model.name!r}: no memory estimate (give `memory_mib` in the spec)")
        memory[model.name] = model_memory_mib[model.name]
        if memory[model.name] > capacity_mib:
            raise SpecError(
                f"model {model.name!r} needs about {memory[model.name]} MiB but pool {pool.name!r} has room for "
                f"{capacity_mib} MiB per server (resources.memory_mib {pool.resources.memory_mib} minus "
                f"server_overhead_mib {pool.server_overhead_mib}); raise memory_mib or move the model to a larger pool"
            )
    # First-fit decreasing; ties broken by name so the same spec always gives the same plan.
    ordered = sorted(models, key=lambda m: (-memory[m.name], m.name))
    bins: list[list[FleetModelConfig]] = []
    used_mib: list[int] = []
    for model in ordered:
        need = memory[model.name]
        for index, members in enumerate(bins):
            if used_mib[index] + need <= capacity_mib and len(members) < pool.max_models_per_server:
                members.append(model)
                used_mib[index] += need
                break
        else:
            bins.append([model])
            used_mib.append(need)
    groups = []
    for index, members in enumerate(bins):
        # Keep the spec's order inside a group: it is the order users wrote and read.
        members.sort(key=models.index)
        replicas = max([pool.replicas, *(m.replicas for m in members if m.replicas is not None)])
        groups.append(
            ServerGroup(
                name=f"{pool.name}-{index}",
                pool=pool,
                models=tuple(members),
                model_memory_mib=tuple(memory[m.name] for m in members),
                replicas=replicas,
            )
        )
    return groups
