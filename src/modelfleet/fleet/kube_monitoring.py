"""Prometheus Operator objects for a fleet: ServiceMonitor and PrometheusRule.

The ServiceMonitor scrapes /metrics with a bearer key from a Secret while /metrics is protected, and
a second one scrapes a TLS router over HTTPS. The PrometheusRule holds the fleet's alert rules from
`modelfleet.operate.rules`: multi-window, multi-burn-rate alerts on each model's error and latency SLOs,
and symptom alerts (no ready replica, queue wait near the deadline, load failures, restarts). The
Grafana dashboard is a ConfigMap Grafana's sidecar picks up by its `grafana_dashboard` label.
"""

from __future__ import annotations

import json
from typing import Any

from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import SpecError
from modelfleet.fleet.buckets import latency_edges_s
from modelfleet.fleet.kube_meta import fleet_metadata
from modelfleet.fleet.plan import FleetPlan
from modelfleet.kubeobjects import KubeObject
from modelfleet.operate.dashboard import grafana_dashboard
from modelfleet.operate.promql import rule_groups
from modelfleet.operate.rules import fleet_rules


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
        "metadata": fleet_metadata(spec, name, "monitoring"),
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [spec.kubernetes.namespace]},
            "endpoints": [endpoint],
        },
    }


def monitoring_objects(plan: FleetPlan, for_delete: bool) -> list[KubeObject]:
    """The ServiceMonitor(s) and PrometheusRule the spec asks for; ``for_delete`` as in render_fleet."""
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
        metadata = fleet_metadata(spec, spec.name, "monitoring")
        # The operator loads only rules its ruleSelector matches (kube-prometheus-stack: `release`).
        metadata["labels"] = {**metadata["labels"], **spec.alerts.rule_labels}
        rules = fleet_rules(
            spec, "kubernetes", latency_edges_s(model.slo.latency_ms / 1000 for model in spec.models)
        )
        objects.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": metadata,
                "spec": {"groups": rule_groups(spec.name, rules, spec.alerts.evaluation_interval_s)},
            }
        )
    if monitoring.grafana_dashboard:
        metadata = fleet_metadata(spec, f"{spec.name}-dashboard", "monitoring")
        metadata["labels"] = {**metadata["labels"], "grafana_dashboard": "1"}  # the sidecar's default label
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": {f"{spec.name}.json": json.dumps(grafana_dashboard(spec), indent=1, sort_keys=True)},
            }
        )
    return objects
