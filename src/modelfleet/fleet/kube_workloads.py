"""The fleet's workloads: per server group a ConfigMap (serve spec), Deployment, Service, PodDisruptionBudget
and (with autoscaling) HorizontalPodAutoscaler; for the router a ConfigMap (routing table), Deployment,
Service and PodDisruptionBudget."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config.fleet import FleetSpec, PoolConfig
from modelfleet.fleet.kube_grpc import (
    add_grpc_port,
    add_service_port,
    grpc_port,
    headless_service,
    upstream_address,
)
from modelfleet.fleet.kube_meta import fleet_labels, fleet_metadata, fleet_selector
from modelfleet.fleet.kube_pods import (
    CONFIG_DIR,
    PROBE_PERIOD_S,
    ROUTER_TLS_DIR,
    auth_keys_file,
    base_container,
    graceful_shutdown_s,
    http_probe,
    image_model_path,
    mount_auth,
    pod_spec,
    tmp_volume,
)
from modelfleet.fleet.plan import FleetPlan, ServerGroup
from modelfleet.fleet.router_config import TrafficSplit, Upstream, replica_in_flight_limit, router_settings
from modelfleet.kubeobjects import KubeObject

SERVE_SPEC_FILE = "serve.yaml"
ROUTER_CONFIG_FILE = "router.json"
# The router's traffic split, a key of its ConfigMap beside router.json. The kubelet updates a mounted
# ConfigMap's files in place, and the router re-reads the split when it changes, so a rollout re-applies
# the ConfigMap with new weights and no router pod restarts (the pods' annotation hashes router.json only).
ROUTER_SPLIT_FILE = "split.json"


def _config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _node_selector(pool: PoolConfig) -> dict[str, str]:
    selector = dict(pool.node_selector)
    if pool.instance_type is not None:
        selector.setdefault("node.kubernetes.io/instance-type", pool.instance_type)
    return selector


def group_objects(plan: FleetPlan, group: ServerGroup) -> list[KubeObject]:
    """One server group: its serve spec ConfigMap, Deployment, Service, PDB and (autoscaled) HPA."""
    spec = plan.fleet
    k8s = spec.kubernetes
    name = f"{spec.name}-{group.name}"
    serve_spec = group.serve_spec(
        "0.0.0.0",
        k8s.port,
        image_model_path,
        graceful_shutdown_s(spec),
        auth_keys_file(spec),
        spec.auth.protect_metrics,
        spec.tracing,
    )
    grpc = grpc_port(spec)
    serve_spec.server.grpc_port = grpc
    serve_yaml = yaml.safe_dump(serve_spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    selector = fleet_selector(spec, "server", group.name)

    container = base_container(spec, "server", group.pool.resources)
    container["args"] = ["--spec", f"{CONFIG_DIR}/{SERVE_SPEC_FILE}"]
    container["env"] = [
        {"name": "MODELFLEET_FLEET", "value": spec.name},
        {"name": "MODELFLEET_GROUP", "value": group.name},
    ]
    if spec.audit.enabled:  # to stdout: the cluster's log pipeline collects it with the server's logs
        container["env"].append({"name": "MODELFLEET_AUDIT_LOG", "value": "-"})
    startup_budget_s = max(m.warmup_runs for m in group.models) * 5 + 120
    container["startupProbe"] = http_probe(
        "/v2/health/ready", PROBE_PERIOD_S, math.ceil(startup_budget_s / PROBE_PERIOD_S)
    )
    container["readinessProbe"] = http_probe("/v2/health/ready", PROBE_PERIOD_S, 2)
    container["livenessProbe"] = http_probe("/v2/health/live", 10, 3)
    if grpc is not None:
        add_grpc_port(container, grpc)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{name}-serve"}},
        tmp_volume(group.pool.resources),
    ]
    mount_auth(spec, container, volumes)

    pod = pod_spec(spec, container, volumes, selector)
    node_selector = _node_selector(group.pool)
    if node_selector:
        pod["nodeSelector"] = node_selector
    if group.pool.tolerations:
        pod["tolerations"] = [dict(t) for t in group.pool.tolerations]

    autoscaling = group.pool.autoscaling
    deployment_spec: dict[str, Any] = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": fleet_labels(spec, "server", group.name),
                "annotations": {
                    "modelfleet.io/serve-spec-sha256": _config_hash(serve_yaml),
                    "modelfleet.io/models": ",".join(group.model_names),
                },
            },
            "spec": pod,
        },
    }
    if not autoscaling.enabled:
        # With an HPA the autoscaler owns the replica count; a fixed value would fight it on every apply.
        deployment_spec["replicas"] = group.replicas

    objects: list[KubeObject] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": fleet_metadata(spec, f"{name}-serve", "server", group.name),
            "data": {SERVE_SPEC_FILE: serve_yaml},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                **fleet_metadata(spec, name, "server", group.name),
                "annotations": {"modelfleet.io/models": ",".join(group.model_names)},
            },
            "spec": deployment_spec,
        },
        _service(spec, name, "server", group.name),
        _pdb(spec, name, "server", group.name),
    ]
    if autoscaling.enabled:
        objects.append(_hpa(spec, name, group))
    if grpc is not None:
        add_service_port(next(obj for obj in objects if obj["kind"] == "Service"), grpc)
        objects.append(headless_service(spec, name, group.name, grpc))
    return objects


def _service(spec: FleetSpec, name: str, component: str, group: str | None) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": fleet_metadata(spec, name, component, group),
        "spec": {
            "type": "ClusterIP",
            "selector": fleet_selector(spec, component, group),
            "ports": [
                {"name": "http", "port": spec.kubernetes.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _pdb(spec: FleetSpec, name: str, component: str, group: str | None) -> KubeObject:
    # maxUnavailable 1 keeps all but one replica through voluntary disruptions and never blocks a node drain.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": fleet_metadata(spec, name, component, group),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": fleet_selector(spec, component, group)}},
    }


def _hpa(spec: FleetSpec, name: str, group: ServerGroup) -> KubeObject:
    autoscaling = group.pool.autoscaling
    # The replicas asked for (by the pool or by a model of the group) are a floor the autoscaler keeps.
    min_replicas = max(autoscaling.min_replicas, group.replicas)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": fleet_metadata(spec, name, "server", group.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max(autoscaling.max_replicas, min_replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percent,
                        },
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_s,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}],
                },
            },
        },
    }


def router_objects(plan: FleetPlan, split: TrafficSplit | None = None) -> list[KubeObject]:
    """The router: its routing-table ConfigMap (one upstream per group Service) with the traffic ``split``
    (none: every model to its own replicas), Deployment, Service and PDB."""
    spec = plan.fleet
    k8s = spec.kubernetes
    name = f"{spec.name}-router"
    domain = f"{k8s.namespace}.svc.cluster.local"
    grpc = grpc_port(spec)
    # Each group's Service spreads connections over its ready pods; the router balances across groups.
    upstreams = [
        Upstream(
            name=group.name,
            group=group.name,
            url=f"http://{spec.name}-{group.name}.{domain}:{k8s.port}",
            models=list(group.model_names),
            # The Service spreads over the group's replicas: its minimum count of them, each at its limit.
            max_in_flight=replica_in_flight_limit(plan, group) * group.replicas,
            grpc_address=None if grpc is None else upstream_address(spec, group.name, grpc),
        )
        for group in plan.groups
    ]
    tls = spec.router.tls_secret_name is not None
    tls_files = (Path(ROUTER_TLS_DIR) / "tls.crt", Path(ROUTER_TLS_DIR) / "tls.key") if tls else None
    split_file = Path(CONFIG_DIR) / ROUTER_SPLIT_FILE
    settings = router_settings(
        plan, "0.0.0.0", k8s.port, upstreams, auth_keys_file(spec), tls_files, split_file, grpc
    )
    router_json = settings.model_dump_json(indent=2) + "\n"
    split_json = (split or TrafficSplit()).model_dump_json(indent=2) + "\n"
    selector = fleet_selector(spec, "router")

    container = base_container(spec, "router", k8s.router_resources)
    container["command"] = ["modelfleet", "fleet", "router", f"{CONFIG_DIR}/{ROUTER_CONFIG_FILE}"]
    # Readiness means "this router can route", not "every model is up": one model's outage must not
    # take the whole endpoint out of its Service.
    container["startupProbe"] = http_probe("/router/ready", 2, 30)
    container["readinessProbe"] = http_probe("/router/ready", PROBE_PERIOD_S, 2)
    container["livenessProbe"] = http_probe("/v2/health/live", 10, 3)
    if grpc is not None:
        add_grpc_port(container, grpc, probe_readiness=spec.router.tls_secret_name is None)
    volumes = [{"name": "config", "configMap": {"name": f"{name}-config"}}, tmp_volume(k8s.router_resources)]
    mount_auth(spec, container, volumes)  # the router checks keys on the routes it answers itself
    if spec.router.tls_secret_name is not None:
        # The kubelet's probes speak HTTPS without verifying, as Kubernetes documents for httpGet.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            container[probe]["httpGet"]["scheme"] = "HTTPS"
        container["volumeMounts"].append(
            {"name": "router-tls", "mountPath": ROUTER_TLS_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": "router-tls",
                "secret": {
                    "secretName": spec.router.tls_secret_name,
                    "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
                    "defaultMode": 0o440,
                },
            }
        )
    pod = pod_spec(spec, container, volumes, selector)
    objects: list[KubeObject] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": fleet_metadata(spec, f"{name}-config", "router"),
            "data": {ROUTER_CONFIG_FILE: router_json, ROUTER_SPLIT_FILE: split_json},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": fleet_metadata(spec, name, "router"),
            "spec": {
                "replicas": k8s.router_replicas,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {
                        "labels": fleet_labels(spec, "router"),
                        "annotations": {"modelfleet.io/router-config-sha256": _config_hash(router_json)},
                    },
                    "spec": pod,
                },
            },
        },
        _service(spec, name, "router", None),
        _pdb(spec, name, "router", None),
    ]
    if grpc is not None:
        add_service_port(next(obj for obj in objects if obj["kind"] == "Service"), grpc)
    return objects
