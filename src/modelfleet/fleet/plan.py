"""Fleet spec → desired state. Pure: no files, no processes, no clock.

Each pool's models are packed into *server groups* (one serve spec each) by first-fit decreasing on
estimated memory: a group's models must fit in the pool's replica memory minus the server's own
overhead, and at most ``max_models_per_server`` share a group. Models on one artifact (the same `path`
or `ref`) are packed together and counted once, as a server shares one session between them; among
the groups a model fits in, it goes to the one with the least `demand_per_s` so far, busiest models
placed first (with no demand given: plain first-fit decreasing). Every group then runs as ``replicas``
identical servers: processes locally, a Deployment on Kubernetes.
"""

from __future__ import annotations

import math
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
        return ServeSpec(
            server=server,
            models=models,
            auth=auth,
            tracing=tracing or TracingConfig(),
            residency=self.pool.residency,
        )


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
    # One unit per artifact: a server opens it once for all its names (server/sessions.py). A unit of
    # more names than max_models_per_server is cut into chunks, each of which loads the artifact again.
    by_artifact: dict[str, list[FleetModelConfig]] = {}
    for model in models:
        by_artifact.setdefault(_artifact(model), []).append(model)
    units: list[list[FleetModelConfig]] = []
    for sharing in by_artifact.values():
        step = pool.max_models_per_server
        units.extend(sharing[start : start + step] for start in range(0, len(sharing), step))

    def unit_mib(unit: list[FleetModelConfig]) -> int:
        return max(memory[m.name] for m in unit)

    def unit_demand(unit: list[FleetModelConfig]) -> float:
        return sum(m.demand_per_s for m in unit)

    # Busiest first, then decreasing memory; ties broken by the first name so the same spec always gives
    # the same plan. Until the groups that memory and model count need at least are open, a busy unit
    # starts a group of its own rather than join one that already carries demand.
    ordered = sorted(units, key=lambda unit: (-unit_demand(unit), -unit_mib(unit), unit[0].name))
    at_least = max(
        math.ceil(sum(unit_mib(unit) for unit in units) / capacity_mib),
        math.ceil(len(models) / pool.max_models_per_server),
    )
    bins: list[list[FleetModelConfig]] = []
    used_mib: list[int] = []
    demand: list[float] = []
    counted: list[set[str]] = []  # the artifacts each bin already holds
    for unit in ordered:
        artifact = _artifact(unit[0])
        fits = [
            index
            for index, members in enumerate(bins)
            if used_mib[index] + (0 if artifact in counted[index] else unit_mib(unit)) <= capacity_mib
            and len(members) + len(unit) <= pool.max_models_per_server
        ]
        spread = unit_demand(unit) > 0 and len(bins) < at_least
        if fits and not (spread and min(demand[i] for i in fits) > 0):
            index = min(fits, key=lambda i: (demand[i], i))
        else:
            bins.append([])
            used_mib.append(0)
            demand.append(0.0)
            counted.append(set())
            index = len(bins) - 1
        bins[index].extend(unit)
        if artifact not in counted[index]:
            used_mib[index] += unit_mib(unit)
            counted[index].add(artifact)
        demand[index] += unit_demand(unit)
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
                model_memory_mib=_counted_once(members, memory),
                replicas=replicas,
            )
        )
    return groups


def _artifact(model: FleetModelConfig) -> str:
    return str(model.path) if model.path is not None else f"ref:{model.ref}"


def _counted_once(members: list[FleetModelConfig], memory: Mapping[str, int]) -> tuple[int, ...]:
    """Each member's memory, 0 for every name after the first on an artifact (they share its session)."""
    seen: set[str] = set()
    figures = []
    for model in members:
        artifact = _artifact(model)
        figures.append(0 if artifact in seen else memory[model.name])
        seen.add(artifact)
    return tuple(figures)
