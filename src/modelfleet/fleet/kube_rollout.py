"""A rollout on Kubernetes: a canary Deployment for the new version and the router's ConfigMap with weights.

The same design as the local fleet: the canary is a server group of its own (one Deployment and Service,
`FLEET-canary-N`, serving the model under its fleet name pinned to the new registry version), and the
router's split (`split.json` in its ConfigMap, see kube_workloads.ROUTER_SPLIT_FILE) sends it
``canary_percent`` of the model's requests. Raising a step is re-rendering with a new share and applying
the ConfigMap; the kubelet updates the mounted file and every router replica re-reads it, so nothing
restarts. Rolling back is applying the router ConfigMap without the route (``render_fleet``'s own) and
deleting the canary objects; promoting is moving the alias (the fleet's servers follow it) and then the same.
No cluster runs in this project's tests: the objects are checked against the Kubernetes schema only.
"""

from __future__ import annotations

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fleet.kube_workloads import group_objects, router_objects
from modelfleet.fleet.plan import FleetPlan, ServerGroup
from modelfleet.fleet.router_config import CanaryRoute, TrafficSplit, Upstream, replica_in_flight_limit
from modelfleet.kubeobjects import KubeObject
from modelfleet.types import ModelRef

_CANARY_KINDS = {"ConfigMap", "Deployment", "Service"}  # one replica: no PDB, no autoscaler


def render_rollout(
    plan: FleetPlan, model: str, to_ref: str, canary_percent: float, shadow_percent: float = 0.0
) -> list[KubeObject]:
    """The canary's ConfigMap, Deployment and Service, then the router's ConfigMap with the weighted split."""
    spec = plan.fleet
    k8s = spec.kubernetes
    names = [entry.name for entry in spec.models]
    if model not in names:
        raise NotFound(f"model {model!r} is not in fleet {spec.name} (models: {', '.join(names)})")
    index = names.index(model)
    config = spec.models[index]
    if config.ref is None or ModelRef.parse(config.ref).alias is None:
        raise InvalidInput(
            f"model {model!r} is served from {config.path or config.ref}; a rollout moves a registry alias, so "
            "serve the model as `ref: NAME@ALIAS`"
        )
    try:
        wanted = ModelRef.parse(to_ref)
    except ValueError as exc:
        raise InvalidInput(f"--to: {exc}") from None
    if wanted.name != ModelRef.parse(config.ref).name:
        raise InvalidInput(
            f"--to {to_ref} is not a version of registry model {ModelRef.parse(config.ref).name!r}"
        )
    if not 0 < canary_percent <= 100 or not 0 <= shadow_percent <= 100:
        raise InvalidInput("canary share must be in (0, 100] percent and shadow share in [0, 100]")
    group = next(group for group in plan.groups if model in group.model_names)
    canary = ServerGroup(
        name=f"canary-{index}",
        pool=group.pool,
        models=(config.model_copy(update={"ref": str(wanted)}),),
        model_memory_mib=(group.model_memory_mib[group.model_names.index(model)],),
        replicas=1,
    )
    objects = [obj for obj in group_objects(plan, canary) if obj["kind"] in _CANARY_KINDS]
    for obj in objects:
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = 1
    route = CanaryRoute(
        model=model,
        baseline_version=config.ref,
        canary_version=str(wanted),
        canary_percent=canary_percent,
        shadow_percent=shadow_percent,
        upstreams=[
            Upstream(
                name=canary.name,
                group=canary.name,
                url=f"http://{spec.name}-{canary.name}.{k8s.namespace}.svc.cluster.local:{k8s.port}",
                models=[model],
                max_in_flight=replica_in_flight_limit(plan, canary),
            )
        ],
    )
    router_config = next(
        obj for obj in router_objects(plan, TrafficSplit(routes=[route])) if obj["kind"] == "ConfigMap"
    )
    return [*objects, router_config]
