"""Render a fleet plan as Kubernetes manifests (pure dicts), and write them as a kustomize base.

Per server group: ConfigMap (serve spec), Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget.
For the router: ConfigMap (routing table), Deployment, Service, PodDisruptionBudget. Fleet-wide: one
ServiceAccount (no token), NetworkPolicies (default deny, then router and metrics ingress), optional
Namespace, ServiceMonitor (with a bearer key from a Secret while /metrics is protected; a second one
over HTTPS for a TLS router) and PrometheusRule. Pods run non-root with a read-only root filesystem,
no privilege escalation, no capabilities, seccomp RuntimeDefault, probes on the V2 health routes,
requests equal to limits, and spread across zones and nodes: what Polaris, kube-score and the EKS
best-practices guide check for.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config.fleet import FleetModelConfig, FleetSpec, PoolConfig, ResourcesConfig
from modelfleet.errors import InvalidInput, SpecError
from modelfleet.fleet.plan import FleetPlan, ServerGroup
from modelfleet.fleet.router_config import Upstream, replica_in_flight_limit, router_settings
from modelfleet.kubeobjects import RUN_AS_ID, KubeObject, pod_security_context, prefer_separate_nodes
from modelfleet.yamlio import dump_manifest, dump_manifests

# Where things live inside the image and the pod.
MODELS_DIR = "/models"
CONFIG_DIR = "/etc/modelfleet"
AUTH_DIR = "/etc/modelfleet-auth"  # beside, not inside, the read-only ConfigMap mount
SERVE_SPEC_FILE = "serve.yaml"
ROUTER_CONFIG_FILE = "router.json"
ROUTER_TLS_DIR = "/etc/modelfleet-router-tls"  # beside the ConfigMap mount, like AUTH_DIR
AUTH_KEYS_FILE = "keys"
PROBE_PERIOD_S = 5
SHUTDOWN_MARGIN_S = 5


def _labels(spec: FleetSpec, component: str, group: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "modelfleet",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": spec.name,
        "app.kubernetes.io/managed-by": "modelfleet",
    }
    if group is not None:
        labels["modelfleet.io/group"] = group
    return {**spec.labels, **labels}


def _selector(spec: FleetSpec, component: str, group: str | None = None) -> dict[str, str]:
    selector = {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": component}
    if group is not None:
        selector["modelfleet.io/group"] = group
    return selector


def _metadata(spec: FleetSpec, name: str, component: str, group: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": spec.kubernetes.namespace, "labels": _labels(spec, component, group)}


def _cpu_quantity(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _resources(resources: ResourcesConfig) -> dict[str, dict[str, str]]:
    # Requests equal limits for memory (no OOM surprises under pressure) and storage; CPU limit may exceed.
    requests = {
        "cpu": _cpu_quantity(resources.cpu_cores),
        "memory": f"{resources.memory_mib}Mi",
        "ephemeral-storage": f"{resources.ephemeral_storage_mib}Mi",
    }
    limits = {
        "cpu": _cpu_quantity(resources.effective_cpu_limit_cores),
        "memory": f"{resources.memory_mib}Mi",
        "ephemeral-storage": f"{resources.ephemeral_storage_mib}Mi",
    }
    if resources.accelerator_count > 0:
        requests[resources.accelerator_resource] = str(resources.accelerator_count)
        limits[resources.accelerator_resource] = str(resources.accelerator_count)
    return {"requests": requests, "limits": limits}


def _container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _http_probe(path: str, period_s: int, failure_threshold: int, timeout_s: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failure_threshold,
    }


def _spread(spec: FleetSpec, selector: dict[str, str]) -> dict[str, Any]:
    """Zones first, then nodes; ScheduleAnyway so a single-zone cluster still schedules."""
    return {
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ],
        "affinity": prefer_separate_nodes(selector),
    }


def _pod_spec(
    spec: FleetSpec, container: dict[str, Any], volumes: list[dict[str, Any]], selector: dict[str, str]
) -> dict[str, Any]:
    k8s = spec.kubernetes
    pod: dict[str, Any] = {
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": k8s.termination_grace_s,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        **_spread(spec, selector),
    }
    if k8s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    return pod


def _container(spec: FleetSpec, name: str, resources: ResourcesConfig) -> dict[str, Any]:
    k8s = spec.kubernetes
    container: dict[str, Any] = {
        "name": name,
        "image": spec.image.reference,
        # Always re-resolves the tag (or digest) at pod start, so a pull secret is always checked.
        "imagePullPolicy": "Always",
        "ports": [{"name": "http", "containerPort": k8s.port, "protocol": "TCP"}],
        "resources": _resources(resources),
        "securityContext": _container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if k8s.pre_stop_pause_s > 0:
        # Endpoints are removed asynchronously; pausing first keeps in-flight routing from hitting a closed port.
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(k8s.pre_stop_pause_s)]}}}
    return container


def _tmp_volume(resources: ResourcesConfig) -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": f"{resources.ephemeral_storage_mib}Mi"}}


def _config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _node_selector(pool: PoolConfig) -> dict[str, str]:
    selector = dict(pool.node_selector)
    if pool.instance_type is not None:
        selector.setdefault("node.kubernetes.io/instance-type", pool.instance_type)
    return selector


def _auth_secret_name(spec: FleetSpec) -> str:
    return spec.auth.secret_name or f"{spec.name}-auth"


def _auth_keys_file(spec: FleetSpec) -> Path | None:
    """Where servers and router read the key store inside the pod; None while auth is off."""
    return Path(AUTH_DIR) / AUTH_KEYS_FILE if spec.auth.enabled else None


def _mount_auth(spec: FleetSpec, container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """With auth on: the key store from the fleet's Secret, read-only at AUTH_DIR."""
    if not spec.auth.enabled:
        return
    container["volumeMounts"].append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
    volumes.append(
        {
            "name": "auth",
            "secret": {
                "secretName": _auth_secret_name(spec),
                "items": [{"key": AUTH_KEYS_FILE, "path": AUTH_KEYS_FILE}],
                "defaultMode": 0o440,
            },
        }
    )


def image_model_path(model: FleetModelConfig) -> Path:
    """Where `modelfleet image context` puts a model's artifact inside the image."""
    return Path(MODELS_DIR) / model.name


def graceful_shutdown_s(spec: FleetSpec) -> float:
    """The server's drain time, kept inside the pod's grace period after the pre-stop pause."""
    k8s = spec.kubernetes
    return float(max(1, k8s.termination_grace_s - k8s.pre_stop_pause_s - SHUTDOWN_MARGIN_S))


def _group_objects(plan: FleetPlan, group: ServerGroup) -> list[KubeObject]:
    spec = plan.fleet
    k8s = spec.kubernetes
    name = f"{spec.name}-{group.name}"
    serve_spec = group.serve_spec(
        "0.0.0.0",
        k8s.port,
        image_model_path,
        graceful_shutdown_s(spec),
        _auth_keys_file(spec),
        spec.auth.protect_metrics,
    )
    serve_yaml = yaml.safe_dump(serve_spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    selector = _selector(spec, "server", group.name)

    container = _container(spec, "server", group.pool.resources)
    container["args"] = ["--spec", f"{CONFIG_DIR}/{SERVE_SPEC_FILE}"]
    container["env"] = [
        {"name": "MODELFLEET_FLEET", "value": spec.name},
        {"name": "MODELFLEET_GROUP", "value": group.name},
    ]
    if spec.audit.enabled:  # to stdout: the cluster's log pipeline collects it with the server's logs
        container["env"].append({"name": "MODELFLEET_AUDIT_LOG", "value": "-"})
    startup_budget_s = max(m.warmup_runs for m in group.models) * 5 + 120
    container["startupProbe"] = _http_probe(
        "/v2/health/ready", PROBE_PERIOD_S, math.ceil(startup_budget_s / PROBE_PERIOD_S)
    )
    container["readinessProbe"] = _http_probe("/v2/health/ready", PROBE_PERIOD_S, 2)
    container["livenessProbe"] = _http_probe("/v2/health/live", 10, 3)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{name}-serve"}},
        _tmp_volume(group.pool.resources),
    ]
    _mount_auth(spec, container, volumes)

    pod = _pod_spec(spec, container, volumes, selector)
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
                "labels": _labels(spec, "server", group.name),
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
            "metadata": _metadata(spec, f"{name}-serve", "server", group.name),
            "data": {SERVE_SPEC_FILE: serve_yaml},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                **_metadata(spec, name, "server", group.name),
                "annotations": {"modelfleet.io/models": ",".join(group.model_names)},
            },
            "spec": deployment_spec,
        },
        _service(spec, name, "server", group.name),
        _pdb(spec, name, "server", group.name),
    ]
    if autoscaling.enabled:
        objects.append(_hpa(spec, name, group))
    return objects


def _service(spec: FleetSpec, name: str, component: str, group: str | None) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, name, component, group),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(spec, component, group),
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
        "metadata": _metadata(spec, name, component, group),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(spec, component, group)}},
    }


def _hpa(spec: FleetSpec, name: str, group: ServerGroup) -> KubeObject:
    autoscaling = group.pool.autoscaling
    # The replicas asked for (by the pool or by a model of the group) are a floor the autoscaler keeps.
    min_replicas = max(autoscaling.min_replicas, group.replicas)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, name, "server", group.name),
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


def _router_objects(plan: FleetPlan) -> list[KubeObject]:
    spec = plan.fleet
    k8s = spec.kubernetes
    name = f"{spec.name}-router"
    domain = f"{k8s.namespace}.svc.cluster.local"
    # Each group's Service spreads connections over its ready pods; the router balances across groups.
    upstreams = [
        Upstream(
            name=group.name,
            group=group.name,
            url=f"http://{spec.name}-{group.name}.{domain}:{k8s.port}",
            models=list(group.model_names),
            # The Service spreads over the group's replicas: its minimum count of them, each at its limit.
            max_in_flight=replica_in_flight_limit(plan, group) * group.replicas,
        )
        for group in plan.groups
    ]
    tls = spec.router.tls_secret_name is not None
    tls_files = (Path(ROUTER_TLS_DIR) / "tls.crt", Path(ROUTER_TLS_DIR) / "tls.key") if tls else None
    settings = router_settings(plan, "0.0.0.0", k8s.port, upstreams, _auth_keys_file(spec), tls_files)
    router_json = settings.model_dump_json(indent=2) + "\n"
    selector = _selector(spec, "router")

    container = _container(spec, "router", k8s.router_resources)
    container["command"] = ["modelfleet", "fleet", "router", f"{CONFIG_DIR}/{ROUTER_CONFIG_FILE}"]
    # Readiness means "this router can route", not "every model is up": one model's outage must not
    # take the whole endpoint out of its Service.
    container["startupProbe"] = _http_probe("/router/ready", 2, 30)
    container["readinessProbe"] = _http_probe("/router/ready", PROBE_PERIOD_S, 2)
    container["livenessProbe"] = _http_probe("/v2/health/live", 10, 3)
    volumes = [{"name": "config", "configMap": {"name": f"{name}-config"}}, _tmp_volume(k8s.router_resources)]
    _mount_auth(spec, container, volumes)  # the router checks keys on the routes it answers itself
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
    pod = _pod_spec(spec, container, volumes, selector)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(spec, f"{name}-config", "router"),
            "data": {ROUTER_CONFIG_FILE: router_json},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(spec, name, "router"),
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
                        "labels": _labels(spec, "router"),
                        "annotations": {"modelfleet.io/router-config-sha256": _config_hash(router_json)},
                    },
                    "spec": pod,
                },
            },
        },
        _service(spec, name, "router", None),
        _pdb(spec, name, "router", None),
    ]


def _network_policies(spec: FleetSpec) -> list[KubeObject]:
    k8s = spec.kubernetes
    port = [{"protocol": "TCP", "port": k8s.port}]
    fleet_pods = {"matchLabels": {"app.kubernetes.io/instance": spec.name}}
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s.monitoring.namespace}}
    }
    if k8s.client_namespaces:
        clients: list[dict[str, Any]] = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            for ns in k8s.client_namespaces
        ]
    else:
        clients = [{"namespaceSelector": {}}]
    router_pods = {"podSelector": {"matchLabels": _selector(spec, "router")}}
    server_pods = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": "server"}
        }
    }
    dns = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(spec, f"{spec.name}-default-deny", "network"),
            "spec": {"podSelector": fleet_pods, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(spec, f"{spec.name}-server-ingress", "network"),
            "spec": {
                "podSelector": server_pods["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [router_pods, monitoring], "ports": port}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(spec, f"{spec.name}-router-ingress", "network"),
            "spec": {
                "podSelector": router_pods["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [*clients, monitoring], "ports": port}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(spec, f"{spec.name}-router-egress", "network"),
            "spec": {
                "podSelector": router_pods["podSelector"],
                "policyTypes": ["Egress"],
                "egress": [{"to": [server_pods], "ports": port}, dns],
            },
        },
    ]


def _scrape_authorization(spec: FleetSpec, for_delete: bool) -> dict[str, Any] | None:
    """The bearer key Prometheus sends to /metrics; None while /metrics is open (auth off or unprotected).

    A ServiceMonitor that cannot authenticate gets 401 on every scrape and its alerts never fire, so a
    protected fleet without `monitoring.scrape_secret_name` is a spec error rather than a silent gap;
    but objects rendered only to be deleted need their names alone, so deleting such a fleet still works.
    """
    if not (spec.auth.enabled and spec.auth.protect_metrics):
        return None
    monitoring = spec.kubernetes.monitoring
    if monitoring.scrape_secret_name is None:
        if for_delete:
            return None
        raise SpecError(
            "kubernetes.monitoring.service_monitor: /metrics needs a `read` API key while auth is on with "
            "auth.protect_metrics; name a Secret holding one in kubernetes.monitoring.scrape_secret_name "
            "(key kubernetes.monitoring.scrape_secret_key), or set auth.protect_metrics: false"
        )
    # The Prometheus Operator reads the Secret from the ServiceMonitor's namespace (the fleet's).
    return {
        "type": "Bearer",
        "credentials": {"name": monitoring.scrape_secret_name, "key": monitoring.scrape_secret_key},
    }


def _router_scrape_tls(spec: FleetSpec, tls_secret_name: str) -> dict[str, Any]:
    """How Prometheus checks the TLS router's certificate (the Operator's ``tlsConfig``).

    Prometheus scrapes pod addresses, which a certificate seldom names, so the name checked is the
    router Service's (what clients call), unless `monitoring.router_server_name` says otherwise. The CA
    is `monitoring.router_ca_secret_name`, else the router's own certificate from its TLS Secret: Go's
    verifier accepts a certificate found in the trusted pool itself, self-signed or not.
    """
    monitoring = spec.kubernetes.monitoring
    if monitoring.router_insecure_skip_verify:
        return {"insecureSkipVerify": True}
    if monitoring.router_ca_secret_name is not None:
        ca = {"name": monitoring.router_ca_secret_name, "key": monitoring.router_ca_secret_key}
    else:
        ca = {"name": tls_secret_name, "key": "tls.crt"}
    server_name = monitoring.router_server_name or f"{spec.name}-router.{spec.kubernetes.namespace}.svc"
    return {"ca": {"secret": ca}, "serverName": server_name}


def _service_monitor(
    spec: FleetSpec, name: str, selector: dict[str, str], endpoint: KubeObject
) -> KubeObject:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(spec, name, "monitoring"),
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [spec.kubernetes.namespace]},
            "endpoints": [endpoint],
        },
    }


def _monitoring_objects(plan: FleetPlan, for_delete: bool) -> list[KubeObject]:
    spec = plan.fleet
    monitoring = spec.kubernetes.monitoring
    objects: list[KubeObject] = []
    if monitoring.service_monitor:
        endpoint: dict[str, Any] = {
            "port": "http",
            "path": "/metrics",
            "interval": f"{monitoring.scrape_interval_s}s",
        }
        authorization = _scrape_authorization(spec, for_delete)
        if authorization is not None:
            endpoint["authorization"] = authorization
        instance = {"app.kubernetes.io/instance": spec.name}
        tls_secret_name = spec.router.tls_secret_name
        if tls_secret_name is None:
            objects.append(_service_monitor(spec, spec.name, instance, endpoint))
        else:
            # A ServiceMonitor's endpoints apply to every Service it selects: the HTTPS router needs
            # its own, and the servers (plain HTTP inside the fleet) keep theirs.
            servers = {**instance, "app.kubernetes.io/component": "server"}
            router = {**instance, "app.kubernetes.io/component": "router"}
            https = {**endpoint, "scheme": "https", "tlsConfig": _router_scrape_tls(spec, tls_secret_name)}
            objects.append(_service_monitor(spec, spec.name, servers, endpoint))
            objects.append(_service_monitor(spec, f"{spec.name}-router", router, https))
    if monitoring.prometheus_rule:
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": _metadata(spec, spec.name, "monitoring"),
                "spec": {"groups": [{"name": f"{spec.name}.slo", "rules": _alert_rules(spec)}]},
            }
        )
    return objects


def _alert_rules(spec: FleetSpec) -> list[dict[str, Any]]:
    """Per model: latency SLO, error budget and availability, from the router's own metrics."""
    rules: list[dict[str, Any]] = []
    for model in spec.models:
        where = f'fleet="{spec.name}",model="{model.name}"'
        quantile = model.slo.percentile / 100
        latency_s = model.slo.latency_ms / 1000
        rules.extend(
            [
                {
                    "alert": "ModelfleetLatencySLO",
                    "expr": (
                        f"histogram_quantile({quantile:g}, sum by (le) "
                        f"(rate(modelfleet_router_request_duration_seconds_bucket{{{where}}}[5m]))) > {latency_s:g}"
                    ),
                    "for": "10m",
                    "labels": {"severity": "warning", "model": model.name},
                    "annotations": {
                        "summary": f"{model.name}: p{model.slo.percentile:g} latency above {model.slo.latency_ms:g} ms"
                    },
                },
                {
                    "alert": "ModelfleetErrorRate",
                    "expr": (
                        f'sum(rate(modelfleet_router_requests_total{{{where},code=~"5.."}}[5m])) / '
                        f"sum(rate(modelfleet_router_requests_total{{{where}}}[5m])) > {model.slo.error_rate_percent / 100:g}"
                    ),
                    "for": "5m",
                    "labels": {"severity": "critical", "model": model.name},
                    "annotations": {
                        "summary": f"{model.name}: more than {model.slo.error_rate_percent:g}% of requests fail"
                    },
                },
                {
                    "alert": "ModelfleetModelUnavailable",
                    "expr": f"max(modelfleet_router_ready_replicas{{{where}}}) == 0",
                    "for": "2m",
                    "labels": {"severity": "critical", "model": model.name},
                    "annotations": {"summary": f"{model.name}: no ready replica"},
                },
            ]
        )
    return rules


def render_fleet(plan: FleetPlan, for_delete: bool = False) -> list[KubeObject]:
    """Every Kubernetes object of the fleet, in apply order (namespace and identities first).

    ``for_delete``: the objects are only named for deletion, so checks that guard a working deployment
    (the ServiceMonitor's scrape credentials) do not stand in the way of tearing it down.
    """
    spec = plan.fleet
    k8s = spec.kubernetes
    objects: list[KubeObject] = []
    if k8s.create_namespace:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": k8s.namespace,
                    "labels": {
                        **_labels(spec, "namespace"),
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                },
            }
        )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(spec, spec.name, "identity"),
            "automountServiceAccountToken": False,
        }
    )
    objects.extend(_network_policies(spec))
    for group in plan.groups:
        objects.extend(_group_objects(plan, group))
    objects.extend(_router_objects(plan))
    objects.extend(_monitoring_objects(plan, for_delete))
    # A JSON round trip gives every object its own nested dicts (no shared selectors) and proves
    # the result serialises.
    fresh: list[KubeObject] = json.loads(json.dumps(objects))
    return fresh


def manifest_file_name(obj: KubeObject) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_manifests(objects: list[KubeObject], out_dir: Path) -> list[Path]:
    """One file per object plus a kustomization.yaml listing them; returns the files written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    written: list[Path] = []
    names: list[str] = []
    for obj in objects:
        file_name = manifest_file_name(obj)
        path = out_dir / file_name
        path.write_text(dump_manifest(obj), encoding="utf-8")
        written.append(path)
        names.append(file_name)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": names,
    }
    path = out_dir / "kustomization.yaml"
    path.write_text(dump_manifest(kustomization), encoding="utf-8")
    written.append(path)
    return written


def manifests_to_yaml(objects: list[KubeObject]) -> str:
    """A single multi-document YAML stream, for `fleet render` without `-o`."""
    return dump_manifests(objects)
